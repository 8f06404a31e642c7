"""UploadRepository over SQLAlchemy 2 Core (SQLite via aiosqlite, PostgreSQL via asyncpg)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from chunkd.backends.repository.sqlalchemy.base import RowMap, SqlStore
from chunkd.backends.repository.sqlalchemy.outbox import write_events
from chunkd.backends.repository.sqlalchemy.tables import database_identity, parts, uploads
from chunkd.domain.errors import Conflict
from chunkd.domain.events import Event
from chunkd.domain.upload import Mode, Part, Status, Upload

__all__ = ["PARTS", "UPLOADS", "SqlUploadRepository"]

UPLOADS = RowMap(
    Upload,
    columns={"metadata": "meta"},
    load={"mode": Mode, "status": Status, "metadata": lambda value: dict(value or {})},
    dump={"mode": lambda mode: mode.value, "status": lambda status: status.value},
    skip=("parts",),
)
PARTS = RowMap(Part, load={"crc64": lambda value: value or ""})
_LIVE = [Status.PENDING.value, Status.COMPLETED.value]


class SqlUploadRepository(SqlStore):
    """Upload sessions and their parts."""

    async def create(self, upload: Upload, events: Sequence[Event] = (), parts: Sequence[Part] = ()) -> None:
        try:
            async with self.transaction() as conn:
                await conn.execute(insert(uploads).values(**UPLOADS.to_row(upload)))
                if parts:
                    await conn.execute(self._upsert_parts(upload.id, parts))
                await write_events(conn, events)
        except IntegrityError:
            raise Conflict("an upload with this client reference already exists", field="client_ref") from None

    async def get(
        self,
        upload_id: str,
        owner: str | None = None,
        *,
        parts_from: int | Callable[[Upload], int | None] | None = 1,
        part_numbers: Iterable[int] = (),
    ) -> Upload | None:
        query = select(uploads).where(uploads.c.id == upload_id)
        if owner is not None:
            query = query.where(uploads.c.owner == owner)
        async with self.reading() as conn:
            row = (await conn.execute(query)).first()
            if row is None:
                return None
            upload = UPLOADS.from_row(row)
            if callable(parts_from):
                parts_from = parts_from(upload)
            wanted = list(part_numbers)
            clauses = []
            if parts_from is not None:
                clauses.append(parts.c.number >= parts_from)
            if wanted:
                clauses.append(parts.c.number.in_(wanted))
            if clauses:
                result = await conn.execute(
                    select(parts).where(and_(parts.c.upload_id == upload_id, or_(*clauses))).order_by(parts.c.number)
                )
                upload.parts = {p.number: p for p in map(PARTS.from_row, result)}
        return upload

    async def find_by_client_ref(self, owner: str, frontend: str, client_ref: str) -> Upload | None:
        query = select(uploads).where(
            uploads.c.owner == owner, uploads.c.frontend == frontend, uploads.c.client_ref == client_ref
        )
        return await self.first(query, UPLOADS.from_row)

    def _upsert_parts(self, upload_id: str, changed: Sequence[Part]) -> Any:
        stmt = self.insert(parts).values([{"upload_id": upload_id, **PARTS.to_row(p)} for p in changed])
        excluded = stmt.excluded
        kept = ("upload_id", "number")
        return stmt.on_conflict_do_update(
            index_elements=[parts.c.upload_id, parts.c.number],
            set_={c.name: excluded[c.name] for c in parts.columns if c.name not in kept},
        )

    async def save(
        self,
        upload: Upload,
        changed_parts: Sequence[Part] = (),
        removed_parts: Sequence[int] = (),
        events: Sequence[Event] = (),
    ) -> None:
        values = UPLOADS.to_row(upload)
        del values["id"]
        async with self.transaction() as conn:
            await conn.execute(update(uploads).where(uploads.c.id == upload.id).values(**values))
            if changed_parts:
                await conn.execute(self._upsert_parts(upload.id, changed_parts))
            if removed_parts:
                await conn.execute(
                    delete(parts).where(parts.c.upload_id == upload.id, parts.c.number.in_(list(removed_parts)))
                )
            await write_events(conn, events)

    async def touch(self, upload_id: str, expires_at: datetime) -> None:
        await self.run(
            update(uploads)
            .where(uploads.c.id == upload_id, uploads.c.status == Status.PENDING.value)
            .where(or_(uploads.c.expires_at.is_(None), uploads.c.expires_at < expires_at))
            .values(expires_at=expires_at)
        )

    async def list_uploads(
        self, owner: str, *, status: Status | None, limit: int, before: tuple[datetime, str] | None
    ) -> list[Upload]:
        query = select(uploads).where(uploads.c.owner == owner)
        if status is not None:
            query = query.where(uploads.c.status == status.value)
        if before is not None:
            created, upload_id = before
            query = query.where(
                or_(uploads.c.created_at < created, and_(uploads.c.created_at == created, uploads.c.id < upload_id))
            )
        query = query.order_by(uploads.c.created_at.desc(), uploads.c.id.desc()).limit(limit)
        return await self.all(query, UPLOADS.from_row)

    async def list_expirable(self, now: datetime, limit: int) -> list[str]:
        query = (
            select(uploads.c.id)
            .where(uploads.c.status == Status.PENDING.value, uploads.c.expires_at <= now)
            .order_by(uploads.c.expires_at)
            .limit(limit)
        )
        return await self.all(query, _first_column)

    async def expire(self, upload_id: str, now: datetime, events: Sequence[Event] = ()) -> bool:
        async with self.transaction() as conn:
            result = await conn.execute(
                update(uploads)
                .where(
                    uploads.c.id == upload_id,
                    uploads.c.status == Status.PENDING.value,
                    uploads.c.expires_at <= now,
                )
                .values(status=Status.EXPIRED.value, expires_at=None, updated_at=now)
            )
            if not result.rowcount:
                return False
            await conn.execute(delete(parts).where(parts.c.upload_id == upload_id))
            await write_events(conn, events)
            return True

    async def delete_upload(self, upload_id: str, events: Sequence[Event] = ()) -> None:
        async with self.transaction() as conn:
            await conn.execute(delete(parts).where(parts.c.upload_id == upload_id))
            await conn.execute(delete(uploads).where(uploads.c.id == upload_id))
            await write_events(conn, events)

    async def usage(self, owner: str) -> tuple[int, int, int]:
        pending = Status.PENDING.value
        query = select(
            func.count().filter(uploads.c.status == pending),
            func.coalesce(
                func.sum(func.coalesce(uploads.c.size_bytes, uploads.c.bytes_received)).filter(
                    uploads.c.status == pending
                ),
                0,
            ),
            func.coalesce(func.sum(uploads.c.size_bytes).filter(uploads.c.status == Status.COMPLETED.value), 0),
        ).where(uploads.c.owner == owner)
        row = await self.first(query, tuple)
        assert row is not None  # an aggregate without GROUP BY always has its one row
        return int(row[0]), int(row[1]), int(row[2])

    async def live_blobs(self) -> dict[str, set[str]]:
        refs = select(parts.c.upload_id, parts.c.blob_ref).join(uploads, uploads.c.id == parts.c.upload_id)
        live: dict[str, set[str]] = {}
        async with self.reading() as conn:
            for upload_id, ref in await conn.execute(refs.where(uploads.c.status.in_(_LIVE))):
                live.setdefault(upload_id, set()).add(ref)
            for (upload_id,) in await conn.execute(select(uploads.c.id).where(uploads.c.status.in_(_LIVE))):
                live.setdefault(upload_id, set())
        return live

    async def all_ids(self) -> set[str]:
        return set(await self.all(select(uploads.c.id), _first_column))

    async def pending_expiring_after(self, moment: datetime) -> set[str]:
        query = select(uploads.c.id).where(uploads.c.status == Status.PENDING.value, uploads.c.expires_at > moment)
        return set(await self.all(query, _first_column))

    async def completed_ids(self) -> set[str]:
        query = select(uploads.c.id).where(uploads.c.status == Status.COMPLETED.value)
        return set(await self.all(query, _first_column))

    async def database_id(self) -> str:
        # Made by migration 0009; made here if missing (a database whose tables were created from
        # the metadata, not by the migrations). The smallest, should two processes make one at once.
        first = select(database_identity.c.id).order_by(database_identity.c.id).limit(1)
        async with self.transaction() as conn:
            made = (await conn.execute(first)).scalar()
            if made is None:
                await conn.execute(
                    self.insert(database_identity)
                    .values(id="db_" + secrets.token_hex(16))
                    .on_conflict_do_nothing(index_elements=[database_identity.c.id])
                )
                made = (await conn.execute(first)).scalar_one()
        return str(made)

    async def newest_write(self) -> datetime | None:
        # A scan, as live_blobs beside it in a sweep.
        newest = await self.scalar(select(func.max(uploads.c.updated_at)))
        return cast(datetime | None, newest)

    async def count_pending(self) -> int:
        # An index scan of ``ix_uploads_status_expires``.
        return int(
            await self.scalar(select(func.count()).select_from(uploads).where(uploads.c.status == Status.PENDING.value))
        )


def _first_column(row: Any) -> Any:
    return row[0]
