"""The asset API's error dialect: ``{"status": "error", "message"}`` for bad requests (400, and
404/409/413 where the problem is not the request's shape), ``{"message", "detail"}`` for 401/403."""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse

from chunkd.domain import errors as e
from chunkd.frontends.http import validation_error
from chunkd.frontends.refusals import Refusal

__all__ = ["ERROR_RESPONSES", "AssetError", "refusal_response", "render_error"]


class AssetError(BaseModel):
    """The error bodies, as documented in the OpenAPI document: ``{status: "error", message}``, or
    ``{message, detail}`` for 401 and 403."""

    message: str
    status: str | None = None
    detail: str | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": AssetError, "description": "Error"} for status in (400, 401, 403, 404, 409, 410, 413, 429)
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message}, status_code=status)


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
    if isinstance(exc, e.Unauthenticated):
        return JSONResponse(
            {"message": "Unauthorized", "detail": exc.message},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="chunkd"'},
        )
    if isinstance(exc, e.Forbidden | e.QuotaExceeded):
        return JSONResponse({"message": "Forbidden", "detail": exc.message}, status_code=403)
    if isinstance(exc, e.NotFound):
        return _error(404, exc.message)
    if isinstance(exc, e.TooLarge):
        return _error(413, exc.message)
    if isinstance(exc, e.Busy):
        response = _error(409, exc.message)
        response.headers["Retry-After"] = "1"
        return response
    if isinstance(exc, e.RateLimited):
        return _error(429, exc.message)
    if isinstance(exc, e.StorageError):
        return _error(507 if isinstance(exc, e.StorageFull) else 503, exc.message)
    if isinstance(exc, e.ChunkdError):
        return _error(400, exc.message)
    if isinstance(exc, RequestValidationError | ValidationError):
        return _error(400, validation_error(exc.errors())[1])
    return None
