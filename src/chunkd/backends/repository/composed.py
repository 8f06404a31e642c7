"""One database's repositories where the upload repository's hot paths run on the raw driver and
everything else — migrations, keys, links, media, webhooks, listings — on SQLAlchemy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from chunkd.backends.repository.sqlalchemy import SqlMetadata
from chunkd.backends.repository.sqlalchemy.keys import SqlKeyRepository
from chunkd.backends.repository.sqlalchemy.links import SqlUploadLinkRepository
from chunkd.backends.repository.sqlalchemy.media import SqlMediaRepository
from chunkd.backends.repository.sqlalchemy.webhooks import SqlWebhookRepository

__all__ = ["ComposedMetadata"]


class _Closing(Protocol):
    async def close(self) -> None: ...


U = TypeVar("U", bound=_Closing)


@dataclass(frozen=True)
class ComposedMetadata(Generic[U]):
    """A ``MetadataStore``: ``uploads`` of its own, the other repositories of ``sql``."""

    sql: SqlMetadata
    uploads: U

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
