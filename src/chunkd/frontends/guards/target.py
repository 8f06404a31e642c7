"""The request-target and Host guard, for every route of every frontend, under every ASGI server:

- **Host** (RFC 9112 §3.2, a MUST): a request with more than one Host field, an HTTP/1.1 request
  with none, or a Host that is not ``host[:port]`` (RFC 3986: no space, ``/``, ``?``, ``#``,
  ``@``...) is refused with 400 naming ``Host``. The URLs chunkd hands out (a tus ``Location``,
  ``uploadUrl``, a pm ``file_url``) are built from it: ``Host: evil.example/x?`` made them point at
  another site's path. chunkd's own HTTP protocol refuses a missing or doubled Host before the
  app; granian passed both on.
- **Request-target** (RFC 9112 §3.2): a target the routers can take is in origin-form (a path
  from ``/``); the absolute-form's path is what the servers hand over. An authority-form target
  (``CONNECT host:443``, or ``GET host:80``) or an asterisk-form one other than ``OPTIONS *`` is
  refused with 400 naming the request target: granian passed them on and the routers answered
  ``307`` to ``http://<Host>/``.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from chunkd.frontends.native.errors import refusal_response
from chunkd.frontends.refusals import Refusal, render_refusal

__all__ = ["RequestTargetGuard"]

# RFC 3986 host [":" port]: an IP-literal in brackets, or a reg-name / IPv4 address (unreserved,
# sub-delims and percent-encodings); empty is allowed (RFC 9112 §3.2: a target without authority).
_HOST = re.compile(rb"(?:\[[0-9A-Za-z:._~!$&'()*+,;=%-]+\]|[0-9A-Za-z._~!$&'()*+,;=%-]*)(?::[0-9]*)?")


def _refusal(scope: Scope) -> Refusal | None:
    hosts = [value for name, value in scope.get("headers", []) if name.lower() == b"host"]
    if len(hosts) > 1 or (not hosts and scope.get("http_version") == "1.1"):
        why = "an HTTP/1.1 request has exactly one Host header field"
        return Refusal(400, "invalid_host", why, field="Host", close=True)
    if hosts and not _HOST.fullmatch(hosts[0]):
        return Refusal(400, "invalid_host", "the Host header field is not host[:port]", field="Host", close=True)
    path = scope.get("path", "")
    if not path.startswith("/") and not (path == "*" and scope.get("method") == "OPTIONS"):
        return Refusal(
            400,
            "invalid_request_target",
            "the request target is a path (origin-form), or * for OPTIONS",
            field="request-target",
            close=True,  # a request this malformed is not followed by another on its connection
        )
    return None


class RequestTargetGuard:
    """Refuses a request whose Host or request-target the routers must not be given (see the
    module docstring), in the dialect's shape, and closes its connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (refusal := _refusal(scope)) is not None:
            await render_refusal(scope, refusal, refusal_response)(scope, receive, send)
            return
        await self.app(scope, receive, send)
