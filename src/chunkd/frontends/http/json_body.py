"""A route's JSON body model, read and validated as FastAPI reads it, for the routes
``frontends.http.routes.DirectRoutes`` calls itself.

Why by hand: FastAPI 0.165's request handler (dependency solving, its endpoint context and exit
stacks) costs the Files API's create and complete ~0.3 ms of event-loop CPU each, about a tenth of
a 64 KiB file's three requests (bench/request_cost.py native-small, 2026-11-30). The answers are
FastAPI's own: the same content-type rule (``application/json`` or ``+json``; no content type only
where the route is not strict), the same JSON decode error, and validation by the route's own
``ModelField`` through FastAPI's ``request_body_to_args``, so every error is FastAPI's error.
Only a route whose one body parameter is a model, not embedded, is read here (``json_body_of``)."""

from __future__ import annotations

import email.message
import inspect
import json
from dataclasses import dataclass
from typing import Any

from fastapi import params
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.utils import request_body_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from starlette.exceptions import HTTPException
from starlette.requests import Request

__all__ = ["UNPARSED_BODY", "JsonBody", "json_body_of"]

# Set when an app gives FastAPI a ``max_body_size``, whose errors only FastAPI's handler unwraps.
BODY_LIMIT_SCOPE_KEY = "starlette.max_body_size"
# FastAPI's detail for a body it cannot decode at all (fastapi.routing), raised here alike.
UNPARSED_BODY = "There was an error parsing the body"
_JSON = frozenset({"application/json", "application/json; charset=utf-8"})
# The FastAPI function this module validates with is not public: a release that changes its
# parameters leaves every route to FastAPI again rather than failing requests.
_VALIDATES = list(inspect.signature(request_body_to_args).parameters) == [
    "body_fields",
    "received_body",
    "embed_body_fields",
]


@dataclass(frozen=True)
class JsonBody:
    """One route's JSON body parameter: ``name`` in the endpoint, validated by ``field``."""

    name: str
    field: Any  # FastAPI's ModelField (its module is private; its interface is what is used)
    strict_content_type: bool

    async def value(self, request: Request) -> Any:
        """The validated body (the field's default when it is optional and the body is empty);
        raises ``RequestValidationError`` or ``HTTPException(400)`` exactly where FastAPI would."""
        received: Any = PydanticUndefined  # FastAPI's "no body": missing, or the field's default
        try:
            raw = await request.body()
            if raw:
                received = json.loads(raw) if self._is_json(request.headers.get("content-type")) else raw
        except json.JSONDecodeError as exc:
            error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {}}
            raise RequestValidationError([{**error, "ctx": {"error": exc.msg}}], body=exc.doc) from exc
        except HTTPException:  # a guard's refusal (too large, too slow, too deep)
            raise
        except Exception as exc:
            raise HTTPException(status_code=400, detail=UNPARSED_BODY) from exc
        values, errors = await request_body_to_args([self.field], received, embed_body_fields=False)
        if errors:
            raise RequestValidationError(errors, body=received)
        return values[self.field.name]

    def _is_json(self, content_type: str | None) -> bool:
        if not content_type:
            return not self.strict_content_type
        if content_type in _JSON:
            return True
        message = email.message.Message()
        message["content-type"] = content_type
        subtype = message.get_content_subtype()
        return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def json_body_of(route: APIRoute) -> JsonBody | None:
    """The ``JsonBody`` of a route whose only body parameter is a pydantic model (or an optional
    one), not embedded and not a form; None for a route with any other body, or none."""
    body = route.dependant.body_params
    strict = getattr(route, "strict_content_type", None)  # a FastAPI without it: left to FastAPI
    if not _VALIDATES or len(body) != 1 or strict is None or getattr(route, "_embed_body_fields", True):
        return None
    field = body[0]
    info = field.field_info
    if not isinstance(info, params.Body) or isinstance(info, params.Form) or info.embed:
        return None
    if not _is_model(info.annotation):
        return None
    if isinstance(strict, DefaultPlaceholder):
        strict = strict.value
    return JsonBody(field.name, field, bool(strict))


def _is_model(annotation: Any) -> bool:
    """A pydantic model, or ``Model | None``."""
    members = getattr(annotation, "__args__", None) if not isinstance(annotation, type) else None
    candidates = [m for m in members if m is not type(None)] if members else [annotation]
    return len(candidates) == 1 and isinstance(candidates[0], type) and issubclass(candidates[0], BaseModel)
