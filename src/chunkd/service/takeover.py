"""Ending a stale request when a newer one arrives for the same upload (as tusd v2 does), on any
node.

A client whose connection silently died retries with a new request while the server may still be
waiting for bytes on the old one, which holds the upload's lock. Instead of answering the retry
with 423 until the old request times out, the new request asks the old one to stop through the
lock port (``LockManager.request_release``: in-process, or by PostgreSQL NOTIFY to the node that
runs it): the old body iterator raises ``UploadInterrupted``, which the engine treats like a
broken-off body (the bytes that arrived are committed and the lock released), and the new request
then proceeds from the current offset (or gets 409 if its offset is now wrong).

Used by every dialect whose appends hold the lock while a body streams: tus, the IETF draft and
the media API's Content-Range chunks. (Parts — native, assets, pm chunks — hold the lock only for
their short commit, so nothing needs taking over.)
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

from chunkd.domain.errors import Busy, Conflict
from chunkd.ports.locks import LockManager, asking_release, take_over

__all__ = ["TAKE_OVER_WAIT", "InFlight", "LockLost", "UploadInterrupted", "Writer"]

# How long a new request waits for the request it takes over from to commit, and then for the lock.
TAKE_OVER_WAIT = 5.0


class UploadInterrupted(Conflict):
    """The request's body was cut short because a newer request for the upload took over (the
    bytes that arrived are kept where the dialect keeps partial bodies)."""

    code = "upload_taken_over"

    def __init__(self, message: str = "the upload was taken over by a newer request") -> None:
        super().__init__(message, field="body")


class LockLost(Busy):
    """The request's body was cut short because the upload's lock was lost under it (its database
    session ended: a restart, pg_terminate_backend). Nobody took over: the client is still there
    and resumes from the upload's current offset (a busy upload's answer in every dialect, with
    Retry-After), where a taken-over request's 400 would have made it give up."""

    def __init__(self) -> None:
        super().__init__(
            "the upload's lock was lost while this request wrote (its database session ended); "
            "resume from the upload's current offset",
            field="body",
        )


class Writer:
    """One request streaming into an upload."""

    def __init__(self) -> None:
        self._task = asyncio.current_task()
        self._stopped = False
        self._lost = False
        self._waiting = False
        self._cancelled = False

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        """Ask the request to stop reading its body. If it is blocked waiting for bytes (the usual
        case for a dead connection), its task is woken with a cancellation that ``guard`` turns
        into ``UploadInterrupted`` right at the read, so nothing else in the task is cancelled."""
        self._stopped = True
        if self._waiting and not self._cancelled and self._task is not None:
            self._cancelled = True
            self._task.cancel()

    def lose(self) -> None:
        """Stop as ``stop`` does, because the upload's lock was lost under the request (see
        ``LockLost``): the rest of its body is refused with ``LockLost``."""
        self._lost = True
        self.stop()

    def _interrupted(self) -> Busy | UploadInterrupted:
        return LockLost() if self._lost else UploadInterrupted()

    async def guard(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``body``, ending with ``UploadInterrupted`` once ``stop`` was called."""
        iterator = aiter(body)
        while True:
            if self._stopped:
                raise self._interrupted()
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
                raise self._interrupted() from None
            finally:
                self._waiting = False
            yield chunk


class InFlight:
    """Take-over of uploads over one lock manager: one per process, built with the runtime
    (``Runtime.takeover``) and shared by every dialect that streams appends."""

    def __init__(self, locks: LockManager) -> None:
        self.locks = locks
        self._local: dict[str, int] = {}

    def writing(self, upload_id: str) -> bool:
        """True while a request of this process streams into ``upload_id`` (one on another node
        is not seen here; the lock port reaches it when it is taken over)."""
        return upload_id in self._local

    async def end_stale(self, upload_id: str, *, wait: float) -> None:
        """Stop the request writing ``upload_id`` (on any node) and wait up to ``wait`` seconds
        for it to commit what it has; ``Busy`` if the lock is still held then."""
        await take_over(self.locks, upload_id, timeout=wait, requester=secrets.token_hex(8))

    @contextlib.asynccontextmanager
    async def whole_body(self, upload_id: str, *, wait: float) -> AsyncIterator[Writer]:
        """The one request storing a whole body into ``upload_id`` (a whole-file PUT, which
        streams its parts without the upload's lock): an older one still streaming, on any node,
        is stopped (its whole parts kept) and waited for up to ``wait`` seconds (``Busy`` after),
        and the block runs alone. Two at once stored their parts in turn, both were answered as
        if their body had been kept, and the file held some parts of each."""
        lane = f"{upload_id}/whole-body"  # a lock of its own: the upload's is taken per part
        async with self.take_over(lane, wait=wait) as writer, self.locks.hold(lane, timeout=wait):
            yield writer

    @contextlib.asynccontextmanager
    async def take_over(self, upload_id: str, *, wait: float) -> AsyncIterator[Writer]:
        """Register the caller as the writer of ``upload_id`` that a later request may stop, and
        make every lock wait in the block ask the current holder (on any node) to let go. The
        caller passes ``wait`` as its lock timeout: the take-over happens in the engine's own
        lock acquisition, so a request costs one lock whether or not it takes over."""
        del wait  # the caller's lock timeout bounds the wait
        token = secrets.token_hex(8)
        me = Writer()
        self._local[upload_id] = self._local.get(upload_id, 0) + 1
        try:
            with asking_release(token):
                async with self.locks.releasable(upload_id, me.stop, requester=token, lost=me.lose):
                    yield me
        finally:
            left = self._local.pop(upload_id) - 1
            if left:
                self._local[upload_id] = left
