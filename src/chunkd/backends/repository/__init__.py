"""Where metadata lives: ``open_metadata`` opens every repository of the database a URL names.

The upload repository's hot paths run on the raw driver: ``sqlite3`` with group commit for a SQLite
file (``sqlite/``), asyncpg with prepared statements for PostgreSQL (``postgres/``); everything else
(and an in-memory SQLite database) on SQLAlchemy (``sqlalchemy/``). All store the same rows the
same way."""

from __future__ import annotations

from chunkd.backends.repository.full import DATABASE_TIMEOUT
from chunkd.ports.metadata import MetadataStore

__all__ = ["open_metadata"]


async def open_metadata(url: str, *, run_migrations: bool, timeout: float = DATABASE_TIMEOUT) -> MetadataStore:
    """The repositories over the database at ``url`` (``sqlite:///…`` or ``postgresql://…``),
    migrated first when ``run_migrations``; ``timeout``: PostgreSQL only, how long a statement
    may wait for the server."""
    from sqlalchemy.engine import make_url

    from chunkd.backends.repository.sqlite import open_sqlite_metadata, sqlite_path

    path = sqlite_path(url)
    if path is not None:
        return await open_sqlite_metadata(url, path, run_migrations=run_migrations)
    if make_url(url).drivername.split("+")[0] in ("postgresql", "postgres"):
        # Imported only here: asyncpg costs a SQLite node ~4 MB of RSS for nothing.
        from chunkd.backends.repository.postgres import open_postgres_metadata

        return await open_postgres_metadata(url, run_migrations=run_migrations, timeout=timeout)
    from chunkd.backends.repository.sqlalchemy import open_sql_metadata

    return await open_sql_metadata(url, run_migrations=run_migrations)
