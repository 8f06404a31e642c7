"""Errors raised by the SDK. Every answer of the API that is an error becomes an :class:`APIError`
carrying the API's own ``code``, ``message`` and ``field`` (``{"error": {...}}`` of the Files API);
the class says what kind of problem it is, the ``code`` says exactly which::

    ClientError
     ├── APIError                 the server answered with an error (status, code, message, field)
     │    ├── BadRequest          400  (invalid_input, part_size_mismatch, ...)
     │    │    └── ChecksumMismatch   checksum_mismatch: bytes do not match a digest
     │    ├── AuthenticationError 401  missing, wrong or revoked key
     │    ├── PermissionDenied    403  missing_scope, forbidden, quota_exceeded
     │    ├── NotFound            404  no such file for this key's owner
     │    ├── Conflict            409  invalid_state, missing_parts, upload_busy
     │    │    └── UploadExpired      upload_expired
     │    ├── TooLarge            413
     │    ├── RateLimited         429  (retried first, honouring Retry-After)
     │    └── ServerError         5xx  (retried first)
     │         └── StorageFull        507  the server has no room for the bytes (tried 3 times)
     ├── ConnectionFailed         the server could not be reached (after the retries)
     └── IntegrityError           downloaded bytes do not match the file's MD5
"""

from __future__ import annotations

import json
from typing import Any

import httpx

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequest",
    "ChecksumMismatch",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "IntegrityError",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "ServerError",
    "StorageFull",
    "TooLarge",
    "UploadExpired",
    "error_from_response",
]


class ClientError(Exception):
    """Base of every error the SDK raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APIError(ClientError):
    """The server answered with an error. ``code`` is the API's stable error code."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field
        self.details = details or {}

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.code}: {self.message}{where} [HTTP {self.status}]"


class BadRequest(APIError):
    """400: the request was wrong; ``field`` names what."""


class ChecksumMismatch(BadRequest):
    """The bytes the server received do not match a digest the client sent."""


class AuthenticationError(APIError):
    """401: no key, a wrong key, or a revoked key."""


class PermissionDenied(APIError):
    """403: the key lacks a scope, or a quota would be passed."""


class NotFound(APIError):
    """404: no such file for this key's owner (another owner's file looks the same)."""


class Conflict(APIError):
    """409: the file's status forbids the operation, parts are missing, or another writer holds it."""


class UploadExpired(Conflict):
    """The upload stayed idle past its ``expiresAt`` and expired."""


class TooLarge(APIError):
    """413: over a size limit."""


class RateLimited(APIError):
    """429: over the owner's rate limit, still after the retries."""


class ServerError(APIError):
    """5xx: the server (or a proxy in front of it) failed, still after the retries."""


class StorageFull(ServerError):
    """507: the server has no room for the bytes (its disk, or its database's, is full), still
    after a few tries. What the server holds is kept: the upload resumes once it has room."""


class ConnectionFailed(ClientError):
    """The server could not be reached or the connection broke, still after the retries."""


class IntegrityError(ClientError):
    """Downloaded bytes do not match the file's size or MD5."""


_BY_CODE: dict[str, type[APIError]] = {
    "checksum_mismatch": ChecksumMismatch,
    "upload_expired": UploadExpired,
}
_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    429: RateLimited,
    507: StorageFull,
}


def error_from_response(response: httpx.Response) -> APIError:
    """The typed error for an error response (its body must have been read)."""
    code, message, field, details = "http_error", "", None, {}
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = dict(body["error"])
        code = str(error.pop("code", code))
        message = str(error.pop("message", ""))
        raw_field = error.pop("field", None)
        field = str(raw_field) if raw_field is not None else None
        details = error
    if not message:
        text = response.text.strip()
        message = text[:200] if text else response.reason_phrase or f"HTTP {response.status_code}"
    kind = _BY_CODE.get(code) or _BY_STATUS.get(response.status_code)
    if kind is None:
        kind = ServerError if response.status_code >= 500 else APIError
    return kind(response.status_code, code, message, field, details)
