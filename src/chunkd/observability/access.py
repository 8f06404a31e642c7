"""One ASGI middleware, outside everything else, that writes the access log and the HTTP metrics.

Per request it:

- takes the request id from ``X-Request-Id`` when it is sane (a short token of safe characters,
  so nothing a client sends can forge a log line), else makes one; echoes it in the response's
  ``X-Request-Id`` and leaves it in ``scope["state"]["request_id"]``;
- counts body bytes in and out, and upload body bytes into ``chunkd_bytes_received_total`` as
  they are read;
- at the end, counts the request by route *template* (``/v1/files/{file_id}``, never the raw path:
  bounded label cardinality) and writes one log line: time, request id, client, method, route,
  status, bytes in/out, duration, owner, key id and upload id when known.

Nothing secret reaches the line: the path is logged only as its route template (so no query
string, no ``signature``, no id a client made up), and no header but ``X-Request-Id`` is read.

Why hand-written rather than a library's middleware (e.g. prometheus-fastapi-instrumentator): it
is one pass for both the log and the metrics, it sits outside Starlette's error middleware (so
500s are counted and logged too), and it knows which bodies are file bytes and for which frontend.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any, cast

from fastapi import routing as fastapi_routing
from fastapi.routing import APIRoute
from starlette.routing import Mount, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chunkd.metrics import OTHER, Metrics
from chunkd.observability.logwriter import BatchingHandler
from chunkd.scope import CURRENT_REQUEST_ID, REQUEST_ID

__all__ = ["UNMATCHED", "AccessLog", "configure_access_logger", "log"]

log = logging.getLogger("chunkd.access")

UNMATCHED = "unmatched"  # the route label of a request no route matches (404s of unknown paths)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Checked with fullmatch: "$" also matches before a trailing newline, which would end a log line
# early (a path parameter "abc%0A" is "abc\n").
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:@+=/-]{1,128}$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_SAFE_OWNER = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")
_SAFE_KEY_ID = re.compile(r"^[A-Za-z0-9._@:-]{1,160}$")
# Path parameters that name an upload, in the frontends' routes.
_ID_PARAMS = ("file_id", "file_uuid", "media_id", "upload_id")
_PARSED_TYPES = frozenset({"application/json", "application/x-www-form-urlencoded"})
_SAFE_CLIENT = re.compile(r"^[A-Za-z0-9:._%\[\]-]{1,64}$")
_OWN_HANDLER = "chunkd.access.stdout"


def configure_access_logger() -> None:
    """Send the ``chunkd.access`` logger's lines to stdout, unless logging for it was configured
    already (by an application embedding chunkd, or an earlier app in this process)."""
    if log.handlers:
        return
    handler = BatchingHandler(sys.stdout)
    handler.set_name(_OWN_HANDLER)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # the line is complete; a root handler would print it a second time


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class AccessLog:
    """The outermost middleware (see the module docstring). ``frontends``: route-template prefix →
    frontend name, for the bytes-received counter; ``log_format``: ``text`` (logfmt) or ``json``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        frontends: dict[str, str],
        log_format: str = "text",
        enabled: bool = True,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.frontends = sorted(frontends.items(), key=lambda item: -len(item[0]))
        self.json = log_format == "json"
        self.enabled = enabled
        self._frontend_of: dict[str, str | None] = {}
        self._templates: list[tuple[re.Pattern[str], str]] | None = None
        self._second = -1
        self._second_text = ""
        self.active = 0  # requests in flight (any, logged or not)
        self._idle: asyncio.Event | None = None  # set when ``active`` drops to 0, while ``drained`` waits

    async def drained(self, timeout: float) -> bool:
        """Wait until no request is in flight, for at most ``timeout`` seconds; whether none is.
        At shutdown, uvicorn cancels the requests its grace did not see end and goes straight on
        to the app's shutdown: their clean-up (a lock's release, a writer's abort) still runs after
        that, and found the locks and stores it needs closed (a TypeError and a 500)."""
        if self.active == 0:
            return True
        self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        finally:
            self._idle = None
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.active += 1
        try:
            await self._logged(scope, receive, send)
        finally:
            self.active -= 1
            if self.active == 0 and self._idle is not None:
                self._idle.set()

    async def _logged(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        wall = time.time()
        # Routing rewrites these inside mounts; kept to find the template of a request not routed.
        path, root_path = scope["path"], scope.get("root_path", "")
        given = _header(scope, b"x-request-id")
        if given is not None and _REQUEST_ID.fullmatch(given):
            request_id = given.decode()
        else:
            # Unique, not secret (it is echoed and logged): the process's Mersenne Twister, seeded
            # from os.urandom, instead of a getrandom system call per request.
            request_id = f"{random.getrandbits(128):032x}"
        state = scope.setdefault("state", {})
        state[REQUEST_ID] = request_id
        current = CURRENT_REQUEST_ID.set(request_id)  # for what the request runs; reset at its end
        echoed = request_id.encode()
        # [bytes in, bytes out, status, upload-body frontend (None: not an upload body), decided?,
        #  the response's Content-Length, the client went away?]
        seen: list[Any] = [0, 0, 0, None, False, 0, False]

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                seen[6] = True
            elif message["type"] == "http.request":
                size = len(message.get("body", b""))
                seen[0] += size
                if not seen[4]:  # first read: routing is done, the route is known
                    seen[4] = True
                    seen[3] = self._upload_frontend(scope)
                if seen[3] is not None and size:
                    self.metrics.body_bytes(seen[3], size)
            return message

        async def counting_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.body":
                seen[1] += len(message.get("body", b""))
            elif kind == "http.response.start":
                # A client seen gone before the answer began never gets it (the server drops it):
                # 499, as nginx logs it, whatever the route made of its cut body (FastAPI's body
                # reader answers 400, "There was an error parsing the body").
                seen[2] = 499 if seen[6] else message["status"]
                headers = []
                for key, value in message.get("headers", []):
                    lower = key.lower()
                    if lower == b"content-length" and value.isdigit():
                        seen[5] = int(value)
                    if lower != b"x-request-id":
                        headers.append((key, value))
                headers.append((b"x-request-id", echoed))
                message["headers"] = headers
            elif kind == "http.response.pathsend":  # the server sends the file itself: count its length
                seen[1] += seen[5]
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        except BaseException as exc:
            if not seen[2]:
                # A request whose client went away mid-body ends in an error of the body's reader:
                # 499 as nginx logs it, not a 500 an operator's alert would count as a fault; one
                # cancelled (by a shutdown whose grace ran out) is answered 503 by the server.
                seen[2] = 499 if seen[6] else 503 if isinstance(exc, asyncio.CancelledError) else 500
            raise
        finally:
            CURRENT_REQUEST_ID.reset(current)
            status = seen[2] or 499  # no response at all: the client went away first
            route = self._route(scope, path, root_path)
            method = scope["method"] if scope["method"] in METHODS else OTHER
            duration = time.perf_counter() - started
            self.metrics.request_done(route, method, status, duration)
            if self.enabled and log.isEnabledFor(logging.INFO):
                line = self._line(scope, wall, request_id, method, route, status, seen[0], seen[1], duration)
                handlers = log.handlers
                if len(handlers) == 1 and handlers[0].name == _OWN_HANDLER and not log.filters:
                    # Only our own writer listens: hand it the line (a LogRecord costs more than
                    # everything else here together).
                    cast(BatchingHandler, handlers[0]).write(line)
                else:
                    # makeRecord + handle: log.info without its stack walk for the caller's line.
                    log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, line, (), None))

    def _timestamp(self, wall: float) -> str:
        """ISO 8601 UTC with milliseconds; the part up to the second is formatted once a second."""
        second = int(wall)
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((wall - second) * 1000):03d}Z"

    def _route(self, scope: Scope, path: str, root_path: str) -> str:
        route = scope.get("route")
        if route is not None:
            return str(route.path)
        # Not routed: a plain Starlette route or mount (/openapi.json, the docs assets), or answered
        # by a middleware before routing (a 429, a CORS preflight). Find the template the path
        # would have taken (a scan of the routes, only for these requests).
        if self._templates is None:
            self._templates = _route_templates(scope.get("app"))
        route_path = path[len(root_path) :] if root_path and path.startswith(root_path) else path
        for pattern, template in self._templates:
            if pattern.match(route_path):
                return template
        return UNMATCHED

    def _upload_frontend(self, scope: Scope) -> str | None:
        """The frontend whose upload body this request carries, or None (not an upload body)."""
        route = scope.get("route")
        if route is None or scope["method"] not in ("POST", "PUT", "PATCH"):
            return None
        if isinstance(route, APIRoute) and route.body_field is not None:
            kind = (_header(scope, b"content-type") or b"").split(b";")[0].strip().lower().decode("latin-1")
            if kind in _PARSED_TYPES:
                return None  # a JSON or form model FastAPI parses whole: not file bytes
        path = str(route.path)
        if path not in self._frontend_of:
            self._frontend_of[path] = next(
                (name for prefix, name in self.frontends if path == prefix or path.startswith(prefix + "/")), None
            )
        return self._frontend_of[path]

    def _line(
        self,
        scope: Scope,
        wall: float,
        request_id: str,
        method: str,
        route: str,
        status: int,
        bytes_in: int,
        bytes_out: int,
        duration: float,
    ) -> str:
        principal = scope.get("state", {}).get("principal")
        owner = getattr(principal, "owner", None)
        if owner is not None and not _SAFE_OWNER.fullmatch(owner):
            owner = "?"
        # Which of the owner's credentials: the key's id (public, as ``chunkd keys list`` shows it),
        # ``link:ID`` for an upload link, ``jwt:OWNER`` for an identity provider's token.
        key_id = getattr(principal, "key_id", None)
        if key_id is not None and not _SAFE_KEY_ID.fullmatch(key_id):
            key_id = "?"
        upload_id = None
        params = scope.get("path_params") or {}
        for name in _ID_PARAMS:
            value = params.get(name)
            if value is not None:
                text = str(value)
                upload_id = text if _SAFE_ID.fullmatch(text) else None
                break
        client = scope.get("client")
        address = client[0] if client and _SAFE_CLIENT.fullmatch(str(client[0])) else None
        milliseconds = round(duration * 1000, 3)
        if self.json:
            fields = {
                "time": self._timestamp(wall),
                "request_id": request_id,
                "client": address,
                "method": method,
                "route": route,
                "status": status,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "duration_ms": milliseconds,
                "owner": owner,
                "key_id": key_id,
                "upload_id": upload_id,
            }
            return json.dumps(fields, separators=(",", ":"))
        # logfmt: every value here is a token without spaces or quotes (ids, owners and addresses
        # are checked, routes are our own templates), so none needs quoting.
        return (
            f"time={self._timestamp(wall)} request_id={request_id} client={address or '-'} method={method} "
            f"route={route} status={status} bytes_in={bytes_in} bytes_out={bytes_out} "
            f"duration_ms={milliseconds} owner={owner or '-'} key_id={key_id or '-'} upload_id={upload_id or '-'}"
        )


def _route_templates(app: Any) -> list[tuple[re.Pattern[str], str]]:
    """``(path regex, template)`` of every route and mount of ``app``, in routing order. FastAPI
    from 0.16x keeps included routers as lazy branches (``iter_route_contexts`` flattens them);
    before, ``app.routes`` is already flat."""
    routes = getattr(app, "routes", [])
    flatten = getattr(fastapi_routing, "iter_route_contexts", None)
    table = []
    for entry in flatten(routes) if flatten is not None else routes:
        template = getattr(entry, "path", None)
        if not template:
            continue
        if isinstance(getattr(entry, "original_route", entry), Mount):
            table.append((re.compile("^" + re.escape(template) + "(/.*)?$"), template))
        else:
            table.append((compile_path(template)[0], template))
    return table
