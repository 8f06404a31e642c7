"""What a route handler asks of the request it serves: the runtime, the authenticated principal,
the base URL clients reach the server at, and whether the route takes file bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from chunkd.auth.authenticator import single_credentials
from chunkd.auth.principal import Principal, require_scope

if TYPE_CHECKING:
    from chunkd.domain.errors import ChunkdError
    from chunkd.runtime import Runtime

__all__ = ["FILE_BYTES_ATTRIBUTE", "principal", "public_base_url", "runtime", "takes_file_bytes"]

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
    """The runtime the app built at start-up (``chunkd.runtime.open_runtime``)."""
    return request.app.state.chunkd  # type: ignore[no-any-return]


def public_base_url(request: Request) -> str:
    """The URL clients reach the server at, without a trailing slash: ``CHUNKD_PUBLIC_URL`` when
    set (behind a proxy), else the request's own; the base of every absolute URL handed out."""
    return (runtime(request).settings.public_url or str(request.base_url)).rstrip("/")


async def principal(request: Request, scope: str | None = None) -> Principal:
    """Authenticate the request (once; cached on the request) and check ``scope``."""
    found: Principal | None = getattr(request.state, "principal", None)
    if found is None:
        failed: ChunkdError | None = getattr(request.state, "authentication_error", None)
        if failed is not None:  # the rate limiter's verdict on these credentials (one lookup, not two)
            raise failed
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
