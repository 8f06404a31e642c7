"""The release callbacks registered in this process, per upload (shared by every lock backend)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

__all__ = ["ReleaseRegistry"]

log = logging.getLogger("chunkd.locks")


class _Entry(NamedTuple):
    release: Callable[[], None]
    requester: str | None
    since: float
    lost: Callable[[], None] | None


class ReleaseRegistry:
    """``upload id → (callback, requester)`` of the writers of this process that may be asked to
    let go. ``requester`` is the token the writer used when it took over itself: a release
    request carrying the same token is its own (arriving late, e.g. a NOTIFY echoed back) and
    must not stop it. A writer may give a second callback, ``lost``, for a lock lost under it
    (its database session ended) rather than taken over."""

    def __init__(self) -> None:
        self._callbacks: dict[str, list[_Entry]] = {}

    @contextmanager
    def register(
        self,
        upload_id: str,
        release: Callable[[], None],
        requester: str | None = None,
        lost: Callable[[], None] | None = None,
    ) -> Iterator[None]:
        entry = _Entry(release, requester, time.monotonic(), lost)
        self._callbacks.setdefault(upload_id, []).append(entry)
        try:
            yield
        finally:
            callbacks = self._callbacks.get(upload_id, [])
            if entry in callbacks:
                callbacks.remove(entry)
            if not callbacks:
                self._callbacks.pop(upload_id, None)

    def fire(self, upload_id: str, requester: str | None = None, *, asked_at: float | None = None) -> int:
        """Call every callback registered for ``upload_id`` except the requester's own; how many
        were called. ``asked_at``: when the request was sent (``time.monotonic``, which every
        process of one machine shares): a writer registered after that is newer than the request,
        which arrived late (a waiter asks again every ``ASK_AGAIN``), and is left alone."""
        callbacks = [
            entry.release
            for entry in self._callbacks.get(upload_id, ())
            if (requester is None or entry.requester != requester) and (asked_at is None or entry.since <= asked_at)
        ]
        return self._call(upload_id, callbacks)

    def lose(self, upload_id: str) -> int:
        """The lock of ``upload_id`` was lost under its writers here (its database session ended):
        call their ``lost`` callbacks (``release`` where they gave none); how many were called."""
        return self._call(upload_id, [entry.lost or entry.release for entry in self._callbacks.get(upload_id, ())])

    @staticmethod
    def _call(upload_id: str, callbacks: list[Callable[[], None]]) -> int:
        for callback in callbacks:
            try:
                callback()
            except Exception:  # one bad callback must not keep the others from running
                log.exception("release callback for upload %s failed", upload_id)
        return len(callbacks)
