"""Saying that a best-effort step failed (freeing bytes, settling parts, finishing a waiting
concatenation): its request has succeeded, so the failure is only logged. A dependency that is down
(the engine's ``StorageError``: the database or the object store) is said in one line with its
reason, as everywhere else; anything else is a fault to report, with its traceback."""

from __future__ import annotations

import logging
import sys

from chunkd.domain.errors import StorageError

__all__ = ["warn_failed"]


def warn_failed(log: logging.Logger, message: str, *args: object) -> None:
    """Log ``message % args`` for the exception being handled (call it in an ``except`` block)."""
    exc = sys.exc_info()[1]
    if isinstance(exc, StorageError):
        log.warning(f"{message}: %s", *args, exc.message)
    else:
        log.warning(message, *args, exc_info=True)
