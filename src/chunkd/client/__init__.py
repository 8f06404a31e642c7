"""The chunkd Python SDK: :class:`Client` and :class:`AsyncClient` for the native Files API.

It talks HTTP only (httpx) and imports none of the server's modules, so it works wherever httpx
is installed::

    from chunkd.client import Client

    with Client("http://127.0.0.1:8080", key) as client:
        file = client.upload("video.mp4")           # parts in parallel, resumable, MD5-verified
        client.download(file.id, "copy.mp4")         # Range-resumable, MD5-verified
"""

from chunkd.client._async import AsyncClient
from chunkd.client._core import DEFAULT_URL, ProgressCallback, UploadOptions
from chunkd.client._sync import Client
from chunkd.client.errors import (
    APIError,
    AuthenticationError,
    BadRequest,
    ChecksumMismatch,
    ClientError,
    Conflict,
    ConnectionFailed,
    IntegrityError,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    StorageFull,
    TooLarge,
    UploadExpired,
)
from chunkd.client.models import File, Page, Part, UploadLink, Usage
from chunkd.client.retry import RetryNotice, RetryPolicy
from chunkd.client.sizes import format_size, parse_size

__all__ = [
    "DEFAULT_URL",
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequest",
    "ChecksumMismatch",
    "Client",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "File",
    "IntegrityError",
    "NotFound",
    "Page",
    "Part",
    "PermissionDenied",
    "ProgressCallback",
    "RateLimited",
    "RetryNotice",
    "RetryPolicy",
    "ServerError",
    "StorageFull",
    "TooLarge",
    "UploadExpired",
    "UploadLink",
    "UploadOptions",
    "Usage",
    "format_size",
    "parse_size",
]
