"""Fine Uploader's error dialect: ``{"success": false, "error": "...", "preventRetry": true}``.

Fine Uploader counts a request as failed unless it is 2xx with ``"success": true``; ``preventRetry``
stops its automatic retries, which is right for every error a retry cannot fix (bad input, wrong
checksum, unknown uuid, missing scope). Only a busy upload and rate limiting leave retries on.
``code`` and ``field`` are added for machines (the library ignores unknown keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chunkd.domain import errors as e
from chunkd.frontends.fieldnames import FieldNames
from chunkd.frontends.http import StatusTable, error_headers, validation_error
from chunkd.frontends.refusals import Refusal

__all__ = [
    "DONE_KEYS",
    "ERROR_RESPONSES",
    "FineUploaderError",
    "fine_uploader_error",
    "is_done",
    "refusal_response",
    "render",
]


class FineUploaderError(BaseModel):
    """The error body, as documented in the OpenAPI document."""

    success: bool
    error: str
    code: str
    preventRetry: bool | None = None
    field: str | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": FineUploaderError, "description": "Fine Uploader error"}
    for status in (400, 401, 403, 404, 409, 410, 413, 429)
}

_STATUS = StatusTable()  # the shared statuses as they are
# Fine Uploader retries these (storage faults pass: the upload resumes once space is back).
_RETRYABLE = (e.Busy, e.RateLimited, e.StorageError)
# The engine names fields as the native Files API does; a Fine Uploader client knows them as qq*.
_FIELDS = FieldNames(
    {
        "sizeBytes": "qqtotalfilesize",
        "partSize": "qqchunksize",
        "partNumber": "qqpartindex",
        "filename": "qqfilename",
        "mimeType": "qqfiletype",
        "md5": "qqmd5",
        "body": "qqfile",
    }
)
# A done request (``?done``) carries no qqfile: there the body is the body.
_DONE_FIELDS = _FIELDS.without("body")


DONE_KEYS = frozenset({"done", "done/"})


def is_done(scope: Mapping[str, Any]) -> bool:
    """A ``?done`` (or ``?done/``) request: finishing a chunked file (Chunk Upload Done)."""
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return any(key in DONE_KEYS for key, _ in pairs)


def _in_dialect(field: str | None, message: str, *, done: bool = False) -> tuple[str | None, str]:
    fields = _DONE_FIELDS if done else _FIELDS
    if field is None or field not in fields:
        return field, message
    return fields.field(field), fields.message(message)


def _numbered_in_dialect(exc: e.ChunkdError, details: dict[str, Any]) -> str | None:
    """Fine Uploader numbers chunks from 0 (``qqpartindex``); the engine numbers parts from 1. Errors
    that carry part numbers are re-said with chunk indexes (the message, and ``missingParts``)."""
    if isinstance(exc, e.MissingParts) and isinstance(details.get("missingParts"), list):
        indexes = [n - 1 for n in details["missingParts"]]
        details["missingParts"] = indexes
        shown = ", ".join(map(str, indexes[:20])) + (" …" if len(indexes) > 20 else "")
        return f"chunks not received (qqpartindex): {shown}"
    if isinstance(exc, e.PartOutOfRange) and exc.field == "partNumber":
        count = details.get("partCount")
        if isinstance(count, int):
            return f"qqpartindex must be between 0 and {max(count, 1) - 1}"
        return "qqpartindex is out of range"
    return None


def fine_uploader_error(
    status: int, message: str, *, code: str, field: str | None = None, prevent_retry: bool = True, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"success": False, "error": message, "code": code}
    if prevent_retry:
        body["preventRetry"] = True
    if field is not None:
        body["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=error_headers(None, status))


def refusal_response(refusal: Refusal) -> JSONResponse:
    """A guard's refusal in Fine Uploader's shape; retries stay on where waiting can help (429, 408)."""
    field, message = _in_dialect(refusal.field, refusal.message)
    response = fine_uploader_error(
        refusal.status_code,
        message,
        code=refusal.code,
        field=field,
        prevent_retry=not refusal.retryable,
        **{k: v for k, v in refusal.extra.items() if k not in ("success", "error", "code", "field")},
    )
    response.headers.update(refusal.headers or {})
    return response


def _is_dead(exc: e.ChunkdError) -> bool:
    """Whether ``exc`` says the qquuid's upload expired or was cancelled: its chunks are gone."""
    return isinstance(exc, e.Expired) or (
        isinstance(exc, e.InvalidState) and exc.details.get("uploadStatus") in ("CANCELLED", "EXPIRED")
    )


async def render(request: Request, exc: Exception) -> Response | None:
    """The pm API's answer to a domain or validation error or a guard's refusal; None lets anything
    else pass."""
    if isinstance(exc, Refusal):
        return refusal_response(exc)
    if isinstance(exc, e.ChunkdError):
        status = _STATUS.status(exc) or 400
        details = exc.to_dict()
        details.pop("message")
        code, field = details.pop("code"), details.pop("field", None)
        message = _numbered_in_dialect(exc, details) or exc.message
        field, message = _in_dialect(field, message, done=is_done(request.scope))
        # Fine Uploader's "reset": forget the chunks it sent (and its resume record, which otherwise
        # made every later try of the file resume the dead qquuid for 7 days) and start again from
        # chunk 0, which makes the file anew under the same qquuid.
        reset = request.method == "POST" and _is_dead(exc)
        if reset:
            details["reset"] = True
        retryable = reset or isinstance(exc, _RETRYABLE)
        response = fine_uploader_error(status, message, code=code, field=field, prevent_retry=not retryable, **details)
        response.headers.update(error_headers(exc, status))
        return response
    if isinstance(exc, RequestValidationError):
        field, message = validation_error(exc.errors())
        return fine_uploader_error(400, message, code="invalid_input", field=field)
    return None
