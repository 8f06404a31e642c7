"""A metadata database whose volume is full: every write through the SQLAlchemy repositories fails
with the engine's StorageFull (507 in every dialect), and works again once there is room.

SQLite's ``max_page_count`` (set on each new connection) stands in for a full volume."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from chunkd.backends.repository.sqlalchemy import open_sql_metadata
from chunkd.backends.repository.sqlalchemy.database import create_engine, migrate
from chunkd.backends.repository.sqlalchemy.keys import SqlKeyRepository
from chunkd.domain.errors import StorageError, StorageFull
from chunkd.ports.keys import ApiKeyRecord
from tests.support.volumes import tmpfs

T0 = datetime(2026, 3, 1, tzinfo=UTC)


async def test_a_full_database_fails_a_key_write_with_storage_full(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await migrate(engine)
    await engine.dispose()  # every connection from now on is capped at the file's size
    room = {"pages": 0}

    @event.listens_for(engine.sync_engine, "connect")
    def cap(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA page_count")
        (count,) = cursor.fetchone()
        cursor.execute(f"PRAGMA max_page_count = {count + room['pages']}")
        cursor.close()

    keys = SqlKeyRepository(engine)
    with pytest.raises(StorageFull):
        for n in range(2000):  # a row may fit in a page with room left: add until one does not
            await keys.add_key(ApiKeyRecord(f"{n:016x}", "alice", frozenset({"files:read"}), "x" * 200, T0))
    stored = await keys.count_keys()
    room["pages"] = 1000
    await engine.dispose()
    await keys.add_key(ApiKeyRecord("f" * 16, "alice", frozenset({"files:read"}), "x" * 200, T0))
    assert await keys.count_keys() == stored + 1
    await engine.dispose()


@pytest.fixture
def full_volume(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs; the test fills it when it wants (``fill``). Needs root."""
    with tmpfs(tmp_path, "4M") as volume:
        yield volume


def fill(volume: Path) -> None:
    with open(volume / "filler", "wb", buffering=0) as out:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * size)


async def test_opening_a_database_on_a_full_volume_is_a_storage_error(full_volume: Path) -> None:
    # Closed cleanly, SQLite removes its -wal and -shm files; opened again on a full volume it
    # cannot make them ("disk I/O error" from PRAGMA journal_mode). That was SQLAlchemy's own
    # error, so a start on a full volume logged the lifespan's whole traceback instead of one line.
    url = f"sqlite:///{full_volume / 'chunkd.db'}"
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    fill(full_volume)
    with pytest.raises(StorageError):
        await open_sql_metadata(url, run_migrations=True)
