"""The asset API's error dialect: ``{"status": "error", "message"}`` for bad requests (400, and
404/409/413 where the problem is not the request's shape), ``{"message", "detail"}`` for 401/403."""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse

from chunkd.domain import errors as e
from chunkd.frontends.fieldnames import FieldNames
from chunkd.frontends.http import StatusTable, error_headers, validation_error
from chunkd.frontends.refusals import Refusal

__all__ = ["ERROR_RESPONSES", "AssetError", "refusal_response", "render_error"]


class AssetError(BaseModel):
    """The error bodies, as documented in the OpenAPI document: ``{status: "error", message}``, or
    ``{message, detail}`` for 401 and 403."""

    message: str
    status: str | None = None
    detail: str | None = None


# No 410: an expired asset is a bad request here (400, _STATUS below), as seed 003 lists no 410.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": AssetError, "description": "Error"} for status in (400, 401, 403, 404, 409, 413, 429)
}


# The shared statuses, except that the asset API calls every other problem a bad request (400).
_STATUS = StatusTable((e.Busy, 409), (e.Conflict, 400), (e.Expired, 400))


# The engine names the size as the Files API does; the asset API calls it filesize.
_NAMES = FieldNames({"sizeBytes": "filesize"})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "message": _NAMES.message(message)}, status_code=status)


def refusal_response(refusal: Refusal) -> JSONResponse:
    """A guard's refusal as the asset API answers bad requests: ``{status: "error", message}``."""
    return JSONResponse(
        {"status": "error", "message": refusal.message},
        status_code=refusal.status_code,
        headers=dict(refusal.headers or {}),
    )


def render_error(exc: Exception) -> JSONResponse | None:
    if isinstance(exc, Refusal):
        return refusal_response(exc)
    if isinstance(exc, e.ChunkdError):
        status = _STATUS.status(exc) or 400
        if status in (401, 403):
            body = {"message": "Unauthorized" if status == 401 else "Forbidden", "detail": exc.message}
            return JSONResponse(body, status_code=status, headers=error_headers(exc, status))
        response = _error(status, exc.message)
        response.headers.update(error_headers(exc, status))
        return response
    if isinstance(exc, RequestValidationError | ValidationError):
        return _error(400, validation_error(exc.errors())[1])
    return None
