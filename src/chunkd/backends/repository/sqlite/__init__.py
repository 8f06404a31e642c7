"""The repositories on SQLite: the upload repository's hot paths on raw ``sqlite3`` with group
commit (``uploads``), everything else through SQLAlchemy over the same file."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from chunkd.backends.repository.composed import ComposedMetadata
from chunkd.backends.repository.sqlalchemy import open_sql_metadata
from chunkd.backends.repository.sqlite.reserve import SpaceReserve
from chunkd.backends.repository.sqlite.uploads import SqliteUploadRepository
from chunkd.domain.errors import StorageError

__all__ = ["SqliteMetadata", "open_sqlite_metadata", "sqlite_path"]

SqliteMetadata = ComposedMetadata[SqliteUploadRepository]


def sqlite_path(url: str) -> str | None:
    """The database file a ``sqlite://`` URL names; None for in-memory databases and other URLs."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


async def open_sqlite_metadata(url: str, path: str, *, run_migrations: bool) -> SqliteMetadata:
    """The repositories over the SQLite file ``path`` (which ``url`` names), migrated first when
    ``run_migrations``."""
    try:
        sql = await open_sql_metadata(url, run_migrations=run_migrations)
    except StorageError:
        # On a full volume SQLite cannot make the -wal and -shm files a clean stop removed, and the
        # server would stay down, though deleting through it is how space is freed: the room kept
        # for deletes lets it open (the writer allocates it again once there is room).
        if not SpaceReserve(path).release("opening the database"):
            raise
        sql = await open_sql_metadata(url, run_migrations=run_migrations)
    return ComposedMetadata(sql, SqliteUploadRepository(path, sql.uploads))
