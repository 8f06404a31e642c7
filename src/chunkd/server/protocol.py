"""chunkd's HTTP/1.1 protocol for uvicorn: uvicorn's httptools protocol plus the limits it lacks.

uvicorn's ``h11_max_incomplete_event_size`` applies to its h11 protocol only; with httptools (the
fast parser chunkd runs) a request head can grow without bound, a connection may take forever to
send it, and a client that goes away mid-request is logged as ``Exception in ASGI application``
with a traceback. This subclass adds, per connection (and ``server/cycle.py``, per request: informational responses,
a send timeout, disconnects and failures as one line, responses cut short on purpose):

- **a cap on the request head** (request line + headers): past ``max_header_bytes`` the server
  answers ``431 Request Header Fields Too Large`` and closes, without buffering more than one read
  beyond the cap (httptools keeps a partial header in memory, so the raw bytes of an unfinished
  head are counted, not only the parsed ones);
- **a header timeout**: a head not complete ``header_timeout`` seconds after its first byte (or
  after the connection opened) is answered ``408 Request Timeout`` (silently closed when nothing
  was sent); idle keep-alive stays bounded by uvicorn's ``timeout_keep_alive``;
- **request trailers**, an ASGI extension (ASGI has no message for them, and uvicorn drops them):
  the scope of an HTTP/1.1 request carries ``scope["extensions"]["http.request.trailers"]``, a dict
  into which the server puts ``"headers"`` (``[(lowercased name, value), ...]``, the fields after the
  last chunk of a chunked body; empty for any other body) once the body has ended, before the app
  receives the last ``http.request`` message (``more_body=False``). llhttp reports trailer fields
  through the same ``on_header`` callback as the head's, after ``on_headers_complete``; they count
  against ``max_header_bytes`` like the head (a head and its trailers share the budget);
- **a cap on a chunked body's framing**: reads inside a body that carry no body byte (chunk-size
  lines, chunk extensions, trailer fields) may add up to at most ``max_header_bytes`` between two
  pieces of data, else ``431`` and close. httptools buffers an unfinished trailer field whole, so
  one endless trailer line grew the process by every byte sent;
- **a lingering close after an early response**: a response that starts before the request's body
  has all arrived (a 401, 413 or 400 before the bytes were read) says ``connection: close``, and
  the connection is closed once it is sent, lingering as after a refusal. uvicorn kept such a
  connection open and read the rest of the body to find the next request: all 100 MB of an
  upload refused at its first byte, and for as long as a client trickled it (every byte put off
  the keep-alive timeout), or, after ``Expect: 100-continue``, for ever;
- **idle connections give way at the concurrency limit**: when ``limit_concurrency`` connections
  are open, a new connection or request first closes the idle ones that hold the slots (waiting
  for a next request or their first head, no request in flight): those that never sent a byte,
  then partial heads (answered 408 as at their header timeout), then those kept alive after an
  answer, the oldest first within each. uvicorn counted idle
  connections against the limit and answered every new request 503 while they were open: 1,000
  silent connections from one address, opened again every ``header_timeout``, shut out every
  other client (seen under load: 300 idle connections beside 300 uploading clients); and a request
  still past the limit gets chunkd's 503 (JSON, ``Retry-After``, a log line a minute: ``overload``),
  not uvicorn's;
- **the request line's own answers** (RFC 9112 §3, RFC 9110 §15.6.6): a request-target longer
  than ``max_header_bytes`` is ``414 URI Too Long`` (it was a 431, as for the whole head), and a
  version other than HTTP/1.0 or 1.1 (``HTTP/2.0``, which llhttp took as an HTTP/1.x request
  needing no Host, ``HTTP/3.0``, HTTP/2's preface) is ``505 HTTP Version Not Supported`` (it
  was served, or a 400);
- **no Transfer-Encoding in HTTP/1.0** (RFC 9112 §6.1): such a request is answered ``400`` and
  closed; llhttp read its body as chunked, while an HTTP/1.0 intermediary takes the same bytes
  for a request without a body and a next request (smuggling);
- **an absolute-form target's authority is the Host** (RFC 9112 §3.2.2): ``GET http://a/x``
  reaches the app with ``host: a`` whatever Host field came with it (a userinfo in it is a 400);
  uvicorn passed the field on, and the URLs handed out named another site;
- **one Host field**: a request with two, or an HTTP/1.1 request with none, is answered ``400``
  and closed (RFC 9112 §3.2), where uvicorn passed both on and the app took the first;
- **refusals in order**: a request the server itself refuses (not HTTP, too large a head, no
  Host, a malformed chunked body) that was pipelined behind others is answered after their
  responses, each request its own answer, and the connection then closes. uvicorn wrote the
  refusal at once, ahead of the responses still owed: the client took it for the answer to its
  first request, and those responses, written after the lingering close had begun, failed with
  a traceback;
- **an Upgrade it does not perform is ignored** (RFC 9110 §7.8: anything but a WebSocket, e.g.
  ``h2c``): the request is read and answered as HTTP/1.1, its body included, and what follows it
  is the next request. llhttp ends such a request at its head and takes the rest of the
  connection for the other protocol, which uvicorn dropped: the app got an empty body for a PUT
  of ``Content-Length: 5`` (a part refused as 0 bytes, a whole file stored empty), and a request
  pipelined behind it in the same read was never answered.

It relies on uvicorn's ``HttpToolsProtocol`` internals (parser callbacks, ``_start_asgi_task``,
``RequestResponseCycle``, ``pipeline``, its ``parser`` attribute); tests/security/test_server_limits.py
runs it end to end and tests/security/test_http_framing.py attacks it (and granian) with malformed,
smuggled and pipelined requests, so a uvicorn release that changes them fails there first. The
minimum body rate is enforced by the body guard (``frontends/guards/body.py``), which works under
every ASGI server.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, Literal

import httptools
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import (
    HttpToolsProtocol,
    RequestResponseCycle,
)

from chunkd.server.cycle import INFORMATIONAL, CycleApp
from chunkd.server.overload import overloaded
from chunkd.server.wire import body_framing, plain_response, proxied

__all__ = ["INFORMATIONAL", "TRAILERS", "ChunkdHttpToolsProtocol", "protocol_class"]

TRAILERS = "http.request.trailers"
LINGER_SECONDS = 2.0  # after a refusal (431, 408): longest time input is still drained before closing
LINGER_BYTES = 1024 * 1024  # ... and most bytes drained
log = logging.getLogger("chunkd.server")


class _HeadTooLarge(Exception):
    """Raised inside a parser callback to stop parsing a head that passed the cap."""


class _Refused(Exception):
    """Raised inside a parser callback to refuse the request being parsed with ``status`` (the
    message says why, to the client)."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


# llhttp's reasons for a request line whose version is not HTTP/1.x (HTTP/1.2, 3.0, 9.9) or that
# is HTTP/2's connection preface: 505 HTTP Version Not Supported (RFC 9110 §15.6.6), not a 400.
_VERSION_ERRORS = frozenset({"Invalid HTTP version", "Pause on PRI/Upgrade"})


class ChunkdHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head cap, a header timeout, quiet disconnects and
    informational responses (see the module docstring). Limits are class attributes, set by
    :func:`protocol_class`."""

    max_header_bytes: ClassVar[int] = 64 * 1024
    header_timeout: ClassVar[float] = 10.0
    # Offer the informational-response extension: always (True), never (False), or "auto": to
    # requests that show no proxy on their way (see ``_proxied``).
    informational: ClassVar[bool | Literal["auto"]] = "auto"
    send_timeout: ClassVar[float] = 60.0
    min_send_rate: ClassVar[int] = 1024  # bytes a second

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_head = True  # between a message's end (or the connection's start) and its head's end
        self._head_raw = 0  # raw bytes received while awaiting the head (an upper bound of its size)
        self._head_parsed = 0  # bytes of request line and headers the parser handed over
        self._target_bytes = 0  # bytes of the request-target the parser handed over
        self._header_timer: asyncio.TimerHandle | None = None
        self._lingering = 0  # after a refusal: bytes still read and dropped before closing
        self._trailers: list[tuple[bytes, bytes]] = []  # the current message's trailer fields
        self._trailers_extension: dict[object, object] | None = None  # the current scope's, to fill at its end
        self._framing = 0  # bytes inside the current body since its last data (chunk lines, trailers)
        self._progressed = False  # whether the parser reached body data or a new message during this read
        self.close_after_response = False  # the response came before the request's body ended
        self._idle_since = 0.0  # when it last began waiting for a request (the oldest idle give way first)
        self._served = False  # whether a response was sent on it (kept alive since)
        self._running: RequestResponseCycle | None = None  # the cycle whose app runs (or ran last)
        self._refusal: bytes | None = None  # a refusal waiting for the responses owed before it
        self._ignored_upgrade_framing: bytes | None = None  # the body framing of an ignored Upgrade's request
        self._reframing = False  # while a fresh parser is told that framing (its callbacks are not a request)

    # ---- connection ----
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._idle_since = self.loop.time()
        self._arm_header_timer()  # a connection that never sends a head is closed too
        self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    # ---- the concurrency limit ----
    def _idle(self) -> bool:
        """No request in flight: waiting for a (next) head, answered and not lingering."""
        return (
            self._awaiting_head
            and not self._lingering
            and (self.cycle is None or self.cycle.response_complete)
            and not self.transport.is_closing()
        )

    def _make_room(self) -> None:
        """At ``limit_concurrency`` open connections, close idle ones until there is room for one
        more request (uvicorn answers a request 503 while the count is at the limit)."""
        limit = self.limit_concurrency
        if limit is None or len(self.connections) < limit:
            return
        idle = [c for c in self.connections if c is not self and isinstance(c, ChunkdHttpToolsProtocol) and c._idle()]
        idle.sort(key=lambda c: (c._reclaim_rank(), c._idle_since))
        for other in idle[: len(self.connections) - limit + 1]:
            other._give_way()

    def _reclaim_rank(self) -> int:
        """Which idle connections go first: those that never sent a byte, then partial heads, then
        those kept alive after an answer (a client may be sending its next request on one just as it
        closes, and see the connection fail)."""
        if self._head_raw:
            return 1
        return 2 if self._served else 0

    def _give_way(self) -> None:
        if self._head_raw:
            self._answer_and_close(plain_response(408, "the request head was not complete in time"))
        else:
            self.transport.close()
        self.connections.discard(self)  # at once: its connection_lost comes on a later turn of the loop

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingering -= len(data)  # read and dropped (see _answer_and_close)
            if self._lingering <= 0:
                self.transport.close()
            return
        if self._refusal is not None:
            self.flow.pause_reading()  # input after a refused request is not parsed (see _refuse)
            return
        if self._awaiting_head:
            self._head_raw += len(data)
            if self._header_timer is None:
                self._arm_header_timer()
        self._unset_keepalive_if_required()
        self._progressed = False
        unparsed = memoryview(data)
        while unparsed:
            try:
                self.parser.feed_data(unparsed)
                break
            except httptools.HttpParserCallbackError as exc:
                if isinstance(exc.__context__, _HeadTooLarge):
                    self._refuse_head(trailers=not self._awaiting_head)
                    return
                if isinstance(exc.__context__, _Refused):
                    refused = exc.__context__
                    log.info("request from %s refused: answered %d (%s)", self._peer(), refused.status, refused)
                    self._refuse(plain_response(refused.status, str(refused)))
                    return
                self._bad_request(exc)
                return
            except httptools.HttpParserError as exc:
                self._bad_request(exc)
                return
            except httptools.HttpParserUpgrade as upgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                    return
                # What followed the request is parsed in turn: in this loop, as a read may hold
                # a thousand such requests (a recursion for each ran out of stack).
                self._ignore_upgrade()
                unparsed = unparsed[upgrade.args[0] :]
        if self.transport.is_closing():
            return
        if self._awaiting_head and self._head_raw > self.max_header_bytes:
            self._refuse_head()  # an unfinished head already past the cap: stop before httptools buffers more
        elif not self._awaiting_head and not self._progressed:
            # A read inside a body that gave no body byte is framing (a chunk-size line, extensions,
            # trailer fields): counted from the body's last data, so that an unfinished trailer field,
            # which httptools buffers whole, is cut at one read past the cap.
            self._framing += len(data)
            if self._framing > self.max_header_bytes:
                self._refuse_head(trailers=True)

    def _ignore_upgrade(self) -> None:
        """Go on as HTTP/1.1 after a request whose Upgrade is not performed (see the module
        docstring): llhttp stopped at its head. When the request has a body, a fresh parser is
        told its framing (the callbacks of that head are no request's), so that what follows is
        parsed as its body, then the next requests."""
        framing, self._ignored_upgrade_framing = self._ignored_upgrade_framing, None
        if framing is not None:
            version = self.parser.get_http_version().encode()
            self.parser = httptools.HttpRequestParser(self)
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn's parser
            self._reframing = True
            self.parser.feed_data(b"POST / HTTP/%s\r\n%s\r\n\r\n" % (version, framing))

    def _bad_request(self, exc: Exception) -> None:
        reason = str(exc.__context__ or exc)  # a callback's own error, not "User callback error"
        if reason in _VERSION_ERRORS:
            log.info("request from %s in another HTTP version: answered 505", self._peer())
            self._refuse(plain_response(505, "this server speaks HTTP/1.1 (and 1.0) only"))
            return
        self.logger.warning("Invalid HTTP request received: %s", reason)
        self._refuse(plain_response(400, f"Invalid HTTP request received: {reason}"))

    def _refuse_head(self, *, trailers: bool = False) -> None:
        self._cancel_header_timer()
        what = "chunked body framing (extensions, trailers)" if trailers else "request head"
        log.info("%s over %d bytes from %s: answered 431", what, self.max_header_bytes, self._peer())
        text = (
            f"the chunk extensions and trailer fields of a chunked body may be at most {self.max_header_bytes} bytes"
            if trailers
            else f"the request line and headers may be at most {self.max_header_bytes} bytes"
        )
        self._refuse(plain_response(431, text))

    def _refuse(self, response: bytes) -> None:
        """Answer a request the server refuses with ``response`` and close the connection,
        after the responses still owed to the requests pipelined before it (see the module
        docstring): until then nothing more is read."""
        self._cancel_header_timer()
        broken = self.cycle if self.cycle is not None and not self._awaiting_head else None
        if broken is not None and not broken.response_complete:
            # The fault is in the body of the message being read: its app never gets the rest.
            queued = [entry for entry in self.pipeline if entry[0] is broken]
            for entry in queued:
                self.pipeline.remove(entry)  # not started yet: it never will be
            if not queued:
                # Running: told at once that the client is gone (as uvicorn does when a connection
                # is lost), so it ends and lets go of what it holds; a response it began cannot
                # be followed by another, so the connection just ends.
                broken.disconnected = True
                broken.message_event.set()
                if broken.response_started:
                    response = b""
        if self._answers_owed():
            self._refusal = response
            self.flow.pause_reading()
            return
        self._answer_and_close(response)

    def _answers_owed(self) -> bool:
        """Whether responses to earlier requests on this connection are still to be written."""
        running = self._running
        return bool(self.pipeline) or (
            running is not None and not running.response_complete and not running.disconnected
        )

    def _answer_and_close(self, response: bytes) -> None:
        """Send ``response`` and close, lingering as web servers do: closing a socket with unread
        input makes the kernel send a reset, which can destroy the response before the client
        reads it. So the write side is shut, then input is read and dropped until the client
        closes, ``LINGER_BYTES`` more arrived, or ``LINGER_SECONDS`` passed."""
        self._cancel_header_timer()
        self.transport.write(response)
        self.linger()

    def linger(self) -> None:
        """Shut the write side and close once the client did, or ``LINGER_BYTES`` more arrived, or
        ``LINGER_SECONDS`` passed (see ``_answer_and_close``)."""
        self._cancel_header_timer()
        self._unset_keepalive_if_required()
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingering = LINGER_BYTES
        self.flow.resume_reading()  # paused while the app did not read the body: input is drained now
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"

    # ---- header timeout ----
    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._awaiting_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head arrives while the previous request is still answered: wait for it.
            self._arm_header_timer()
            return
        if self._head_raw:
            log.info("request head from %s not complete in %g s: answered 408", self._peer(), self.header_timeout)
            self._answer_and_close(plain_response(408, "the request head was not complete in time"))
            return
        self.transport.close()

    # ---- parser callbacks ----
    def on_message_begin(self) -> None:
        if self._reframing:
            return
        super().on_message_begin()
        self._progressed = True
        self._framing = 0
        self._head_parsed = 0
        self._target_bytes = 0
        self._trailers = []
        self._trailers_extension = None

    def on_url(self, url: bytes) -> None:
        if self._reframing:
            return
        self._target_bytes += len(url)
        if self._target_bytes > self.max_header_bytes:
            # RFC 9112 §3 (a MUST): a target longer than the server parses is a 414, not a 431.
            raise _Refused(414, f"the request target may be at most {self.max_header_bytes} bytes")
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._reframing:
            return
        self._count_head(len(name) + len(value) + 4)  # "name: value\r\n"
        if not self._awaiting_head:
            # After the head: a trailer field of a chunked body. Kept apart (uvicorn would append it
            # to the scope's headers, which the app has read long ago).
            self._trailers.append((name.lower(), value))
            return
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        self._head_parsed += size
        if self._head_parsed > self.max_header_bytes:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        if self._reframing:
            self._reframing = False  # the body of the request whose Upgrade was ignored comes next
            return
        if (version := self.parser.get_http_version()) not in ("1.0", "1.1"):
            # llhttp takes "HTTP/2.0" and "HTTP/0.9" request lines with a head for HTTP/1.x
            # requests (no Host needed, keep-alive assumed).
            raise _Refused(505, f"this server speaks HTTP/1.1 (and 1.0) only, not HTTP/{version}")
        if version == "1.0" and any(name == b"transfer-encoding" for name, _ in self.headers):
            # RFC 9112 §6.1 (a MUST): its framing is faulty. HTTP/1.0 has no chunked coding: a 1.0
            # intermediary in front reads no body there (or Content-Length's), and what chunkd
            # took for the chunked body it read as the next request.
            raise _Refused(400, "an HTTP/1.0 request has no Transfer-Encoding: send Content-Length")
        hosts = sum(1 for name, _ in self.headers if name == b"host")
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            # RFC 9112 §3.2 (a MUST): the URLs handed out (Location, file_url) are built from the
            # first Host, and a proxy in front may have routed or checked by another one.
            raise _Refused(400, "an HTTP/1.1 request has exactly one Host header field")
        if (authority := _target_authority(self.url)) is not None:
            # RFC 9112 §3.2.2 (a MUST): for an absolute-form target the server ignores Host and
            # uses the target's authority. The URLs handed out are built from the Host field,
            # which named another site than the one the request was sent to.
            fields = [(name, value) for name, value in self.headers if name != b"host"]
            self.headers[:] = [(b"host", authority), *fields]
        self._awaiting_head = False
        self._cancel_header_timer()
        offered = self.informational is True or (self.informational == "auto" and not proxied(self.scope["headers"]))
        if offered and self.parser.get_http_version() == "1.1":
            # 1xx responses are never sent to an HTTP/1.0 client (RFC 9110 §15.2), so only 1.1 gets the extension.
            self.scope.setdefault("extensions", {})[INFORMATIONAL] = {}
        if self.parser.get_http_version() == "1.1":
            extension: dict[object, object] = {}
            self.scope.setdefault("extensions", {})[TRAILERS] = self._trailers_extension = extension
        else:
            # Nor uvicorn's "100 Continue" (RFC 9110 §10.1.1: an HTTP/1.0 request's 100-continue
            # is ignored): a 1.0 client takes the first status line it reads for the answer.
            self.expect_100_continue = False
        self._make_room()  # before uvicorn's own check of the limit
        super().on_headers_complete()
        if self.parser.should_upgrade() and not self._should_upgrade() and self.scope["method"] != "CONNECT":
            self._ignored_upgrade_framing = body_framing(self.headers)

    def on_body(self, body: bytes) -> None:
        self._progressed = True
        self._framing = 0
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._ignored_upgrade_framing is not None:
            return  # llhttp ends an Upgrade's request at its head: its body is still to come (_ignore_upgrade)
        if self._trailers_extension is not None:
            # Before the body's end is handed to the app (uvicorn's on_message_complete does that).
            self._trailers_extension["headers"] = self._trailers
        super().on_message_complete()
        self._awaiting_head = True
        self._head_raw = 0

    def on_response_complete(self) -> None:
        if self._refusal is not None and not self.transport.is_closing():
            if self.pipeline:  # the next request pipelined before the refused one is answered first
                super().on_response_complete()
                self.flow.pause_reading()
                return
            self.server_state.total_requests += 1
            refusal, self._refusal = self._refusal, None
            self._answer_and_close(refusal)
            return
        if self.close_after_response and not self.transport.is_closing():
            # The request's body had not ended when the response began: what is left of it is
            # not read to find a next request (it may be gigabytes, or trickle for ever).
            self.server_state.total_requests += 1
            self.linger()
            return
        super().on_response_complete()
        self._idle_since = self.loop.time()
        self._served = True

    def body_pending(self, cycle: RequestResponseCycle) -> bool:
        """Whether ``cycle``'s request body has not all arrived yet."""
        return cycle is self.cycle and cycle.more_body and not cycle.disconnected and not self._awaiting_head

    def close_after(self, cycle: RequestResponseCycle) -> None:
        """Close the connection once ``cycle``'s response is sent (``on_response_complete``
        lingers), rather than read the rest of its request's body to find a next request. Called
        after the response's start: uvicorn, seeing its ``connection: close``, would close the
        transport at once at the response's end, a reset that can destroy the response before the
        client, still sending, reads it."""
        self.close_after_response = True
        cycle.keep_alive = True

    # ---- the ASGI task ----
    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self._running = cycle
        if app is service_unavailable:  # uvicorn's answer past limit_concurrency: chunkd's (overload)
            app = overloaded
        super()._start_asgi_task(cycle, CycleApp(app, cycle, self.send_timeout, self.min_send_rate, self))

    # Set when the server asks the connection to end (its shutdown began): a request cancelled
    # after that was cut by the shutdown's grace, not by a fault.
    stopping = False

    def shutdown(self) -> None:
        self.stopping = True
        super().shutdown()


def _target_authority(target: bytes) -> bytes | None:
    """The authority (``host[:port]``) of an absolute-form request-target, None for any other."""
    if not target[:8].lower().startswith((b"http://", b"https://")):
        return None
    url = httptools.parse_url(target)
    if not url.host:
        raise _Refused(400, "the request target names no host")
    if url.userinfo is not None:  # RFC 9110 §4.2.4: an error, not credentials
        raise _Refused(400, "the request target has no userinfo (user@host)")
    host = b"[%s]" % url.host if b":" in url.host else url.host
    return host if url.port is None else b"%s:%d" % (host, url.port)


def protocol_class(
    *,
    max_header_bytes: int,
    header_timeout: float,
    informational: bool | Literal["auto"] = "auto",
    send_timeout: float = 60.0,
    min_send_rate: int = 1024,
) -> type[ChunkdHttpToolsProtocol]:
    """A protocol class with these limits, to pass to uvicorn as ``http=``; ``informational``:
    offer informational responses to the app: always, never, or ``"auto"`` (to requests that came
    through no proxy)."""
    return type(
        "ChunkdHttpToolsProtocol",
        (ChunkdHttpToolsProtocol,),
        {
            "max_header_bytes": max_header_bytes,
            "header_timeout": header_timeout,
            "informational": informational,
            "send_timeout": send_timeout,
            "min_send_rate": min_send_rate,
        },
    )
