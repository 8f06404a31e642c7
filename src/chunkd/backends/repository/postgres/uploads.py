"""UploadRepository on PostgreSQL for the hot paths: asyncpg directly, each statement prepared once
per connection (asyncpg's statement cache) instead of compiled by SQLAlchemy per call — on the
project's machine that is most of a PATCH's metadata CPU (``bench/repository_bench.py``). The
listings, usage and gc queries, run rarely, are the SQLAlchemy repository's (``cold``).

Values are stored as the SQLAlchemy repository stores them: ``timestamptz`` times, JSON as
``json.dumps`` text, enums as their values. Each method is one transaction, as the port says;
PostgreSQL itself lets concurrent commits share a WAL flush."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from chunkd.backends.locks.postgres import connection_broken
from chunkd.backends.locks.sessions import lock_session
from chunkd.backends.repository.cold import ColdPaths
from chunkd.backends.repository.full import DATABASE_TIMEOUT, closed_within, storage_faults
from chunkd.backends.repository.rows import (
    PART_COLUMNS,
    UPLOAD_COLUMNS,
    part_from,
    part_values,
    quoted,
    upload_from,
    upload_values,
)
from chunkd.backends.repository.sqlalchemy.uploads import SqlUploadRepository
from chunkd.domain.errors import Busy, Conflict
from chunkd.domain.events import Event
from chunkd.domain.upload import Part, Upload

__all__ = ["PostgresUploadRepository"]


def _placeholders(count: int, start: int = 1) -> str:
    return ", ".join(f"${n}" for n in range(start, start + count))


_SELECT_UPLOAD = f"SELECT {quoted(UPLOAD_COLUMNS)} FROM uploads"
_GET = f"{_SELECT_UPLOAD} WHERE id = $1"
_GET_OWNED = f"{_SELECT_UPLOAD} WHERE id = $1 AND owner = $2"
_BY_CLIENT_REF = f"{_SELECT_UPLOAD} WHERE owner = $1 AND frontend = $2 AND client_ref = $3"
_SELECT_PARTS = f"SELECT {quoted(PART_COLUMNS)} FROM parts"
_PARTS = f'{_SELECT_PARTS} WHERE upload_id = $1 AND ("number" >= $2 OR "number" = ANY($3::int[])) ORDER BY "number"'
_LISTED_PARTS = f'{_SELECT_PARTS} WHERE upload_id = $1 AND "number" = ANY($2::int[]) ORDER BY "number"'
_INSERT_UPLOAD = f"INSERT INTO uploads ({quoted(UPLOAD_COLUMNS)}) VALUES ({_placeholders(len(UPLOAD_COLUMNS))})"
_ASSIGN_UPLOAD = ", ".join(f'"{c}" = ${n}' for n, c in enumerate(UPLOAD_COLUMNS[1:], start=2))
_UPDATE_UPLOAD = f"UPDATE uploads SET {_ASSIGN_UPLOAD} WHERE id = $1"
_UPSERT_PART = (
    f"INSERT INTO parts (upload_id, {quoted(PART_COLUMNS)}) VALUES ({_placeholders(len(PART_COLUMNS) + 1)}) "
    f'ON CONFLICT (upload_id, "number") DO UPDATE SET '
    + ", ".join(f'"{c}" = excluded."{c}"' for c in PART_COLUMNS if c != "number")
)
_DELETE_PARTS_LISTED = 'DELETE FROM parts WHERE upload_id = $1 AND "number" = ANY($2::int[])'
_DELETE_PARTS = "DELETE FROM parts WHERE upload_id = $1"
_DELETE_UPLOAD = "DELETE FROM uploads WHERE id = $1"
_PENDING_BEFORE = "status = 'PENDING' AND (expires_at IS NULL OR expires_at < $2)"
_TOUCH = f"UPDATE uploads SET expires_at = $2 WHERE id = $1 AND {_PENDING_BEFORE}"
_EXPIRE = (
    "UPDATE uploads SET status = 'EXPIRED', expires_at = NULL, updated_at = $2 "
    "WHERE id = $1 AND status = 'PENDING' AND expires_at <= $2"
)
_INSERT_EVENT = (
    "INSERT INTO events (id, type, owner, upload_id, created_at, payload, dispatched) "
    "VALUES ($1, $2, $3, $4, $5, $6, false)"
)


def _same(value: Any) -> Any:
    return value


def _upload(row: Sequence[Any]) -> Upload:
    return upload_from(row, _same)


def _part(row: Sequence[Any]) -> Part:
    return part_from(row, _same)


async def _write_events(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    if events:
        await conn.executemany(
            _INSERT_EVENT,
            [(e.id, e.type, e.owner, e.upload_id, e.timestamp, json.dumps(e.payload())) for e in events],
        )


@asynccontextmanager
async def _fenced(conn: asyncpg.Connection, upload_id: str) -> AsyncIterator[None]:
    """A transaction on the session holding ``upload_id``'s lock. If that session is gone, so is
    the lock, and another node may be writing: nothing is saved, and the client is told to
    resume (409, as when another request holds the upload)."""
    try:
        async with conn.transaction():
            yield
    except Exception as exc:
        # A timeout (an OSError, so "broken" to the lock module) is the server not answering, not
        # the session gone: ``storage_faults`` around this makes it the 503 it is.
        if isinstance(exc, TimeoutError) or not connection_broken(exc):
            raise
        raise Busy(
            f"upload {upload_id}'s lock was lost before this write was saved (its database session ended); "
            "resume from the upload's current offset"
        ) from exc


class PostgresUploadRepository(ColdPaths):
    """Upload sessions and their parts in PostgreSQL (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool, cold: SqlUploadRepository, *, dsn: str | None = None) -> None:
        self.pool = pool
        self.cold = cold
        self.engine = cold.engine  # the SQLAlchemy engine over the same database
        self._dsn = dsn  # its locks' database: a save under one of them runs on the lock's session

    @classmethod
    async def open(
        cls, dsn: str, cold: SqlUploadRepository, *, max_connections: int = 10, timeout: float = DATABASE_TIMEOUT
    ) -> PostgresUploadRepository:
        """``timeout``: how long a statement, or a new connection, may wait for the server; a
        statement that runs out is cancelled and its request answered 503 (``full.py``)."""
        pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=max_connections, command_timeout=timeout, timeout=timeout
        )
        return cls(pool, cold, dsn=dsn)

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[Any]:
        """A pooled connection for reads; an unreachable database is a StorageError (503 in every
        dialect: the client retries once it is back), not a 500."""
        with storage_faults():
            async with self.pool.acquire() as conn:
                yield conn

    @asynccontextmanager
    async def _writing(self, *, transaction: bool = True, fenced_by: str | None = None) -> AsyncIterator[Any]:
        """A connection (in a transaction unless told otherwise: one statement needs none); a
        full database volume is StorageFull (507 in every dialect, saying so), and an unreachable
        database a StorageError (503), not a 500. ``fenced_by``: an upload id; while this task
        holds that upload's lock, the transaction runs on the lock's own session, so it commits
        only if the lock is still held (a lost session is ``Busy``: see ``_fenced``)."""
        session = lock_session(self._dsn, fenced_by) if self._dsn and fenced_by else None
        with storage_faults():
            if session is not None:
                # The lock's session carries other uploads' locks too, and their saves: one at a time.
                async with session.turn():
                    if (conn := session.conn) is not None:
                        try:
                            async with _fenced(conn, fenced_by or ""):
                                yield conn
                        finally:
                            session.after_save(conn)
                        return
            async with self.pool.acquire() as conn:
                if not transaction:
                    yield conn
                    return
                async with conn.transaction():
                    yield conn

    async def create(self, upload: Upload, events: Sequence[Event] = (), parts: Sequence[Part] = ()) -> None:
        values = upload_values(upload, _same)
        try:
            async with self._writing() as conn:
                await conn.execute(_INSERT_UPLOAD, *values)
                if parts:
                    await conn.executemany(_UPSERT_PART, [part_values(upload.id, p, _same) for p in parts])
                await _write_events(conn, events)
        except asyncpg.UniqueViolationError:
            raise Conflict("an upload with this client reference already exists", field="client_ref") from None

    async def get(
        self,
        upload_id: str,
        owner: str | None = None,
        *,
        parts_from: int | Callable[[Upload], int | None] | None = 1,
        part_numbers: Iterable[int] = (),
    ) -> Upload | None:
        wanted = sorted(set(part_numbers))
        async with self._reading() as conn:
            if owner is None:
                row = await conn.fetchrow(_GET, upload_id)
            else:
                row = await conn.fetchrow(_GET_OWNED, upload_id, owner)
            if row is None:
                return None
            upload = _upload(row)
            first = parts_from(upload) if callable(parts_from) else parts_from
            if first is not None:
                rows = await conn.fetch(_PARTS, upload_id, first, wanted)
            elif wanted:
                rows = await conn.fetch(_LISTED_PARTS, upload_id, wanted)
            else:
                rows = []
        upload.parts = {p.number: p for p in map(_part, rows)}
        return upload

    async def find_by_client_ref(self, owner: str, frontend: str, client_ref: str) -> Upload | None:
        async with self._reading() as conn:
            row = await conn.fetchrow(_BY_CLIENT_REF, owner, frontend, client_ref)
        return None if row is None else _upload(row)

    async def save(
        self,
        upload: Upload,
        changed_parts: Sequence[Part] = (),
        removed_parts: Sequence[int] = (),
        events: Sequence[Event] = (),
    ) -> None:
        values = upload_values(upload, _same)
        async with self._writing(fenced_by=upload.id) as conn:
            await conn.execute(_UPDATE_UPLOAD, *values)
            if changed_parts:
                await conn.executemany(_UPSERT_PART, [part_values(upload.id, p, _same) for p in changed_parts])
            if removed_parts:
                await conn.execute(_DELETE_PARTS_LISTED, upload.id, list(removed_parts))
            await _write_events(conn, events)

    async def touch(self, upload_id: str, expires_at: datetime) -> None:
        async with self._writing(transaction=False) as conn:
            await conn.execute(_TOUCH, upload_id, expires_at)

    async def expire(self, upload_id: str, now: datetime, events: Sequence[Event] = ()) -> bool:
        # Fenced as a save is: the reaper frees the bytes of the part rows this forgets, and with
        # its lock lost another node may be writing the upload (its clock behind this one's).
        async with self._writing(fenced_by=upload_id) as conn:
            if await conn.execute(_EXPIRE, upload_id, now) == "UPDATE 0":
                return False
            await conn.execute(_DELETE_PARTS, upload_id)
            await _write_events(conn, events)
            return True

    async def delete_upload(self, upload_id: str, events: Sequence[Event] = ()) -> None:
        async with self._writing(fenced_by=upload_id) as conn:
            await conn.execute(_DELETE_PARTS, upload_id)
            await conn.execute(_DELETE_UPLOAD, upload_id)
            await _write_events(conn, events)

    # ---- cold paths (listings, usage, gc): ColdPaths, through SQLAlchemy ----------------------
    async def ping(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def close(self) -> None:
        """Close this repository's connections (not the engine's)."""
        await closed_within(self.pool.close(), "the upload repository's database pool", drop=self.pool.terminate)
