"""The tus error dialect: the status codes tus clients act on, a short plain-text body, and
``Tus-Resumable`` on every answer (412 also names the versions we speak)."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from starlette.responses import PlainTextResponse, Response

from chunkd.domain import errors as e
from chunkd.frontends.fieldnames import FieldNames
from chunkd.frontends.http import StatusTable, error_headers, validation_error
from chunkd.frontends.refusals import Refusal
from chunkd.frontends.tus.inflight import UploadInterrupted

__all__ = [
    "TUS_VERSION",
    "UnsupportedMediaType",
    "UnsupportedVersion",
    "refusal_response",
    "render_error",
    "tus_error",
]

TUS_VERSION = "1.0.0"


class UnsupportedVersion(Exception):
    """``Tus-Resumable`` missing or not a version we speak (412)."""


class UnsupportedMediaType(Exception):
    """A PATCH whose body is not ``application/offset+octet-stream`` (415)."""


# tus's own statuses, before the shared ones (most specific first).
_STATUS = StatusTable(
    (UploadInterrupted, 400),  # before Conflict: the stale request's client is gone anyway
    (e.ChecksumMismatch, 460),  # tus checksum extension: "460 Checksum Mismatch"
    (e.OffsetMismatch, 409),
    (e.Busy, 423),  # tusd's answer to a locked upload
    (UnsupportedVersion, 412),
    (UnsupportedMediaType, 415),
)


def tus_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = PlainTextResponse(message + "\n", status_code=status, headers=headers)
    response.headers["Tus-Resumable"] = TUS_VERSION
    response.headers["Cache-Control"] = "no-store"
    return response


def _status(exc: Exception) -> int | None:
    if isinstance(exc, e.InvalidState) and exc.details.get("uploadStatus") == "CANCELLED":
        return 404  # a terminated upload is gone, as far as tus is concerned
    return _STATUS.status(exc)


def refusal_response(refusal: Refusal) -> Response:
    """A guard's refusal as tus answers errors: plain text and ``Tus-Resumable``."""
    return tus_error(refusal.status_code, f"{refusal.code}: {refusal.message}", dict(refusal.headers or {}))


# The engine names the length as the Files API does.
_NAMES = FieldNames({"sizeBytes": "Upload-Length"})


def render_error(exc: Exception) -> Response | None:
    """The tus answer to an error; None for errors that are not ours to render."""
    if isinstance(exc, Refusal):
        return refusal_response(exc)
    if isinstance(exc, RequestValidationError):  # a path parameter (the id) out of bounds
        return tus_error(400, f"invalid_input: {validation_error(exc.errors())[1]}")
    status = _status(exc)
    if status is None:
        return None
    message = f"{exc.code}: {exc.message}" if isinstance(exc, e.ChunkdError) else str(exc)
    message = _NAMES.message(message)
    headers = error_headers(exc, status)
    if status == 412:
        headers["Tus-Version"] = TUS_VERSION
    return tus_error(status, message, headers)
