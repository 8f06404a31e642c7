"""A metadata database whose volume is full, whichever driver noticed: the engine's ``StorageFull``
(507 in every dialect, saying what is wrong, the upload resumable), not an unexplained 500. Likewise
a SQLite database whose storage failed (an I/O error, a volume the kernel remounted read-only after
a disk error): ``StorageError``, 503 with Retry-After, as the same fault on the blob files is."""

from __future__ import annotations

import sqlite3

from chunkd.domain.errors import StorageError, StorageFull

__all__ = ["database_full", "is_full", "storage_fault"]

# PostgreSQL's disk_full condition (SQLSTATE class 53, insufficient resources).
_PG_DISK_FULL = "53100"


def is_full(error: BaseException | None) -> bool:
    """Whether a driver's error (sqlite3's, or asyncpg's, raw or as SQLAlchemy's ``orig``) says
    the database's volume is full."""
    if isinstance(error, sqlite3.Error):
        return getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL
    return getattr(error, "sqlstate", None) == _PG_DISK_FULL


def database_full() -> StorageFull:
    return StorageFull("no space left for the metadata database")


def storage_fault(error: BaseException | None) -> StorageError | None:
    """The engine's error for a driver's error that says the database's storage failed or is full;
    None for any other error (a bug, a constraint: left as it is)."""
    if is_full(error):
        return database_full()
    if isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_IOERR:
        return StorageError(f"the metadata database's storage failed: {error}")
    return None
