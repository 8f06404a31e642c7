"""HTTP helpers shared by every dialect (native, tus and the draft, pm, media, assets, web).

- ``context``: the runtime on ``app.state``, the authenticated principal (once per request), the
  public base URL, ``takes_file_bytes`` (marks routes whose body is file bytes, for rate limits);
- ``headers``: byte counts (``Content-Length``, ``Upload-Length``, ``Upload-Offset``), whether a
  body is declared, byte ranges, ``Content-MD5``;
- ``values``: timestamps and ``Content-Disposition``;
- ``errors``: the status of each engine error (``StatusTable``), the headers every error answer
  carries (``WWW-Authenticate``, ``Retry-After``), the field of a validation error, and
  ``dialect_route`` (a route class that renders errors in the dialect's shape);
- ``download``: the download response (Range, ETag, digests, redirects).

A new dialect imports what it needs from here and keeps only its own shapes: its router, and an
``errors.py`` rendering an error with ``StatusTable(...)`` + ``error_headers`` in its body format.
"""

from chunkd.frontends.http.context import FILE_BYTES_ATTRIBUTE, principal, public_base_url, runtime, takes_file_bytes
from chunkd.frontends.http.download import DOWNLOAD, file_response
from chunkd.frontends.http.errors import (
    BEARER_CHALLENGE,
    SHARED_STATUS,
    StatusTable,
    dialect_route,
    error_headers,
    validation_error,
)
from chunkd.frontends.http.headers import (
    ByteRange,
    byte_count,
    content_length,
    content_md5,
    declares_body,
    field_value,
    parse_length,
    parse_range,
)
from chunkd.frontends.http.values import content_disposition, isotime

__all__ = [
    "BEARER_CHALLENGE",
    "DOWNLOAD",
    "FILE_BYTES_ATTRIBUTE",
    "SHARED_STATUS",
    "ByteRange",
    "StatusTable",
    "byte_count",
    "content_disposition",
    "content_length",
    "content_md5",
    "declares_body",
    "dialect_route",
    "error_headers",
    "field_value",
    "file_response",
    "isotime",
    "parse_length",
    "parse_range",
    "principal",
    "public_base_url",
    "runtime",
    "takes_file_bytes",
    "validation_error",
]
