"""JWT access tokens (PyJWT): issued by ``POST /v1/auth/token`` in exchange for an API key, and
verified on every request that carries one (``Authorization: Bearer`` or ``AccessToken``).

Security choices:
- Exactly one algorithm is accepted (``jwt_algorithm``), passed to PyJWT as the only allowed one,
  so ``alg: none`` and algorithm confusion (an RS256 public key used as an HS256 secret) fail.
- HS256 signs with ``HMAC(server secret, "chunkd-jwt")``, not the server secret itself, so a token
  key can never be used to forge signed URLs and the reverse.
- ``exp``, ``iat``, ``sub``, ``iss`` and ``aud`` are required; ``nbf`` is checked when present.
- Tokens minted by chunkd carry the API key's id (``chunkd_key``); the key is looked up on every
  use, so revoking it stops its tokens at their next request on every node sharing the database.
  An HS256 token (only chunkd can make one) without that claim, or living longer than
  ``jwt_ttl_seconds``, is refused, so revocation and the lifetime cap always apply.
  Tokens from an external identity provider (JWKS) have no key and live until ``exp``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chunkd.auth.keys import is_owner, key_gone, key_stands
from chunkd.auth.principal import ALL_SCOPES, Principal
from chunkd.domain.errors import Forbidden, InvalidInput, Unauthenticated
from chunkd.ports.keys import KeyRepository

if TYPE_CHECKING:
    import jwt

# PyJWT is imported where a token is first made or read (``import jwt`` in the methods below):
# it loads ``cryptography`` whenever that is installed, ~9 MiB of RSS a server that only ever
# sees API keys never needs (2026-11-30).

__all__ = ["AccessTokens", "derive_hs256_key"]

KEY_CLAIM = "chunkd_key"


def derive_hs256_key(server_secret: bytes) -> bytes:
    """A key used for nothing but access tokens, derived from the server secret."""
    return hmac.new(server_secret, b"chunkd-jwt", hashlib.sha256).digest()


def _instant(seconds: Any) -> datetime | None:
    """A token's ``exp`` as a datetime; None when it is beyond what one can hold (an identity
    provider's token that, in effect, never expires)."""
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError, TypeError):
        return None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None


class AccessTokens:
    """Issues and verifies access tokens; an Authenticator ``TokenVerifier``."""

    def __init__(
        self,
        keys: KeyRepository,
        *,
        algorithm: str,
        issuer: str,
        audience: str,
        ttl_seconds: int,
        leeway_seconds: int = 30,
        hs256_key: bytes | None = None,
        private_key_pem: bytes | None = None,
        public_key_pem: bytes | None = None,
        jwks: dict[str, Any] | None = None,
    ) -> None:
        self.keys = keys
        self.algorithm = algorithm
        self.issuer = issuer
        self.audience = audience
        self.ttl_seconds = ttl_seconds
        self.leeway = leeway_seconds
        self._signing_key: Any = None
        self._verify_key: Any = None
        self._jwks: jwt.PyJWKSet | None = None
        if algorithm == "HS256":
            if hs256_key is None:
                raise ValueError("HS256 needs a secret")
            self._signing_key = self._verify_key = hs256_key
        else:
            from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

            if private_key_pem is not None:
                self._signing_key = load_pem_private_key(private_key_pem, password=None)
                self._verify_key = self._signing_key.public_key()
            if public_key_pem is not None:
                self._verify_key = load_pem_public_key(public_key_pem)
            if jwks is not None:
                import jwt

                self._jwks = jwt.PyJWKSet.from_dict(jwks)
            if self._verify_key is None and self._jwks is None:
                raise ValueError(f"{algorithm} needs a private key, a public key or a JWKS file to verify tokens")

    @classmethod
    def from_settings(cls, settings: Any, keys: KeyRepository, server_secret: bytes) -> AccessTokens:
        jwks = json.loads(_read(settings.jwt_jwks_file)) if settings.jwt_jwks_file else None
        return cls(
            keys,
            algorithm=settings.jwt_algorithm,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_seconds=settings.jwt_ttl_seconds,
            leeway_seconds=settings.jwt_leeway_seconds,
            hs256_key=derive_hs256_key(server_secret),
            private_key_pem=_read(settings.jwt_private_key_file) if settings.jwt_private_key_file else None,
            public_key_pem=_read(settings.jwt_public_key_file) if settings.jwt_public_key_file else None,
            jwks=jwks,
        )

    @property
    def can_issue(self) -> bool:
        return self._signing_key is not None

    def issue(
        self, principal: Principal, *, scopes: Iterable[str] | None = None, ttl_seconds: int | None = None
    ) -> dict[str, Any]:
        """``{accessToken, tokenType, expiresIn, scope}``: a token for ``principal`` (which must come
        from an API key) with ``scopes`` ⊆ its own."""
        if not self.can_issue:
            raise Forbidden(
                f"this server verifies {self.algorithm} tokens but has no private key to issue them",
                field="accessToken",
            )
        if principal.via != "api_key":
            raise Forbidden("exchange an API key for a token; a token cannot mint another", field="Authorization")
        granted = principal.scopes if scopes is None else frozenset(scopes)
        unknown = sorted(granted - ALL_SCOPES)
        if unknown:
            raise InvalidInput(f"unknown scope(s): {', '.join(unknown)}", field="scope")
        beyond = sorted(granted - principal.scopes)
        if beyond:
            error = Forbidden(
                f"the API key does not hold the {' '.join(beyond)} scope(s)", field="scope", scope=beyond[0]
            )
            error.code = "missing_scope"
            raise error
        # A token never outlives its key: it would be refused past the key's expiry all the same,
        # but its exp (and expiresIn) would say otherwise.
        longest = self.ttl_seconds
        if principal.expires_at is not None:
            longest = max(1, min(longest, int(principal.expires_at.timestamp() - time.time())))
        ttl = longest if ttl_seconds is None else ttl_seconds
        if not 1 <= ttl <= longest:
            why = "" if longest == self.ttl_seconds else " (the API key expires then)"
            raise InvalidInput(f"expiresIn must be between 1 and {longest} seconds{why}", field="expiresIn")
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": principal.owner,
            "scope": " ".join(sorted(granted)),
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": secrets.token_urlsafe(12),
            KEY_CLAIM: principal.key_id,
        }
        import jwt

        token = jwt.encode(claims, self._signing_key, algorithm=self.algorithm, headers={"typ": "JWT"})
        return {"accessToken": token, "tokenType": "Bearer", "expiresIn": ttl, "scope": claims["scope"]}

    def _key_for(self, token: str) -> Any:
        if self._jwks is None:
            return self._verify_key
        import jwt

        kid = jwt.get_unverified_header(token).get("kid")
        for candidate in self._jwks.keys:
            if kid is None or candidate.key_id == kid:
                return candidate.key
        if self._verify_key is not None:
            return self._verify_key
        raise Unauthenticated("the access token's signing key is not known")

    async def verify(self, token: str) -> Principal:
        import jwt

        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the access token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("the access token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the access token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the access token is from another issuer") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            # Bad signature, disallowed algorithm, malformed token, wrong key type: one answer.
            raise Unauthenticated("invalid access token") from None
        owner, scope = claims.get("sub"), claims.get("scope", "")
        if not isinstance(owner, str) or not is_owner(owner) or not isinstance(scope, str):
            raise Unauthenticated("invalid access token claims")
        scopes = frozenset(scope.split()) & ALL_SCOPES
        key_id = claims.get(KEY_CLAIM)
        expires_at = _instant(claims["exp"])
        if self.algorithm == "HS256":
            # Only chunkd holds the HS256 key, and every token it issues names its API key and
            # lives at most ttl_seconds: a token that does not would escape revocation and the
            # lifetime cap, so it is refused whoever made it.
            if not isinstance(key_id, str):
                raise Unauthenticated("the access token does not name the API key it was issued for")
            lifetime = claims["exp"] - claims["iat"]
            if not isinstance(lifetime, int | float) or lifetime > self.ttl_seconds:
                raise Unauthenticated(f"the access token lives longer than the {self.ttl_seconds} seconds allowed")
        if key_id is not None:
            record = await self.keys.get_key(key_id) if isinstance(key_id, str) and len(key_id) == 16 else None
            if not key_stands(record, owner):
                raise Unauthenticated(f"the API key this token was issued for {key_gone(record)}")
            scopes &= record.scopes
            if record.expires_at is not None:
                expires_at = min(expires_at or record.expires_at, record.expires_at)
        return Principal(owner=owner, scopes=scopes, key_id=key_id or f"jwt:{owner}", via="jwt", expires_at=expires_at)
