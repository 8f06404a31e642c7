"""Validation of names and ids that come from clients."""

from __future__ import annotations

import re
import secrets
import unicodedata

from chunkd.domain.errors import InvalidInput

__all__ = [
    "MAX_FILENAME_BYTES",
    "UPLOAD_ID_PATTERN",
    "check_client_ref",
    "clean_filename",
    "is_upload_id",
    "media_type",
    "new_upload_id",
]

MAX_FILENAME_BYTES = 255
# Every upload id, in every dialect's URLs and in storage paths and keys: what new_upload_id mints.
# Signed URLs and upload links carry the same ids; there are no others (no legacy shape).
UPLOAD_ID_PATTERN = r"[A-Za-z0-9_-]{22}"
_UPLOAD_ID = re.compile(UPLOAD_ID_PATTERN)


def new_upload_id() -> str:
    """128 random bits, URL-safe base64 without padding (22 characters), never beginning with '-':
    ids are pasted into command lines, where ``chunkd download -Xw…`` reads as an option. Drawing
    again drops one id in 64, about 0.02 bits of the 128."""
    while True:
        candidate = secrets.token_urlsafe(16)
        if not candidate.startswith("-"):
            return candidate


def is_upload_id(value: str) -> bool:
    """Whether ``value`` has the shape of an upload id (``UPLOAD_ID_PATTERN``), so that it can be
    looked up, or used in a storage path, without further checks."""
    return _UPLOAD_ID.fullmatch(value) is not None


def clean_filename(name: str, *, field: str = "filename") -> str:
    """A display filename that is safe anywhere: NFC, no control or format characters, no path
    separators, not ``.``/``..``, at most 255 UTF-8 bytes (cut on a character boundary, keeping the
    extension where possible)."""
    name = unicodedata.normalize("NFC", name)
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = name.replace("/", "_").replace("\\", "_").strip()
    if name in {"", ".", ".."}:
        raise InvalidInput(f"{field} must be a non-empty file name", field=field)
    if len(name.encode()) > MAX_FILENAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        suffix = f".{ext}" if dot and 0 < len(ext.encode()) <= 16 else ""
        base = stem if suffix else name
        budget = MAX_FILENAME_BYTES - len(suffix.encode())
        base = base.encode()[:budget].decode(errors="ignore")
        name = base + suffix
    return name


_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}(;[ -~]*)?$")


def media_type(value: str) -> str:
    """``value`` stripped, once it is a usable media type: RFC 6838 type/subtype (parameters of
    printable ASCII), at most 255 characters. It is served back as Content-Type. The raw value is
    checked for control characters, so a trailing newline is refused, not trimmed."""
    stripped = value.strip()
    if len(value) > 255 or any(ord(c) < 32 or ord(c) == 127 for c in value) or not _MEDIA_TYPE.match(stripped):
        raise InvalidInput("mimeType is not a valid media type (type/subtype)", field="mimeType")
    return stripped


def check_client_ref(client_ref: str, *, field: str = "id", name: str = "the client's upload id") -> None:
    """A client's own id for an upload is stored and queried: printable and at most 128 characters.
    ``field`` and ``name`` say where the request carried it (a form field, an Idempotency-Key)."""
    if not client_ref or len(client_ref) > 128 or any(ord(c) < 32 or ord(c) == 127 for c in client_ref):
        raise InvalidInput(f"{name} must be 1-128 printable characters", field=field)
