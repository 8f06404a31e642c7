"""The upload and part rows as the raw-driver repositories (``sqlite/``, ``postgres/``) write and
read them: one column order, the values in that order, and back. Only how a time is stored
differs between drivers (text on SQLite, ``timestamptz`` on PostgreSQL): each passes its own."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from chunkd.backends.repository.sqlalchemy.tables import parts as parts_table
from chunkd.backends.repository.sqlalchemy.tables import uploads as uploads_table
from chunkd.domain.upload import Mode, Part, Status, Upload

__all__ = ["PART_COLUMNS", "UPLOAD_COLUMNS", "part_from", "part_values", "quoted", "upload_from", "upload_values"]

# The columns in the order the values below are written and read. The schema mirror (which a test
# checks against the migrations) must have exactly these: a new column fails here, at import.
UPLOAD_COLUMNS = [
    *("id", "owner", "frontend", "client_ref", "filename", "mime_type", "size_bytes", "part_size", "mode"),
    *("status", "created_at", "updated_at", "expires_at", "completed_at", "declared_md5", "md5"),
    *("bytes_received", "parts_received", "hash_offset", "hash_state", "meta", "crc64"),
]
PART_COLUMNS = ["number", "offset", "size", "md5", "blob_ref", "hash_state", "created_at", "crc64"]
if [c.name for c in uploads_table.columns] != UPLOAD_COLUMNS or ["upload_id", *PART_COLUMNS] != [
    c.name for c in parts_table.columns
]:
    raise ImportError("chunkd.backends.repository.rows does not match the uploads/parts tables")

TimeOut = Callable[[datetime | None], Any]
TimeIn = Callable[[Any], datetime | None]


def quoted(columns: Iterable[str]) -> str:
    """``"a", "b"`` (``offset`` and ``number`` are keywords somewhere)."""
    return ", ".join(f'"{c}"' for c in columns)


def upload_values(upload: Upload, time: TimeOut) -> list[Any]:
    """The row's values in ``UPLOAD_COLUMNS`` order; JSON as ``json.dumps`` text."""
    return [
        upload.id,
        upload.owner,
        upload.frontend,
        upload.client_ref,
        upload.filename,
        upload.mime_type,
        upload.size_bytes,
        upload.part_size,
        upload.mode.value,
        upload.status.value,
        time(upload.created_at),
        time(upload.updated_at),
        time(upload.expires_at),
        time(upload.completed_at),
        upload.declared_md5,
        upload.md5,
        upload.bytes_received,
        upload.parts_received,
        upload.hash_offset,
        upload.hash_state,
        json.dumps(upload.metadata),
        upload.crc64,
    ]


def upload_from(row: Sequence[Any], time: TimeIn) -> Upload:
    """The upload of a row selected with ``UPLOAD_COLUMNS``."""
    (id_, owner, frontend, client_ref, filename, mime_type, size_bytes, part_size, mode, status, created_at) = row[:11]
    (updated_at, expires_at, completed_at, declared_md5, md5, received, parts_received, hash_offset) = row[11:19]
    hash_state, meta, crc64 = row[19:]
    return Upload(
        id=id_,
        owner=owner,
        frontend=frontend,
        client_ref=client_ref,
        filename=filename,
        mime_type=mime_type,
        size_bytes=size_bytes,
        part_size=part_size,
        mode=Mode(mode),
        status=Status(status),
        created_at=time(created_at),  # type: ignore[arg-type]  # NOT NULL
        updated_at=time(updated_at),  # type: ignore[arg-type]  # NOT NULL
        expires_at=time(expires_at),
        completed_at=time(completed_at),
        declared_md5=declared_md5,
        md5=md5,
        bytes_received=received,
        parts_received=parts_received,
        hash_offset=hash_offset,
        hash_state=None if hash_state is None else bytes(hash_state),
        metadata=dict(json.loads(meta) or {}),
        crc64=crc64,
    )


def part_values(upload_id: str, part: Part, time: TimeOut) -> list[Any]:
    """``upload_id`` and the part's values in ``PART_COLUMNS`` order."""
    return [
        upload_id,
        part.number,
        part.offset,
        part.size,
        part.md5,
        part.blob_ref,
        part.hash_state,
        time(part.created_at),
        part.crc64,
    ]


def part_from(row: Sequence[Any], time: TimeIn) -> Part:
    """The part of a row selected with ``PART_COLUMNS``."""
    number, offset, size, md5, blob_ref, hash_state, created_at, crc64 = row
    state = None if hash_state is None else bytes(hash_state)
    return Part(number, offset, size, md5, blob_ref, time(created_at), state, crc64 or "")  # type: ignore[arg-type]
