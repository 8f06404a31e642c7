"""Where metadata lives: ``open_metadata`` opens every repository of the database a URL names."""

from __future__ import annotations

from chunkd.ports.metadata import MetadataStore

__all__ = ["open_metadata"]


async def open_metadata(url: str, *, run_migrations: bool) -> MetadataStore:
    """The repositories over the database at ``url`` (``sqlite:///…`` or ``postgresql://…``),
    migrated first when ``run_migrations``."""
    from chunkd.backends.repository.sqlalchemy import open_sql_metadata

    return await open_sql_metadata(url, run_migrations=run_migrations)
