"""Lifecycle events: what happened to an upload, as written to the outbox and delivered to
webhooks. An event's ``id`` is made once, when the state change it reports is committed, and never
changes (receivers deduplicate by it: it is the ``webhook-id`` of every delivery of it).

The payload's ``data`` is the file object as ``GET /v1/files/{id}`` shows it (without the upload
URL, which is a credential) plus the ``frontend`` the upload came through; it is rendered here, from
the upload, so the engine and the native API describe a file the same way."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from chunkd.domain.metadata import LINK_METADATA_KEY, PURPOSE_METADATA_KEY
from chunkd.domain.upload import Mode, Part, Status, Upload

__all__ = ["Event", "EventType", "file_object", "file_summary", "isotime", "new_event_id"]


class EventType(StrEnum):
    UPLOAD_CREATED = "upload.created"
    UPLOAD_COMPLETED = "upload.completed"
    UPLOAD_CANCELLED = "upload.cancelled"
    UPLOAD_EXPIRED = "upload.expired"
    UPLOAD_DELETED = "upload.deleted"
    UPLOAD_REJECTED = "upload.rejected"
    MEDIA_PUBLISHED = "media.published"


def new_event_id() -> str:
    """``evt_`` + 128 random bits (also a valid Standard Webhooks message id)."""
    return "evt_" + secrets.token_hex(16)


def isotime(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with milliseconds and ``Z``, as every chunkd API writes times."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _part_count(upload: Upload, *, with_parts: bool) -> int:
    """PARTS: the number of parts the file has. APPEND (tus, media chunks): the parts stored so far,
    since appended bytes have no part geometry."""
    if upload.mode is Mode.APPEND:
        return len(upload.parts) if with_parts else upload.parts_received
    return upload.part_count or 0


def file_summary(upload: Upload) -> dict[str, Any]:
    """The file's identity, state and times: what the Files API answers to complete and cancel, and
    the first members of the file object."""
    return {
        "id": upload.id,
        "completedAt": isotime(upload.completed_at),
        "createdAt": isotime(upload.created_at),
        "expiresAt": isotime(upload.expires_at) if upload.status is Status.PENDING else None,
        "filename": upload.filename,
        "mimeType": upload.mime_type,
        "sizeBytes": upload.size_bytes or 0,
        "status": upload.status.value,
    }


def file_object(upload: Upload, *, parts: Iterable[Part] | None = None, with_parts: bool = True) -> dict[str, Any]:
    """The file object of the Files API without its upload URL. ``parts`` overrides the upload's
    own (e.g. none for an upload whose part rows are being removed in the same transaction)."""
    view = file_summary(upload)
    view |= {
        "partSize": upload.part_size,
        "partCount": _part_count(upload, with_parts=with_parts),
        "bytesReceived": upload.bytes_received,
        "md5": upload.md5,
        # The whole file's CRC-64/NVME as S3 reports it (x-amz-checksum-crc64nvme): base64, big-endian.
        "crc64nvme": base64.b64encode(int(upload.crc64, 16).to_bytes(8, "big")).decode() if upload.crc64 else None,
        # The upload link it came through (None: its owner's own), also in events: a receiver tells
        # a partner's file from the owner's by it.
        "uploadLink": upload.metadata.get(LINK_METADATA_KEY),
        "purpose": upload.metadata.get(PURPOSE_METADATA_KEY),
    }
    if with_parts:
        shown = upload.sorted_parts() if parts is None else sorted(parts, key=lambda p: p.number)
        view["parts"] = [
            {"partNumber": p.number, "sizeBytes": p.size, "etag": f'"{p.checksum}"' if p.checksum else None}
            for p in shown
        ]
    return view


@dataclass(frozen=True)
class Event:
    """One outbox entry. ``owner`` scopes who may receive it (an owner's endpoints only ever get
    that owner's events); ``upload_id`` is None for events about no single upload."""

    type: str
    owner: str
    upload_id: str | None
    timestamp: datetime
    data: dict[str, Any]
    id: str = field(default_factory=new_event_id)

    @classmethod
    def for_upload(
        cls,
        type: EventType,
        upload: Upload,
        now: datetime,
        *,
        parts: Iterable[Part] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Event:
        """The event ``type`` about ``upload`` in the state it is in now (after the change)."""
        data = file_object(upload, parts=parts)
        data["frontend"] = upload.frontend
        if extra:
            data.update(extra)
        return cls(type=type.value, owner=upload.owner, upload_id=upload.id, timestamp=now, data=data)

    def payload(self) -> dict[str, Any]:
        """The JSON body delivered to webhooks."""
        return {"type": self.type, "timestamp": isotime(self.timestamp), "data": self.data}
