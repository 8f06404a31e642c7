"""Where media records live (the integer ids of the media API)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from chunkd.domain.events import Event
from chunkd.domain.media import MediaRecord, MediaType

__all__ = ["MediaRepository"]


class MediaRepository(Protocol):
    """Media records; at most one per upload. Every method is its own transaction."""

    async def add(
        self,
        *,
        upload_id: str,
        owner: str,
        type: MediaType,
        width: int | None,
        height: int | None,
        order: int,
        added_at: datetime,
        mime_type: str | None = None,
        event: Event | None = None,
    ) -> MediaRecord:
        """Insert a record with a new integer id, never one handed out before (also when that
        record was deleted); if the upload already has one, return that one. ``event``
        (``media.published``) goes to the outbox in the same transaction, with the new record added
        to its data as ``media``; it is not written when the record already existed."""

    async def get(self, media_id: int, owner: str | None) -> MediaRecord | None:
        """The owner's record with this id (another owner's is None, as a missing one); any
        owner's when ``owner`` is None (internal callers: signed URLs)."""

    async def by_upload(self, upload_id: str) -> MediaRecord | None:
        """The record published from an upload, if any."""

    async def delete(self, media_id: int) -> None:
        """Forget a record (its upload is deleted separately)."""
