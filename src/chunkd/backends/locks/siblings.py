"""Release requests between the worker processes of one ``chunkd serve --workers N`` on SQLite.

The upload locks of those processes are byte-range locks in one file (``LocalLocks``), which says
that another process holds an upload but not how to ask it to let go. Each worker has an inbox: the
reading end of a datagram socket pair made by the supervisor before it forks, so only the workers
(which inherit the sending ends) can write to it; no name on the file system or in the abstract
socket namespace that another local user could reach. A worker that finds an upload locked by
another process sends ``upload id, requester, when`` to every other inbox; the worker holding the
upload's writer stops it as a take-over in its own process would (tus, the IETF draft, Content-Range),
unless that writer registered after ``when`` (the request arrived late and was meant for another).

PostgreSQL deployments do not use this: their advisory locks ask the holder by NOTIFY, on any node.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Sequence

__all__ = ["Siblings", "current", "join"]

# An upload id is 22 characters, a requester token 16 and a time ~20; anything longer is not a request.
_MAX_MESSAGE = 256


class Siblings:
    """This worker's inbox and the other workers' outboxes (``slot``: this worker's index)."""

    def __init__(self, inboxes: Sequence[socket.socket], outboxes: Sequence[socket.socket], slot: int) -> None:
        self.slot = slot
        self._inbox = inboxes[slot]
        self._outboxes = [box for index, box in enumerate(outboxes) if index != slot]
        self._listening: asyncio.AbstractEventLoop | None = None

    def ask(self, upload_id: str, requester: str | None) -> None:
        """Ask every other worker to release ``upload_id`` (never blocks: a full inbox drops the
        request, and the waiter asks again, see ``ASK_AGAIN``)."""
        message = f"{upload_id}\n{requester or ''}\n{time.monotonic()!r}".encode()
        for box in self._outboxes:
            # Full (BlockingIOError), or that worker is gone: it holds nothing now.
            with contextlib.suppress(OSError):
                box.send(message)

    def listen(self, on_request: Callable[[str, str | None, float], object]) -> None:
        """Call ``on_request(upload_id, requester, asked_at)`` in this event loop for each request
        that arrives (``asked_at``: the sender's ``time.monotonic()``, the same clock here)."""
        loop = asyncio.get_running_loop()
        # Requests left from a worker that ran in this slot before (and died) were not for this one.
        with contextlib.suppress(OSError):
            while self._inbox.recv(_MAX_MESSAGE):
                pass

        def readable() -> None:
            while True:
                try:
                    message = self._inbox.recv(_MAX_MESSAGE)
                except OSError:  # drained (BlockingIOError)
                    return
                upload_id, requester, asked_at = [*message.decode("ascii", "replace").split("\n"), "", ""][:3]
                try:
                    when = float(asked_at)
                except ValueError:
                    continue
                if upload_id:
                    on_request(upload_id, requester or None, when)

        loop.add_reader(self._inbox.fileno(), readable)
        self._listening = loop

    def stop(self) -> None:
        if self._listening is not None and not self._listening.is_closed():
            self._listening.remove_reader(self._inbox.fileno())
        self._listening = None


def channels(count: int) -> tuple[list[socket.socket], list[socket.socket]]:
    """The supervisor's inboxes and outboxes for ``count`` workers (made before forking; a worker
    started again in a slot reads the same inbox)."""
    inboxes: list[socket.socket] = []
    outboxes: list[socket.socket] = []
    for _ in range(count):
        inbox, outbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        inbox.setblocking(False)
        outbox.setblocking(False)
        inboxes.append(inbox)
        outboxes.append(outbox)
    return inboxes, outboxes


_current: Siblings | None = None


def join(siblings: Siblings) -> None:
    """Make ``siblings`` this process's (the supervisor calls it in a worker, right after the fork)."""
    global _current
    _current = siblings


def current() -> Siblings | None:
    """This worker's siblings; None in a process that is not one of several workers."""
    return _current
