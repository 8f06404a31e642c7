"""When to try a request again, and how long to wait first: exponential backoff with jitter on
network errors, 5xx, 429 and the 409s the server marks retryable, honouring ``Retry-After``."""

from __future__ import annotations

import contextlib
import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

__all__ = [
    "RetryNotice",
    "RetryNoticeCallback",
    "RetryPolicy",
    "is_retryable_error",
    "is_retryable_response",
    "retry_after",
]

# Errors of the connection itself (refused, reset, timed out, cut mid-answer) are worth another try;
# a malformed URL or an unsupported scheme (other TransportErrors) never get better.
RETRYABLE_ERRORS = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; the n-th wait is drawn from [d/2, d] with d = base·2ⁿ capped at
    ``max_delay`` ("equal jitter": never ~0, so a restarting server gets time, yet clients spread
    out). A ``Retry-After`` from the server is a lower bound, itself capped at ``max_retry_after``.
    A request answered 507 (the server's storage full) is tried ``storage_full_attempts`` times at
    most: room comes back when someone makes it, not in seconds, and eight tries at chunkd's
    ``Retry-After: 30`` held the command for 3.5 minutes before it said so."""

    attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 300.0
    storage_full_attempts: int = 3

    def delay(self, attempt: int, server_hint: float | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0**attempt)
        wait = ceiling / 2 + random.uniform(0, ceiling / 2)
        if server_hint is not None:
            wait = max(wait, min(server_hint, self.max_retry_after))
        return wait


@dataclass(frozen=True)
class RetryNotice:
    """Passed to a client's ``on_retry`` before it waits ``delay`` seconds and tries again."""

    method: str
    url: str
    attempt: int  # the try that failed, 1-based
    delay: float
    reason: str


RetryNoticeCallback = Callable[[RetryNotice], None]


def reason_of(failure: BaseException | httpx.Response) -> str:
    """A short reason for a failed try: the network error, or the status and the API's error code."""
    if isinstance(failure, httpx.Response):
        code = ""
        with contextlib.suppress(ValueError, KeyError, TypeError):  # a body that is not the API's error
            code = str(failure.json()["error"]["code"])
        return f"HTTP {failure.status_code}" + (f" {code}" if code else "")
    return f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__


def is_retryable_error(exc: BaseException) -> bool:
    return isinstance(exc, RETRYABLE_ERRORS)


# 5xx answers that say the request will never work there: trying again only delays the error.
_PERMANENT = frozenset({501, 505})  # Not Implemented, HTTP Version Not Supported


def is_retryable_response(response: httpx.Response) -> bool:
    """5xx (but 501 and 505) and 429 always; 409 only when the server says to try again: another writer briefly holds
    the upload (``upload_busy``), or a blocking hook or the virus scanner is briefly unavailable
    (``hook_unavailable``, ``scan_unavailable``) — the 409s that carry ``Retry-After``."""
    if response.status_code in _PERMANENT:
        return False
    if response.status_code >= 500 or response.status_code == 429:
        return True
    return response.status_code == 409 and ("retry-after" in response.headers or b"upload_busy" in response.content)


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²", which isdigit accepts and float() refuses
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
