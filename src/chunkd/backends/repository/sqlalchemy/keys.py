"""KeyRepository over SQLAlchemy Core (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, insert, select, update

from chunkd.backends.repository.sqlalchemy.base import RowMap, SqlStore
from chunkd.backends.repository.sqlalchemy.tables import api_keys, upload_links
from chunkd.ports.keys import ApiKeyRecord

__all__ = ["SqlKeyRepository"]

# Scopes are stored as one space-separated string.
KEYS = RowMap(
    ApiKeyRecord,
    load={"scopes": lambda value: frozenset(s for s in value.split() if s)},
    dump={"scopes": lambda value: " ".join(sorted(value))},
)


def _batches(ids: list[str], size: int = 500) -> list[list[str]]:
    """Ids in groups small enough for one statement's parameters (SQLite allows 32,766)."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]


class SqlKeyRepository(SqlStore):
    """API keys (only hashes of their secrets)."""

    async def add_key(self, key: ApiKeyRecord) -> None:
        await self.run(insert(api_keys).values(**KEYS.to_row(key)))

    async def get_key(self, key_id: str) -> ApiKeyRecord | None:
        return await self.first(select(api_keys).where(api_keys.c.id == key_id), KEYS.from_row)

    async def list_keys(self, owner: str | None = None) -> list[ApiKeyRecord]:
        query = select(api_keys).order_by(api_keys.c.created_at)
        if owner is not None:
            query = query.where(api_keys.c.owner == owner)
        return await self.all(query, KEYS.from_row)

    async def revoke_key(self, key_id: str, now: datetime, *, cascade: bool = False) -> bool:
        # The upload links made with the key go with it, in the same transaction: a link's row is
        # read on every request it serves, so every node refuses it from the commit on.
        key = update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=now)
        async with self.transaction() as conn:
            newly = bool((await conn.execute(key)).rowcount)
            if not newly and not cascade:
                return False
            # A cascade also walks from a key revoked earlier: revoking a leaked key first and its
            # offspring once the leak is understood must reach them (it was a 204 that did nothing).
            revoked, frontier = {key_id}, [key_id]
            while cascade and frontier:  # the keys it made, and theirs: one query per generation
                made = select(api_keys.c.id).where(api_keys.c.created_by.in_(frontier))
                frontier = [row[0] for row in await conn.execute(made) if row[0] not in revoked]
                revoked.update(frontier)
            for ids in _batches(sorted(revoked)):
                await conn.execute(
                    update(api_keys)
                    .where(api_keys.c.id.in_(ids), api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
                await conn.execute(
                    update(upload_links)
                    .where(upload_links.c.key_id.in_(ids), upload_links.c.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
            return newly

    async def count_keys(self) -> int:
        return int(await self.scalar(select(func.count()).select_from(api_keys)))
