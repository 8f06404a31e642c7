"""Readiness: can this node serve uploads right now? (``GET /readyz``; ``/healthz`` is liveness.)

Two checks, run together, each bounded by ``readyz_timeout_seconds``:

- **database**: a trivial query (``SELECT 1``); SQLite: and its file system has room left (a
  database that answers reads but refuses every write is not ready either);
- **storage**: local disk: the blob directory exists, this process may write in it, and its file
  system is neither read-only nor full (``access`` + ``statvfs``, no write: a probe every few
  seconds should not churn the disk); S3: ``HeadBucket`` with our credentials.

A check that is still running when the next probe comes is joined, not started again, so a hung
dependency does not pile up threads or connections. The answer names the failing part with a
short reason; the full error goes to the server's log (an unauthenticated caller learns no host
names or paths), once when the check starts failing and once when it passes again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chunkd.domain.errors import StorageFull
from chunkd.ports.blobs import BlobStore

__all__ = ["Readiness", "StorageNotReady", "local_storage_problem"]

log = logging.getLogger("chunkd.readiness")


class StorageNotReady(Exception):
    """The storage cannot take writes; the message is the short reason shown to the caller."""


def local_storage_problem(root: Path) -> str | None:
    """Why the local blob directory cannot take uploads, or None when it can."""
    if not root.is_dir():
        return "the blob directory is missing"
    if not os.access(root, os.W_OK | os.X_OK):
        return "the blob directory is not writable"
    stats = os.statvfs(root)
    if stats.f_flag & os.ST_RDONLY:
        return "the blob directory's file system is read-only"
    if stats.f_bavail == 0:
        return "no space left on the blob directory's file system"
    return None


async def _check_storage(blobs: Any) -> None:
    root = getattr(blobs, "root", None)
    if isinstance(root, Path):  # local disk
        problem = await asyncio.to_thread(local_storage_problem, root)
        if problem is not None:
            raise StorageNotReady(problem)
        # Under its free-space reserve the store refuses new bytes (507): not ready either, by the
        # store's own check.
        check_room = getattr(blobs, "check_room", None)
        if check_room is not None:
            try:
                await asyncio.to_thread(check_room)
            except StorageFull as exc:
                raise StorageNotReady(f"{exc.message} (uploads get 507)") from None
        return
    ping = getattr(blobs, "ping", None)  # S3: HeadBucket
    if ping is not None:
        await ping()


@dataclass
class Readiness:
    """The checks of one node (built once with its runtime), with at most one run of each in flight:
    ``database`` pings the metadata database, ``blobs`` is the blob store."""

    database: Callable[[], Awaitable[None]]
    blobs: BlobStore
    timeout: float
    _running: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    # The reason each failing check was last logged with: a probe comes every few seconds, so an
    # outage is said when it starts (or its reason changes) and when it ends, not at every probe.
    _failing: dict[str, str] = field(default_factory=dict)

    async def check(self) -> dict[str, str]:
        """``{part: "ok" | reason}`` for ``database`` and ``storage``."""
        checks: dict[str, Callable[[], Awaitable[None]]] = {
            "database": self.database,
            "storage": lambda: _check_storage(self.blobs),
        }
        results = await asyncio.gather(*(self._run(name, probe) for name, probe in checks.items()))
        return dict(zip(checks, results, strict=True))

    async def _run(self, name: str, probe: Callable[[], Awaitable[None]]) -> str:
        task = self._running.get(name)
        if task is None or task.done():

            async def run() -> None:
                await probe()

            task = self._running[name] = asyncio.create_task(run())
            # A run that outlives its caller's timeout is still awaited by nobody: read its result.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.shield(task)
        except TimeoutError:
            return self._failed(
                name, f"no answer within {self.timeout:g} s", f"{name} did not answer within {self.timeout:g} s"
            )
        except StorageNotReady as exc:
            return self._failed(name, str(exc), f"storage: {exc}")
        except StorageFull as exc:  # the database's volume (SQLite): the reason is the engine's own words
            return self._failed(name, exc.message, f"{name}: {exc.message}")
        except Exception as exc:
            return self._failed(name, f"unavailable ({type(exc).__name__})", f"{name} failed: {exc!r}")
        if self._failing.pop(name, None) is not None:
            log.info("readiness: %s ok again", name)
        return "ok"

    def _failed(self, name: str, reason: str, detail: str) -> str:
        """``reason`` for the caller; ``detail`` logged when the check starts failing or fails otherwise."""
        said = self._failing.get(name) == reason
        self._failing[name] = reason
        log.log(logging.DEBUG if said else logging.WARNING, "readiness: %s", detail)
        return reason
