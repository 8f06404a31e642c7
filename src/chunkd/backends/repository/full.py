"""A metadata database whose volume is full, whichever driver noticed: the engine's ``StorageFull``
(507 in every dialect, saying what is wrong, the upload resumable), not an unexplained 500."""

from __future__ import annotations

import sqlite3

from chunkd.domain.errors import StorageFull

__all__ = ["database_full", "is_full"]

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
