"""The SQLite upload repository's writer: concurrent writes share one commit (group commit), each
caller is released only after the commit that holds its write, a failing write is rolled back alone,
and every acknowledged write is there after reopening the database."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from chunkd.backends.repository import open_metadata
from chunkd.backends.repository.composed import ComposedMetadata
from chunkd.backends.repository.sqlalchemy import open_sql_metadata
from chunkd.backends.repository.sqlite import SqliteMetadata
from chunkd.backends.repository.sqlite.uploads import SqliteUploadRepository
from chunkd.domain import errors as e
from chunkd.domain.upload import Upload
from tests.support.uploads import make_upload
from tests.support.waiting import until

WRITERS = 32


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteMetadata]:
    opened = await open_metadata(f"sqlite:///{tmp_path / 'chunkd.db'}", run_migrations=True)
    assert isinstance(opened, ComposedMetadata) and isinstance(opened.uploads, SqliteUploadRepository)
    try:
        yield opened
    finally:
        await opened.close()


async def handed_over(store: SqliteMetadata, count: int) -> None:
    """Wait until ``count`` writes have been handed to the writer."""
    while store.uploads.writer.submitted < count:
        await asyncio.sleep(0.001)


async def test_concurrent_writers_share_commits_and_survive_reopening(store: SqliteMetadata, tmp_path: Path) -> None:
    uploads = [make_upload(10, 10, owner=f"owner-{n}") for n in range(WRITERS)]
    # Another connection holds the write lock, so the writes pile up behind the first one (which
    # waits for the lock inside its transaction), as they do behind a commit's sync under load.
    blocker = sqlite3.connect(tmp_path / "chunkd.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    before, submitted = store.uploads.writer.commits, store.uploads.writer.submitted
    writes = [asyncio.create_task(store.uploads.create(u)) for u in uploads]
    await handed_over(store, submitted + WRITERS)
    assert not any(w.done() for w in writes)  # nobody is acknowledged before a commit
    blocker.execute("COMMIT")
    blocker.close()
    await asyncio.gather(*writes)
    commits = store.uploads.writer.commits - before
    assert commits <= 2 < WRITERS  # the first alone at most, then all the others together
    await store.close()
    reopened = await open_sql_metadata(f"sqlite:///{tmp_path / 'chunkd.db'}", run_migrations=False)
    try:
        for upload in uploads:
            got = await reopened.uploads.get(upload.id)
            assert got is not None and got.owner == upload.owner
    finally:
        await reopened.close()


async def test_a_failing_write_is_rolled_back_alone(store: SqliteMetadata, tmp_path: Path) -> None:
    taken = make_upload(10, 10, client_ref="same", frontend="fine")
    await store.uploads.create(taken)
    good: list[Upload] = [make_upload(10, 10) for _ in range(5)]
    clash = make_upload(10, 10, client_ref="same", frontend="fine")
    blocker = sqlite3.connect(tmp_path / "chunkd.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    submitted = store.uploads.writer.submitted
    writes = [asyncio.create_task(store.uploads.create(u)) for u in [good[0], clash, *good[1:]]]
    await handed_over(store, submitted + len(writes))
    blocker.execute("COMMIT")
    blocker.close()
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert isinstance(results[1], e.Conflict)
    assert [r for n, r in enumerate(results) if n != 1] == [None] * 5
    for upload in good:
        assert await store.uploads.get(upload.id) is not None
    assert await store.uploads.get(clash.id) is None


async def test_a_cancelled_caller_learns_its_committed_write(store: SqliteMetadata) -> None:
    upload = make_upload(10, 10)
    submitted = store.uploads.writer.submitted
    write = asyncio.create_task(store.uploads.create(upload))
    await handed_over(store, submitted + 1)
    write.cancel()
    await write  # committed: the caller carries on (its blob must not be discarded)
    assert await store.uploads.get(upload.id) is not None


async def test_every_write_that_frees_space_in_a_batch_the_full_volume_failed_is_run_again(
    store: SqliteMetadata,
) -> None:
    """Two deletes committed together meet the full volume: the first to see it removes the
    reserve kept for them, and both run again (the second saw no reserve left and was a 507)."""
    writer = store.uploads.writer
    await until(lambda: Path(writer.reserve.path).exists(), what="the reserve")
    gate = threading.Event()
    tries: dict[str, int] = {}

    def full_once(name: str) -> Callable[[sqlite3.Connection], str]:
        def work(_conn: sqlite3.Connection) -> str:
            tries[name] = tries.get(name, 0) + 1
            if tries[name] == 1:
                error = sqlite3.OperationalError("database or disk is full")
                error.sqlite_errorcode = sqlite3.SQLITE_FULL
                raise error
            return name

        return work

    blocker = asyncio.create_task(writer.write(lambda _conn: gate.wait()))
    await handed_over(store, 1)
    deletes = [asyncio.create_task(writer.write(full_once(name), frees=True)) for name in ("a", "b")]
    await handed_over(store, 3)
    gate.set()
    await blocker
    assert await asyncio.gather(*deletes) == ["a", "b"]
    assert tries == {"a": 2, "b": 2}
    await until(lambda: Path(writer.reserve.path).exists(), what="the reserve made again")  # room here
