"""Every repository over one metadata database, opened together and closed together."""

from __future__ import annotations

from typing import Protocol

from chunkd.ports.keys import KeyRepository
from chunkd.ports.links import UploadLinkRepository
from chunkd.ports.media import MediaRepository
from chunkd.ports.repository import UploadRepository
from chunkd.ports.webhooks import WebhookRepository

__all__ = ["MetadataStore"]


class MetadataStore(Protocol):
    """One database's repositories, one per concept (each its own port)."""

    @property
    def uploads(self) -> UploadRepository: ...
    @property
    def keys(self) -> KeyRepository: ...
    @property
    def links(self) -> UploadLinkRepository: ...
    @property
    def media(self) -> MediaRepository: ...
    @property
    def webhooks(self) -> WebhookRepository: ...

    async def close(self) -> None:
        """Close every connection of every repository."""
