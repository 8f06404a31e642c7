"""MediaRepository over SQLAlchemy Core (SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from chunkd.backends.repository.sqlalchemy.outbox import write_events
from chunkd.backends.repository.sqlalchemy.tables import media
from chunkd.domain.events import Event
from chunkd.domain.media import MediaRecord, MediaType

__all__ = ["SqlMediaRepository"]


def _record(row: Any) -> MediaRecord:
    m = row._mapping
    return MediaRecord(
        id=m["id"],
        upload_id=m["upload_id"],
        owner=m["owner"],
        type=MediaType(m["type"]),
        width=m["image_width"],
        height=m["image_height"],
        order=m["order"],
        added_at=m["added_at"],
        mime_type=m["mime_type"],
    )


class SqlMediaRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(
        self,
        *,
        upload_id: str,
        owner: str,
        type: MediaType,
        width: int | None,
        height: int | None,
        order: int,
        added_at: datetime,
        event: Event | None = None,
        mime_type: str | None = None,
    ) -> MediaRecord:
        try:
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    insert(media).values(
                        upload_id=upload_id,
                        owner=owner,
                        type=type.value,
                        image_width=width,
                        image_height=height,
                        order=order,
                        added_at=added_at,
                        mime_type=mime_type,
                    )
                )
                if event is not None:
                    media_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
                    record = {"id": media_id, "type": type.value, "width": width, "height": height}
                    await write_events(conn, [replace(event, data={**event.data, "media": record})])
        except IntegrityError:
            pass  # a concurrent or repeated complete published it first: the unique upload_id wins
        found = await self.by_upload(upload_id)
        assert found is not None
        return found

    async def get(self, media_id: int, owner: str | None) -> MediaRecord | None:
        query = select(media).where(media.c.id == media_id)
        if owner is not None:
            query = query.where(media.c.owner == owner)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _record(row)

    async def by_upload(self, upload_id: str) -> MediaRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(media).where(media.c.upload_id == upload_id))).first()
        return None if row is None else _record(row)

    async def delete(self, media_id: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(media).where(media.c.id == media_id))
