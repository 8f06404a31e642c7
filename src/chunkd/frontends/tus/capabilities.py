"""What the tus endpoint announces (``OPTIONS``): the version, the extensions that work on this
server (``checksum-trailer`` only under an ASGI server that passes request trailers), the largest
upload and the checksum algorithms."""

from __future__ import annotations

from fastapi import Request

from chunkd.frontends.http import runtime
from chunkd.frontends.tus.checksum_trailer import reads_trailers
from chunkd.frontends.tus.errors import TUS_VERSION
from chunkd.frontends.tus.headers import CHECKSUM_ALGORITHMS
from chunkd.frontends.tus.resource import base_headers

__all__ = ["EXTENSIONS", "capability_headers"]

EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "expiration",
    "checksum",
    "termination",
    "concatenation",
    "concatenation-unfinished",
)


def capability_headers(request: Request) -> dict[str, str]:
    """The tus headers of an ``OPTIONS`` answer (no authentication, no Tus-Resumable needed)."""
    headers = base_headers()
    headers.update(
        {
            "Tus-Version": TUS_VERSION,
            # checksum-trailer only where the ASGI server passes request trailers to the app.
            "Tus-Extension": ",".join(EXTENSIONS + (("checksum-trailer",) if reads_trailers(request) else ())),
            "Tus-Max-Size": str(runtime(request).uploads.config.max_file_size),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        }
    )
    return headers
