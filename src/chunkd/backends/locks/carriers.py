"""The few PostgreSQL sessions ("carriers") on which one process holds its uploads' advisory locks.

A session-level advisory lock belongs to a session, and one session may hold any number of them,
so many uploads' locks share a few connections instead of taking one each for as long as they are
held (a tus append holds its lock while its body streams: a connection each let as many slow
clients as connections keep every other upload of the node waiting). A new holder goes to an idle
carrier, else to a new one while there are fewer than ``most``, else to the one with fewest users.

Not an asyncpg pool: a pool runs ``pg_advisory_unlock_all()`` on each connection it takes back,
which would drop every other upload's lock on it. A connection runs one statement at a time, so
each statement on a carrier (lock, unlock, notify, and the saves of the uploads whose locks it
holds, lent through ``sessions``) runs under its one ``busy`` lock. When a carrier's session ends,
every lock on it is gone: each of its holders is told (``lost``) and later holds get a new carrier.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from chunkd.backends.locks.sessions import turn

__all__ = ["Carrier", "Carriers"]

log = logging.getLogger("chunkd.locks")

# A carrier left without users this long is closed, beyond the ``idle`` ones kept open.
IDLE_LIFETIME = 60.0


@dataclass(eq=False)
class Carrier:
    conn: Any  # an asyncpg connection of its own
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    held: dict[int, str] = field(default_factory=dict)  # advisory key → upload id, of its holders
    users: int = 0  # holders, and statements under way or waiting: what new holders are spread by
    idle_since: float = field(default_factory=time.monotonic)
    dead: bool = False

    @asynccontextmanager
    async def turn(self, timeout: float) -> AsyncIterator[Any]:
        """The connection alone for a statement, the turn waited for at most ``timeout`` seconds
        (TimeoutError). A closed carrier is a lost connection (asyncpg's own error for it)."""
        import asyncpg  # type: ignore[import-untyped]

        async with turn(self.busy, timeout):
            if self.dead or self.conn.is_closed():
                raise asyncpg.ConnectionDoesNotExistError("the lock connection is closed")
            yield self.conn


class Carriers:
    """At most ``most`` carriers, each a connection from ``connect``; ``lost(upload_id, conn)`` is
    called for each lock held on a carrier whose connection closes. ``idle`` of them are kept open
    while unused; the others close once unused for ``IDLE_LIFETIME``."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        *,
        most: int,
        idle: int,
        lost: Callable[[str, Any], None],
    ) -> None:
        self._connect = connect
        self._most = most
        self._idle = idle
        self._lost = lost
        self._live: list[Carrier] = []
        self._closing: list[Carrier] = []
        self._opening = 0
        self._opened = asyncio.Event()  # set, and replaced, each time an opening ends

    async def take(self) -> Carrier:
        """A carrier with one more user (``give_back`` when done). Errors of a new connection
        (unreachable, not answering) pass as the driver raises them."""
        while True:
            self._retire_idle()
            idle = [c for c in self._live if not c.users]
            if idle:
                chosen = idle[0]
            elif len(self._live) + self._opening < self._most:
                return await self._open()
            elif self._live:
                chosen = min(self._live, key=lambda c: c.users)
            else:  # every place is being opened: wait for one (bounded by the connect timeout)
                await self._opened.wait()
                continue
            chosen.users += 1
            return chosen

    async def _open(self) -> Carrier:
        self._opening += 1
        try:
            conn = await self._connect()
        finally:
            self._opening -= 1
            self._opened.set()
            self._opened = asyncio.Event()
        carrier = Carrier(conn, users=1)
        conn.add_termination_listener(functools.partial(self._closed, carrier))
        self._live.append(carrier)
        return carrier

    def give_back(self, carrier: Carrier) -> None:
        carrier.users -= 1
        if not carrier.users:
            carrier.idle_since = time.monotonic()

    def discard(self, carrier: Carrier) -> None:
        """Close a carrier whose session is gone or cannot be trusted; its holders are told."""
        self._closed(carrier, carrier.conn)
        with suppress(Exception):  # closed already
            carrier.conn.terminate()

    def _closed(self, carrier: Carrier, conn: Any) -> None:
        if carrier.dead:
            return
        carrier.dead = True
        if carrier in self._live:
            self._live.remove(carrier)
        for upload_id in list(carrier.held.values()):
            self._lost(upload_id, conn)

    def _retire_idle(self) -> None:
        now = time.monotonic()
        for carrier in list(self._live):
            if len(self._live) <= self._idle:
                break
            if not carrier.users and now - carrier.idle_since > IDLE_LIFETIME:
                self.discard(carrier)

    async def close(self) -> None:
        """Close every carrier (waiting for the server's goodbye, which ``terminate`` does not)."""
        self._closing += self._live
        self._live = []
        for carrier in self._closing:
            carrier.dead = True  # shutting down: nobody is told of the locks that go with them
        await asyncio.gather(*(c.conn.close() for c in self._closing))
        self._closing = []

    def terminate(self) -> None:
        """Drop every carrier's connection without a goodbye (a ``close`` that did not end)."""
        for carrier in (*self._closing, *self._live):
            carrier.dead = True
            carrier.conn.terminate()
        self._closing, self._live = [], []
