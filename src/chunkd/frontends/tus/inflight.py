"""Ending a stale PATCH when a new one arrives for the same upload (as tusd v2 does).

A client whose connection silently died retries with a new PATCH while the server may still be
waiting for bytes on the old one, which holds the upload's lock. Instead of answering the retry
with 423 until the old request times out, the new request asks the old one to stop: the old body
iterator raises ``UploadInterrupted``, which the engine treats like a broken-off body (the bytes
that arrived are committed and the lock released), and the new request then proceeds from the
current offset (or gets 409 if its offset is now wrong).

This is per process; across processes the engine's lock still answers ``Busy`` (423).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["InFlight", "UploadInterrupted", "Writer"]


class UploadInterrupted(Exception):
    """The request's body was cut short because a newer request for the upload took over."""


class Writer:
    """One request streaming into an upload."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self._task = asyncio.current_task()
        self._stopped = False
        self._waiting = False
        self._cancelled = False

    def stop(self) -> None:
        """Ask the request to stop reading its body. If it is blocked waiting for bytes (the usual
        case for a dead connection), its task is woken with a cancellation that ``guard`` turns
        into ``UploadInterrupted`` right at the read, so nothing else in the task is cancelled."""
        self._stopped = True
        if self._waiting and not self._cancelled and self._task is not None:
            self._cancelled = True
            self._task.cancel()

    async def guard(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``body``, ending with ``UploadInterrupted`` once ``stop`` was called."""
        iterator = aiter(body)
        while True:
            if self._stopped:
                raise UploadInterrupted("the upload was taken over by a newer request")
            self._waiting = True
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if not self._cancelled:
                    raise
                if self._task is not None:
                    self._task.uncancel()
                raise UploadInterrupted("the upload was taken over by a newer request") from None
            finally:
                self._waiting = False
            yield chunk


class InFlight:
    """The request currently writing each upload, in this process."""

    def __init__(self) -> None:
        self._writers: dict[str, Writer] = {}

    def writing(self, upload_id: str) -> bool:
        """True while a request of this process streams into ``upload_id``."""
        return upload_id in self._writers

    @contextlib.asynccontextmanager
    async def take_over(self, upload_id: str, *, wait: float) -> AsyncIterator[Writer]:
        """Stop the request writing ``upload_id`` (if any), wait up to ``wait`` seconds for it to
        commit what it has, and register the caller as the writer."""
        old = self._writers.get(upload_id)
        if old is not None:
            old.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(old.done.wait()), wait)
        me = Writer()
        self._writers[upload_id] = me
        try:
            yield me
        finally:
            me.done.set()
            if self._writers.get(upload_id) is me:
                del self._writers[upload_id]
