"""Asking the holder of an upload's lock to let go (``LockManager.releasable`` /
``request_release`` / ``take_over``): in one process, and across two "nodes" (two lock managers)
on one PostgreSQL database by LISTEN/NOTIFY; and what happens when a lock's PostgreSQL session is lost
(its writers are stopped, its saves refused, the next lock taken on a new connection)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest

from chunkd.backends.locks.local import LocalLocks
from chunkd.backends.locks.postgres import PostgresAdvisoryLocks, asyncpg_dsn
from chunkd.backends.locks.stacked import StackedLocks
from chunkd.backends.repository import open_metadata
from chunkd.domain import errors as e
from chunkd.ports.locks import LockManager, take_over
from tests.support.postgres import PostgresServer
from tests.support.uploads import make_upload

Pair = tuple[LockManager, LockManager]


@pytest.fixture(params=["local", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """None for one process's local locks, else a PostgreSQL URL for two nodes."""
    if request.param == "local":
        return None
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.url(server.migrated_database())


@pytest.fixture
async def nodes(backend: str | None, tmp_path: Path) -> AsyncIterator[Pair]:
    """Two lock managers that must exclude each other: one process (local), or two nodes."""
    if backend is None:
        one = LocalLocks(tmp_path / "locks")
        yield one, one
        await one.close()
        return
    a = StackedLocks(LocalLocks(None), PostgresAdvisoryLocks(backend))
    b = StackedLocks(LocalLocks(None), PostgresAdvisoryLocks(backend))
    yield a, b
    await a.close()
    await b.close()


async def hold_until_released(locks: LockManager, upload_id: str, held: asyncio.Event, **kw: str) -> str:
    """A writer: holds the lock until asked to let go."""
    asked = asyncio.Event()
    async with locks.releasable(upload_id, asked.set, **kw), locks.hold(upload_id, timeout=1):
        held.set()
        await asyncio.wait_for(asked.wait(), 10)
    return "released"


async def test_take_over_asks_the_holder_to_let_go(nodes: Pair) -> None:
    a, b = nodes
    held = asyncio.Event()
    writer = asyncio.create_task(hold_until_released(a, "u1", held))
    await held.wait()
    await take_over(b, "u1", timeout=2)  # returns once the writer let go
    assert await writer == "released"
    async with b.hold("u1", timeout=0):
        pass


async def test_a_free_lock_is_taken_over_without_asking(nodes: Pair) -> None:
    a, b = nodes
    calls: list[str] = []
    async with a.releasable("u2", lambda: calls.append("asked")):
        await take_over(b, "u2", timeout=1)
    assert calls == []


async def test_a_holder_that_is_not_releasable_keeps_its_lock(nodes: Pair) -> None:
    a, b = nodes
    async with a.hold("u3", timeout=1):
        with pytest.raises(e.Busy):
            await take_over(b, "u3", timeout=0.5)


async def test_a_writer_is_not_stopped_by_its_own_request(nodes: Pair) -> None:
    """A writer's own take-over request (echoed back by NOTIFY) does not stop it; another's does.
    Notifications arrive in order, so once the other's is seen the echo has been handled."""
    a, b = nodes
    calls: list[str] = []
    stopped = asyncio.Event()

    def stop() -> None:
        calls.append("stopped")
        stopped.set()

    async with a.releasable("u4", stop, requester="me"):
        await a.request_release("u4", requester="me")
        await b.request_release("u4", requester="someone-else")
        await asyncio.wait_for(stopped.wait(), 5)
    assert calls == ["stopped"]


async def test_release_requests_cross_nodes(pg_url: str) -> None:
    a, b = PostgresAdvisoryLocks(pg_url), PostgresAdvisoryLocks(pg_url)
    try:
        asked = asyncio.Event()
        async with a.releasable("u5", asked.set):
            await b.request_release("u5")
            await asyncio.wait_for(asked.wait(), 5)
    finally:
        await a.close()
        await b.close()


async def test_writers_are_stopped_when_their_lock_connection_is_lost(pg_url: str) -> None:
    """A lock's PostgreSQL session ends (a restart, a network cut, pg_terminate_backend): the server
    has dropped the lock, and another node may take it. The writers holding it in this process are
    told to let go, as by a take-over, rather than go on writing unfenced."""
    import asyncpg  # type: ignore[import-untyped]

    locks = PostgresAdvisoryLocks(pg_url)
    held = asyncio.Event()
    writer = asyncio.create_task(hold_until_released(locks, "u-lost", held))
    try:
        await held.wait()
        admin = await asyncpg.connect(asyncpg_dsn(pg_url))
        try:
            ended = await admin.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'chunkd-locks'"
            )
        finally:
            await admin.close()
        assert ended
        assert await writer == "released"  # hold_until_released gives up after 10 s otherwise
        async with locks.hold("u-lost", timeout=1):  # a new connection takes the lock again
            pass
    finally:
        writer.cancel()
        await locks.close()


async def _end_lock_sessions(pg_url: str) -> list[object]:
    """Ends every chunkd-locks session of the database and waits (up to 5 s) until each is gone."""
    import asyncpg

    admin = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        return list(
            await admin.fetch(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'chunkd-locks'"
            )
        )
    finally:
        await admin.close()


async def test_a_lock_is_taken_on_a_new_connection_when_an_idle_one_died(pg_url: str) -> None:
    """PostgreSQL restarted, or an operator ended the sessions, while the pool's lock connections sat
    idle: asyncpg learns it only when a connection is used. The next lock is asked for again on a
    new connection, and the request it guards does not fail."""
    locks = PostgresAdvisoryLocks(pg_url)
    try:
        async with locks.hold("u-idle", timeout=1):
            pass  # the pool now keeps idle connections
        # The sessions are ended from another thread while this event loop waits without turning,
        # so nothing here reads the server's goodbye before the next hold uses a dead connection.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            ended = pool.submit(asyncio.run, _end_lock_sessions(pg_url)).result()
        assert ended and all(row[0] for row in ended)  # type: ignore[index]
        async with locks.hold("u-idle", timeout=1):
            pass
    finally:
        await locks.close()


async def test_a_save_under_a_lost_lock_is_refused(pg_url: str) -> None:
    """The fence: a save runs on the session that holds the upload's lock. Once that session has
    ended, the lock is gone and another node may be writing, so the save fails (409, the client
    resumes) instead of committing over the other node's work; the row is unchanged."""
    metadata = await open_metadata(pg_url, run_migrations=False)
    locks = StackedLocks(LocalLocks(None), PostgresAdvisoryLocks(pg_url))
    try:
        upload = make_upload(filename="before.bin")
        await metadata.uploads.create(upload)
        async with locks.hold(upload.id, timeout=1):
            assert await _end_lock_sessions(pg_url)
            upload.filename = "after.bin"
            with pytest.raises(e.Busy, match="lock was lost"):
                await metadata.uploads.save(upload)
        stored = await metadata.uploads.get(upload.id)
        assert stored is not None and stored.filename == "before.bin"

        async with locks.hold(upload.id, timeout=1):  # held again: the same save lands
            await metadata.uploads.save(upload)
        stored = await metadata.uploads.get(upload.id)
        assert stored is not None and stored.filename == "after.bin"
    finally:
        await locks.close()
        await metadata.close()


async def test_an_expiry_under_a_lost_lock_is_refused(pg_url: str) -> None:
    """The reaper expires an upload under its lock, and the expiry is fenced as a save is: once
    the reaper's lock session has ended, another node may have taken the upload and be writing
    it (its clock a little behind the reaper's: the upload not yet due there), so the expiry,
    which forgets the part rows whose bytes it then frees, is refused instead of committed."""
    from datetime import timedelta

    metadata = await open_metadata(pg_url, run_migrations=False)
    locks = StackedLocks(LocalLocks(None), PostgresAdvisoryLocks(pg_url))
    try:
        upload = make_upload(filename="due.bin")
        await metadata.uploads.create(upload)
        assert upload.expires_at is not None
        due = upload.expires_at + timedelta(seconds=1)
        async with locks.hold(upload.id, timeout=1):
            assert await _end_lock_sessions(pg_url)
            with pytest.raises(e.Busy, match="lock was lost"):
                await metadata.uploads.expire(upload.id, due)
        stored = await metadata.uploads.get(upload.id)
        assert stored is not None and stored.status.value == "PENDING"

        async with locks.hold(upload.id, timeout=1):  # held again: the same expiry lands
            assert await metadata.uploads.expire(upload.id, due)
        stored = await metadata.uploads.get(upload.id)
        assert stored is not None and stored.status.value == "EXPIRED"
    finally:
        await locks.close()
        await metadata.close()


async def test_a_task_started_under_a_lock_saves_on_its_session_only_while_it_is_held(pg_url: str) -> None:
    """A task started while the lock is held shares the lock's session, one statement at a time;
    once the hold has ended it saves through the pool like any other writer."""
    metadata = await open_metadata(pg_url, run_migrations=False)
    locks = PostgresAdvisoryLocks(pg_url)
    try:
        upload = make_upload(filename="0.bin")
        await metadata.uploads.create(upload)

        async def rename(name: str) -> None:
            await metadata.uploads.save(dataclasses.replace(upload, filename=name))

        async with locks.hold(upload.id, timeout=1):
            await asyncio.gather(*(rename(f"{n}.bin") for n in range(1, 6)), rename("6.bin"))
            late = asyncio.Event()
            after = asyncio.create_task(_after(late, rename("7.bin")))
        late.set()
        await after
        stored = await metadata.uploads.get(upload.id)
        assert stored is not None and stored.filename == "7.bin"
    finally:
        await locks.close()
        await metadata.close()


async def _after(event: asyncio.Event, work: Coroutine[Any, Any, None]) -> None:
    await event.wait()
    await work


async def test_a_session_that_ends_after_the_unlock_does_not_fail_the_work_it_guarded(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock's session ends (a restart, pg_terminate_backend) after its unlock but before the
    pool has reset the connection on its way back: the work under the lock is done and committed,
    and the lock is gone with the session, so leaving the hold must not fail the request (a 500
    for a PATCH whose bytes were saved)."""
    locks = PostgresAdvisoryLocks(pg_url)
    unlock = PostgresAdvisoryLocks._unlock

    async def unlock_then_end_session(conn: Any, key: int, upload_id: str) -> None:
        await unlock(conn, key, upload_id)
        # Ended from another thread while this event loop waits without turning: the pool's reset
        # of the connection is what meets the closed session.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            assert pool.submit(asyncio.run, _end_lock_sessions(pg_url)).result()

    try:
        monkeypatch.setattr(PostgresAdvisoryLocks, "_unlock", staticmethod(unlock_then_end_session))
        async with locks.hold("u-late", timeout=1):
            pass
        monkeypatch.undo()
        async with locks.hold("u-late", timeout=1):  # free, and taken on a new connection
            pass
    finally:
        await locks.close()
