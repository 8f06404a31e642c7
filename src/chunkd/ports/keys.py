"""Where API keys live (only hashes of their secrets)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = ["ApiKeyRecord", "KeyRepository"]


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    owner: str
    scopes: frozenset[str]
    secret_hash: str
    created_at: datetime
    revoked_at: datetime | None = None
    name: str | None = None
    created_by: str | None = None  # the key whose credential made this one, if any
    expires_at: datetime | None = None  # None: never

    def stands_at(self, now: datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


class KeyRepository(Protocol):
    async def add_key(self, key: ApiKeyRecord) -> None: ...
    async def get_key(self, key_id: str) -> ApiKeyRecord | None: ...
    async def list_keys(self, owner: str | None = None) -> list[ApiKeyRecord]: ...
    async def revoke_key(self, key_id: str, now: datetime, *, cascade: bool = False) -> bool:
        """Set the key's ``revoked_at`` (once), and revoke the upload links made with it in the same
        transaction (``cascade``: also the keys it made, theirs, and so on, with their links, even
        when the key itself was revoked before); False when no unrevoked key has this id."""

    async def count_keys(self) -> int: ...
