"""The repositories on SQLite: the upload repository's hot paths on raw ``sqlite3`` with group
commit (``uploads``), everything else through SQLAlchemy over the same file."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from chunkd.backends.repository.composed import ComposedMetadata
from chunkd.backends.repository.sqlalchemy import open_sql_metadata
from chunkd.backends.repository.sqlite.uploads import SqliteUploadRepository

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
    sql = await open_sql_metadata(url, run_migrations=run_migrations)
    return ComposedMetadata(sql, SqliteUploadRepository(path, sql.uploads))
