"""Credentials over HTTP: access tokens (``POST /v1/auth/token``, and ``POST /auth/token``, the
seed-003 "Authentication Token creation operation") and API keys (``/v1/keys``, scope keys:admin).

Key management is confined to the caller's own owner: a keys:admin credential can create, list and
revoke its owner's keys, and never grant a scope it does not hold itself. Creating keys for other
owners is an operator's task (``chunkd keys create --owner``, which needs the data dir or database),
so one leaked admin key exposes one owner, not the whole server.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from starlette.responses import JSONResponse, Response

from chunkd.auth.keys import api_key_of, parse_scopes
from chunkd.auth.principal import SCOPES, Principal, refuse_escalation
from chunkd.domain import errors as e
from chunkd.frontends.assets.errors import refusal_response as seed_refusal
from chunkd.frontends.http import dialect_route, error_headers, isotime, principal, runtime, validation_error
from chunkd.frontends.native.errors import render_error, status_for
from chunkd.frontends.native.schemas import ErrorResponse
from chunkd.frontends.refusals import Refusal
from chunkd.ports.keys import ApiKeyRecord

__all__ = ["keys_router", "seed_token_router", "token_router"]


async def _render(_: Request, exc: Exception) -> Response | None:
    return render_error(exc)


ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 429)}


# Every name of ``SCOPES`` (a test holds the two equal: webhooks:admin was missing here once, so no
# key or token could be made for webhooks alone).
ScopeName = Literal[
    "files:create", "files:read", "files:delete", "keys:admin", "links:admin", "webhooks:admin", "metrics:read"
]
# One or more scope names separated by spaces or commas.
_ONE = "(" + "|".join(re.escape(name) for name in SCOPES) + ")"
SCOPES_PATTERN = rf"^[ ,]*{_ONE}([ ,]+{_ONE})*[ ,]*$"


class TokenRequest(BaseModel):
    # An unknown field is refused, naming it, on every chunkd body: a misspelt narrowing field
    # ("scopes", "expires_in") was ignored and the token carried every scope of the key for the
    # longest lifetime; a misspelt md5 completed a file unchecked; a link's "max_bytes" made a
    # link without limits.
    model_config = ConfigDict(extra="forbid")

    scope: Annotated[StrictStr, Field(pattern=SCOPES_PATTERN, max_length=512)] | list[ScopeName] | None = Field(
        None,
        description="Scopes wanted (space-separated or a list); a subset of the key's. Default: all of them.",
    )
    expiresIn: StrictInt | None = Field(
        None, ge=1, description="Lifetime wanted, in seconds (at most the server's jwt_ttl_seconds)."
    )


class TokenResponse(BaseModel):
    accessToken: str
    tokenType: str = Field(description="Always Bearer.")
    expiresIn: int = Field(description="Seconds until the token expires.")
    scope: str = Field(description="Space-separated scopes the token carries.")


async def _issue(request: Request, body: TokenRequest | None) -> dict[str, Any]:
    who = await principal(request)
    if body is None and (await request.body()).strip():
        # The body is optional, but one that is sent must be an object: JSON null is refused.
        raise e.InvalidInput("the body must be a JSON object (or absent)", field="body")
    tokens = runtime(request).tokens
    if tokens is None:
        raise e.Forbidden("access tokens are not enabled on this server", field="accessToken")
    wanted = None
    if body is not None and body.scope is not None:
        raw = body.scope if isinstance(body.scope, str) else " ".join(body.scope)
        wanted = raw.replace(",", " ").split()
    return tokens.issue(who, scopes=wanted, ttl_seconds=body.expiresIn if body else None)


token_router = APIRouter(prefix="/v1/auth", tags=["auth"], route_class=dialect_route(_render), responses=ERRORS)


@token_router.post("/token", response_model=TokenResponse, summary="Exchange an API key for an access token")
async def create_token(request: Request, body: Annotated[TokenRequest | None, Body()] = None) -> dict[str, Any]:
    """Authenticate with an API key (Bearer, X-API-Key or Basic key id:secret) and receive a short-lived
    JWT carrying the owner and scopes; send it as ``Authorization: Bearer`` or ``AccessToken``."""
    return await _issue(request, body)


async def _render_seed(_: Request, exc: Exception) -> Response | None:
    """Seed 003's error shape: ``{message, detail}`` (and ``{status, message}`` for 400). A guard's
    refusal (too deep, too large, too slow, rate limited) is answered as the asset API, the other
    seed-003 route, answers it, here as when it is made before routing (``app.py``)."""
    if isinstance(exc, Refusal):
        return seed_refusal(exc)
    native = render_error(exc)
    if native is None:
        return None
    status = native.status_code
    if isinstance(exc, e.ChunkdError):
        message = exc.message
        status = status_for(exc)
    elif isinstance(exc, RequestValidationError | ValidationError):
        message = validation_error(exc.errors())[1]  # "field: what is wrong"
    else:
        message = "invalid request"
    if status == 400:
        return JSONResponse({"status": "error", "message": message}, status_code=400)
    headers = error_headers(exc, status)
    return JSONResponse({"message": message, "detail": message}, status_code=status, headers=headers)


class SeedError(BaseModel):
    message: str | None = None
    detail: str | None = None
    status: str | None = None


seed_token_router = APIRouter(
    prefix="/auth",
    tags=["auth"],
    route_class=dialect_route(_render_seed),
    responses={status: {"model": SeedError} for status in (400, 401, 403, 429)},
)


class SeedTokenRequest(TokenRequest):
    # Seed 003 documents no body for its token operation: what its clients send besides chunkd's
    # own fields is not refused.
    model_config = ConfigDict(extra="ignore")


@seed_token_router.post("/token", response_model=TokenResponse, summary="Authentication Token creation operation")
async def create_token_seed(
    request: Request, body: Annotated[SeedTokenRequest | None, Body()] = None
) -> dict[str, Any]:
    """The token the asset API's ``AccessToken`` and ``Authorization`` headers carry."""
    return await _issue(request, body)


# ---- API keys -----------------------------------------------------------------------------
# The longest expiresIn (100 years): any longer is as good as never, and would overflow a date.
MAX_KEY_LIFETIME_SECONDS = 100 * 365 * 86400


class CreateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scopes: Annotated[StrictStr, Field(pattern=SCOPES_PATTERN, max_length=512)] | list[ScopeName] = Field(
        description="Scopes of the new key (space- or comma-separated, or a list); a subset of the caller's."
    )
    name: StrictStr | None = Field(None, max_length=128, description="A label for the key.")
    expiresIn: StrictInt | None = Field(
        None,
        ge=1,
        le=MAX_KEY_LIFETIME_SECONDS,
        description="Seconds until the key stops working. Default: never, or, when the credential making it"
        " expires (an access token, a key that expires), when that credential does: a key never outlives"
        " the credential that made it.",
    )


class ApiKey(BaseModel):
    id: str
    owner: str
    scopes: list[str]
    name: str | None
    createdAt: str
    revokedAt: str | None
    createdBy: str | None = Field(
        description="The id of the key whose credential made this one (None: made by the operator)."
    )
    expiresAt: str | None = Field(description="When the key stops working (None: never).")


class CreatedApiKey(ApiKey):
    key: str = Field(description="The API key itself; shown only in this response.")


class ApiKeyList(BaseModel):
    data: list[ApiKey]


def _key_view(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "owner": record.owner,
        "scopes": sorted(record.scopes),
        "name": record.name,
        "createdAt": isotime(record.created_at),
        "revokedAt": isotime(record.revoked_at),
        "createdBy": record.created_by,
        "expiresAt": isotime(record.expires_at),
    }


keys_router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=dialect_route(_render), responses=ERRORS)


@keys_router.post("", status_code=201, response_model=CreatedApiKey, summary="Create an API key for your owner")
async def create_key(request: Request, body: CreateKeyRequest) -> dict[str, Any]:
    who = await principal(request, "keys:admin")
    scopes = parse_scopes(body.scopes)
    refuse_escalation(who, scopes, granting="a new key", field="scopes")
    name = body.name
    if name is not None and any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise e.InvalidInput("name must not contain control characters", field="name")
    expires_at = _key_expiry(who, body.expiresIn)
    record, token = await runtime(request).keys.create(
        who.owner, scopes, name=name, created_by=api_key_of(who), expires_at=expires_at
    )
    return {**_key_view(record), "key": token}


def _key_expiry(who: Principal, expires_in: int | None) -> datetime | None:
    """When a new key stops working: never outliving the credential that makes it, so a
    short-lived access token (or a key that expires) cannot make a permanent key."""
    asked = None if expires_in is None else datetime.now(UTC) + timedelta(seconds=expires_in)
    if who.expires_at is None:
        return asked
    if asked is None:
        return who.expires_at
    if asked > who.expires_at:
        raise e.Forbidden(
            f"a key made with this credential must expire no later than it does ({isotime(who.expires_at)});"
            f" ask for at most {max(0, int((who.expires_at - datetime.now(UTC)).total_seconds()))} seconds",
            field="expiresIn",
        )
    return asked


@keys_router.get("", response_model=ApiKeyList, summary="List your owner's API keys (never their secrets)")
async def list_keys(request: Request) -> dict[str, Any]:
    who = await principal(request, "keys:admin")
    return {"data": [_key_view(k) for k in await runtime(request).keys.list(who.owner)]}


@keys_router.delete(
    "/{key_id}",
    status_code=204,
    summary="Revoke an API key at once (and its tokens, the URLs signed for it and the upload links made with it)",
)
async def revoke_key(
    request: Request,
    key_id: Annotated[str, Path(min_length=1, max_length=64, description="Key id.")],
    cascade: Annotated[
        bool,
        Query(
            description="Also revoke every key this key made (createdBy), the keys those made, and so on: what"
            " a leaked keys:admin key may have left behind."
        ),
    ] = False,
) -> Response:
    who = await principal(request, "keys:admin")
    await runtime(request).keys.revoke(key_id, owner=who.owner, cascade=cascade)
    return Response(status_code=204)
