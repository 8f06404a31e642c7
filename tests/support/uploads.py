"""The one factory of ``Upload`` aggregates for tests that need one without a server (domain,
storage and repository tests). Every argument has a plain default; tests name what matters to them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from chunkd.domain.names import new_upload_id
from chunkd.domain.upload import Mode, Status, Upload

__all__ = ["NOW", "make_upload"]

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def make_upload(
    size: int | None = 2500,
    part_size: int = 1000,
    *,
    mode: Mode = Mode.PARTS,
    status: Status = Status.PENDING,
    upload_id: str | None = None,
    owner: str = "alice",
    filename: str = "a.bin",
    mime_type: str = "application/octet-stream",
    created: datetime = NOW,
    expires_at: datetime | None = None,
    ttl: timedelta | None = timedelta(hours=1),
    **fields: Any,
) -> Upload:
    """An Upload in memory: ``expires_at`` is given, or ``created + ttl`` (None when ``ttl`` is None)."""
    if expires_at is None and ttl is not None:
        expires_at = created + ttl
    return Upload(
        id=upload_id or new_upload_id(),
        owner=owner,
        filename=filename,
        mime_type=mime_type,
        size_bytes=size,
        part_size=part_size,
        mode=mode,
        status=status,
        created_at=created,
        updated_at=created,
        expires_at=expires_at,
        **fields,
    )
