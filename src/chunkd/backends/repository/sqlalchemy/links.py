"""UploadLinkRepository over SQLAlchemy Core (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, or_, select, update

from chunkd.backends.repository.sqlalchemy.base import RowMap, SqlStore
from chunkd.backends.repository.sqlalchemy.tables import upload_links
from chunkd.ports.links import UploadLinkRecord

__all__ = ["SqlUploadLinkRepository"]

t = upload_links.c


# Allowed media types are a JSON list (a tuple in the record).
LINKS = RowMap(
    UploadLinkRecord,
    load={"allowed_mime_types": lambda value: None if value is None else tuple(value)},
    dump={"allowed_mime_types": lambda value: None if value is None else list(value)},
)


class SqlUploadLinkRepository(SqlStore):
    """Upload links (only a hash of each link's secret)."""

    async def add_link(self, link: UploadLinkRecord) -> None:
        await self.run(insert(upload_links).values(**LINKS.to_row(link)))

    async def get_link(self, link_id: str, owner: str | None = None) -> UploadLinkRecord | None:
        query = select(upload_links).where(t.id == link_id)
        if owner is not None:
            query = query.where(t.owner == owner)
        return await self.first(query, LINKS.from_row)

    async def list_links(self, owner: str, limit: int) -> list[UploadLinkRecord]:
        query = select(upload_links).where(t.owner == owner).order_by(t.created_at.desc(), t.id.desc()).limit(limit)
        return await self.all(query, LINKS.from_row)

    async def revoke_link(self, link_id: str, owner: str, now: datetime) -> bool:
        async with self.transaction() as conn:
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
        return bool(await self.run(statement))

    async def release(self, link_id: str, size_bytes: int) -> None:
        statement = (
            update(upload_links)
            .where(t.id == link_id, t.files_uploaded > 0)
            .values(files_uploaded=t.files_uploaded - 1, bytes_uploaded=t.bytes_uploaded - size_bytes)
        )
        await self.run(statement)
