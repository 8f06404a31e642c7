"""SQLite connections owned by threads: one writer that commits concurrent writes together (group
commit), and readers beside it (WAL lets them read while it writes).

Why not aiosqlite and SQLAlchemy here: on the hot paths (a tus PATCH, a part) their Python layers
cost more than the statements themselves — statement compilation and cache keys, a thread hop per
statement, a pool checkout per transaction (measured in docs/benchmarks.md). Here a repository
call is one hop to a thread that runs a few statements prepared once (``sqlite3`` keeps each
connection's prepared statements by their SQL text).

Group commit: a write is a function of the write connection. The writer thread takes every write
queued when it becomes free, runs them in one transaction — each inside its own SAVEPOINT, so one
that fails is rolled back alone and its caller gets its error — and commits once: one WAL sync
for all of them (``synchronous=FULL``: the commit is durable when COMMIT returns). A caller is
released only after the commit that holds its write, so acknowledged still means durable.

Several processes (the workers of ``chunkd serve --workers N``, ``chunkd gc`` beside a server) each
have a writer. They take turns through a POSIX lock on ``<database>-wlock`` around each
transaction: a waiting writer wakes when the lock is let go, where SQLite's own busy handler
sleeps 1, 2, 5, 10… ms between tries. With two workers under 100 concurrent uploads:
69 → 73 MiB/s and request p99 650 → 465 ms (``compare.py many-100``, 2026-11-30)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from chunkd.backends.repository.full import is_full, storage_fault
from chunkd.backends.repository.sqlite.reserve import SpaceReserve

__all__ = ["MAX_BATCH", "GroupCommitWriter", "Readers", "connect"]

T = TypeVar("T")

# Writes committed in one transaction at most: bounds how long the first of them waits behind the
# others' statements (each is a few tens of microseconds; the commit's sync is ~0.3 ms here).
MAX_BATCH = 128


def connect(path: str, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection with the engine's settings: WAL, ``synchronous=FULL`` (a commit is durable
    before it returns), foreign keys, and a busy timeout for the cold paths' writers."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=256)
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    if read_only:
        conn.execute("PRAGMA query_only=ON")
    return conn


@dataclass
class _Write:
    work: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]

    def settle(self, ok: bool, value: Any) -> None:
        with suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
            self.loop.call_soon_threadsafe(_resolve, self.future, ok, value)


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


async def _outcome(future: asyncio.Future[T]) -> T:
    """The write's outcome, also when the waiting task is cancelled meanwhile: a write handed to
    the writer is committed or not whatever its caller does, and the caller must know which (a part
    whose row was committed must not have its blob discarded). The cancellation is delivered after
    a failed write; after a committed one the caller carries on as if it had come a moment later."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        pass
    while not future.done():
        with suppress(asyncio.CancelledError):
            await asyncio.wait([future])  # neither raises the write's error nor cancels it
    if future.exception() is not None:
        raise asyncio.CancelledError
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    return future.result()


class GroupCommitWriter:
    """The one thread that writes to the database (see the module docstring)."""

    def __init__(self, path: str, *, max_batch: int = MAX_BATCH) -> None:
        self.path = path
        self.max_batch = max_batch
        # Counters for tests and metrics, each written by one thread only: writes handed to the
        # writer (event loop) and transactions committed (writer thread).
        self.submitted = 0
        self.commits = 0
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self.reserve = SpaceReserve(path)
        self._thread = threading.Thread(target=self._run, name="chunkd-sqlite-writer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failed is not None:
            raise self._failed

    async def write(self, work: Callable[[sqlite3.Connection], T], *, frees: bool = False) -> T:
        """Run ``work`` on the write connection inside a transaction and return its result once
        that transaction is committed; its exception (having rolled back only its own changes)
        when it raises; the commit's error when the commit fails (then nothing of it is stored).
        ``frees``: the write frees space (a delete, a cancel, an expiry), and may use the room
        kept for that (``SpaceReserve``) when the volume is full."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Write(work, loop, future))
        self.submitted += 1
        try:
            return await _outcome(future)
        except sqlite3.OperationalError as exc:
            if frees and is_full(exc):
                # Rolled back whole: run again, once, with the reserve's room (released by this
                # write, or by another one of the same failed batch).
                self.reserve.release()
                return await self.write(work)
            # As the same fault on the blob volume is: 507 when full, 503 on an I/O error (the
            # upload resumable either way), not a 500.
            if (fault := storage_fault(exc)) is not None:
                raise fault from exc
            raise

    def close(self) -> None:
        """Commit what is queued, then stop the thread and close the connection."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        turns = -1
        try:
            turns = os.open(f"{self.path}-wlock", os.O_RDWR | os.O_CREAT, 0o600)
            conn = connect(self.path)
        except BaseException as exc:
            if turns >= 0:
                os.close(turns)
            self._failed = exc
            self._ready.set()
            return
        self._ready.set()
        self.reserve.restore()
        try:
            stopping = False
            while not stopping:
                first = self._queue.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < self.max_batch:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stopping = True
                        break
                    batch.append(more)
                self._commit(conn, turns, batch)
        finally:
            conn.close()
            os.close(turns)

    def _commit(self, conn: sqlite3.Connection, turns: int, batch: list[_Write]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        alone = len(batch) == 1  # no savepoint needed: its failure rolls the transaction back
        try:
            fcntl.lockf(turns, fcntl.LOCK_EX)
            conn.execute("BEGIN IMMEDIATE")
            for write in batch:
                if not alone:
                    conn.execute("SAVEPOINT write")
                try:
                    result = write.work(conn)
                except Exception as exc:
                    if alone:
                        raise
                    conn.execute("ROLLBACK TO write")
                    conn.execute("RELEASE write")
                    outcomes.append((False, exc))
                else:
                    if not alone:
                        conn.execute("RELEASE write")
                    outcomes.append((True, result))
            conn.execute("COMMIT")
            self.commits += 1
        except Exception as exc:  # BEGIN, COMMIT or the lone write failed: nothing of the batch is stored
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            outcomes = [(False, exc)] * len(batch)
        finally:
            fcntl.lockf(turns, fcntl.LOCK_UN)
        for write, (ok, value) in zip(batch, outcomes, strict=True):
            write.settle(ok, value)
        self.reserve.restore()  # after a release: once there is room again (nothing to do otherwise)


class Readers:
    """Threads that each keep a read-only connection; a read runs on one of them, in one read
    transaction (its statements see one snapshot)."""

    def __init__(self, path: str, *, threads: int = 2) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="chunkd-sqlite-reader")

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work``'s result, run on a reader's connection."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, work)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path, read_only=True)
            with self._lock:
                self._connections.append(conn)
        try:
            conn.execute("BEGIN")
            try:
                return work(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if (fault := storage_fault(exc)) is not None:  # as for writes: 503, not a 500
                raise fault from exc
            raise

    def read_inline(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work``'s result, run now in the caller's thread (the event loop's) on that thread's
        own connection, in one read transaction. For short reads only: it holds the caller
        meanwhile (a WAL reader does not wait for the writer)."""
        return self._run(work)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
