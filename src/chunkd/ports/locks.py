"""Mutual exclusion per upload (invariant 2: one writer per upload), and asking a stale writer to
let go (tusd's ``Lock(ctx, requestRelease)``).

A writer that streams a request body while holding an upload's lock registers a ``release``
callback with ``releasable``; a newer request for the same upload calls ``request_release`` (on
any process or node sharing the lock backend), which calls that callback where the writer runs.
The writer then ends its body early, commits what it has and lets go of the lock.

Inside ``asking_release(requester)``, every ``hold`` that finds the lock taken asks its holder to
let go (and asks again while it waits). That is how a frontend takes over through the engine's
own lock (one lock per request, no look beforehand) without the engine knowing about it: the
request is a context variable, read by the lock backends. ``take_over`` asks and waits without
keeping the lock (an offset retrieval that must see the stale request's bytes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from contextvars import ContextVar
from typing import Protocol

__all__ = ["ASK_AGAIN", "LockManager", "asking_release", "release_requester", "take_over"]

# How long a waiter waits before it sends its release request again (a holder on another node
# that registered its callback just after the previous request missed it).
ASK_AGAIN = 0.25

_requester: ContextVar[str | None] = ContextVar("chunkd_lock_release_requester", default=None)


@contextmanager
def asking_release(requester: str) -> Iterator[None]:
    """Within the block, a ``hold`` that finds the lock taken asks the holder to let go on behalf
    of ``requester`` (the token the caller registered itself with, so its own request never stops
    it)."""
    token = _requester.set(requester)
    try:
        yield
    finally:
        _requester.reset(token)


def release_requester() -> str | None:
    """The requester a ``hold`` in this context asks on behalf of, if any (for lock backends)."""
    return _requester.get()


class LockManager(Protocol):
    def hold(self, upload_id: str, *, timeout: float) -> AbstractAsyncContextManager[None]:
        """Hold the upload's lock; raise ``Busy`` if it cannot be had within ``timeout`` seconds
        (0 means try once). Exclusive across tasks, processes and — where the backend allows —
        nodes."""

    def releasable(
        self,
        upload_id: str,
        release: Callable[[], None],
        *,
        requester: str | None = None,
        lost: Callable[[], None] | None = None,
    ) -> AbstractAsyncContextManager[None]:
        """While the block runs, a ``request_release(upload_id)`` from this process — or, where
        the backend spans nodes, from any node — calls ``release`` (in this process's event
        loop), unless it carries ``requester``: the token this writer itself used to take over
        (its own request may arrive back late). A backend that loses a lock it held for the upload
        (its database session ended) calls ``lost`` instead (``release`` when there is none): the
        writer must stop, though no newer request took over. Both must be idempotent and must not
        block."""

    async def request_release(self, upload_id: str, *, requester: str | None = None) -> None:
        """Ask whoever is writing ``upload_id`` (registered with ``releasable``) to let go, on
        behalf of ``requester``. Returns at once; it does not wait for the lock."""

    async def close(self) -> None: ...


async def take_over(locks: LockManager, upload_id: str, *, timeout: float, requester: str = "") -> None:
    """Ask the current writer of ``upload_id`` to let go and wait until its lock is free (the
    stale writer has committed what it received). Raise ``Busy`` after ``timeout`` seconds — a
    holder that is not releasable (a completion, a concatenation) keeps the lock until it ends."""
    with asking_release(requester):
        async with locks.hold(upload_id, timeout=timeout):
            return
