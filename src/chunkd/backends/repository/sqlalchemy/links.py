"""UploadLinkRepository over SQLAlchemy Core (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from chunkd.backends.repository.sqlalchemy.tables import upload_links
from chunkd.ports.links import UploadLinkRecord

__all__ = ["SqlUploadLinkRepository"]

t = upload_links.c


def _record(row: Any) -> UploadLinkRecord:
    m = row._mapping
    types = m["allowed_mime_types"]
    return UploadLinkRecord(
        id=m["id"],
        owner=m["owner"],
        secret_hash=m["secret_hash"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        max_bytes=m["max_bytes"],
        max_files=m["max_files"],
        files_uploaded=m["files_uploaded"],
        bytes_uploaded=m["bytes_uploaded"],
        allowed_mime_types=None if types is None else tuple(types),
        note=m["note"],
    )


class SqlUploadLinkRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add_link(self, link: UploadLinkRecord) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(upload_links).values(
                    id=link.id,
                    owner=link.owner,
                    secret_hash=link.secret_hash,
                    created_at=link.created_at,
                    expires_at=link.expires_at,
                    revoked_at=link.revoked_at,
                    max_bytes=link.max_bytes,
                    max_files=link.max_files,
                    files_uploaded=link.files_uploaded,
                    bytes_uploaded=link.bytes_uploaded,
                    allowed_mime_types=None if link.allowed_mime_types is None else list(link.allowed_mime_types),
                    note=link.note,
                )
            )

    async def get_link(self, link_id: str, owner: str | None = None) -> UploadLinkRecord | None:
        query = select(upload_links).where(t.id == link_id)
        if owner is not None:
            query = query.where(t.owner == owner)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _record(row)

    async def list_links(self, owner: str, limit: int) -> list[UploadLinkRecord]:
        query = select(upload_links).where(t.owner == owner).order_by(t.created_at.desc(), t.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [_record(r) for r in await conn.execute(query)]

    async def revoke_link(self, link_id: str, owner: str, now: datetime) -> bool:
        async with self.engine.begin() as conn:
            found = (await conn.execute(select(t.revoked_at).where(t.id == link_id, t.owner == owner))).first()
            if found is None:
                return False
            if found.revoked_at is None:
                await conn.execute(
                    update(upload_links).where(t.id == link_id, t.revoked_at.is_(None)).values(revoked_at=now)
                )
            return True

    async def reserve(self, link_id: str, size_bytes: int, now: datetime) -> bool:
        # One statement: the database checks and counts together, so two creates racing for the
        # last file (or the last bytes) of a link cannot both pass.
        statement = (
            update(upload_links)
            .where(
                t.id == link_id,
                t.revoked_at.is_(None),
                t.expires_at > now,
                or_(t.max_files.is_(None), t.files_uploaded < t.max_files),
                or_(t.max_bytes.is_(None), t.bytes_uploaded + size_bytes <= t.max_bytes),
            )
            .values(files_uploaded=t.files_uploaded + 1, bytes_uploaded=t.bytes_uploaded + size_bytes)
        )
        async with self.engine.begin() as conn:
            return bool((await conn.execute(statement)).rowcount)

    async def release(self, link_id: str, size_bytes: int) -> None:
        statement = (
            update(upload_links)
            .where(t.id == link_id, t.files_uploaded > 0)
            .values(files_uploaded=t.files_uploaded - 1, bytes_uploaded=t.bytes_uploaded - size_bytes)
        )
        async with self.engine.begin() as conn:
            await conn.execute(statement)
