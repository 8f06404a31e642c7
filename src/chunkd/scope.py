"""What chunkd's app and the HTTP server under it share about one request: the keys of
``scope["state"]`` one sets for the other, and how the request's path is written into a log line.

Both ``chunkd.frontends`` (and ``chunkd.observability``) and ``chunkd.server`` import this module,
and the service reads the current request's id from it; it imports nothing of chunkd's, so the
server's protocol does not depend on any frontend."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

__all__ = ["CURRENT_REQUEST_ID", "CUT_SHORT", "REQUEST_ID", "loggable_path", "request_id_of"]

# Set by a response that ended its body short on purpose, having logged why (a download whose file
# was deleted while it was read): the server closes the connection without a line of its own.
CUT_SHORT = "chunkd.cut_short"
# The request's id, set by the access-log middleware (echoed in ``X-Request-Id``): the server names
# it in the answer and the log line of a request the app failed.
REQUEST_ID = "request_id"
# The same id for the code a request runs (set by the access log in the request's task): what the
# engine asks other services on the request's behalf (the blocking hooks) carries it on.
CURRENT_REQUEST_ID: ContextVar[str | None] = ContextVar("chunkd_request_id", default=None)

# What a path keeps as it is in a log line: printable ASCII a URL path uses (RFC 3986's pchar and "/").
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def loggable_path(path: str) -> str:
    """``path`` (percent-decoded, as ASGI gives it) for a server log line: anything but printable
    path characters percent-encoded again, so a client's ``%0A`` cannot end the line and forge the next."""
    return quote(path, safe=_PATH_SAFE)


def request_id_of(scope: Mapping[str, Any]) -> str:
    """The request's id (as its access line and ``X-Request-Id`` carry it; checked there to be a
    short token of safe characters), or ``-`` when the access log did not run."""
    return str(scope.get("state", {}).get(REQUEST_ID) or "-")
