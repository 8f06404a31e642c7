"""The repositories on PostgreSQL: the upload repository's hot paths on asyncpg with statements
prepared once per connection (``uploads``), everything else through SQLAlchemy."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from chunkd.backends.locks.postgres import asyncpg_dsn
from chunkd.backends.repository.composed import ComposedMetadata
from chunkd.backends.repository.full import DATABASE_TIMEOUT
from chunkd.backends.repository.postgres.uploads import PostgresUploadRepository
from chunkd.backends.repository.sqlalchemy import open_sql_metadata

__all__ = ["PostgresMetadata", "is_postgres", "open_postgres_metadata"]

PostgresMetadata = ComposedMetadata[PostgresUploadRepository]


def is_postgres(url: str) -> bool:
    return make_url(url).drivername.split("+")[0] in ("postgresql", "postgres")


async def open_postgres_metadata(
    url: str, *, run_migrations: bool, timeout: float = DATABASE_TIMEOUT
) -> PostgresMetadata:
    """The repositories over the PostgreSQL database ``url`` names, migrated first when
    ``run_migrations``; ``timeout``: how long a statement or a new connection may wait for the
    server (``full.DATABASE_TIMEOUT``)."""
    sql = await open_sql_metadata(url, run_migrations=run_migrations, timeout=timeout)
    try:
        uploads = await PostgresUploadRepository.open(asyncpg_dsn(url), sql.uploads, timeout=timeout)
    except BaseException:
        await sql.close()
        raise
    return ComposedMetadata(sql, uploads)
