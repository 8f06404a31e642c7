"""Finding a request's route once, and calling the plain ones directly.

``RouteTable`` finds the route a request will reach (the first that fully matches, in routing order,
as Starlette's router does) and keeps the answer in the request's scope, so the rate limiter (which
must know the route before the route runs) and ``DirectRoutes`` share one lookup.

``DirectRoutes`` sits where the router is. A route whose endpoint asks FastAPI for nothing but the
``Request``, ``str``/``int`` path parameters and at most one JSON body model (every tus request, the
native create, part PUT and complete, pm's chunk POST, downloads), and answers with a ``Response``
of its own, is called directly, with its dialect's error rendering; everything else goes to the
router as before. Why by hand: FastAPI 0.165's router walks its candidate routes with
per-route scope bookkeeping and then solves the endpoint's (empty) dependencies, ~0.3 ms of event-loop
CPU per request against ~0.02 ms here (bench/request_cost.py, 2026-11-30); answers are unchanged
because the endpoint, its path parameters' length limits and its error renderer are the same."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from annotated_types import Ge, Le, MaxLen, MinLen
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chunkd.frontends.http.json_body import BODY_LIMIT_SCOPE_KEY, JsonBody, json_body_of

__all__ = ["DirectRoutes", "RouteTable", "walk_routes"]

_FOUND = "chunkd.route"  # scope key: (route, child scope) or None, once looked up
ANY_METHOD = "*"

Render = Callable[[Request, Exception], Awaitable[Response | None]]


def walk_routes(routes: Iterable[Any]) -> Iterator[BaseRoute]:
    """Every route and mount, in routing order, included routers flattened."""
    for route in routes:
        # FastAPI keeps an included router as one object holding the router it included (whose
        # routes carry their full paths); older releases copied the routes themselves.
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from walk_routes(included.routes)
        else:
            yield route


def _plain_includes(routes: Iterable[Any]) -> bool:
    """Whether every included router was included as is: no prefix (its routes then carry their
    full paths) and no dependencies (its routes' own dependants then say all that runs)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is None:
            continue
        context = getattr(route, "include_context", None)
        if getattr(context, "prefix", "") or getattr(context, "dependencies", None):
            return False
        if not _plain_includes(included.routes):
            return False
    return True


class RouteTable:
    """The app's routes by method, in routing order (mounts, which take every method, in their place)."""

    def __init__(self, routes: Iterable[Any]) -> None:
        ordered = list(walk_routes(routes))
        methods = {m for route in ordered for m in getattr(route, "methods", None) or ()}
        self.by_method: dict[str, list[BaseRoute]] = {
            method: [r for r in ordered if _takes(r, method)] for method in methods | {ANY_METHOD}
        }

    def match(self, scope: Scope) -> tuple[BaseRoute, Scope] | None:
        """The route ``scope`` reaches and the scope it adds (``route``, ``endpoint``,
        ``path_params``), or None when no route fully matches (a 404 or 405)."""
        if _FOUND in scope:
            cached: tuple[BaseRoute, Scope] | None = scope[_FOUND]
            return cached
        found = None
        for route in self.by_method.get(scope["method"]) or self.by_method[ANY_METHOD]:
            match, child = route.matches(scope)
            if match is Match.FULL:
                found = (route, child)
                break
        scope[_FOUND] = found
        return found


def _takes(route: BaseRoute, method: str) -> bool:
    methods = getattr(route, "methods", None)
    return methods is None or method in methods  # None: a mount or a plain ASGI route


@dataclass(frozen=True)
class PathParam:
    """A path parameter FastAPI would validate as a ``str`` of a length, or an ``int`` in a range."""

    kind: type[str] | type[int]
    low: int | None = None  # least length (str) or value (int)
    high: int | None = None

    def value(self, raw: Any) -> str | int | None:
        """What FastAPI would pass the endpoint, or None where it would answer with a validation
        error (or might: an int written other than as plain ASCII digits), which is left to it."""
        if not isinstance(raw, str):
            return None
        if self.kind is str:
            measure: int = len(raw)
            value: str | int = raw
        elif raw.isascii() and raw.isdigit() and len(raw) <= 18:
            measure = value = int(raw)
        else:
            return None
        if (self.low is not None and measure < self.low) or (self.high is not None and measure > self.high):
            return None
        return value


@dataclass(frozen=True)
class DirectCall:
    """How to call one plain endpoint: its request parameter, its path parameters, its JSON body
    (if it takes one), and the dialect's error renderer (None: errors go on to the app's handlers)."""

    endpoint: Callable[..., Awaitable[Response]]
    request_param: str
    params: dict[str, PathParam]
    render: Render | None
    body: JsonBody | None = None

    def arguments(self, path_params: dict[str, Any]) -> dict[str, Any] | None:
        """The endpoint's path arguments as FastAPI would pass them, or None to leave the request
        to the router (which answers with its own validation error)."""
        values: dict[str, Any] = {}
        for name, raw in path_params.items():
            param = self.params.get(name)
            value = param.value(raw) if param is not None else None
            if value is None:
                return None
            values[name] = value
        return values

    async def __call__(self, scope: Scope, receive: Receive, send: Send, arguments: dict[str, Any]) -> None:
        request = Request(scope, receive, send)
        try:
            if self.body is not None:
                arguments = {**arguments, self.body.name: await self.body.value(request)}
            response = await self.endpoint(**{self.request_param: request}, **arguments)
        except Exception as exc:
            if self.render is None:
                raise
            rendered = await self.render(request, exc)
            if rendered is None:
                raise
            response = rendered
        await response(scope, receive, send)


def direct_call(route: BaseRoute) -> DirectCall | None:
    """A ``DirectCall`` for a route FastAPI would only hand the request, its ``str``/``int`` path
    parameters and at most one JSON body model to, and whose answer is a ``Response`` of its own
    making; None for any other."""
    if not isinstance(route, APIRoute) or not inspect.iscoroutinefunction(route.endpoint):
        return None
    dependant = route.dependant
    body = json_body_of(route) if dependant.body_params else None
    if (
        dependant.request_param_name is None
        or dependant.dependencies
        or dependant.query_params
        or dependant.header_params
        or dependant.cookie_params
        or (dependant.body_params and body is None)
        or dependant.websocket_param_name
        or dependant.http_connection_param_name
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
    ):
        return None
    try:
        annotation = inspect.signature(route.endpoint, eval_str=True).return_annotation
    except (NameError, TypeError, SyntaxError):  # an annotation that does not resolve: leave it to FastAPI
        return None
    # An endpoint that returns its own Response is answered with it as is (a ``response_model`` and
    # a ``status_code`` then only document it), so only those are called directly.
    if not (inspect.isclass(annotation) and issubclass(annotation, Response)):
        return None
    params: dict[str, PathParam] = {}
    for field in dependant.path_params:
        param = _path_param(field.field_info.annotation, field.field_info.metadata)
        if param is None:
            return None
        params[field.alias] = param
    return DirectCall(route.endpoint, dependant.request_param_name, params, getattr(route, "render", None), body)


def _path_param(kind: Any, rules: list[Any]) -> PathParam | None:
    """The ``PathParam`` of a ``str`` with length limits or an ``int`` with bounds; None for any
    other type or rule."""
    low = high = None
    for rule in rules:
        if kind is str and isinstance(rule, MinLen):
            low = rule.min_length
        elif kind is str and isinstance(rule, MaxLen):
            high = rule.max_length
        elif kind is int and isinstance(rule, Ge) and isinstance(rule.ge, int):
            low = rule.ge
        elif kind is int and isinstance(rule, Le) and isinstance(rule.le, int):
            high = rule.le
        else:
            return None
    if kind is str:
        return PathParam(str, low, high)
    if kind is int:
        return PathParam(int, low, high)
    return None


class DirectRoutes:
    """In place of the router's own dispatch (see the module docstring)."""

    def __init__(self, router: Any, dispatch: ASGIApp) -> None:
        """``router``: the app's router (its routes are all included by now); ``dispatch``: what
        the router runs for a request (its ``middleware_stack``)."""
        self.router = router
        self.dispatch = dispatch
        self.table = RouteTable(router.routes)
        # Every method some route serves, for OPTIONS * (HEAD with GET: ``_as_get``).
        served = {m for m in self.table.by_method if m != ANY_METHOD} | (
            {"HEAD"} if "GET" in self.table.by_method else set()
        )
        self.server_methods = ", ".join(sorted(served)).encode()
        self.calls = {id(r): c for r in walk_routes(router.routes) if (c := direct_call(r)) is not None}
        if not _plain_includes(router.routes):  # chunkd includes its routers as is; anything else: FastAPI
            self.calls = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["path"] == "*" and scope["method"] == "OPTIONS":
                await _server_options(send, self.server_methods)
                return
            found = self.table.match(scope)
            if found is None and scope["method"] == "HEAD" and (as_get := self._as_get(scope)) is not None:
                try:
                    await self(as_get, receive, _bodiless(send))
                finally:  # what routing found, for the access log's line (it reads the HEAD's scope)
                    scope.update({key: as_get[key] for key in ("route", "endpoint", "path_params") if key in as_get})
                return
            if found is not None:
                route, child = found
                call = self.calls.get(id(route))
                arguments = call.arguments(child.get("path_params", {})) if call is not None else None
                if call is not None and arguments is not None and not (call.body and BODY_LIMIT_SCOPE_KEY in scope):
                    scope.update(child)
                    scope.setdefault("router", self.router)
                    await call(scope, receive, send, arguments)
                    return
        await self.dispatch(scope, receive, send)

    def _as_get(self, scope: Scope) -> Scope | None:
        """A HEAD that no route takes, as the GET of the same target if a route takes that: HEAD is
        GET without the body (RFC 9110 §9.3.2), and FastAPI gives its GET routes no HEAD, so a
        ``curl -I`` of a file object or a listing met a 405. Routes that take HEAD themselves (the
        downloads, tus's offset) are found before this."""
        get = {key: value for key, value in scope.items() if key != _FOUND}
        get["method"] = "GET"
        return get if self.table.match(get) is not None else None


async def _server_options(send: Send, methods: bytes) -> None:
    """``OPTIONS *``: a question about the server in general, not a resource (RFC 9110 §9.3.7), which
    no route can take (a route's path starts with "/"); it was a 404."""
    headers = [(b"allow", methods)]  # a 204 has no Content-Length (RFC 9110 §8.6)
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _bodiless(send: Send) -> Send:
    """``send`` for a GET answered to a HEAD: the status and headers (Content-Length included) as
    the GET's, and no body (the server may drop it too; an in-process client would not)."""

    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return send_head
