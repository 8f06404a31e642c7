"""Room kept on the SQLite database's volume for the writes that free space.

A full volume refuses every write (507), and a delete's as well, yet deleting (or cancelling) an
upload is how a user frees space. SQLite needs room even to delete: its WAL grows by every page
the transaction changes (45 KB for an upload of one part, 535 KB for one of 2,000 parts, measured
2026-12-03; about 2.7 MB for ``MAX_PARTS``). So a file of ``RESERVE_BYTES`` is kept allocated
beside the database (``<database>-reserve``); a write that frees space and finds the volume full
removes it and is tried once more. So does a start that cannot open the database (SQLite makes its
``-wal`` and ``-shm`` files anew after a clean stop), so that a server is there to delete. It is
allocated again after a commit once the volume has room for twice its size (the bytes the delete
freed, or an operator's cleaning), never taking the last of the space. A database on its own volume
gains the same; PostgreSQL's volume is its server's."""

from __future__ import annotations

import logging
import os
import threading
from contextlib import suppress

__all__ = ["RESERVE_BYTES", "SpaceReserve"]

RESERVE_BYTES = 4 * 1024 * 1024

log = logging.getLogger("chunkd.storage")


class SpaceReserve:
    """The reserve file of one database; any process using the database may release or restore it."""

    def __init__(self, database: str, size: int = RESERVE_BYTES) -> None:
        self.path = f"{database}-reserve"
        self.size = size
        self.missing = True  # until ``restore`` has seen it whole
        # ``release`` runs on the event loop, ``restore`` on the writer's thread: without the lock a
        # release between restore's allocation and its ``missing = False`` left no reserve, and
        # none was made again (seen in CI: two deletes of one failed batch).
        self._lock = threading.Lock()

    def release(self, use: str = "a delete") -> bool:
        """Remove the reserve (if another write has not already) for ``use``; whether it was there."""
        with self._lock:
            self.missing = True
            try:
                os.unlink(self.path)
            except OSError:  # gone already, or the volume refuses even that: the retry will tell
                return False
        log.warning("the metadata database's volume is full: its reserved %d bytes were used for %s", self.size, use)
        return True

    def restore(self) -> None:
        """Allocate the reserve if it is missing and the volume has room for twice its size. Best
        effort: on any error it stays missing, and the next commit tries again."""
        if not self.missing:
            return
        with self._lock, suppress(OSError):
            directory = os.path.dirname(self.path) or "."
            with suppress(FileNotFoundError):
                if os.stat(self.path).st_blocks * 512 >= self.size:  # another process's, whole
                    self.missing = False
                    return
            stats = os.statvfs(directory)
            if stats.f_bavail * stats.f_frsize < 2 * self.size:
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
            self.missing = False
