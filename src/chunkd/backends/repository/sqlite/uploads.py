"""UploadRepository on SQLite for the hot paths: raw ``sqlite3`` statements written once (each
connection keeps them prepared), writes group-committed by one writer thread, reads on reader
threads (``connections``). The listings, usage and gc queries, run rarely, are the SQLAlchemy
repository's (``cold``) over the same database file.

Values are stored exactly as the SQLAlchemy repository stores them, so either can read what the
other wrote: times as naive UTC ``YYYY-MM-DD HH:MM:SS.ffffff`` text (SQLAlchemy's SQLite DATETIME,
which also orders correctly as text), JSON as ``json.dumps`` text, enums as their values."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from chunkd.backends.repository.cold import ColdPaths
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
from chunkd.backends.repository.sqlite.connections import GroupCommitWriter, Readers
from chunkd.domain.errors import Conflict, StorageFull
from chunkd.domain.events import Event
from chunkd.domain.upload import Mode, Part, Status, Upload

__all__ = ["SqliteUploadRepository"]

_UPLOAD_COLUMNS, _PART_COLUMNS, _quoted = UPLOAD_COLUMNS, PART_COLUMNS, quoted

_SELECT_UPLOAD = f"SELECT {_quoted(_UPLOAD_COLUMNS)} FROM uploads"
_GET = f"{_SELECT_UPLOAD} WHERE id = ?"
_GET_OWNED = f"{_SELECT_UPLOAD} WHERE id = ? AND owner = ?"
_BY_CLIENT_REF = f"{_SELECT_UPLOAD} WHERE owner = ? AND frontend = ? AND client_ref = ?"
_PARTS_FROM = f'SELECT {_quoted(_PART_COLUMNS)} FROM parts WHERE upload_id = ? AND "number" >= ? ORDER BY "number"'
_INSERT_UPLOAD = f"INSERT INTO uploads ({_quoted(_UPLOAD_COLUMNS)}) VALUES ({', '.join('?' * len(_UPLOAD_COLUMNS))})"
_ASSIGN_UPLOAD = ", ".join(f'"{c}" = ?' for c in _UPLOAD_COLUMNS[1:])
_UPDATE_UPLOAD = f"UPDATE uploads SET {_ASSIGN_UPLOAD} WHERE id = ?"
_UPSERT_PART = (
    f"INSERT INTO parts (upload_id, {_quoted(_PART_COLUMNS)}) VALUES (?, {', '.join('?' * len(_PART_COLUMNS))}) "
    f'ON CONFLICT (upload_id, "number") DO UPDATE SET '
    + ", ".join(f'"{c}" = excluded."{c}"' for c in _PART_COLUMNS if c != "number")
)
_DELETE_PART = 'DELETE FROM parts WHERE upload_id = ? AND "number" = ?'
_DELETE_PARTS = "DELETE FROM parts WHERE upload_id = ?"
_DELETE_UPLOAD = "DELETE FROM uploads WHERE id = ?"
_TOUCH = (
    "UPDATE uploads SET expires_at = ? WHERE id = ? AND status = 'PENDING' AND (expires_at IS NULL OR expires_at < ?)"
)
_EXPIRE = (
    "UPDATE uploads SET status = 'EXPIRED', expires_at = NULL, updated_at = ? "
    "WHERE id = ? AND status = 'PENDING' AND expires_at <= ?"
)
_INSERT_EVENT = (
    "INSERT INTO events (id, type, owner, upload_id, created_at, payload, dispatched) VALUES (?, ?, ?, ?, ?, ?, 0)"
)


def _time(value: datetime | None) -> str | None:
    """SQLAlchemy's SQLite DATETIME text of a UTC time."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _upload_values(upload: Upload) -> list[Any]:
    return upload_values(upload, _time)


def _upload(row: Sequence[Any]) -> Upload:
    return upload_from(row, _parse_time)


def _part_values(upload_id: str, part: Part) -> list[Any]:
    return part_values(upload_id, part, _time)


def _part(row: Sequence[Any]) -> Part:
    return part_from(row, _parse_time)


def _write_events(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
    if events:
        conn.executemany(
            _INSERT_EVENT,
            [(e.id, e.type, e.owner, e.upload_id, _time(e.timestamp), json.dumps(e.payload())) for e in events],
        )


# A read of an upload with at most this many part rows runs on the event loop's own connection
# (~70 µs); a larger one goes to a reader thread. The thread hop alone cost ~230 µs of CPU per
# read (futex, self-pipe, epoll and futures: repo.get 301 µs against 70 µs of work, 2026-11-30),
# more than the read; a read of thousands of parts would hold the loop too long.
INLINE_PART_ROWS = 32


class _Large:
    """What an inline read returns for an upload with more part rows than INLINE_PART_ROWS."""


_LARGE = _Large()


def _part_rows_from(upload: Upload, first: int | None) -> int:
    """How many part rows numbered ``first`` and up ``upload`` has, at most (a bound, not a count:
    a wrong guess only moves a read between the loop and a thread)."""
    if first is None:
        return 0
    rows = upload.parts_received
    if upload.mode is Mode.APPEND:  # appended parts are numbered 1 to parts_received
        return max(0, rows - first + 1)
    count = upload.part_count
    return rows if count is None else min(rows, max(0, count - first + 1))


class SqliteUploadRepository(ColdPaths):
    """Upload sessions and their parts in a SQLite file (see the module docstring)."""

    def __init__(self, path: str, cold: SqlUploadRepository, *, readers: int = 2) -> None:
        self.path = path
        self.cold = cold
        self.engine: AsyncEngine = cold.engine  # the SQLAlchemy engine over the same file
        self.writer = GroupCommitWriter(path)
        self.readers = Readers(path, threads=readers)

    # ---- hot paths: one hop to a thread, statements prepared once --------------------------
    async def create(self, upload: Upload, events: Sequence[Event] = (), parts: Sequence[Part] = ()) -> None:
        values = _upload_values(upload)
        added = [_part_values(upload.id, p) for p in parts]

        def work(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(_INSERT_UPLOAD, values)
            except sqlite3.IntegrityError:
                raise Conflict("an upload with this client reference already exists", field="client_ref") from None
            if added:
                conn.executemany(_UPSERT_PART, added)
            _write_events(conn, events)

        await self.writer.write(work)

    async def get(
        self,
        upload_id: str,
        owner: str | None = None,
        *,
        parts_from: int | Callable[[Upload], int | None] | None = 1,
        part_numbers: Iterable[int] = (),
    ) -> Upload | None:
        wanted = sorted(set(part_numbers))

        def work(conn: sqlite3.Connection, inline: bool) -> Upload | _Large | None:
            if owner is None:
                row = conn.execute(_GET, (upload_id,)).fetchone()
            else:
                row = conn.execute(_GET_OWNED, (upload_id, owner)).fetchone()
            if row is None:
                return None
            upload = _upload(row)
            first = parts_from(upload) if callable(parts_from) else parts_from
            if inline and (len(wanted) + _part_rows_from(upload, first) > INLINE_PART_ROWS):
                return _LARGE
            found: dict[int, Part] = {}
            if first is not None:
                found.update((p.number, p) for p in map(_part, conn.execute(_PARTS_FROM, (upload_id, first))))
            missing = [n for n in wanted if n not in found]
            if missing:
                listed = ", ".join("?" * len(missing))
                query = f'SELECT {_quoted(_PART_COLUMNS)} FROM parts WHERE upload_id = ? AND "number" IN ({listed})'
                found.update((p.number, p) for p in map(_part, conn.execute(query, (upload_id, *missing))))
            upload.parts = dict(sorted(found.items()))
            return upload

        found = self.readers.read_inline(lambda conn: work(conn, True))
        if isinstance(found, _Large):
            found = await self.readers.read(lambda conn: work(conn, False))
        assert not isinstance(found, _Large)
        return found

    async def find_by_client_ref(self, owner: str, frontend: str, client_ref: str) -> Upload | None:
        def work(conn: sqlite3.Connection) -> Upload | None:
            row = conn.execute(_BY_CLIENT_REF, (owner, frontend, client_ref)).fetchone()
            return None if row is None else _upload(row)

        return self.readers.read_inline(work)  # one row, no parts: a short read (see INLINE_PART_ROWS)

    async def save(
        self,
        upload: Upload,
        changed_parts: Sequence[Part] = (),
        removed_parts: Sequence[int] = (),
        events: Sequence[Event] = (),
    ) -> None:
        values = _upload_values(upload)
        values.append(values.pop(0))  # the id goes last, in the WHERE clause
        changed = [_part_values(upload.id, p) for p in changed_parts]
        removed = [(upload.id, n) for n in removed_parts]

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(_UPDATE_UPLOAD, values)
            if changed:
                conn.executemany(_UPSERT_PART, changed)
            if removed:
                conn.executemany(_DELETE_PART, removed)
            _write_events(conn, events)

        # A cancel (or a rejection) frees the upload's bytes: it may use the room kept for that.
        await self.writer.write(work, frees=upload.status is Status.CANCELLED)

    async def touch(self, upload_id: str, expires_at: datetime) -> None:
        when = _time(expires_at)
        await self.writer.write(lambda conn: conn.execute(_TOUCH, (when, upload_id, when)))

    async def expire(self, upload_id: str, now: datetime, events: Sequence[Event] = ()) -> bool:
        when = _time(now)

        def work(conn: sqlite3.Connection) -> bool:
            if not conn.execute(_EXPIRE, (when, upload_id, when)).rowcount:
                return False
            conn.execute(_DELETE_PARTS, (upload_id,))
            _write_events(conn, events)
            return True

        return await self.writer.write(work, frees=True)

    async def delete_upload(self, upload_id: str, events: Sequence[Event] = ()) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(_DELETE_PARTS, (upload_id,))
            conn.execute(_DELETE_UPLOAD, (upload_id,))
            _write_events(conn, events)

        await self.writer.write(work, frees=True)

    # ---- cold paths (listings, usage, gc): ColdPaths, through SQLAlchemy ----------------------
    async def ping(self) -> None:
        await self.readers.read(lambda conn: conn.execute("SELECT 1").fetchone())
        # A database that answers reads may still refuse every write (507): its volume is full.
        # Said as the blob volume's is (no test write: probes come every few seconds).
        stats = await asyncio.to_thread(os.statvfs, os.path.dirname(self.path) or ".")
        if stats.f_bavail == 0:
            raise StorageFull("no space left on the metadata database's file system (writes get 507)")

    async def close(self) -> None:
        """Commit what is queued and close this repository's connections (not the engine's)."""
        await asyncio.to_thread(self.writer.close)  # joins threads: not in the event loop
        await asyncio.to_thread(self.readers.close)
