"""Storage faults as the engine's errors, shared by the blob stores."""

from __future__ import annotations

import errno
import logging
import time

from chunkd.domain.errors import StorageError, StorageFull

__all__ = ["storage_error"]

log = logging.getLogger("chunkd.storage")

_FULL = (errno.ENOSPC, errno.EDQUOT)
_NO_FILES = (errno.EMFILE, errno.ENFILE)
# The process's open-files limit reached is the operator's to raise, and its clients only see 503s:
# one warning a minute says so in the log (every failed request would flood it).
_WARN_EVERY = 60.0
_warned_at = float("-inf")


def storage_error(exc: OSError, doing: str) -> StorageError:
    """The engine's error for a failed disk operation: a full volume (ENOSPC, EDQUOT) is
    ``StorageFull``; anything else (EIO, EROFS, EMFILE, …) ``StorageError``. Neither is the
    client's fault."""
    if exc.errno in _FULL:
        return StorageFull(f"no space left for upload bytes while {doing}")
    if exc.errno in _NO_FILES:
        _warn_no_files(exc)
    return StorageError(f"storage failed while {doing}: {exc.strerror or exc}")


def _warn_no_files(exc: OSError) -> None:
    global _warned_at
    now = time.monotonic()
    if now - _warned_at >= _WARN_EVERY:
        _warned_at = now
        log.warning(
            "%s: the server is out of file descriptors and answers 503 to uploads and downloads; raise its "
            "open-files limit (ulimit -n, systemd LimitNOFILE) or lower CHUNKD_LIMIT_CONCURRENCY",
            exc.strerror or exc,
        )
