"""The PostgreSQL session that holds an upload's advisory lock, lent to that upload's writes.

An advisory lock lives as long as its session. If the session ends while a request still writes
(PostgreSQL restarted, a connection reset, ``pg_terminate_backend``), another node may take the
lock and write too. A save sent on any other connection would still commit: a blind ``UPDATE``
cannot tell. Sent on the lock's own session, it commits only while that session, and so the lock,
is alive: the lock fences its writes. ``PostgresAdvisoryLocks.hold`` lends its session here for the
hold's length; ``PostgresUploadRepository`` saves on it.

The lending travels in a context variable, so it reaches the holder's task and any task that task
starts, and nothing else. One session carries the locks of several uploads (``carriers``) and
serves one statement at a time, hence ``busy``, shared by every ``LockSession`` on that session;
once the hold ends, ``conn`` is None and a late task falls back to the pool (unfenced, as before).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LockSession", "left_in_transaction", "lend", "lock_session", "turn"]

log = logging.getLogger("chunkd.locks")


@asynccontextmanager
async def turn(busy: asyncio.Lock, timeout: float | None) -> AsyncIterator[None]:
    """``busy`` held for the block, waited for at most ``timeout`` seconds (TimeoutError past it:
    the statements ahead of this one on the session wait for a server that does not answer, and
    each would otherwise add its own statement timeout to this one's wait)."""
    async with asyncio.timeout(timeout):
        await busy.acquire()
    try:
        yield
    finally:
        busy.release()


def left_in_transaction(conn: Any) -> bool:
    """Whether ``conn`` is still inside a transaction after a transaction block ended: a save cut
    short half way (cancelled, and its ROLLBACK with it). The next save of any upload whose lock
    that session carries would run inside that transaction (asyncpg makes a nested block a
    savepoint: ``_top_xact``, private, is its record of the open one; read with a default so that
    a release without it still has the public check), and its "commit" would commit nothing."""
    return not conn.is_closed() and bool(conn.is_in_transaction() or getattr(conn, "_top_xact", None) is not None)


@dataclass(eq=False)
class LockSession:
    dsn: str  # the database the lock is in: a repository on another database must not use it
    upload_id: str
    conn: Any  # the asyncpg connection holding the lock; None once the hold ended
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)  # the connection's, shared by its holders
    timeout: float | None = None  # the longest wait for ``busy`` (``turn``)

    def turn(self) -> AbstractAsyncContextManager[None]:
        """``busy`` for one save (see ``turn``)."""
        return turn(self.busy, self.timeout)

    def after_save(self, conn: Any) -> None:
        """Called with ``busy`` still held once a save on ``conn`` ended, however it ended: a
        connection ``left_in_transaction`` is closed, which drops every lock it carries (their
        writers are told, as for any lost session), rather than lent on in that state."""
        if left_in_transaction(conn):
            log.warning("a lock connection was left inside a transaction by a save cut short; closing it")
            conn.terminate()


_lent: ContextVar[tuple[LockSession, ...]] = ContextVar("chunkd_lock_sessions", default=())


def lock_session(dsn: str, upload_id: str) -> LockSession | None:
    """The session holding ``upload_id``'s lock in ``dsn``'s database for this task, if any."""
    for session in _lent.get():
        if session.upload_id == upload_id and session.dsn == dsn and session.conn is not None:
            return session
    return None


@contextmanager
def lend(session: LockSession) -> Iterator[None]:
    """Lends ``session`` to the current task (and the tasks it starts) for the block's length."""
    _lent.set((*_lent.get(), session))
    try:
        yield
    finally:
        # Filtered rather than reset by token: holds of several uploads may end in any order.
        _lent.set(tuple(s for s in _lent.get() if s is not session))
