"""The release callbacks registered in this process, per upload (shared by every lock backend)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["ReleaseRegistry"]

log = logging.getLogger("chunkd.locks")


class ReleaseRegistry:
    """``upload id → (callback, requester)`` of the writers of this process that may be asked to
    let go. ``requester`` is the token the writer used when it took over itself: a release
    request carrying the same token is its own (arriving late, e.g. a NOTIFY echoed back) and
    must not stop it."""

    def __init__(self) -> None:
        self._callbacks: dict[str, list[tuple[Callable[[], None], str | None, float]]] = {}

    @contextmanager
    def register(self, upload_id: str, release: Callable[[], None], requester: str | None = None) -> Iterator[None]:
        entry = (release, requester, time.monotonic())
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
            release
            for release, token, since in self._callbacks.get(upload_id, ())
            if (requester is None or token != requester) and (asked_at is None or since <= asked_at)
        ]
        for release in callbacks:
            try:
                release()
            except Exception:  # one bad callback must not keep the others from running
                log.exception("release callback for upload %s failed", upload_id)
        return len(callbacks)
