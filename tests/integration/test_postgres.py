"""PostgreSQL-specific behaviour: cross-node advisory locks (also after kill -9), concurrent
migrations, and the expiry reaper and complete running on two nodes that share one database."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from chunkd.backends.locks.postgres import PostgresAdvisoryLocks, advisory_key, asyncpg_dsn
from chunkd.backends.locks.stacked import StackedLocks
from chunkd.backends.repository.sqlalchemy.database import MIGRATION_LOCK_KEY
from chunkd.domain import errors as e
from chunkd.domain.upload import Mode, Status, Upload
from chunkd.runtime import Runtime, bootstrap_admin_key, build_locks, open_runtime
from chunkd.settings import Settings
from tests.support.postgres import PostgresServer


@pytest.fixture
async def two_nodes(tmp_path: Path, pg_url: str) -> AsyncIterator[tuple[Runtime, Runtime]]:
    """Two runtimes (two "nodes": separate in-process locks and pools) on one database and data dir."""
    settings = Settings(
        data_dir=tmp_path / "data", database_url=pg_url, fsync=False, min_part_size=1, lock_timeout_seconds=5
    )
    a = await open_runtime(settings)
    b = await open_runtime(settings)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def test_build_locks_picks_postgres_for_a_postgres_url(tmp_path: Path) -> None:
    pg = build_locks(Settings(data_dir=tmp_path, database_url="postgresql://u@127.0.0.1:1/db"))
    assert isinstance(pg, StackedLocks) and isinstance(pg.inner, PostgresAdvisoryLocks)
    assert not isinstance(build_locks(Settings(data_dir=tmp_path)), StackedLocks)


def test_lock_pool_dsn_from_sqlalchemy_urls() -> None:
    assert asyncpg_dsn("postgresql+asyncpg://u:p@h:5/db?ssl=require&prepared_statement_cache_size=0") == (
        "postgresql://u:p@h:5/db?sslmode=require"
    )
    assert asyncpg_dsn("postgres://u@h/db") == "postgresql://u@h/db"


def test_advisory_key_is_a_stable_signed_64_bit_number() -> None:
    keys = {advisory_key(f"upload-{i}") for i in range(1000)}
    assert len(keys) == 1000
    assert all(-(2**63) <= k < 2**63 for k in keys)
    assert advisory_key("x") == advisory_key("x") != advisory_key("y")


async def test_advisory_locks_exclude_across_managers(pg_url: str) -> None:
    node_a, node_b = PostgresAdvisoryLocks(pg_url), PostgresAdvisoryLocks(pg_url)
    try:
        async with node_a.hold("u1", timeout=1):
            with pytest.raises(e.Busy):
                async with node_b.hold("u1", timeout=0):
                    pass
            started = time.monotonic()
            with pytest.raises(e.Busy):
                async with node_b.hold("u1", timeout=0.3):
                    pass
            assert time.monotonic() - started >= 0.29
            async with node_b.hold("u2", timeout=0):  # another upload is free
                pass
        async with node_b.hold("u1", timeout=0):  # released
            pass

        # A waiter gets the lock soon after the holder lets go.
        order: list[str] = []
        held = asyncio.Event()

        async def holder() -> None:
            async with node_a.hold("u3", timeout=1):
                order.append("a-in")
                held.set()
                await asyncio.sleep(0.2)
                order.append("a-out")

        async def waiter() -> None:
            await held.wait()  # not a fixed 50 ms: A's lock query may take longer on a loaded machine
            async with node_b.hold("u3", timeout=5):
                order.append("b-in")

        await asyncio.gather(holder(), waiter())
        assert order == ["a-in", "a-out", "b-in"]
    finally:
        await node_a.close()
        await node_b.close()


async def test_lock_released_when_the_body_raises_or_is_cancelled(pg_url: str) -> None:
    locks, other = PostgresAdvisoryLocks(pg_url), PostgresAdvisoryLocks(pg_url)
    try:
        with pytest.raises(RuntimeError):
            async with locks.hold("u", timeout=1):
                raise RuntimeError("boom")

        entered = asyncio.Event()

        async def forever() -> None:
            async with locks.hold("u", timeout=1):
                entered.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(forever())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with other.hold("u", timeout=2):
            pass
    finally:
        await locks.close()
        await other.close()


async def test_a_lock_connection_that_breaks_does_not_fail_the_request(pg_url: str) -> None:
    """If the database drops the lock's session mid-hold (restart, network), the lock is gone on
    the server; leaving the block must neither raise nor poison the pool."""
    import asyncpg

    locks, other = PostgresAdvisoryLocks(pg_url), PostgresAdvisoryLocks(pg_url)
    admin = await asyncpg.connect(pg_url)
    try:
        async with locks.hold("fragile", timeout=1):
            pid = await admin.fetchval(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = $1::bigint & 4294967295",
                advisory_key("fragile"),
            )
            assert pid is not None
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            async with other.hold("fragile", timeout=5):  # the server released it with the session
                pass
        async with locks.hold("fragile", timeout=1):  # the pool replaced the dead connection
            pass
    finally:
        await admin.close()
        await locks.close()
        await other.close()


HOLDER = """
import asyncio, sys, time
from chunkd.backends.locks.postgres import PostgresAdvisoryLocks

async def main():
    locks = PostgresAdvisoryLocks(sys.argv[1])
    async with locks.hold("crashing-upload", timeout=5):
        print("held", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_lock_of_a_kill_9d_process_is_released(pg_url: str) -> None:
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", HOLDER, pg_url, stdout=subprocess.PIPE)
    locks = PostgresAdvisoryLocks(pg_url)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.strip() == b"held"
        with pytest.raises(e.Busy):
            async with locks.hold("crashing-upload", timeout=0.2):
                pass
        child.kill()  # SIGKILL: no finally, no unlock; only the server noticing the dead session
        await child.wait()
        started = time.monotonic()
        async with locks.hold("crashing-upload", timeout=10):
            waited = time.monotonic() - started
        assert waited < 5, waited
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await locks.close()


@pytest.fixture
def empty_pg_url(pg_server: PostgresServer) -> str:
    return pg_server.url(pg_server.create_database())


async def test_nodes_migrating_at_once_wait_for_each_other(empty_pg_url: str, tmp_path: Path) -> None:
    """Two ``chunkd migrate`` processes on an empty database (as nodes starting together): both
    queue on the migration lock (seen in pg_locks while the test holds it), then both succeed and
    the schema is there once. They wait for longer than their statement timeout: a migration (or
    the wait for another node's) is not cut off by it."""
    import asyncpg

    env = {
        **os.environ,
        "CHUNKD_DATABASE_URL": empty_pg_url,
        "CHUNKD_DATA_DIR": str(tmp_path / "data"),
        "CHUNKD_DATABASE_TIMEOUT_SECONDS": "0.5",
    }
    chunkd = str(Path(sys.executable).parent / "chunkd")
    gate = await asyncpg.connect(empty_pg_url)
    try:
        await gate.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        procs = [
            await asyncio.create_subprocess_exec(
                chunkd, "migrate", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            for _ in range(2)
        ]
        waiting_query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        deadline = time.monotonic() + 240  # bounds a failure only: two app imports on a loaded machine
        while await gate.fetchval(waiting_query) < 2:
            assert all(p.returncode is None for p in procs), "a node migrated without waiting for the lock"
            assert time.monotonic() < deadline, "the nodes never queued on the migration lock"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # twice their statement timeout: the wait under test, not a synchronisation
        assert all(p.returncode is None for p in procs), "a node gave up waiting for the migration lock"
        await gate.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        outputs = [(await p.communicate())[0].decode() for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        versions = await gate.fetch("SELECT version_num FROM alembic_version")
        tables = {r[0] for r in await gate.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert len(versions) == 1
        assert {"uploads", "parts", "api_keys", "alembic_version"} <= tables
    finally:
        await gate.close()


async def _pending(runtime: Runtime, n: int, size: int = 10) -> list[Upload]:
    return [
        await runtime.uploads.create("alice", filename=f"f{i}.bin", size_bytes=size, part_size=size) for i in range(n)
    ]


def _later(runtime: Runtime, delta: timedelta) -> None:
    base = runtime.uploads.clock
    runtime.uploads.clock = lambda: base() + delta


async def test_reaper_on_two_nodes_expires_each_upload_once(two_nodes: tuple[Runtime, Runtime]) -> None:
    a, b = two_nodes
    uploads = await _pending(a, 40)
    for upload in uploads[:20]:

        async def body() -> AsyncIterator[bytes]:
            yield b"0123456789"

        await a.uploads.put_part("alice", upload.id, 1, body())
    events: list[tuple[str, str]] = []
    for name, node in (("a", a), ("b", b)):

        async def listen(event: str, upload: Upload, name: str = name) -> None:
            if event == "expired":
                events.append((name, upload.id))

        node.uploads.subscribe(listen)
    day = timedelta(days=2)
    _later(a, day)
    _later(b, day)
    counts = await asyncio.gather(*(node.uploads.expire_due(limit=7) for node in (a, b, a, b, a, b, a, b)))
    while sum(counts) < 40:
        more = await asyncio.gather(a.uploads.expire_due(limit=50), b.uploads.expire_due(limit=50))
        assert sum(more) > 0
        counts.extend(more)
    assert sum(counts) == 40
    assert len(events) == 40 and {i for _, i in events} == {u.id for u in uploads}
    for upload in uploads:
        got = await a.repo.get(upload.id)
        assert got is not None and got.status is Status.EXPIRED and not got.parts
        assert not (a.settings.data_dir / "blobs" / upload.id[:2] / upload.id).exists()


async def test_reaper_on_another_node_spares_an_upload_being_written(two_nodes: tuple[Runtime, Runtime]) -> None:
    a, b = two_nodes
    upload = await a.uploads.create("alice", filename="live.bin", size_bytes=None, mode=Mode.APPEND)
    started, go_on = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        started.set()
        await go_on.wait()
        yield b"y" * 1000

    writing = asyncio.create_task(a.uploads.append("alice", upload.id, 0, slow_body()))
    await started.wait()
    _later(b, timedelta(days=2))  # node B thinks the upload is long idle
    assert await b.uploads.expire_due() == 0
    go_on.set()
    await writing
    got = await a.uploads.get("alice", upload.id)
    assert got.status is Status.PENDING and got.bytes_received == 2000


async def test_concurrent_completes_on_two_nodes_make_one_file(two_nodes: tuple[Runtime, Runtime]) -> None:
    a, b = two_nodes
    data = os.urandom(64 * 1024)
    upload = await a.uploads.create("alice", filename="one.bin", size_bytes=len(data), part_size=16 * 1024)
    for number in range(1, 5):
        chunk = data[(number - 1) * 16384 : number * 16384]

        async def body(chunk: bytes = chunk) -> AsyncIterator[bytes]:
            yield chunk

        node = a if number % 2 else b
        await node.uploads.put_part("alice", upload.id, number, body())
    events: list[str] = []

    async def listen(event: str, _upload: Upload) -> None:
        events.append(event)

    a.uploads.subscribe(listen)
    b.uploads.subscribe(listen)
    results = await asyncio.gather(
        *(node.uploads.complete("alice", upload.id) for node in (a, b, a, b)), return_exceptions=True
    )
    done = [r for r in results if isinstance(r, Upload)]
    assert len(done) == 4, results  # idempotent: every caller sees the one completed file
    assert {u.md5 for u in done} == {hashlib.md5(data).hexdigest()}
    assert {u.completed_at for u in done} == {done[0].completed_at}
    assert events.count("completed") == 1
    got = await b.uploads.get("alice", upload.id)
    assert b"".join([c async for c in b.uploads.read(got)]) == data


async def test_nodes_starting_together_create_one_bootstrap_admin_key(two_nodes: tuple[Runtime, Runtime]) -> None:
    a, b = two_nodes
    tokens = await asyncio.gather(*(bootstrap_admin_key(node) for node in (a, b, a, b)))
    assert len([t for t in tokens if t]) == 1
    assert await a.metadata.keys.count_keys() == 1


async def test_a_node_saves_under_its_lock_on_the_lock_session(two_nodes: tuple[Runtime, Runtime]) -> None:
    """The fence as a node is wired (runtime: locks and repository on one database): a save made
    while the node holds an upload's lock runs on the lock's session, so once that session is
    gone the save is refused instead of committed."""
    import asyncpg

    a, _ = two_nodes
    upload = await a.uploads.create("alice", filename="fenced.bin", size_bytes=10, part_size=10)
    async with a.locks.hold(upload.id, timeout=1):
        dsn = asyncpg_dsn(a.settings.resolved_database_url())
        admin = await asyncpg.connect(dsn)
        try:
            ended = await admin.fetch(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'chunkd-locks'"
            )
        finally:
            await admin.close()
        assert ended
        upload.filename = "moved.bin"
        with pytest.raises(e.Busy):
            await a.metadata.uploads.save(upload)
    stored = await a.metadata.uploads.get(upload.id)
    assert stored is not None and stored.filename == "fenced.bin"
