"""One CORS policy for every frontend (Starlette's CORSMiddleware, configured from settings).

Allowed origins are echoed back with ``Vary: Origin``; ``*`` is never combined with credentials
(the settings refuse it). Our credentials are request headers (Authorization, X-API-Key,
AccessToken), which a browser sends cross-origin without credentials mode once the preflight
allows them. Preflights are answered here, before authentication and rate limits."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from chunkd.settings import Settings

__all__ = ["EXPOSED_HEADERS", "install_cors"]

# Response headers a browser client must be able to read: resumable-upload state (tus, the IETF
# draft's fields, which tus-js-client reads in its draft modes, and ours), digests, caching
# validators, ranges, and the rate-limit figures.
EXPOSED_HEADERS = [
    "Location",
    "ETag",
    "Content-Range",
    "Content-Disposition",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Expires",
    "Tus-Version",
    "Tus-Resumable",
    "Tus-Max-Size",
    "Tus-Extension",
    "Tus-Checksum-Algorithm",
    "Upload-Complete",
    "Upload-Incomplete",
    "Upload-Limit",
    "Upload-Draft-Interop-Version",
    "Repr-Digest",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
    "Retry-After",
    "X-Should-Retry",
]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def install_cors(app: FastAPI, settings: Settings) -> None:
    origins = settings.cors_origin_list()
    if not origins:
        return  # same-origin only: browsers refuse cross-origin reads without these headers
    wildcard = "*" in origins
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"] if wildcard else origins,
        allow_credentials=settings.cors_allow_credentials and not wildcard,
        allow_methods=METHODS,
        # Echoes what the preflight asks for (Authorization, X-API-Key, AccessToken, tus headers...).
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )
