"""Two lock managers taken in order under one deadline: e.g. the in-process lock (tasks of this
process queue in memory, cheaply) and then the database lock (other nodes)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from chunkd.ports.locks import LockManager

__all__ = ["StackedLocks"]


class StackedLocks:
    """Holds ``outer`` then ``inner`` for the same upload; ``timeout`` bounds both together (0 tries
    each once). Released in reverse order."""

    def __init__(self, outer: LockManager, inner: LockManager) -> None:
        self.outer = outer
        self.inner = inner

    @asynccontextmanager
    async def hold(self, upload_id: str, *, timeout: float) -> AsyncIterator[None]:
        deadline = time.monotonic() + timeout
        async with self.outer.hold(upload_id, timeout=timeout):
            remaining = 0.0 if timeout <= 0 else max(deadline - time.monotonic(), 0.0)
            async with self.inner.hold(upload_id, timeout=remaining):
                yield

    @asynccontextmanager
    async def releasable(
        self,
        upload_id: str,
        release: Callable[[], None],
        *,
        requester: str | None = None,
        lost: Callable[[], None] | None = None,
    ) -> AsyncIterator[None]:
        async with (
            self.outer.releasable(upload_id, release, requester=requester, lost=lost),
            self.inner.releasable(upload_id, release, requester=requester, lost=lost),
        ):
            yield

    async def request_release(self, upload_id: str, *, requester: str | None = None) -> None:
        await self.outer.request_release(upload_id, requester=requester)
        await self.inner.request_release(upload_id, requester=requester)

    async def close(self) -> None:
        await self.inner.close()
        await self.outer.close()
