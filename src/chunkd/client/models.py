"""Typed results: a :class:`File` (the Files API's file object) and its :class:`Part` s, a :class:`Page` of
files, :class:`Usage` and an :class:`UploadLink`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["File", "Page", "Part", "UploadLink", "Usage"]


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None


@dataclass(frozen=True)
class Part:
    """One part the server holds. ``etag`` is opaque: compare it, never parse it."""

    part_number: int
    size_bytes: int
    etag: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Part:
        return cls(int(data["partNumber"]), int(data["sizeBytes"]), data.get("etag"))


@dataclass(frozen=True)
class File:
    """A file (an upload) as the server describes it. Fields the answer did not carry are None
    (the answer of *complete* has no parts, for example)."""

    id: str
    filename: str
    size_bytes: int
    status: str  # PENDING, COMPLETED, CANCELLED or EXPIRED
    mime_type: str | None = None
    created_at: datetime | None = None
    completed_at: datetime | None = None
    expires_at: datetime | None = None
    part_size: int | None = None
    part_count: int | None = None
    bytes_received: int | None = None
    md5: str | None = None
    parts: tuple[Part, ...] | None = None
    upload_url: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> File:
        parts = data.get("parts")
        return cls(
            id=str(data["id"]),
            filename=str(data.get("filename", "")),
            size_bytes=int(data.get("sizeBytes", 0)),
            status=str(data.get("status", "")),
            mime_type=data.get("mimeType"),
            created_at=_time(data.get("createdAt")),
            completed_at=_time(data.get("completedAt")),
            expires_at=_time(data.get("expiresAt")),
            part_size=data.get("partSize"),
            part_count=data.get("partCount"),
            bytes_received=data.get("bytesReceived"),
            md5=data.get("md5"),
            parts=tuple(Part.from_json(p) for p in parts) if isinstance(parts, list) else None,
            upload_url=data.get("uploadUrl"),
            raw=dict(data),
        )

    def summary(self) -> dict[str, Any]:
        """The fields ``chunkd upload --json`` prints, in the API's spelling."""
        return {
            "id": self.id,
            "filename": self.filename,
            "sizeBytes": self.size_bytes,
            "md5": self.md5,
            "status": self.status,
        }


@dataclass(frozen=True)
class Page:
    """One page of ``GET /v1/files``; ``next_cursor`` is None on the last page."""

    files: tuple[File, ...]
    next_cursor: str | None


@dataclass(frozen=True)
class Usage:
    """``GET /v1/usage``: what you hold as the quotas count it, and the quotas (None: no limit)."""

    pending_uploads: int
    pending_bytes: int
    stored_bytes: int
    max_pending_uploads: int | None
    max_pending_bytes: int | None
    max_stored_bytes: int | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Usage:
        limits = data.get("limits") or {}
        return cls(
            int(data["pendingUploads"]),
            int(data["pendingBytes"]),
            int(data["storedBytes"]),
            limits.get("maxPendingUploads"),
            limits.get("maxPendingBytes"),
            limits.get("maxStoredBytes"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class UploadLink:
    """An upload link as the server describes it. ``url`` (the token included) is given only by the
    answer that made the link: the server keeps a hash of the token, never the token."""

    id: str
    url: str | None
    expires_at: datetime | None
    max_bytes: int | None
    max_files: int | None
    files_uploaded: int
    bytes_uploaded: int
    allowed_mime_types: tuple[str, ...] | None
    note: str | None
    created_at: datetime | None
    revoked_at: datetime | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UploadLink:
        types = data.get("allowedMimeTypes")
        return cls(
            id=str(data["id"]),
            url=data.get("url"),
            expires_at=_time(data.get("expiresAt")),
            max_bytes=data.get("maxBytes"),
            max_files=data.get("maxFiles"),
            files_uploaded=int(data.get("filesUploaded", 0)),
            bytes_uploaded=int(data.get("bytesUploaded", 0)),
            allowed_mime_types=tuple(types) if isinstance(types, list) else None,
            note=data.get("note"),
            created_at=_time(data.get("createdAt")),
            revoked_at=_time(data.get("revokedAt")),
            raw=dict(data),
        )
