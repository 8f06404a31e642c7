"""The app's run for one request/response cycle of chunkd's HTTP/1.1 protocol (``protocol.py``),
which adds, per request:

- **a response cut short on purpose** (a download whose file was deleted while it was read; the
  app logged why and marked it, ``CUT_SHORT``) closes the connection without a line of its own;
- **disconnects as one info line**: an exception escaping the app after the client went away is
  logged as ``client disconnected: METHOD path (ExceptionType), request id ID`` on ``chunkd.server``
  (the id of the request's access line);
- **a send timeout**: a response whose client takes less than ``min_send_rate`` bytes a second (at
  least one byte) over ``send_timeout`` seconds, while the server waits to write more, is cut off
  (the connection aborted, one info line). A client that stopped reading a download held its
  connection slot, file descriptor and a few MiB of buffers for ever: 59 of them took all 60 slots
  of a server (``limit_concurrency``) for as long as they liked;
- **informational responses**, an ASGI extension: the scope advertises
  ``scope["extensions"]["http.response.informational"] = {}`` and the app may send
  ``{"type": "http.response.informational", "status": 100..199, "headers": [(name, value), ...]}``
  any number of times before ``http.response.start``; each is written to the transport at once,
  also while the request body is still arriving (e.g. ``104 Upload Resumption Supported``);
- **a failed request answered cleanly**: an exception from the app while its client is there is
  one error line, ``request failed: METHOD path (request id ID)`` with the traceback, and, when no
  response had started, a JSON ``500`` naming the request id; the connection then closes
  lingering. uvicorn answered a text 500 and closed at once: a client still sending its body got
  a reset, often instead of the answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import traceback
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, RequestResponseCycle

from chunkd.scope import CUT_SHORT, REQUEST_ID, loggable_path, request_id_of
from chunkd.server.wire import status_line

if TYPE_CHECKING:
    from chunkd.server.protocol import ChunkdHttpToolsProtocol

__all__ = ["INFORMATIONAL", "ClientStoppedReading", "CycleApp"]

INFORMATIONAL = "http.response.informational"
log = logging.getLogger("chunkd.server")


class ClientStoppedReading(ConnectionError):
    """The client took (almost) nothing of the response for the send timeout."""


class CycleApp:
    """Runs the app for one request/response cycle: informational responses are written straight
    to the transport; an exception after the client went away is one info line, not a traceback."""

    def __init__(
        self,
        app: Any,
        cycle: RequestResponseCycle,
        send_timeout: float,
        min_send_rate: int,
        connection: ChunkdHttpToolsProtocol | None = None,
    ) -> None:
        self.app = app
        self.cycle = cycle
        self.connection = connection
        self.send_timeout = send_timeout
        self.min_send_rate = min_send_rate

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        cycle = self.cycle

        async def send_with_informational(message: Any) -> None:
            if message["type"] == INFORMATIONAL:
                self._informational(message)
            elif message["type"] == "http.response.start" and self._body_pending():
                await self._start_early(send, message)
            elif cycle.flow.write_paused and message["type"] == "http.response.body":
                await self._watched(send, message)  # it waits for the client to read: watched
            else:
                await send(message)

        try:
            await self.app(scope, receive, send_with_informational)
            if cycle.response_started and not cycle.response_complete and scope.get("state", {}).get(CUT_SHORT):
                # A download whose file went away mid-way (it logged why): closed here, without
                # uvicorn's "ASGI callable returned without completing response" on top.
                cycle.transport.close()
                cycle.disconnected = True
        except asyncio.CancelledError:
            if self.connection is None or not self.connection.stopping:
                raise
            # The shutdown's grace ran out with this request in flight (uvicorn cancels it): a 503
            # the client may retry elsewhere or later, not a 500 and a traceback ("Exception in
            # ASGI application"). What it had sent and was not committed is not kept.
            log.warning(
                "request cut by the shutdown: %s %s, request id %s",
                scope.get("method"),
                loggable_path(scope.get("path", "")),
                request_id_of(scope),
            )
            if not cycle.response_started:
                body = b"the server is shutting down; retry\n"
                headers = [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", b"5"),
                    (b"x-request-id", request_id_of(scope).encode()),  # as its access line says it
                    (b"connection", b"close"),
                ]
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                await send({"type": "http.response.body", "body": body})
            else:
                cycle.transport.close()
        except BaseException as exc:
            if not isinstance(exc, Exception):
                raise
            if not cycle.disconnected:
                await self._failed(scope, exc, send_with_informational)
                return
            log.info(
                "client disconnected: %s %s (%s), request id %s",
                scope.get("method"),
                loggable_path(scope.get("path", "")),
                type(exc).__name__,
                request_id_of(scope),
            )
            log.debug("after the disconnect the app raised", exc_info=exc)
            # The error's frames hold the response and the chunk it was sending, in a reference
            # cycle the collector reaches late: freed now, not minutes of downloads later.
            traceback.clear_frames(exc.__traceback__)

    async def _failed(self, scope: Any, exc: Exception, send: Any) -> None:
        """The app raised (a bug) while its client was still there: one error line with the
        traceback and the request's id, and, when no response had started, a JSON 500 naming that
        id. uvicorn answered its own text 500 and closed the connection at once, a reset that
        could destroy the answer while the client was still sending its body (or, after a 500 the
        app's error middleware sent before it re-raised, cut the lingering close short). Here the
        connection closes gracefully: lingering after the answer, or after a response the app
        could not finish (its client sees it end short)."""
        cycle, connection = self.cycle, self.connection
        request_id = str(scope.get("state", {}).get(REQUEST_ID) or f"{random.getrandbits(128):032x}")
        method, path = scope.get("method"), loggable_path(scope.get("path", ""))
        log.error("request failed: %s %s (request id %s)", method, path, request_id, exc_info=exc)
        traceback.clear_frames(exc.__traceback__)  # frames holding the request's buffers: freed now
        if not cycle.response_started:
            message = f"the server failed to answer this request (request id {request_id}); it was logged"
            body = json.dumps({"error": {"code": "internal_error", "message": message, "requestId": request_id}})
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
                (b"connection", b"close"),
            ]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            if connection is not None:
                connection.close_after(cycle)  # lingering once the 500 is sent, early or not
            await send({"type": "http.response.body", "body": body.encode()})
        elif not cycle.response_complete:
            cycle.disconnected = True  # the response cannot be finished (uvicorn must not add its own line)
            if connection is not None:
                connection.linger()
            else:
                cycle.transport.close()
        # A response sent whole: its request's body had been read (else its close was arranged
        # as it started), so the connection is as reusable as after any other answer.

    def _body_pending(self) -> bool:
        """Whether the request's body has not all arrived yet (a response starting now is early)."""
        return self.connection is not None and self.connection.body_pending(self.cycle)

    async def _start_early(self, send: Any, message: Any) -> None:
        """Start a response that comes before the request's body has all arrived: it says
        ``connection: close``, and the connection closes after it, lingering."""
        headers = list(message.get("headers", []))
        if not any(name.lower() == b"connection" and b"close" in value.lower() for name, value in headers):
            headers.append((b"connection", b"close"))
        await send({**message, "headers": headers})
        assert self.connection is not None  # only called when _body_pending()
        self.connection.close_after(self.cycle)

    async def _watched(self, send: Any, message: Any) -> None:
        """``send(message)``, cut off when the client takes less than the minimum rate over the
        send timeout (judged by what leaves the transport's write buffer)."""
        transport = self.cycle.transport
        sending = asyncio.ensure_future(send(message))
        left = transport.get_write_buffer_size()
        needed = max(1, int(self.min_send_rate * self.send_timeout))
        while True:
            done, _ = await asyncio.wait({sending}, timeout=self.send_timeout)
            if done:
                sending.result()
                return
            now_left = transport.get_write_buffer_size()
            if left - now_left < min(needed, left):
                sending.cancel()
                self.cycle.disconnected = True
                transport.abort()
                raise ClientStoppedReading(f"the client took under {needed} bytes in {self.send_timeout:g} s")
            left = now_left

    def _informational(self, message: Any) -> None:
        cycle = self.cycle
        if cycle.response_started:
            raise RuntimeError("an informational response must come before http.response.start")
        status = message.get("status")
        if not isinstance(status, int) or not 100 <= status <= 199 or status == 101:
            raise RuntimeError(f"informational responses have a status of 100-199 other than 101, not {status!r}")
        offered = INFORMATIONAL in cycle.scope.get("extensions", {})  # not to HTTP/1.0, not when turned off
        if not offered or cycle.disconnected or cycle.transport.is_closing():
            return
        content = [status_line(status)]
        for name, value in message.get("headers", []):
            if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
                raise RuntimeError("invalid header in an informational response")
            content.extend([bytes(name).lower(), b": ", bytes(value), b"\r\n"])
        content.append(b"\r\n")
        if status == 100:
            cycle.waiting_for_100_continue = False  # sent by the app: uvicorn must not send a second one
        cycle.transport.write(b"".join(content))
