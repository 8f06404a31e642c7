"""Rate limits for every route of every frontend, as ASGI middleware.

Everything is decided once, here, before the route runs:

- **Identity.** The authenticated owner (all of an owner's keys and tokens share one budget, so
  minting keys does not multiply it); requests through the owner's upload links share one budget
  of their own (a partner can neither spend the owner's nor the owner the partners', and making
  links does not multiply it); requests without valid credentials are counted by client
  address, so a flood of bad credentials is limited too. A request naming a credential header
  twice (two ``Authorization``, ``X-API-Key`` or ``AccessToken``) is refused with 400 naming it,
  so this middleware and the route can never read different ones. The principal found here is
  left on the request (``request.state.principal``), so the route does not authenticate twice.
- **Category.** ``read`` for GET, HEAD and OPTIONS. Other methods are ``write``, except on the
  routes whose handler is marked ``takes_file_bytes`` (native parts and content PUT, tus PATCH and
  creation-with-upload POST, pm chunk POST, media chunk POST, asset part and content PUT) when the
  request declares a body: those are ``upload`` (counted as ``write`` when no upload budget is
  configured). The route decides, never the Content-Type.
- **Bytes.** The body of an ``upload`` request is charged to ``bytes`` (when that category is
  configured) as it is read, chunked bodies included: a declared length that can never fit is
  refused with 413 and one that does not fit now with 429 before a byte is read; past the budget
  mid-body, the body is cut (429 or 413), the bytes already durable stay.

Every response carries ``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` (seconds)
and ``RateLimit-Policy``; a request over the limit gets 429 with ``Retry-After``. Refusals are
answered in the dialect of the path (:mod:`chunkd.frontends.refusals`)."""

from __future__ import annotations

import contextlib
import ipaddress
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from limits import parse_many
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chunkd.auth.authenticator import single_credentials
from chunkd.auth.ratelimit import Decision, MovingWindows, RateLimits
from chunkd.domain.errors import ChunkdError, InvalidInput, StorageError
from chunkd.frontends.http import FILE_BYTES_ATTRIBUTE, byte_count
from chunkd.frontends.http.routes import RouteTable
from chunkd.frontends.refusals import Refusal, Renderer, render_refusal
from chunkd.settings import Settings

if TYPE_CHECKING:
    from chunkd.runtime import Runtime

__all__ = ["EXEMPT_PATHS", "RateLimitMiddleware", "category_for"]

EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Bytes are charged to the store in batches of at most this much (one store round trip per
# batch, not per network read), and at the end of each body.
BYTES_BATCH = 1024 * 1024


def _declares_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    return bool(length and length.strip() not in ("", "0")) or _header(scope, b"transfer-encoding") is not None


def category_for(scope: Scope, route: BaseRoute | None) -> str:
    """``read``, ``write`` or ``upload`` (before falling back to ``write`` without an upload budget)."""
    if scope["method"] in READ_METHODS:
        return "read"
    when: Callable[[Scope], bool] | None = getattr(getattr(route, "endpoint", None), FILE_BYTES_ATTRIBUTE, None)
    if when is not None and _declares_body(scope) and when(scope):
        return "upload"
    return "write"


def _declared_length(scope: Scope) -> int | None:
    return byte_count(_header(scope, b"content-length"))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, default_renderer: Renderer) -> None:
        self.app = app
        self.limits = RateLimits(
            settings.rate_limits, strategy=settings.rate_limit_strategy, storage_url=settings.redis_url
        )
        self.trusted = _TrustedProxies(settings.trusted_proxies)
        self.failures = _FailedAuthentications(settings.auth_failure_limit)
        self.default_renderer = default_renderer
        self.routes: RouteTable | None = None

    def client_address(self, scope: Scope) -> str:
        client = scope.get("client")
        address = client[0] if client else "unknown"
        # Every X-Forwarded-For line, in order: a proxy may add its own line after the client's
        # (HAProxy's ``option forwardfor``), so the first line alone is the client's to choose.
        forwarded = [
            hop.strip()
            for key, value in scope.get("headers", [])
            if key.lower() == b"x-forwarded-for"
            for hop in value.decode("latin-1").split(",")
            if hop.strip()
        ]
        if forwarded and self.trusted.holds(address):
            # The rightmost hop not added by one of our own proxies is the client.
            for hop in reversed(forwarded):
                try:
                    found = ipaddress.ip_address(hop)
                except ValueError:
                    break
                if not self.trusted.holds(found):
                    return str(found)
            else:  # every hop is a trusted proxy (or "*"): the first is where the request began
                with contextlib.suppress(ValueError):
                    return str(ipaddress.ip_address(forwarded[0]))
        return address

    async def identity(self, scope: Scope, credentials: dict[str, str]) -> str | Refusal:
        app = scope.get("app")
        runtime: Runtime | None = getattr(getattr(app, "state", None), "chunkd", None)
        if runtime is not None and credentials:
            address = self.client_address(scope)
            # An address that keeps sending credentials that fail (made-up keys) is refused before
            # they cost a database lookup each; what memory can answer still passes.
            refused = self.failures.refusal(address)
            if refused is not None and runtime.authenticator.needs_lookup(credentials):
                return refused
            try:
                principal = await runtime.authenticator.authenticate(credentials)
            except StorageError as exc:
                # The database is away (the route answers 503): the credentials were not judged,
                # so this is no failed authentication, which would get the address 429s blaming it.
                scope.setdefault("state", {})["authentication_error"] = exc
            except ChunkdError as exc:
                # Bad credentials: counted by address; the route answers 401 in its own dialect,
                # from this answer (looking the key up again would double what a flood costs).
                self.failures.hit(address)
                scope.setdefault("state", {})["authentication_error"] = exc
            except Exception:  # e.g. the database is briefly away: let the route report it
                pass
            else:
                scope.setdefault("state", {})["principal"] = principal
                if principal.upload_link is not None:
                    # Partners (upload links) have a budget apart from their owner's: a partner
                    # must not spend the owner's (and starve the owner's uploads), nor the owner
                    # the partners'. One for all the owner's links, not one each: an owner who
                    # made many links would otherwise multiply its budget (bytes included).
                    return f"links:{principal.owner}"
                return f"owner:{principal.owner}"
        return f"ip:{self.client_address(scope)}"

    def route(self, scope: Scope) -> BaseRoute | None:
        if self.routes is None:
            app = scope.get("app")
            router = getattr(app, "router", None)
            self.routes = RouteTable(getattr(router, "routes", ()))
        found = self.routes.match(scope)  # kept in the scope: the router's lookup too
        return found[0] if found is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            credentials = single_credentials(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", [])
            )
        except InvalidInput as exc:
            await self._answer(scope, receive, send, Refusal(400, exc.code, exc.message, field=exc.field))
            return
        reading = scope["method"] in READ_METHODS  # no need to find the route of a read
        category = category_for(scope, None if reading else self.route(scope))
        metered = category == "upload" and self.limits.applies("bytes")
        if category == "upload" and not self.limits.applies("upload"):
            category = "write"
        who = await self.identity(scope, credentials)
        if isinstance(who, Refusal):
            await self._answer(scope, receive, send, who)
            return
        decision = await self.limits.hit(category, who)
        if decision is not None and not decision.allowed:
            await self._answer(scope, receive, send, _rate_limited(category, decision))
            return
        meter: ByteMeter | None = None
        if metered:
            refusal = await self._admit_bytes(who, _declared_length(scope))
            if refusal is not None:
                await self._answer(scope, receive, send, refusal)
                return
            meter = ByteMeter(self.limits, who, receive)
            receive = meter.receive

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if decision is not None:
                    headers += _headers(decision)
                if meter is not None and meter.cut:
                    headers.append((b"connection", b"close"))  # the rest of the body is never read
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _admit_bytes(self, who: str, length: int | None) -> Refusal | None:
        """Refuse a body before reading it when its declared length can never fit (413) or does
        not fit now (429); a body without a length is admitted while any budget is left."""
        largest = self.limits.largest("bytes")
        if length is not None and largest is not None and length > largest:
            return _bytes_too_large(length, largest)
        refused = await self.limits.would_refuse("bytes", who, cost=max(1, length or 0))
        if refused is not None:
            return _rate_limited("bytes", refused)
        return None

    async def _answer(self, scope: Scope, receive: Receive, send: Send, refusal: Refusal) -> None:
        response = render_refusal(scope, refusal, self.default_renderer)
        await response(scope, receive, send)


class _FailedAuthentications:
    """``CHUNKD_AUTH_FAILURE_LIMIT``: failed authentications per client address, in this process's
    memory (what it protects is this node's database lookups)."""

    CATEGORY = "auth_failures"

    def __init__(self, setting: str) -> None:
        self.items = parse_many(setting) if setting.strip() else []
        self.windows = MovingWindows()

    def hit(self, address: str) -> None:
        now = time.time()
        for item in self.items:
            self.windows.hit(item, self.CATEGORY, address, 1, now)

    def refusal(self, address: str) -> Refusal | None:
        now = time.time()
        for item in self.items:
            if not self.windows.test(item, self.CATEGORY, address, 1, now):
                _, frees_at = self.windows.stats(item, self.CATEGORY, address, now)
                retry = max(1, math.ceil(frees_at - now))
                return Refusal(
                    429,
                    "rate_limited",
                    f"too many failed authentications from this address ({item}); retry in {retry} s",
                    headers={"Retry-After": str(retry)},
                    extra={"category": self.CATEGORY, "limit": str(item), "retryAfter": retry},
                )
        return None


class _TrustedProxies:
    """``CHUNKD_TRUSTED_PROXIES`` as the settings accept it and uvicorn reads it: addresses,
    networks (``10.0.0.0/8``) or ``*`` (any peer). Compared as strings, a network matched no
    address and ``*`` none but itself, so every client behind such proxies shared one budget."""

    def __init__(self, setting: str) -> None:
        entries = [entry.strip() for entry in setting.split(",") if entry.strip()]
        self.everyone = "*" in entries
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in entries if entry != "*"]

    def holds(self, address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if self.everyone:
            return True
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


class ByteMeter:
    """Charges a body's bytes to the ``bytes`` budget as they are read (in batches), and cuts the
    body once it is over: 413 when it is larger than the budget's whole window, else 429."""

    def __init__(self, limits: RateLimits, who: str, receive: Receive) -> None:
        self.limits = limits
        self.who = who
        self.inner = receive
        self.pending = 0
        self.total = 0
        self.largest = limits.largest("bytes")
        self.cut = False

    async def receive(self) -> Message:
        message = await self.inner()
        if message["type"] != "http.request":
            return message
        size = len(message.get("body", b""))
        self.pending += size
        self.total += size
        if self.largest is not None and self.total > self.largest:
            self.cut = True
            raise _bytes_too_large(self.total, self.largest, close=True)
        if self.pending >= BYTES_BATCH or (self.pending and not message.get("more_body", False)):
            cost, self.pending = self.pending, 0
            charged = await self.limits.hit("bytes", self.who, cost=cost)
            if charged is not None and not charged.allowed:
                self.cut = True
                raise _rate_limited("bytes", charged, close=True)
        return message


def _rate_limited(category: str, decision: Decision, *, close: bool = False) -> Refusal:
    return Refusal(
        429,
        "rate_limited",
        f"rate limit exceeded for {category} requests ({decision.description}); retry in {decision.retry_after} s",
        headers={"Retry-After": str(decision.retry_after), **dict(_str_headers(decision))},
        extra={"category": category, "limit": decision.description, "retryAfter": decision.retry_after},
        close=close,
    )


def _bytes_too_large(length: int, largest: int, *, close: bool = False) -> Refusal:
    return Refusal(
        413,
        "too_large",
        f"a body of {length} bytes exceeds the bytes rate limit of {largest} per window",
        field="Content-Length",
        extra={"limit": "rate_limits.bytes"},
        close=close,
    )


def _str_headers(decision: Decision) -> list[tuple[str, str]]:
    return [
        ("RateLimit-Limit", str(decision.limit)),
        ("RateLimit-Remaining", str(decision.remaining)),
        ("RateLimit-Reset", str(decision.reset_after)),
        ("RateLimit-Policy", f"{decision.limit};w={decision.window}"),
    ]


def _headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in _str_headers(decision)]
