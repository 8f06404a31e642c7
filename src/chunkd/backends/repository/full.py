"""A metadata database whose volume is full, whichever driver noticed: the engine's ``StorageFull``
(507 in every dialect, saying what is wrong, the upload resumable), not an unexplained 500. Likewise
a SQLite database whose storage failed (an I/O error, a volume the kernel remounted read-only after
a disk error), and a PostgreSQL server that cannot be reached or whose connection was lost (it is
restarting or shut down, the connection was refused, reset or terminated) or that does not answer
within ``DATABASE_TIMEOUT`` (hung: a stalled disk, a stopped host): ``StorageError``, 503 with
Retry-After, as the same fault on the blob files is. The client retries once it is back."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from chunkd.domain.errors import DatabaseUnavailable, StorageError, StorageFull

__all__ = [
    "CLOSE_TIMEOUT",
    "DATABASE_TIMEOUT",
    "closed_within",
    "database_full",
    "database_timed_out",
    "database_unreachable",
    "is_full",
    "storage_fault",
    "storage_faults",
    "unreachable",
]

# How long one PostgreSQL statement, or a new connection, may wait for the server (seconds). Every
# statement chunkd runs touches a handful of rows; without a bound, a server that hangs without
# closing its sockets would hold each request (and its upload's lock) until TCP gives up, which
# on an idle socket is never.
DATABASE_TIMEOUT = 30.0

# How long closing a pool of database connections may take at shutdown (seconds). A healthy server
# takes milliseconds. Against one that hangs, each connection's goodbye waits for it (up to the
# statement timeout, and then fails), and a failed close used to end the shutdown there, leaving
# the rest open. Past this, or on such a failure, the connections are dropped, which ends their
# sessions and the locks those held all the same, and shutdown goes on.
CLOSE_TIMEOUT = 5.0

log = logging.getLogger(__name__)

# PostgreSQL's disk_full condition (SQLSTATE class 53, insufficient resources).
_PG_DISK_FULL = "53100"
# Class 08 (connection exception) and the server going away: admin_shutdown (57P01, also
# pg_terminate_backend), crash_shutdown (57P02), cannot_connect_now (57P03: starting, stopping).
_PG_UNREACHABLE = ("08", "57P01", "57P02", "57P03")


def is_full(error: BaseException | None) -> bool:
    """Whether a driver's error (sqlite3's, or asyncpg's, raw or as SQLAlchemy's ``orig``) says
    the database's volume is full."""
    if isinstance(error, sqlite3.Error):
        return getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL
    return getattr(error, "sqlstate", None) == _PG_DISK_FULL


def unreachable(error: BaseException | None) -> bool:
    """Whether a driver's error says the database could not be reached or the connection to it is
    gone: a socket error (refused, reset), a PostgreSQL SQLSTATE saying so (asyncpg's own errors
    and SQLAlchemy's wrappers of them both carry ``sqlstate``), or an asyncpg connection left
    unusable half way through a message."""
    if isinstance(error, OSError):
        return True
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_PG_UNREACHABLE):
        return True
    # Only asyncpg's own errors reach the lock module's test (it imports asyncpg: not on SQLite).
    if error is not None and type(error).__module__.startswith("asyncpg."):
        from chunkd.backends.locks.postgres import connection_broken

        return connection_broken(error)
    return False


def database_full() -> StorageFull:
    return StorageFull("no space left for the metadata database")


def database_timed_out() -> StorageError:
    return DatabaseUnavailable("the metadata database did not answer in time; try again shortly")


def database_unreachable() -> StorageError:
    # Not the driver's words: they name the database's host and port.
    return DatabaseUnavailable("the metadata database is unreachable; try again shortly")


@contextmanager
def storage_faults() -> Iterator[None]:
    """Around a driver's calls: raise ``storage_fault``'s error in place of the driver's where
    there is one; any other error passes as it is."""
    try:
        yield
    except Exception as exc:
        if (fault := storage_fault(exc)) is not None:
            raise fault from exc
        raise


def storage_fault(error: BaseException | None) -> StorageError | None:
    """The engine's error for a driver's error that says the database's storage failed or is full,
    or that the database is unreachable; None for any other error (a bug, a constraint: left as it
    is)."""
    if is_full(error):
        return database_full()
    if isinstance(error, TimeoutError):  # asyncpg's command timeout (an OSError too: tested first)
        return database_timed_out()
    if unreachable(error):
        return database_unreachable()
    if isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_IOERR:
        return DatabaseUnavailable(f"the metadata database's storage failed: {error}")
    return None


async def closed_within(close: Awaitable[None], what: str, *, drop: Callable[[], None] | None = None) -> None:
    """Await ``close`` (a pool's or an engine's) for at most ``CLOSE_TIMEOUT`` seconds; past that,
    or on an error, ``drop`` the connections without a goodbye (if given) and log it. An asyncpg
    pool whose ``close`` is cancelled terminates its connections itself."""
    try:
        await asyncio.wait_for(close, CLOSE_TIMEOUT)
    except Exception as exc:  # TimeoutError included: shutdown goes on
        if drop is not None:
            drop()
        log.warning("%s did not close cleanly (%s); its connections were dropped", what, type(exc).__name__)
