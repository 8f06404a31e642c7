"""Storage faults as the engine's errors, shared by the blob stores."""

from __future__ import annotations

import errno

from chunkd.domain.errors import StorageError, StorageFull

__all__ = ["storage_error"]

_FULL = (errno.ENOSPC, errno.EDQUOT)


def storage_error(exc: OSError, doing: str) -> StorageError:
    """The engine's error for a failed disk operation: a full volume (ENOSPC, EDQUOT) is
    ``StorageFull``; anything else (EIO, EROFS, …) ``StorageError``. Neither is the client's fault."""
    if exc.errno in _FULL:
        return StorageFull(f"no space left for upload bytes while {doing}")
    return StorageError(f"storage failed while {doing}: {exc.strerror or exc}")
