"""Where metadata lives: ``open_metadata`` opens every repository of the database a URL names.

A SQLite file gets the upload repository's hot paths on raw ``sqlite3`` with group commit
(``sqlite/``); PostgreSQL (and an in-memory SQLite database) gets SQLAlchemy throughout
(``sqlalchemy/``). Both store the same rows the same way."""

from __future__ import annotations

from chunkd.ports.metadata import MetadataStore

__all__ = ["open_metadata"]


async def open_metadata(url: str, *, run_migrations: bool) -> MetadataStore:
    """The repositories over the database at ``url`` (``sqlite:///…`` or ``postgresql://…``),
    migrated first when ``run_migrations``."""
    from chunkd.backends.repository.sqlite import open_sqlite_metadata, sqlite_path

    path = sqlite_path(url)
    if path is not None:
        return await open_sqlite_metadata(url, path, run_migrations=run_migrations)
    from chunkd.backends.repository.sqlalchemy import open_sql_metadata

    return await open_sql_metadata(url, run_migrations=run_migrations)
