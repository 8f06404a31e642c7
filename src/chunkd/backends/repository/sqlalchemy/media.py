"""MediaRepository over SQLAlchemy Core (SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from chunkd.backends.repository.sqlalchemy.base import RowMap, SqlStore
from chunkd.backends.repository.sqlalchemy.outbox import write_events
from chunkd.backends.repository.sqlalchemy.tables import media
from chunkd.domain.events import Event
from chunkd.domain.media import MediaRecord, MediaType

__all__ = ["SqlMediaRepository"]


# The media API's width and height are the image's.
MEDIA = RowMap(
    MediaRecord,
    columns={"width": "image_width", "height": "image_height"},
    load={"type": MediaType},
    dump={"type": lambda value: value.value},
)


class SqlMediaRepository(SqlStore):
    """Media records (at most one per upload)."""

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
            async with self.transaction() as conn:
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
        return await self.first(query, MEDIA.from_row)

    async def by_upload(self, upload_id: str) -> MediaRecord | None:
        return await self.first(select(media).where(media.c.upload_id == upload_id), MEDIA.from_row)

    async def delete(self, media_id: int) -> None:
        await self.run(delete(media).where(media.c.id == media_id))
