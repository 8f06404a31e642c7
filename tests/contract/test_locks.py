"""The LockManager port's contract (invariant 2: one writer per upload), over every lock backend:
in-process with the lock file (one machine), PostgreSQL advisory locks (several nodes), and the two
stacked as a cluster node runs them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from chunkd.backends.locks.local import LocalLocks
from chunkd.domain.errors import Busy
from chunkd.ports.locks import LockManager


@asynccontextmanager
async def local_locks(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LockManager]:
    locks = LocalLocks(tmp_path / "locks")
    try:
        yield locks
    finally:
        await locks.close()


@asynccontextmanager
async def postgres_locks(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LockManager]:
    from chunkd.backends.locks.postgres import PostgresAdvisoryLocks

    server = request.getfixturevalue("pg_server")
    name = await asyncio.to_thread(server.acquire_database)  # it runs its own event loop
    locks = PostgresAdvisoryLocks(server.url(name), max_connections=8)
    try:
        yield locks
    finally:
        await locks.close()
        await asyncio.to_thread(server.release_database, name)


@asynccontextmanager
async def stacked_locks(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LockManager]:
    from chunkd.backends.locks.stacked import StackedLocks

    async with postgres_locks(request, tmp_path) as database:
        yield StackedLocks(LocalLocks(None), database)


LOCK_BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], AbstractAsyncContextManager[LockManager]]] = {
    "local": local_locks,
    "postgresql": postgres_locks,
    "stacked": stacked_locks,
}


@pytest.fixture(params=list(LOCK_BACKENDS))
async def locks(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LockManager]:
    async with LOCK_BACKENDS[request.param](request, tmp_path) as manager:
        yield manager


async def test_a_held_lock_refuses_a_try_once(locks: LockManager) -> None:
    async with locks.hold("upload-a", timeout=1):
        with pytest.raises(Busy):
            async with locks.hold("upload-a", timeout=0):
                pass
        async with locks.hold("upload-b", timeout=0):  # other uploads are independent
            pass
    async with locks.hold("upload-a", timeout=0):  # released on exit
        pass


async def test_a_waiter_gets_the_lock_when_it_is_released(locks: LockManager) -> None:
    order: list[str] = []
    held = asyncio.Event()

    async def first() -> None:
        async with locks.hold("upload-w", timeout=1):
            held.set()
            order.append("first in")
            await asyncio.sleep(0.05)
            order.append("first out")

    async def second() -> None:
        await held.wait()
        async with locks.hold("upload-w", timeout=10):
            order.append("second in")

    await asyncio.gather(first(), second())
    assert order == ["first in", "first out", "second in"]


async def test_a_waiter_past_its_timeout_gets_busy_and_owns_nothing(locks: LockManager) -> None:
    async with locks.hold("upload-t", timeout=1):
        with pytest.raises(Busy):
            async with locks.hold("upload-t", timeout=0.05):
                pass
    async with locks.hold("upload-t", timeout=0):
        pass


async def test_an_error_inside_releases_the_lock(locks: LockManager) -> None:
    with pytest.raises(RuntimeError):
        async with locks.hold("upload-e", timeout=1):
            raise RuntimeError("boom")
    async with locks.hold("upload-e", timeout=0):
        pass


async def test_a_cancelled_waiter_leaves_no_lock_behind(locks: LockManager) -> None:
    async with locks.hold("upload-c", timeout=1):
        waiter = asyncio.create_task(_hold_briefly(locks, "upload-c", timeout=10))
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    async with locks.hold("upload-c", timeout=0):
        pass


async def _hold_briefly(locks: LockManager, upload_id: str, *, timeout: float) -> None:
    async with locks.hold(upload_id, timeout=timeout):
        pass
