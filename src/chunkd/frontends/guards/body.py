"""The request-body guard, for every route of every frontend:

- **Slow clients (slowloris).** While a request body is still arriving, each wait for the next
  piece is bounded by ``idle_timeout``; past it the body is cut: the route's ``receive`` raises
  a 408 ``Refusal``, which the route answers in its dialect. To the engine that is a body that
  broke off, so what was already durable stays (an APPEND upload keeps the bytes it had; a PARTS
  upload keeps its finished parts and drops only the part in flight). The client gets 408 and
  the connection is closed.
- **Deep JSON.** The JSON body models of routes (parsed by FastAPI, or as FastAPI does by
  ``frontends.http.json_body`` for the routes called directly) are watched as they arrive: nested deeper
  than ``MAX_JSON_DEPTH`` they are refused with 400 before the parser sees them (Python's parser
  would recurse until ``RecursionError``).
- **Trickling clients.** A body that keeps sending, but slower than ``min_rate`` bytes per second
  averaged over the last ``rate_window`` seconds, is cut the same way (408). Only the time spent
  waiting for the client counts (while the route writes, the server stops reading and the client
  is not to blame), and nothing is checked during the first ``rate_grace`` seconds of waiting.
  This lives here rather than in the HTTP server so that it holds under every ASGI server.
- **Bodies parsed in memory.** Routes whose body FastAPI reads whole (JSON or url-encoded models)
  are capped at ``max_form_bytes``: a declared Content-Length over it is refused with 413 before a
  byte is read, and an undeclared (chunked) body is cut once it passes the cap. Byte uploads
  (routes that stream ``request.stream()``, multipart forms spooled to disk) are not capped here:
  the engine stops reading them at the upload's declared size.
- **Transfer codings.** A body coded with anything but ``chunked`` (``gzip, chunked``) is refused
  with 501 before any route sees it: the server undoes ``chunked`` only, and the still-compressed
  bytes were stored as the file's.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chunkd.frontends.http.headers import byte_count
from chunkd.frontends.jsondepth import DepthMeter, TooDeep
from chunkd.frontends.native.errors import refusal_response
from chunkd.frontends.refusals import Refusal, render_refusal

__all__ = ["BodyGuard"]


def _parsed_in_memory(scope: Scope) -> bool:
    """True when the route this request was routed to has a body model FastAPI reads whole
    (known once routing is done, which is before the route's first ``receive``)."""
    route = scope.get("route")
    return isinstance(route, APIRoute) and route.body_field is not None


_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def _content_type(scope: Scope) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == b"content-type":
            return str(value.decode("latin-1")).split(";")[0].strip().lower()
    return ""


def _transfer_coding(scope: Scope) -> str | None:
    """The first transfer coding other than ``chunked`` the request names, if any."""
    for key, value in scope.get("headers", []):
        if key.lower() == b"transfer-encoding":
            codings: list[str] = [c.strip() for c in bytes(value).decode("latin-1").split(",")]
            for coding in codings:
                if coding.lower() not in ("chunked", ""):
                    return coding
    return None


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key.lower() == b"content-length":
            return byte_count(value.decode("latin-1"))
    return None


class RateMeter:
    """Bytes received per second of waiting for them, over a sliding window of waiting time."""

    def __init__(self, min_rate: int, window: float, grace: float) -> None:
        self.min_rate = min_rate
        self.window = window
        self.grace = grace
        self.waited = 0.0
        self.received = 0
        # (waited, received) after each piece; the oldest kept one is at or before the window's start.
        self.samples: deque[tuple[float, int]] = deque([(0.0, 0)])

    def add(self, waited: float, size: int) -> None:
        self.waited += waited
        self.received += size
        self.samples.append((self.waited, self.received))
        start = self.waited - self.window
        while len(self.samples) > 1 and self.samples[1][0] <= start:
            self.samples.popleft()

    def too_slow(self) -> bool:
        if self.waited < self.grace:
            return False
        base_waited, base_received = self.samples[0]
        span = self.waited - max(base_waited, self.waited - self.window)
        # Bytes since the oldest kept sample: at most one piece more than the window holds (lenient).
        return span > 0 and (self.received - base_received) < self.min_rate * span


class BodyGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        idle_timeout: float,
        max_form_bytes: int,
        min_rate: int = 0,
        rate_window: float = 30.0,
        rate_grace: float = 30.0,
    ) -> None:
        self.app = app
        self.idle_timeout = idle_timeout
        self.max_form_bytes = max_form_bytes
        self.min_rate = min_rate
        self.rate_window = rate_window
        self.rate_grace = rate_grace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (coding := _transfer_coding(scope)) is not None:
            # The HTTP server undoes "chunked" only: a body also gzip-coded reached the routes still
            # compressed and was stored as the file's bytes. RFC 9112 §6.1: 501 for a transfer
            # coding the server does not understand.
            refusal = Refusal(
                501,
                "unsupported_transfer_coding",
                f"Transfer-Encoding {coding!r} is not supported: send the body plain or chunked",
                field="Transfer-Encoding",
                close=True,
            )
            await render_refusal(scope, refusal, refusal_response)(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        state = {"done": False, "received": 0, "cut": 0, "started": False, "cap": -1}
        depth: list[DepthMeter] = []  # one when this route parses a JSON body
        meter = RateMeter(self.min_rate, self.rate_window, self.rate_grace) if self.min_rate else None

        async def guarded_receive() -> Message:
            if state["done"]:
                return await receive()  # after the body: waiting for a disconnect is not bounded
            if state["cap"] == -1:  # first read: the route is known now
                state["cap"] = 0
                if _parsed_in_memory(scope) and _content_type(scope) != "multipart/form-data":
                    state["cap"] = self.max_form_bytes
                    if _content_type(scope) not in _FORM_TYPES:
                        depth.append(DepthMeter())
                    declared = _content_length(scope)
                    if declared is not None and declared > self.max_form_bytes:
                        state["cut"] = 413
                        raise _too_large(self.max_form_bytes)
            cap = state["cap"] or None
            waiting_since = time.monotonic()
            try:
                # asyncio.timeout, not wait_for: wait_for wraps every receive in a new task, which
                # cost more loop time than the rest of the per-chunk work together.
                async with asyncio.timeout(self.idle_timeout):
                    message = await receive()
            except TimeoutError:
                state["cut"] = 408
                raise _timeout(
                    f"the request body stalled for more than {self.idle_timeout:g} s and was cut off"
                ) from None
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                state["received"] += size
                if not message.get("more_body", False):
                    state["done"] = True
                elif meter is not None:
                    meter.add(time.monotonic() - waiting_since, size)
                    if meter.too_slow():
                        state["cut"] = 408
                        raise _timeout(
                            f"the request body arrived slower than {self.min_rate} bytes/s "
                            f"over {self.rate_window:g} s and was cut off"
                        )
                if cap is not None and state["received"] > cap:
                    state["cut"] = 413
                    raise _too_large(cap)
                if depth:
                    try:
                        depth[0].feed(message.get("body", b""))
                    except TooDeep as exc:
                        state["cut"] = 400
                        raise Refusal(400, exc.code, exc.message, field=exc.field, close=True) from None
            else:
                state["done"] = True
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                if state["cut"]:
                    # The rest of the body is never read: the connection cannot be reused.
                    message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except Refusal as refusal:
            # A frontend whose error handling let our cut escape: answer for it, in its dialect.
            if not state["cut"] or state["started"]:
                raise
            response = render_refusal(scope, refusal, refusal_response)
            await response(scope, receive, send)


def _timeout(message: str) -> Refusal:
    return Refusal(408, "body_timeout", message, field="body", close=True)


def _too_large(cap: int) -> Refusal:
    return Refusal(413, "too_large", f"the request body may be at most {cap} bytes", field="body", close=True)
