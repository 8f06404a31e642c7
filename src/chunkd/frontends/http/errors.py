"""What every dialect's error renderer shares: the status of each engine error, the headers that
go with a status (the 401 challenge, ``Retry-After``), the field named by a request validation
error, and the route class that hands a route's errors to the dialect's renderer.

A dialect keeps its own error *shape* (a JSON object, plain text, problem details) in its own
``errors.py``; it builds its status table from the shared one, adding only where its protocol
answers differently (``StatusTable((e.Busy, 423))`` for tus), and adds ``error_headers`` to its
response."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from chunkd.domain import errors as e
from chunkd.frontends.refusals import Refusal
from chunkd.scope import loggable_path, request_id_of

__all__ = [
    "BEARER_CHALLENGE",
    "SHARED_STATUS",
    "StatusTable",
    "dialect_route",
    "error_headers",
    "validation_error",
]

BEARER_CHALLENGE = 'Bearer realm="chunkd"'

# Engine error → HTTP status, most specific first (a subclass before its base).
SHARED_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (e.TooLarge, 413),
    (e.InvalidInput, 400),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.Expired, 410),
    (e.Unauthenticated, 401),
    (e.Forbidden, 403),
    (e.QuotaExceeded, 403),
    (e.RateLimited, 429),
    (e.StorageFull, 507),
    (e.StorageError, 503),
)


class StatusTable:
    """A dialect's statuses: its own entries (``(error class, status)``, most specific first),
    consulted before the shared ones."""

    def __init__(self, *own: tuple[type[Exception], int]) -> None:
        self.entries = (*own, *SHARED_STATUS)

    def status(self, error: Exception) -> int | None:
        """The status for ``error``; None when neither table names its kind."""
        return next((status for kind, status in self.entries if isinstance(error, kind)), None)


def error_headers(error: Exception | None, status: int) -> dict[str, str]:
    """The headers an error answer (``status``, for ``error`` if it is one of the engine's) carries
    whatever the dialect: the Bearer challenge with a 401 (RFC 9110 requires one), and when to try
    again after a busy upload (its lock is held for seconds at most), a full memory budget (held
    form parts are let go as their requests end: chunkd.frontends.held) or a storage fault. The
    rate limiter's own 429s carry their own Retry-After."""
    if status == 401:
        return {"WWW-Authenticate": BEARER_CHALLENGE}
    if isinstance(error, (e.Busy, e.RateLimited)):
        return {"Retry-After": "1"}
    if isinstance(error, e.StorageError):
        return {"Retry-After": "30"}
    return {}


_TYPE_TAG = re.compile(r"^(str|int|float|bool|bytes|none|.*\[.*\]|[a-z]+-[a-z-]+)$")


def validation_error(errors: Sequence[Any]) -> tuple[str, str]:
    """``(field, "field: what is wrong")`` for the first error of a request validation (FastAPI's
    or pydantic's ``errors()``): the field is its path inside the body, query, path or headers,
    joined with dots, or ``body`` when the whole body is at fault."""
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        # FastAPI puts the character position of a JSON syntax error where a field name goes
        # (``("body", 1)``): the field at fault is the body itself.
        where = [p for p in first.get("loc", ()) if isinstance(p, int)]
        at = f" (at character {where[0]})" if where else ""
        return "body", f"body: the body is not valid JSON{at}"
    # Union members add type tags to the location ("constrained-str", "list[...]"): not field names.
    locations = (str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header"))
    parts = [p for p in locations if not _TYPE_TAG.match(p)]
    field = ".".join(parts) or "body"
    if first.get("type") == "extra_forbidden":
        return field, f"{field}: unknown field (a misspelt one is refused, not ignored)"
    return field, f"{field}: {first.get('msg', 'invalid value')}"


disconnects = logging.getLogger("chunkd.server")
CLIENT_GONE = 499  # nginx's status for a request whose client closed the connection first
_BODY_INCOMPLETE = "the request body ended before it was whole: the connection closed, or its framing was broken"


def dialect_route(render_error: Callable[[Request, Exception], Awaitable[Response | None]]) -> type[APIRoute]:
    """An APIRoute class whose errors (domain errors and request validation alike) are rendered
    by ``render_error`` in the frontend's own dialect; it returns None to let an error pass."""

    async def answer(request: Request, exc: Exception) -> Response | None:
        if isinstance(exc, ClientDisconnect):
            # The client went away mid-body (what arrived is kept where the dialect keeps it):
            # the access log says 499, as nginx logs it, not a 500 counted as a fault. One info
            # line, as the server's protocol says it of any error after a disconnect.
            disconnects.info(
                "client disconnected: %s %s (%s), request id %s",
                request.method,
                loggable_path(request.url.path),
                type(exc).__name__,
                request_id_of(request.scope),
            )
            # Mostly nobody reads the answer; but granian also ends the body this way when its
            # framing is broken (a bad chunk size), the client still there: it got a bare
            # "499 <none>". It gets a 400 naming the body, in the dialect's shape.
            refusal = Refusal(400, "body_incomplete", _BODY_INCOMPLETE, field="body", close=True)
            answer = await render_error(request, refusal)
            if answer is None:
                return Response(status_code=CLIENT_GONE)
            answer.headers["Connection"] = "close"
            return answer
        return await render_error(request, exc)

    class DialectRoute(APIRoute):
        # Also read by frontends.http.routes.DirectRoutes, which calls plain endpoints itself.
        render = staticmethod(answer)

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as exc:
                    response = await answer(request, exc)
                    if response is None:
                        raise
                    return response

            return handle

    return DialectRoute
