"""Turns request headers into a Principal, the same way for every frontend:
``Authorization: Bearer <API key or access token>``, ``Authorization: Basic <key id:secret>``,
``X-API-Key: <API key>`` and ``AccessToken: <access token>``.

The asset API's document (seed 003) says only that ``Authorization`` is "provided by [the]
Authentication Token creation operation" and lists BasicAuth, so two more readings are accepted:
the API key or access token alone, without a scheme, and Basic with the whole API key as the user
(empty password) or as the password (any user), as many key-over-Basic APIs take it; and
``AccessToken`` may carry its token after ``Bearer``, as ``Authorization`` does."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Protocol

from chunkd.auth.keys import KeyService, is_key_id
from chunkd.auth.principal import Principal
from chunkd.domain.errors import InvalidInput, Unauthenticated

__all__ = ["CREDENTIAL_HEADERS", "Authenticator", "TokenVerifier", "single_credentials"]

# Lower-case name → the name as documented (errors name the header the way clients write it).
CREDENTIAL_HEADERS = {"authorization": "Authorization", "x-api-key": "X-API-Key", "accesstoken": "AccessToken"}


def single_credentials(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The credential headers of a request, each given at most once: a header given twice is
    refused (400, naming it) rather than one copy picked, because two readers picking different
    copies (the rate limiter and the route) would disagree on who is asking."""
    found: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in CREDENTIAL_HEADERS:
            if key in found:
                raise InvalidInput(
                    f"the {CREDENTIAL_HEADERS[key]} header is given more than once", field=CREDENTIAL_HEADERS[key]
                )
            found[key] = value
    return found


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Principal: ...


class Authenticator:
    def __init__(
        self, keys: KeyService, tokens: TokenVerifier | None = None, links: TokenVerifier | None = None
    ) -> None:
        self.keys = keys
        self.tokens = tokens
        self.links = links  # upload link tokens (cl_…), chunkd.auth.links

    async def _bearer(self, token: str) -> Principal:
        if token.startswith("ck_"):
            return await self.keys.verify(token)
        if token.startswith("cl_") and self.links is not None:
            return await self.links.verify(token)
        if self.tokens is None:
            raise Unauthenticated("invalid API key")
        return await self.tokens.verify(token)

    async def _basic(self, value: str) -> Principal:
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise Unauthenticated("malformed Basic credentials") from None
        if not sep:
            raise Unauthenticated("malformed Basic credentials")
        if is_key_id(user):  # key id and secret (a secret may begin with "ck_" too)
            return await self.keys.verify_pair(user, password)
        if password.startswith("ck_"):  # the whole key as the password
            return await self.keys.verify(password)
        if user.startswith("ck_") and not password:  # the whole key as the user
            return await self.keys.verify(user)
        return await self.keys.verify_pair(user, password)

    def needs_lookup(self, headers: Mapping[str, str]) -> bool:
        """Whether checking these credentials may ask the database: an API key not held in memory,
        or an upload link's token (its row is read on every request). A made-up access token costs
        no lookup: its signature fails first. Used to refuse a flood of made-up credentials
        cheaply (``chunkd.frontends.guards.ratelimit``) without refusing what memory can answer."""
        tokens: list[str] = []
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() == "basic":
                try:
                    user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
                except (binascii.Error, UnicodeDecodeError, ValueError):
                    user, password = "", ""
                if is_key_id(user):
                    if self.keys.needs_lookup_of(user):
                        return True
                else:
                    tokens += [password, user]
            else:
                tokens.append(value.strip() or scheme)
        if (api_key := headers.get("x-api-key")) is not None:
            tokens.append(api_key.strip())
        if (access_token := headers.get("accesstoken")) is not None:
            scheme, _, rest = access_token.strip().partition(" ")
            tokens.append(rest.strip() if scheme.lower() == "bearer" else access_token.strip())
        return any(
            self.keys.needs_lookup(token) if token.startswith("ck_") else token.startswith("cl_") for token in tokens
        )

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        authorization = headers.get("authorization")
        api_key = headers.get("x-api-key")
        access_token = headers.get("accesstoken")
        principals: list[Principal] = []
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(" ")
            value = value.strip()
            if scheme.lower() == "bearer" and value:
                principals.append(await self._bearer(value))
            elif scheme.lower() == "basic" and value:
                principals.append(await self._basic(value))
            elif scheme and not value and scheme.lower() not in ("bearer", "basic"):
                principals.append(await self._bearer(scheme))  # the token alone, no scheme
            elif scheme.lower() in ("bearer", "basic"):
                raise Unauthenticated(f"the Authorization header's {scheme} scheme carries no credential")
            else:
                raise Unauthenticated("unsupported Authorization scheme; use Bearer or Basic")
        # A credential header that is present must hold a valid credential, even an empty one: a
        # request that sends one is refused rather than judged by its other credentials alone.
        if api_key is not None:
            principals.append(await self.keys.verify(api_key.strip()))
        if access_token is not None:
            token = access_token.strip()
            scheme, _, rest = token.partition(" ")
            if scheme.lower() == "bearer":  # the token as Authorization would carry it
                token = rest.strip()
            if not token:
                raise Unauthenticated("the AccessToken header is empty")
            principals.append(await self._bearer(token))
        if not principals:
            raise Unauthenticated("credentials required: Authorization: Bearer <key>, or X-API-Key")
        if len(principals) > 1 and any(p.upload_link is not None for p in principals):
            raise Unauthenticated("an upload link's token must be the only credential of a request")
        owners = {p.owner for p in principals}
        if len(owners) > 1:
            raise Unauthenticated("the credentials given belong to different owners")
        # Several credentials of one owner: the narrowest scopes win.
        scopes = frozenset.intersection(*(p.scopes for p in principals))
        first = principals[0]
        if len(principals) == 1:
            return first
        ends = [p.expires_at for p in principals if p.expires_at is not None]
        return Principal(
            owner=first.owner, scopes=scopes, key_id=first.key_id, via=first.via, expires_at=min(ends, default=None)
        )
