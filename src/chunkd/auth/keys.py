"""API keys: ``ck_<key id>_<secret>``. Only a SHA-256 of the secret is stored: the secret is 256
random bits, so a slow password hash would add latency to every request and no security."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TypeGuard

from chunkd.auth.principal import ALL_SCOPES, Principal
from chunkd.domain.errors import InvalidInput, NotFound, Unauthenticated
from chunkd.ports.keys import ApiKeyRecord, KeyRepository

__all__ = ["KeyService", "api_key_of", "is_key_id", "is_owner", "key_gone", "key_stands", "parse_scopes"]

_TOKEN = re.compile(r"^ck_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_KEY_ID = re.compile(r"[0-9a-f]{16}")


def is_key_id(value: str) -> bool:
    """Whether ``value`` has the shape of an API key's id (the user of ``Basic id:secret``)."""
    return _KEY_ID.fullmatch(value) is not None


def api_key_of(who: Principal) -> str | None:
    """The id of the API key behind a credential: the key itself, or the key a chunkd token was
    issued for; None for an identity provider's token (``jwt:<owner>``) or an upload link's
    (``link:<id>``). What a signed URL or an upload link made for the request is bound to."""
    return who.key_id if is_key_id(who.key_id) else None


def key_stands(key: ApiKeyRecord | None, owner: str) -> TypeGuard[ApiKeyRecord]:
    """Whether ``key`` (the answer to a lookup of a key something was made with: a token, a signed
    URL, an upload link) still stands for ``owner``: found, not revoked, not expired, and that
    owner's."""
    return key is not None and key.stands_at(datetime.now(UTC)) and key.owner == owner


def key_gone(key: ApiKeyRecord | None) -> str:
    """What became of a key that no longer stands, as refusals say it: an expired key is told
    apart from a revoked one (which an operator would otherwise go looking for)."""
    expired = key is not None and key.revoked_at is None and not key.stands_at(datetime.now(UTC))
    return "has expired" if expired else "has been revoked"


_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


def is_owner(value: str) -> bool:
    """A valid owner name (what API keys are created for, and what a token's ``sub`` must be)."""
    return bool(_OWNER.fullmatch(value))


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(scopes: Iterable[str] | str) -> frozenset[str]:
    items = scopes.replace(",", " ").split() if isinstance(scopes, str) else list(scopes)
    unknown = sorted(set(items) - ALL_SCOPES)
    if unknown:
        raise InvalidInput(
            f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(sorted(ALL_SCOPES))}", field="scopes"
        )
    return frozenset(items)


class KeyService:
    def __init__(self, repo: KeyRepository) -> None:
        self.repo = repo

    async def create(
        self,
        owner: str,
        scopes: Iterable[str] | str,
        name: str | None = None,
        created_by: str | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """A new key; returns its record and the full token (shown once, never stored).
        ``created_by``: the key whose credential asked for it (None for the operator);
        ``expires_at``: when it stops working (None: never)."""
        if not _OWNER.fullmatch(owner):
            raise InvalidInput("owner must be 1-128 characters of letters, digits, '.', '_', '@', '-'", field="owner")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        record = ApiKeyRecord(
            id=key_id,
            owner=owner,
            scopes=parse_scopes(scopes),
            secret_hash=_hash(secret),
            created_at=datetime.now(UTC),
            name=name,
            created_by=created_by,
            expires_at=expires_at,
        )
        await self.repo.add_key(record)
        return record, f"ck_{key_id}_{secret}"

    async def verify(self, token: str) -> Principal:
        match = _TOKEN.fullmatch(token)
        if not match:
            raise Unauthenticated("malformed API key")
        return await self.verify_pair(match.group(1), match.group(2))

    async def verify_pair(self, key_id: str, secret: str) -> Principal:
        record = await self.repo.get_key(key_id) if _KEY_ID.fullmatch(key_id) else None
        # Compare even when the key is unknown so timing does not reveal which ids exist.
        expected = record.secret_hash if record else _hash("")
        if not hmac.compare_digest(expected, _hash(secret)) or record is None or record.revoked_at is not None:
            raise Unauthenticated("invalid or revoked API key")
        if not record.stands_at(datetime.now(UTC)):
            raise Unauthenticated("the API key has expired")
        return Principal(owner=record.owner, scopes=record.scopes, key_id=record.id, expires_at=record.expires_at)

    def needs_lookup(self, token: str) -> bool:
        """Whether verifying the API key ``token`` may ask the database (its id is well formed and
        not held in memory): what a flood of made-up keys costs."""
        match = _TOKEN.fullmatch(token)
        return match is not None and self.needs_lookup_of(match.group(1))

    def needs_lookup_of(self, key_id: str) -> bool:
        holds: Callable[[str], bool] | None = getattr(self.repo, "holds", None)
        return _KEY_ID.fullmatch(key_id) is not None and (holds is None or not holds(key_id))

    async def is_active(self, key_id: str) -> bool:
        record = await self.repo.get_key(key_id) if _KEY_ID.fullmatch(key_id) else None
        return record is not None and record.stands_at(datetime.now(UTC))

    async def list(self, owner: str | None = None) -> list[ApiKeyRecord]:
        return await self.repo.list_keys(owner)

    async def revoke(self, key_id: str, owner: str | None = None, *, cascade: bool = False) -> None:
        """Revoke a key (and the upload links made with it); ``cascade``: also every key it made,
        the keys those made, and so on (what a leaked keys:admin key may have left behind). The
        keys it made are all its owner's: a key never makes keys for another owner."""
        record = await self.repo.get_key(key_id) if _KEY_ID.fullmatch(key_id) else None
        if record is None or (owner is not None and record.owner != owner):
            raise NotFound(f"no API key with id {key_id!r}", field="id")
        await self.repo.revoke_key(key_id, datetime.now(UTC), cascade=cascade)
