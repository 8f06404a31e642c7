"""UploadRepository and KeyRepository over SQLAlchemy 2 Core (SQLite via aiosqlite, PostgreSQL via
asyncpg). Each method is one short transaction; write transactions start with a write so SQLite
takes its write lock up front instead of failing a read→write upgrade."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chunkd.backends.repository.sqlalchemy.outbox import write_events
from chunkd.backends.repository.sqlalchemy.tables import api_keys, parts, uploads
from chunkd.domain.errors import Conflict
from chunkd.domain.events import Event
from chunkd.domain.upload import Mode, Part, Status, Upload
from chunkd.ports.keys import ApiKeyRecord

__all__ = ["SqlRepository"]

_UPLOAD_COLUMNS = [c.name for c in uploads.columns]


def _upload_row(upload: Upload) -> dict[str, Any]:
    return {
        "id": upload.id,
        "owner": upload.owner,
        "frontend": upload.frontend,
        "client_ref": upload.client_ref,
        "filename": upload.filename,
        "mime_type": upload.mime_type,
        "size_bytes": upload.size_bytes,
        "part_size": upload.part_size,
        "mode": upload.mode.value,
        "status": upload.status.value,
        "created_at": upload.created_at,
        "updated_at": upload.updated_at,
        "expires_at": upload.expires_at,
        "completed_at": upload.completed_at,
        "declared_md5": upload.declared_md5,
        "md5": upload.md5,
        "bytes_received": upload.bytes_received,
        "parts_received": upload.parts_received,
        "hash_offset": upload.hash_offset,
        "hash_state": upload.hash_state,
        "meta": upload.metadata,
        "crc64": upload.crc64,
    }


def _upload_from(row: Any) -> Upload:
    m = row._mapping
    return Upload(
        id=m["id"],
        owner=m["owner"],
        frontend=m["frontend"],
        client_ref=m["client_ref"],
        filename=m["filename"],
        mime_type=m["mime_type"],
        size_bytes=m["size_bytes"],
        part_size=m["part_size"],
        mode=Mode(m["mode"]),
        status=Status(m["status"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        expires_at=m["expires_at"],
        completed_at=m["completed_at"],
        declared_md5=m["declared_md5"],
        md5=m["md5"],
        bytes_received=m["bytes_received"],
        parts_received=m["parts_received"],
        hash_offset=m["hash_offset"],
        hash_state=m["hash_state"],
        metadata=dict(m["meta"] or {}),
        crc64=m["crc64"],
    )


def _part_from(row: Any) -> Part:
    m = row._mapping
    return Part(
        number=m["number"],
        offset=m["offset"],
        size=m["size"],
        md5=m["md5"],
        blob_ref=m["blob_ref"],
        created_at=m["created_at"],
        hash_state=m["hash_state"],
        crc64=m["crc64"] or "",
    )


def _key_from(row: Any) -> ApiKeyRecord:
    m = row._mapping
    return ApiKeyRecord(
        id=m["id"],
        owner=m["owner"],
        scopes=frozenset(s for s in m["scopes"].split() if s),
        secret_hash=m["secret_hash"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
        name=m["name"],
    )


class SqlRepository:
    """Both repositories over one engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    # ---- uploads --------------------------------------------------------------------------
    async def create(self, upload: Upload, events: Sequence[Event] = ()) -> None:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(uploads).values(**_upload_row(upload)))
                await write_events(conn, events)
        except IntegrityError:
            raise Conflict("an upload with this client reference already exists", field="client_ref") from None

    async def get(
        self,
        upload_id: str,
        owner: str | None = None,
        *,
        parts_from: int | Callable[[Upload], int] | None = 1,
        part_numbers: Iterable[int] = (),
    ) -> Upload | None:
        """``parts_from``: load parts numbered ≥ it (None: none; a callable: computed from the
        row); ``part_numbers``: these too."""
        query = select(uploads).where(uploads.c.id == upload_id)
        if owner is not None:
            query = query.where(uploads.c.owner == owner)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
            if row is None:
                return None
            upload = _upload_from(row)
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
                upload.parts = {p.number: p for p in map(_part_from, result)}
        return upload

    async def find_by_client_ref(self, owner: str, frontend: str, client_ref: str) -> Upload | None:
        query = select(uploads).where(
            uploads.c.owner == owner, uploads.c.frontend == frontend, uploads.c.client_ref == client_ref
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _upload_from(row)

    def _upsert_parts(self, upload_id: str, changed: Sequence[Part]) -> Any:
        rows = [
            {
                "upload_id": upload_id,
                "number": p.number,
                "offset": p.offset,
                "size": p.size,
                "md5": p.md5,
                "blob_ref": p.blob_ref,
                "hash_state": p.hash_state,
                "created_at": p.created_at,
                "crc64": p.crc64,
            }
            for p in changed
        ]
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        stmt = dialect_insert(parts).values(rows)
        excluded = stmt.excluded
        return stmt.on_conflict_do_update(
            index_elements=[parts.c.upload_id, parts.c.number],
            set_={
                "offset": excluded.offset,
                "size": excluded.size,
                "md5": excluded.md5,
                "blob_ref": excluded.blob_ref,
                "hash_state": excluded.hash_state,
                "created_at": excluded.created_at,
                "crc64": excluded.crc64,
            },
        )

    async def save(
        self,
        upload: Upload,
        changed_parts: Sequence[Part] = (),
        removed_parts: Sequence[int] = (),
        events: Sequence[Event] = (),
    ) -> None:
        values = _upload_row(upload)
        del values["id"]
        async with self.engine.begin() as conn:
            await conn.execute(update(uploads).where(uploads.c.id == upload.id).values(**values))
            if changed_parts:
                await conn.execute(self._upsert_parts(upload.id, changed_parts))
            if removed_parts:
                await conn.execute(
                    delete(parts).where(parts.c.upload_id == upload.id, parts.c.number.in_(list(removed_parts)))
                )
            await write_events(conn, events)

    async def touch(self, upload_id: str, expires_at: datetime) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
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
        async with self.engine.connect() as conn:
            return [_upload_from(r) for r in await conn.execute(query)]

    async def list_expirable(self, now: datetime, limit: int) -> list[str]:
        query = (
            select(uploads.c.id)
            .where(uploads.c.status == Status.PENDING.value, uploads.c.expires_at <= now)
            .order_by(uploads.c.expires_at)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [r[0] for r in await conn.execute(query)]

    async def expire(self, upload_id: str, now: datetime, events: Sequence[Event] = ()) -> bool:
        async with self.engine.begin() as conn:
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

    async def delete_parts(self, upload_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(parts).where(parts.c.upload_id == upload_id))

    async def delete_upload(self, upload_id: str, events: Sequence[Event] = ()) -> None:
        async with self.engine.begin() as conn:
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
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one()
        return int(row[0]), int(row[1]), int(row[2])

    async def live_blobs(self) -> dict[str, set[str]]:
        """Blob refs of every upload that still holds bytes (PENDING or COMPLETED)."""
        query = (
            select(parts.c.upload_id, parts.c.blob_ref)
            .join(uploads, uploads.c.id == parts.c.upload_id)
            .where(uploads.c.status.in_([Status.PENDING.value, Status.COMPLETED.value]))
        )
        live: dict[str, set[str]] = {}
        async with self.engine.connect() as conn:
            for upload_id, ref in await conn.execute(query):
                live.setdefault(upload_id, set()).add(ref)
            ids = await conn.execute(
                select(uploads.c.id).where(uploads.c.status.in_([Status.PENDING.value, Status.COMPLETED.value]))
            )
            for (upload_id,) in ids:
                live.setdefault(upload_id, set())
        return live

    async def all_ids(self) -> set[str]:
        async with self.engine.connect() as conn:
            return {r[0] for r in await conn.execute(select(uploads.c.id))}

    # ---- api keys -------------------------------------------------------------------------
    async def add_key(self, key: ApiKeyRecord) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(api_keys).values(
                    id=key.id,
                    owner=key.owner,
                    scopes=" ".join(sorted(key.scopes)),
                    secret_hash=key.secret_hash,
                    name=key.name,
                    created_at=key.created_at,
                    revoked_at=key.revoked_at,
                )
            )

    async def get_key(self, key_id: str) -> ApiKeyRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        return None if row is None else _key_from(row)

    async def list_keys(self, owner: str | None = None) -> list[ApiKeyRecord]:
        query = select(api_keys).order_by(api_keys.c.created_at)
        if owner is not None:
            query = query.where(api_keys.c.owner == owner)
        async with self.engine.connect() as conn:
            return [_key_from(r) for r in await conn.execute(query)]

    async def revoke_key(self, key_id: str, now: datetime) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=now)
            )
            return bool(result.rowcount)

    async def count_keys(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(api_keys))).scalar_one())

    # ---- operations -----------------------------------------------------------------------
    async def count_pending(self) -> int:
        """PENDING uploads of every owner (the ``chunkd_uploads_pending`` gauge; an index scan of
        ``ix_uploads_status_expires``)."""
        query = select(func.count()).select_from(uploads).where(uploads.c.status == Status.PENDING.value)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def ping(self) -> None:
        """A trivial query (readiness): raises when the database cannot answer."""
        async with self.engine.connect() as conn:
            await conn.execute(select(1))

    async def connection(self) -> AsyncConnection:
        return await self.engine.connect()

    async def close(self) -> None:
        await self.engine.dispose()
