"""Where upload links live (only a hash of each link's secret)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = ["UploadLinkRecord", "UploadLinkRepository"]


@dataclass(frozen=True)
class UploadLinkRecord:
    id: str
    owner: str
    secret_hash: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    max_bytes: int | None = None
    max_files: int | None = None
    files_uploaded: int = 0
    bytes_uploaded: int = 0
    allowed_mime_types: tuple[str, ...] | None = None
    note: str | None = None
    key_id: str | None = None  # the API key it was made with; revoking that key ends the link


class UploadLinkRepository(Protocol):
    async def add_link(self, link: UploadLinkRecord) -> None: ...

    async def get_link(self, link_id: str, owner: str | None = None) -> UploadLinkRecord | None:
        """The link, scoped to ``owner`` unless None (the token check, which knows no owner yet)."""

    async def list_links(self, owner: str, limit: int) -> list[UploadLinkRecord]:
        """The owner's links, newest first."""

    async def revoke_link(self, link_id: str, owner: str, now: datetime) -> bool:
        """Set ``revoked_at`` (once); False when the owner has no such link."""

    async def reserve(self, link_id: str, size_bytes: int, now: datetime) -> bool:
        """Count one more file of ``size_bytes`` against the link, atomically, only if it is live
        (not revoked, not expired) and stays within ``max_files`` and ``max_bytes``."""

    async def release(self, link_id: str, size_bytes: int) -> None:
        """Undo a ``reserve`` whose upload was then not created."""
