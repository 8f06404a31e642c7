"""Mutual exclusion per upload (invariant 2: one writer per upload), and asking a stale writer to
let go (tusd's ``Lock(ctx, requestRelease)``).

A writer that streams a request body while holding an upload's lock registers a ``release``
callback with ``releasable``; a newer request for the same upload calls ``request_release`` (on
any process or node sharing the lock backend), which calls that callback where the writer runs.
The writer then ends its body early, commits what it has and lets go of the lock. ``take_over``
combines both: ask, then wait until the lock is free.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from chunkd.domain.errors import Busy

__all__ = ["LockManager", "take_over"]

# How long one wait for the lock lasts before the release request is sent again (a holder that
# registered its callback just after the previous request missed it).
_ASK_AGAIN = 0.25


class LockManager(Protocol):
    def hold(self, upload_id: str, *, timeout: float) -> AbstractAsyncContextManager[None]:
        """Hold the upload's lock; raise ``Busy`` if it cannot be had within ``timeout`` seconds
        (0 means try once). Exclusive across tasks, processes and — where the backend allows —
        nodes."""

    def releasable(
        self, upload_id: str, release: Callable[[], None], *, requester: str | None = None
    ) -> AbstractAsyncContextManager[None]:
        """While the block runs, a ``request_release(upload_id)`` from this process — or, where
        the backend spans nodes, from any node — calls ``release`` (in this process's event
        loop), unless it carries ``requester``: the token this writer itself used to take over
        (its own request may arrive back late). ``release`` must be idempotent and must not
        block."""

    async def request_release(self, upload_id: str, *, requester: str | None = None) -> None:
        """Ask whoever is writing ``upload_id`` (registered with ``releasable``) to let go, on
        behalf of ``requester``. Returns at once; it does not wait for the lock."""

    async def close(self) -> None: ...


async def take_over(locks: LockManager, upload_id: str, *, timeout: float, requester: str | None = None) -> None:
    """Ask the current writer of ``upload_id`` to let go and wait until its lock is free (the
    stale writer has committed what it received). Raise ``Busy`` after ``timeout`` seconds — a
    holder that is not releasable (a completion, a concatenation) keeps the lock until it ends."""
    deadline = time.monotonic() + timeout
    step = 0.0  # first just look: a free lock needs no release request (and sends none)
    while True:
        try:
            async with locks.hold(upload_id, timeout=step):
                return
        except Busy:
            if time.monotonic() >= deadline:
                raise
        await locks.request_release(upload_id, requester=requester)
        step = max(0.0, min(_ASK_AGAIN, deadline - time.monotonic()))
