"""The repositories on SQLite: the upload repository's hot paths on raw ``sqlite3`` with group
commit (``uploads``), everything else — migrations, keys, links, media, webhooks, listings —
through SQLAlchemy over the same file."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import make_url

from chunkd.backends.repository.sqlalchemy import SqlMetadata, open_sql_metadata
from chunkd.backends.repository.sqlalchemy.keys import SqlKeyRepository
from chunkd.backends.repository.sqlalchemy.links import SqlUploadLinkRepository
from chunkd.backends.repository.sqlalchemy.media import SqlMediaRepository
from chunkd.backends.repository.sqlalchemy.webhooks import SqlWebhookRepository
from chunkd.backends.repository.sqlite.uploads import SqliteUploadRepository

__all__ = ["SqliteMetadata", "open_sqlite_metadata", "sqlite_path"]


def sqlite_path(url: str) -> str | None:
    """The database file a ``sqlite://`` URL names; None for in-memory databases and other URLs."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


@dataclass(frozen=True)
class SqliteMetadata:
    """Every repository over one SQLite file (a ``MetadataStore``)."""

    sql: SqlMetadata
    uploads: SqliteUploadRepository

    @property
    def keys(self) -> SqlKeyRepository:
        return self.sql.keys

    @property
    def links(self) -> SqlUploadLinkRepository:
        return self.sql.links

    @property
    def media(self) -> SqlMediaRepository:
        return self.sql.media

    @property
    def webhooks(self) -> SqlWebhookRepository:
        return self.sql.webhooks

    async def close(self) -> None:
        await self.uploads.close()
        await self.sql.close()


async def open_sqlite_metadata(url: str, path: str, *, run_migrations: bool) -> SqliteMetadata:
    """The repositories over the SQLite file ``path`` (which ``url`` names), migrated first when
    ``run_migrations``."""
    sql = await open_sql_metadata(url, run_migrations=run_migrations)
    return SqliteMetadata(sql, SqliteUploadRepository(path, sql.uploads))
