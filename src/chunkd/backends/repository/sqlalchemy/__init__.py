"""The repositories over SQLAlchemy 2 Core: SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from chunkd.backends.repository.full import DATABASE_TIMEOUT, closed_within, storage_faults
from chunkd.backends.repository.sqlalchemy.base import database_faults
from chunkd.backends.repository.sqlalchemy.database import check_schema, create_engine, migrate
from chunkd.backends.repository.sqlalchemy.keys import SqlKeyRepository
from chunkd.backends.repository.sqlalchemy.links import SqlUploadLinkRepository
from chunkd.backends.repository.sqlalchemy.media import SqlMediaRepository
from chunkd.backends.repository.sqlalchemy.uploads import SqlUploadRepository
from chunkd.backends.repository.sqlalchemy.webhooks import SqlWebhookRepository

__all__ = ["SqlMetadata", "open_sql_metadata"]


@dataclass(frozen=True)
class SqlMetadata:
    """Every repository over one engine (a ``MetadataStore``)."""

    engine: AsyncEngine
    uploads: SqlUploadRepository
    keys: SqlKeyRepository
    links: SqlUploadLinkRepository
    media: SqlMediaRepository
    webhooks: SqlWebhookRepository

    @classmethod
    def over(cls, engine: AsyncEngine) -> SqlMetadata:
        return cls(
            engine,
            SqlUploadRepository(engine),
            SqlKeyRepository(engine),
            SqlUploadLinkRepository(engine),
            SqlMediaRepository(engine),
            SqlWebhookRepository(engine),
        )

    async def close(self) -> None:
        await closed_within(self.engine.dispose(), "the metadata database engine")


async def open_sql_metadata(url: str, *, run_migrations: bool, timeout: float = DATABASE_TIMEOUT) -> SqlMetadata:
    """The repositories over the database at ``url``, migrated first when ``run_migrations``, else
    checked to be at this version's schema (or a newer one); ``timeout``: see ``create_engine``."""
    engine = create_engine(url, timeout=timeout)
    try:
        # A database down, not answering or out of room is said so, not the driver's error: raw
        # (a failed connect's socket error) or wrapped by SQLAlchemy (SQLite's disk I/O error
        # opening a database on a full volume).
        with storage_faults(), database_faults():
            if run_migrations:
                await migrate(engine, connect_timeout=timeout)
            else:
                await check_schema(engine)
    except BaseException:
        await closed_within(engine.dispose(), "the metadata database engine")
        raise
    return SqlMetadata.over(engine)
