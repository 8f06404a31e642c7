"""Refusals made by the shared guards (rate limits, body guard) and the shared download response
(416 for a range past the file's end), answered in each dialect's shape.

A guard refuses in one of two places:

- **before the route runs** (the rate-limit middleware: 429, 413, duplicate credentials 400): it
  answers itself, with the renderer the dialect mounted at that path registered
  (:func:`register_dialect`, called by ``create_app`` as it mounts each frontend); paths no
  frontend claims get the Files API's shape;
- **while the route reads the body** (idle or slow body 408, over-long JSON 413, bytes budget 429):
  it raises :class:`Refusal` from ``receive``; the route's own error renderer turns it into the
  dialect's answer, and the engine sees a body that broke off (durable bytes stay).

:class:`Refusal` is a Starlette ``HTTPException``, so an app-wide handler answers it too when no
dialect does."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import Response

__all__ = ["Chooser", "Predicate", "Refusal", "Renderer", "register_dialect", "render_refusal"]


class Refusal(HTTPException):
    """A guard's refusal: status, stable ``code``, message, the ``field`` at fault (a header or
    ``body``), response headers (``Retry-After``...), and extra facts for the native shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(status, message, headers=headers)
        self.code = code
        self.message = message
        self.field = field
        self.extra = extra or {}
        self.close = close  # the body was not read to its end: the connection cannot be reused

    @property
    def retryable(self) -> bool:
        """Whether sending the same request later can succeed (rate limits, slow bodies)."""
        return self.status_code in (408, 429, 503)


Renderer = Callable[[Refusal], Response]
Predicate = Callable[[MutableMapping[str, Any]], bool]
# The renderer for a request (its scope), or None when the request is not in this dialect.
Chooser = Callable[[MutableMapping[str, Any]], Renderer | None]


def _registry(app: Any) -> list[tuple[str, Chooser]]:
    state = app.state
    if not hasattr(state, "dialects"):
        state.dialects = []
    return state.dialects  # type: ignore[no-any-return]


def register_dialect(
    app: Any,
    prefix: str,
    renderer: Renderer | None = None,
    *,
    when: Predicate | None = None,
    choose: Chooser | None = None,
) -> None:
    """Refusals for paths at or under ``prefix`` are answered by ``renderer`` (only for requests
    where ``when(scope)`` is true, if given: two dialects sharing a path, told apart by a header;
    register the narrower one first), or by the renderer ``choose(scope)`` names for the request
    (a dialect whose answer depends on the request, such as the draft's interop version)."""
    if (renderer is None) == (choose is None):
        raise TypeError("register_dialect takes a renderer or a chooser")
    if choose is None:
        assert renderer is not None
        fixed = renderer

        def choose(scope: MutableMapping[str, Any]) -> Renderer | None:
            return fixed if when is None or when(scope) else None

    prefix = prefix.rstrip("/")
    registry = _registry(app)
    registry.append((prefix, choose))
    registry.sort(key=lambda entry: len(entry[0]), reverse=True)  # the longest prefix wins


def render_refusal(scope: MutableMapping[str, Any], refusal: Refusal, default: Renderer) -> Response:
    """The answer to ``refusal`` in the dialect of the path ``scope`` asks for."""
    app = scope.get("app")
    path = scope.get("path", "")
    renderer = default
    if app is not None:
        for prefix, choose in _registry(app):
            if path == prefix or path.startswith(prefix + "/"):
                chosen = choose(scope)
                if chosen is not None:
                    renderer = chosen
                    break
    response = renderer(refusal)
    for name, value in (refusal.headers or {}).items():
        response.headers.setdefault(name, value)
    if refusal.close:
        response.headers["Connection"] = "close"
    return response
