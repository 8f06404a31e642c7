"""The media API's error dialect, Django REST framework's: ``{"detail": "..."}`` plus, as
django-chunked-upload does, the expected ``offset`` when a chunk starts at the wrong byte; a stable
``code`` and the ``field`` at fault are added."""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.responses import JSONResponse

from chunkd.domain import errors as e
from chunkd.frontends.http import StatusTable, error_headers, validation_error
from chunkd.frontends.refusals import Refusal

__all__ = ["ERROR_RESPONSES", "MediaError", "refusal_response", "render_error"]


class MediaError(BaseModel):
    """The error body, as documented in the OpenAPI document."""

    detail: str
    code: str
    field: str | None = None
    offset: int | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": MediaError, "description": "Error (Django REST framework shape)"}
    for status in (400, 401, 403, 404, 409, 410, 413, 429)
}

# The shared statuses (410 Gone for an expired upload, as django-chunked-upload answers), but a
# finished upload and missing chunks are bad requests ("Upload has already been marked as complete").
_STATUS = StatusTable((e.Busy, 409), (e.InvalidState, 400), (e.MissingParts, 400))


def _status(error: e.ChunkdError) -> int:
    return _STATUS.status(error) or 400


def refusal_response(refusal: Refusal) -> JSONResponse:
    """A guard's refusal in Django REST framework's shape."""
    body: dict[str, Any] = {"detail": refusal.message, "code": refusal.code}
    if refusal.field is not None:
        body["field"] = refusal.field
    return JSONResponse(body, status_code=refusal.status_code, headers=dict(refusal.headers or {}))


def render_error(exc: Exception) -> JSONResponse | None:
    if isinstance(exc, Refusal):
        return refusal_response(exc)
    if isinstance(exc, e.ChunkdError):
        body: dict[str, Any] = {"detail": exc.message, "code": exc.code}
        if exc.field is not None:
            body["field"] = exc.field
        if isinstance(exc, e.OffsetMismatch):
            body["offset"] = exc.details.get("expectedOffset")
        status = _status(exc)
        return JSONResponse(body, status_code=status, headers=error_headers(exc, status))
    if isinstance(exc, RequestValidationError):
        name, detail = validation_error(exc.errors())
        if name == "media_id":
            # A path that is no media id (not a positive 32-bit integer) names no media: answered
            # as any missing one, with the path parameter as documented (``/api/v2/media/{id}/``).
            given = str(exc.errors()[0].get("input", ""))[:40]
            return JSONResponse({"detail": f"no media with id {given!r}", "code": "not_found", "field": "id"}, 404)
        return JSONResponse({"detail": detail, "code": "invalid_input", "field": name}, status_code=400)
    return None
