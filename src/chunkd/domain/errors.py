"""The engine's error tree. Errors are data: each carries a stable ``code`` and, where the
problem is in the caller's input, the ``field`` at fault. No HTTP here; every frontend maps
these to its own status codes and body shapes.

    ChunkdError
     ├── InvalidInput              invalid_input        the request itself is wrong (names a field)
     │    ├── ChecksumMismatch     checksum_mismatch    bytes do not match a declared digest
     │    ├── PartOutOfRange       part_out_of_range    part number outside 1..partCount
     │    ├── PartSizeMismatch     part_size_mismatch   a non-last part that is not partSize bytes
     │    ├── OffsetMismatch       offset_mismatch      an append that does not start at the current end
     │    ├── SizeMismatch         size_mismatch        more (or fewer) bytes than declared
     │    └── ContentRefused       invalid_input        the content is not what it must be (inspection)
     ├── TooLarge                  too_large            over a size limit (file, part, request)
     ├── NotFound                  not_found            no such upload for this owner
     ├── Conflict                  conflict
     │    ├── InvalidState         invalid_state        the upload's status forbids the operation
     │    ├── MissingParts         missing_parts        complete before every part arrived
     │    └── Busy                 upload_busy          another writer holds the upload
     ├── Expired                   upload_expired       the upload expired (a Conflict for most frontends)
     ├── Unauthenticated           unauthenticated      no or bad credentials
     ├── Forbidden                 forbidden / missing_scope
     └── QuotaExceeded             quota_exceeded       a per-owner limit would be passed
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Busy",
    "ChecksumMismatch",
    "ChunkdError",
    "Conflict",
    "ContentRefused",
    "DatabaseUnavailable",
    "Expired",
    "Forbidden",
    "ForeignStore",
    "InvalidInput",
    "InvalidState",
    "MissingParts",
    "NotFound",
    "OffsetMismatch",
    "PartOutOfRange",
    "PartSizeMismatch",
    "QuotaExceeded",
    "RateLimited",
    "SizeMismatch",
    "StorageError",
    "StorageFull",
    "TooLarge",
    "Unauthenticated",
]


class ChunkdError(Exception):
    """Base of every engine error: a stable ``code``, a human ``message``, an optional ``field``."""

    code = "error"

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        body.update(self.details)
        return body


class InvalidInput(ChunkdError):
    code = "invalid_input"


class ContentRefused(InvalidInput):
    """An inspection of the content refused it (not a PDF, a damaged image, over a limit). Raised
    by a ``complete`` check, it still saves what the check recorded on the upload, so the same
    bytes are not inspected again."""


class ChecksumMismatch(InvalidInput):
    code = "checksum_mismatch"


class PartOutOfRange(InvalidInput):
    code = "part_out_of_range"


class PartSizeMismatch(InvalidInput):
    code = "part_size_mismatch"


class OffsetMismatch(InvalidInput):
    code = "offset_mismatch"


class SizeMismatch(InvalidInput):
    code = "size_mismatch"


class TooLarge(ChunkdError):
    code = "too_large"


class NotFound(ChunkdError):
    code = "not_found"


class Conflict(ChunkdError):
    code = "conflict"


class InvalidState(Conflict):
    code = "invalid_state"


class MissingParts(Conflict):
    code = "missing_parts"


class Busy(Conflict):
    code = "upload_busy"


class Expired(ChunkdError):
    code = "upload_expired"


class Unauthenticated(ChunkdError):
    code = "unauthenticated"


class Forbidden(ChunkdError):
    code = "forbidden"


class QuotaExceeded(ChunkdError):
    code = "quota_exceeded"


class RateLimited(ChunkdError):
    code = "rate_limited"


class StorageError(ChunkdError):
    """Storage failed while bytes were written or read: not the client's fault, and nothing past the
    durable bytes was recorded. The upload resumes once storage is back."""

    code = "storage_unavailable"


class DatabaseUnavailable(StorageError):
    """The metadata database is unreachable, did not answer in time, or its storage failed: a
    storage fault as any other (503, Retry-After), with its own code so that a client or an
    operator can tell it from the blob store's."""

    code = "database_unavailable"


class ForeignStore(StorageError):
    """The blob store is marked as another database's: an orphan sweep here would remove blobs that
    database's records name."""

    code = "foreign_store"


class StorageFull(StorageError):
    """No space left on the bytes' volume (ENOSPC, EDQUOT) or less than the configured free-space floor."""

    code = "storage_full"
