"""The PostgreSQL session that holds an upload's advisory lock, lent to that upload's writes.

An advisory lock lives as long as its session. If the session ends while a request still writes
(PostgreSQL restarted, a connection reset, ``pg_terminate_backend``), another node may take the
lock and write too. A save sent on any other connection would still commit: a blind ``UPDATE``
cannot tell. Sent on the lock's own session, it commits only while that session, and so the lock,
is alive: the lock fences its writes. ``PostgresAdvisoryLocks.hold`` lends its session here for the
hold's length; ``PostgresUploadRepository`` saves on it.

The lending travels in a context variable, so it reaches the holder's task and any task that task
starts, and nothing else. A session serves one statement at a time, hence ``busy``; once the hold
ends, ``conn`` is None and a late task falls back to the pool (unfenced, as before).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LockSession", "lend", "lock_session"]


@dataclass(eq=False)
class LockSession:
    dsn: str  # the database the lock is in: a repository on another database must not use it
    upload_id: str
    conn: Any  # the asyncpg connection holding the lock; None once the hold ended
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)


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
