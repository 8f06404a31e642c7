"""What a client flow asks its I/O shell to do, and the loop that runs a flow.

Every decision of the SDK (what to send, when to retry and how long to wait, which parts are missing,
where a download resumes, what an error answer means, whether the bytes are right) is written once,
in :mod:`chunkd.client._core`, as a *flow*: a generator that yields an effect whenever it needs the
outside world and is sent back the answer (or has the failure thrown into it)::

    response = yield Request("GET", "/v1/files/abc")

:class:`~chunkd.client.Client` performs effects with ``httpx.Client``, ``time.sleep`` and a thread
pool; :class:`~chunkd.client.AsyncClient` with ``httpx.AsyncClient``, ``asyncio.sleep``, tasks and
worker threads. Neither makes a decision of its own (the "sans-I/O" design of h11 and httpcore).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from chunkd.client._transfer import DownloadSink, PartBody

__all__ = ["Blocking", "Driver", "Effect", "Fetch", "Flow", "Parallel", "Request", "Sleep"]

T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    """Send one request; answered with the response (body read), or a transport error thrown in.
    ``body``, when given, is read chunk by chunk (``PartBody.read``, blocking) as it goes out."""

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    body: PartBody | None = None

    def options(self) -> dict[str, Any]:
        """httpx's keyword arguments but the body."""
        return {"json": self.json, "params": self.params, "headers": self.headers}


@dataclass(frozen=True)
class Fetch:
    """GET ``path`` as a stream: when ``sink.accepts(response)``, its body goes chunk by chunk to
    ``sink.write`` (blocking), else it is read into memory. Answered with the response."""

    path: str
    headers: dict[str, str]
    sink: DownloadSink


@dataclass(frozen=True)
class Sleep:
    """Wait ``seconds`` (before a retry)."""

    seconds: float


@dataclass(frozen=True)
class Blocking:
    """Call ``function(*args)``, which touches the disk or hashes: inline (Client) or in a worker
    thread (AsyncClient). Answered with what it returned."""

    function: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Parallel:
    """Run ``flows``, ``limit`` at a time, beside ``whole(stop)`` (blocking; it should give up once
    ``stop`` is set, which happens when a flow fails or the run is interrupted; the flows then start
    no new effect). Answered with what ``whole`` returned once every flow is done; the first failure
    of a flow is raised."""

    flows: list[Flow[None]]
    limit: int
    whole: Callable[[threading.Event], Any] = field(repr=False)


Effect = Request | Fetch | Sleep | Blocking | Parallel
Flow = Generator[Effect, Any, T]


class Driver(Generic[T]):
    """Steps one flow: :meth:`next` is the effect it asks for next (None once it has returned, its
    value then in :attr:`result`); :meth:`answer` or :meth:`fail` says how that effect went."""

    def __init__(self, flow: Flow[T]) -> None:
        self._flow = flow
        self._reply: Any = None
        self._error: BaseException | None = None
        self.result: T

    def next(self) -> Effect | None:
        try:
            if self._error is not None:
                error, self._error = self._error, None
                return self._flow.throw(error)
            return self._flow.send(self._reply)
        except StopIteration as done:
            self.result = done.value
            return None

    def answer(self, reply: Any) -> None:
        self._reply = reply

    def fail(self, error: BaseException) -> None:
        """Raise ``error`` inside the flow, where the effect was asked for (it may catch it)."""
        self._reply, self._error = None, error
