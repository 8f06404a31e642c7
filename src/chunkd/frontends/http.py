"""HTTP helpers shared by every frontend: the runtime on app.state, authentication, byte ranges,
safe Content-Disposition, timestamps."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from chunkd.auth.authenticator import single_credentials
from chunkd.auth.principal import Principal, require_scope
from chunkd.domain.errors import InvalidInput

if TYPE_CHECKING:
    from chunkd.runtime import Runtime

__all__ = [
    "ByteRange",
    "content_disposition",
    "content_length",
    "dialect_route",
    "isotime",
    "parse_range",
    "principal",
    "runtime",
    "takes_file_bytes",
    "validation_error",
]

Endpoint = Callable[..., Any]
FILE_BYTES_ATTRIBUTE = "chunkd_file_bytes"


def takes_file_bytes(
    when: Callable[[dict[str, Any]], bool] | None = None,
) -> Callable[[Endpoint], Endpoint]:
    """Mark a route handler whose request body is file bytes (a part, a chunk, an append): the
    rate limits count such requests as ``upload`` and meter their bytes (only when a body is
    declared, and only when ``when(scope)``, if given, is true: e.g. pm's POST without ``?done``).
    Put it under the route decorators."""

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, FILE_BYTES_ATTRIBUTE, when or (lambda scope: True))
        return endpoint

    return mark


def runtime(request: Request) -> Runtime:
    return request.app.state.chunkd  # type: ignore[no-any-return]


async def principal(request: Request, scope: str | None = None) -> Principal:
    """Authenticate the request (once; cached on the request) and check ``scope``."""
    found: Principal | None = getattr(request.state, "principal", None)
    if found is None:
        credentials = single_credentials(request.headers.items())  # also when no rate limiter ran
        found = await runtime(request).authenticator.authenticate(credentials)
        request.state.principal = found
    if found.upload_link is not None and not getattr(request.state, "link_authorized", False):
        # An upload link's token: only its own uploads, only creating and filling (auth.links).
        rt = runtime(request)
        route = request.scope.get("route")
        path = getattr(route, "path", None)
        method = request.method
        if method == "POST":  # tus lets a POST stand for another method; judge the one it stands for
            method = request.headers.get("x-http-method-override", method).strip().upper()
        await rt.links.authorize(found, method, path, request.path_params, rt.uploads)
        request.state.link_authorized = True
    if scope is not None:
        require_scope(found, scope)
    return found


def content_length(request: Request) -> int | None:
    """The request's Content-Length when it is given (to refuse a wrong-sized body before reading
    it); a value that is not a number of bytes is refused, naming the header."""
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise InvalidInput("Content-Length must be a number of bytes", field="Content-Length")
    return int(raw)


_TYPE_TAG = re.compile(r"^(str|int|float|bool|bytes|none|.*\[.*\]|[a-z]+-[a-z-]+)$")


def validation_error(errors: Sequence[Any]) -> tuple[str, str]:
    """``(field, "field: what is wrong")`` for the first error of a request validation (FastAPI's
    or pydantic's ``errors()``): the field is its path inside the body, query, path or headers,
    joined with dots, or ``body`` when the whole body is at fault."""
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    # Union members add type tags to the location ("constrained-str", "list[...]"): not field names.
    locations = (str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header"))
    parts = [p for p in locations if not _TYPE_TAG.match(p)]
    field = ".".join(parts) or "body"
    return field, f"{field}: {first.get('msg', 'invalid value')}"


def isotime(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> ByteRange | bool | None:
    """One RFC 9110 byte range → ByteRange; None for "send everything" (no, multiple or
    malformed ranges, which a server may ignore); False when unsatisfiable (416)."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0:
            return False
        return ByteRange(max(0, size - suffix), size) if size else False
    start = int(first)
    if start >= size:
        return False
    end = min(int(last) + 1, size) if last else size
    if end <= start:
        return None
    return ByteRange(start, end)


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """RFC 6266: an ASCII fallback plus the exact name as RFC 8187 ``filename*``."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    ascii_name = re.sub(r"[^A-Za-z0-9._ ()\[\]+-]", "_", ascii_name).strip() or "download"
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def dialect_route(render: Callable[[Request, Exception], Awaitable[Response | None]]) -> type[APIRoute]:
    """An APIRoute class whose errors (domain errors and request validation alike) are rendered
    by ``render`` in the frontend's own dialect; ``render`` returns None to let an error pass."""

    class DialectRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as exc:
                    response = await render(request, exc)
                    if response is None:
                        raise
                    return response

            return handle

    return DialectRoute
