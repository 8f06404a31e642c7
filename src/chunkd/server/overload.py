"""The answer of a process at its concurrency limit (``CHUNKD_LIMIT_CONCURRENCY``), and its log.

uvicorn answers a request past the limit with its own 503: plain text, no ``Retry-After``, and a
warning line for every such request, so an overload wrote a line per refused request just when
the machine had the least to spare, and clients had nothing to pace their retries by. Here the
same 503 says why in JSON, ``Retry-After: 1`` (the SDK, tus-js-client and most HTTP clients wait
that long before trying again), and the log has one line when refusals begin and then at most one
a minute, with the count."""

from __future__ import annotations

import json
import logging
import time

from starlette.types import Receive, Scope, Send

__all__ = ["UVICORN_LINE", "OverloadLog", "overloaded"]

UVICORN_LINE = "Exceeded concurrency limit."  # uvicorn's warning per refused request
RETRY_AFTER_SECONDS = 1
REPORT_EVERY_SECONDS = 60.0

log = logging.getLogger("chunkd.server")

_BODY = json.dumps(
    {
        "error": {
            "code": "overloaded",
            "message": "the server is at its limit of concurrent connections and requests; try again shortly",
        }
    },
    separators=(",", ":"),
).encode()
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_BODY)).encode()),
    (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
    (b"connection", b"close"),
]


class OverloadLog(logging.Filter):
    """Counts refusals and writes them as one line a minute at most; as a filter on uvicorn's
    error logger, drops uvicorn's own line per refusal."""

    def __init__(self) -> None:
        super().__init__()
        self.unreported = 0
        self.last_line: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != UVICORN_LINE

    def refused(self) -> None:
        self.unreported += 1
        now = time.monotonic()
        if self.last_line is None:
            log.warning(
                "at the concurrency limit (CHUNKD_LIMIT_CONCURRENCY): new requests are answered 503 with "
                "Retry-After: %d; counted here at most once a minute",
                RETRY_AFTER_SECONDS,
            )
        elif now - self.last_line >= REPORT_EVERY_SECONDS:
            log.warning(
                "%d requests answered 503 at the concurrency limit in the last %.0f s",
                self.unreported,
                now - self.last_line,
            )
        else:
            return
        self.unreported = 0
        self.last_line = now


OVERLOAD_LOG = OverloadLog()
logging.getLogger("uvicorn.error").addFilter(OVERLOAD_LOG)


async def overloaded(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app a request past the limit gets in place of chunkd's (its body is not read:
    the connection closes after the answer)."""
    del scope, receive
    OVERLOAD_LOG.refused()
    await send({"type": "http.response.start", "status": 503, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY, "more_body": False})
