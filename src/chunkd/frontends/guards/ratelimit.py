"""Rate limits for every route of every frontend, as ASGI middleware.

Each request falls into a category: ``read`` (GET, HEAD, OPTIONS) or ``write`` (anything else),
unless ``ROUTE_CATEGORIES`` says otherwise. A write whose body is file bytes (a part, a chunk, a
PATCH) counts as ``upload`` when that category is configured: a fast client sending a large file in
small parts makes many such requests a minute, and they must not be held to the budget meant for
creating, completing and deleting. Upload bodies with a Content-Length also cost their length in
``bytes`` when that category is configured. A frontend that needs another category for a
route adds a ``(method, path regex) → category`` row to ``ROUTE_CATEGORIES``; without one it still
gets the default rule.

The identity counted is the authenticated owner (all of an owner's keys and tokens share one
budget, so minting keys does not multiply it); requests without valid credentials are counted by
client address, so a flood of bad credentials is limited too. The principal found here is left on
the request (``request.state.principal``), so ``frontends.http.principal`` does not authenticate
twice.

Every response carries ``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` (seconds)
and ``RateLimit-Policy``; a request over the limit gets 429 with ``Retry-After``."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chunkd.auth.ratelimit import Decision, RateLimits
from chunkd.domain.errors import ChunkdError
from chunkd.settings import Settings

if TYPE_CHECKING:
    from chunkd.runtime import Runtime

__all__ = ["EXEMPT_PATHS", "ROUTE_CATEGORIES", "RateLimitMiddleware", "category_for"]

# (method or "*", path pattern) → category; first match wins, before the default rule.
ROUTE_CATEGORIES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/v1/files/[^/]+/(complete|cancel)$"), "write"),
]
EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Request bodies that carry file bytes (charged to the ``bytes`` category by length).
_BYTE_TYPES = ("application/octet-stream", "application/offset+octet-stream", "multipart/form-data")


def category_for(method: str, path: str, *, file_bytes: bool = False) -> str:
    """The request's category; ``file_bytes``: its body is file bytes (see ``_carries_file_bytes``)."""
    for wanted, pattern, category in ROUTE_CATEGORIES:
        if (wanted == "*" or wanted == method) and pattern.match(path):
            return category
    if method in READ_METHODS:
        return "read"
    return "upload" if file_bytes else "write"


def _carries_file_bytes(scope: Scope) -> bool:
    """A non-empty body of file bytes: one of the byte content types, or none given (a raw part PUT)."""
    chunked = "chunked" in (_header(scope, b"transfer-encoding") or "").lower()
    if not chunked and not _declared_length(scope):
        return False
    kind = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    return not kind or kind in _BYTE_TYPES


def _declared_length(scope: Scope) -> int:
    """The body's Content-Length (0 when it is not given, e.g. a chunked body)."""
    length = _header(scope, b"content-length")
    return int(length) if length and length.isdigit() else 0


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.limits = RateLimits(
            settings.rate_limits, strategy=settings.rate_limit_strategy, storage_url=settings.redis_url
        )
        self.trusted = {p.strip() for p in settings.trusted_proxies.split(",") if p.strip()}

    def client_address(self, scope: Scope) -> str:
        client = scope.get("client")
        address = client[0] if client else "unknown"
        forwarded = _header(scope, b"x-forwarded-for")
        if address in self.trusted and forwarded:
            # The rightmost hop not added by one of our own proxies is the client.
            for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
                if hop not in self.trusted:
                    try:
                        return str(ipaddress.ip_address(hop))
                    except ValueError:
                        break
        return address

    async def identity(self, scope: Scope) -> str:
        app = scope.get("app")
        runtime: Runtime | None = getattr(getattr(app, "state", None), "chunkd", None)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if runtime is not None and ("authorization" in headers or "x-api-key" in headers or "accesstoken" in headers):
            try:
                principal = await runtime.authenticator.authenticate(headers)
            except ChunkdError:
                pass  # bad credentials: counted by address; the route answers 401 in its own dialect
            except Exception:  # e.g. the database is briefly away: let the route report it
                pass
            else:
                scope.setdefault("state", {})["principal"] = principal
                return f"owner:{principal.owner}"
        return f"ip:{self.client_address(scope)}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        file_bytes = _carries_file_bytes(scope)
        category = category_for(method, scope["path"], file_bytes=file_bytes)
        if category == "upload" and not self.limits.applies("upload"):
            category = "write"
        who = await self.identity(scope)
        decision = await self.limits.hit(category, who)
        metered = file_bytes and category in ("write", "upload")
        if decision is not None and decision.allowed and metered and self.limits.applies("bytes"):
            length = _declared_length(scope)
            largest = self.limits.largest("bytes")
            if length and largest is not None and length > largest:
                await _too_large(send, length, largest)
                return
            charged = await self.limits.hit("bytes", who, cost=length) if length else None
            if charged is not None and not charged.allowed:
                category, decision = "bytes", charged
        if decision is not None and not decision.allowed:
            await self._refuse(send, category, decision)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and decision is not None:
                message["headers"] = list(message.get("headers", [])) + _headers(decision)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _refuse(self, send: Send, category: str, decision: Decision) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "rate_limited",
                    "message": f"rate limit exceeded for {category} requests ({decision.description}); "
                    f"retry in {decision.retry_after} s",
                    "category": category,
                    "limit": decision.description,
                    "retryAfter": decision.retry_after,
                }
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(decision.retry_after).encode()),
            *_headers(decision),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _too_large(send: Send, length: int, largest: int) -> None:
    body = json.dumps(
        {
            "error": {
                "code": "too_large",
                "message": f"a body of {length} bytes exceeds the bytes rate limit of {largest} per window",
                "field": "Content-Length",
                "limit": "rate_limits.bytes",
            }
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    return [
        (b"ratelimit-limit", str(decision.limit).encode()),
        (b"ratelimit-remaining", str(decision.remaining).encode()),
        (b"ratelimit-reset", str(decision.reset_after).encode()),
        (b"ratelimit-policy", f"{decision.limit};w={decision.window}".encode()),
    ]
