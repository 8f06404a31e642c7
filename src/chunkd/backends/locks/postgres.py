"""Per-upload locks across nodes: PostgreSQL session-level advisory locks.

Each ``hold`` takes a connection from a small asyncpg pool of its own, polls
``pg_try_advisory_lock(key)`` until it succeeds or the timeout passes, and keeps that connection
for as long as the lock is held; ``pg_advisory_unlock(key)`` in ``finally`` then returns the
connection to the pool. The key is a 64-bit hash of the upload id.

Why these choices:

- *Session-level* locks (not ``pg_advisory_xact_lock``) so no transaction stays open while a part
  streams in or fsyncs; the lock's life is the ``hold`` block's, not a transaction's.
- *A pool separate from the repository's engine*: a holder needs a repository connection while it
  holds its lock, so sharing one pool could leave every connection held by lock owners waiting
  for one more (a deadlock until the pool timeout).
- *Polling* ``pg_try_advisory_lock`` instead of a blocking ``pg_advisory_lock``: a cancelled
  waiter (client gone, timeout) can never end up owning a lock it does not know about.
- *Crash safety*: the lock belongs to the server session, so when a node dies (``kill -9``,
  power loss) PostgreSQL releases it as soon as it notices the connection is gone: at once for
  a dead process (the kernel closes its socket); for a vanished machine, after the server's
  TCP keepalive gives up (``tcp_keepalives_idle`` etc., see docs/deploy.md).
- *Fenced writes*: the session holding the lock is lent to the upload's saves while it is held
  (``sessions``), so a save commits only while the lock is still held.
- asyncpg's pool runs ``pg_advisory_unlock_all()`` when a connection is released, so even an
  unlock that failed half way cannot leak a lock to the next user of that connection.

Release requests (a newer request asking a stale writer on another node to let go) travel by
``NOTIFY chunkd_lock_release, '<upload id>'``. Each process LISTENs on one dedicated connection
of its own (not from the pool: a pooled connection would stop listening when released), opened
when its first writer registers a release callback; the notification calls the callbacks
registered in that process. PostgreSQL delivers a notification to every listening session
including the sender's (the payload names the requester, so a writer is never stopped by
its own take-over echoing back), and only after the sending statement commits (autocommit here), so the
cost is one round trip for the asker and nothing for uploads nobody takes over.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

from sqlalchemy.engine import make_url

from chunkd.backends.locks.release import ReleaseRegistry
from chunkd.backends.locks.sessions import LockSession, lend
from chunkd.backends.repository.full import DATABASE_TIMEOUT, closed_within
from chunkd.domain.errors import Busy, DatabaseUnavailable, StorageError
from chunkd.ports.locks import ASK_AGAIN, release_requester

__all__ = ["PostgresAdvisoryLocks", "advisory_key", "connection_broken"]

log = logging.getLogger("chunkd.locks")

# Polling starts fast (a part commit holds the lock for milliseconds) and backs off to this.
_FIRST_POLL = 0.002
_MAX_POLL = 0.05
# The NOTIFY channel of release requests.
RELEASE_CHANNEL = "chunkd_lock_release"


def advisory_key(upload_id: str) -> int:
    """A signed 64-bit key for ``pg_advisory_lock(bigint)``, namespaced so it is unlikely to meet
    another application's keys in the same database."""
    digest = hashlib.blake2b(upload_id.encode(), digest_size=8, person=b"chunkd-upload").digest()
    return int.from_bytes(digest, "big", signed=True)


def asyncpg_dsn(url: str) -> str:
    """A libpq-style DSN for asyncpg from a SQLAlchemy URL (``postgresql+asyncpg://`` etc.).
    SQLAlchemy's asyncpg spelling ``ssl=…`` becomes libpq's ``sslmode=…``, and options only the
    SQLAlchemy dialect understands are dropped (asyncpg would send them as server settings)."""
    parsed = make_url(url).set(drivername="postgresql")
    query = {k: v for k, v in parsed.query.items() if k not in _SQLALCHEMY_ONLY}
    if "ssl" in query:
        query.setdefault("sslmode", query.pop("ssl"))
    return parsed.set(query=query).render_as_string(hide_password=False)


_SQLALCHEMY_ONLY = {"prepared_statement_cache_size", "prepared_statement_name_func", "async_fallback"}


# A lock asked for on a pooled connection that turns out dead is asked for again, on a new one.
_CONNECTION_ATTEMPTS = 3


def connection_broken(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection itself is gone (not the lock busy, not a cancel)."""
    import asyncpg  # type: ignore[import-untyped]

    return isinstance(
        exc,
        (
            OSError,  # ConnectionResetError and kin
            asyncpg.PostgresConnectionError,  # SQLSTATE class 08
            asyncpg.exceptions.OperatorInterventionError,  # 57P01 terminated, 57P03 cannot connect now
            asyncpg.InterfaceError,  # ConnectionDoesNotExistError, a protocol left mid-error
            asyncpg.exceptions.InternalClientError,
        ),
    )


def _unreachable(upload_id: str) -> StorageError:
    """No lock can be taken while the database is unreachable (restarting, shut down, refusing
    connections): a dependency down, 503 in every dialect, never a 500. Nothing was written."""
    return DatabaseUnavailable(
        f"upload {upload_id}'s lock cannot be taken: the database is unreachable; try again shortly"
    )


def _unanswered(upload_id: str) -> StorageError:
    return DatabaseUnavailable(
        f"upload {upload_id}'s lock cannot be taken: the database did not answer in time; try again"
    )


@contextmanager
def _reaching(upload_id: str) -> Iterator[None]:
    """Around a call that needs the database to answer: a lost or refused connection is
    ``_unreachable``; any other error passes as it is."""
    try:
        yield
    except Exception as exc:
        if connection_broken(exc):
            raise _unreachable(upload_id) from exc
        raise


def _discard(conn: Any) -> None:
    """Close a lock connection for good (the pool opens a new one in its place)."""
    with suppress(Exception):  # already closed and detached by the pool after a connection loss
        conn.terminate()


async def _give_back(pool: Any, conn: Any, upload_id: str) -> None:
    """Return a lock connection to its pool. The pool resets a connection on its way back; if the
    session ended after the unlock (a restart, pg_terminate_backend), that reset fails and asyncpg
    closes the connection, which frees its place in the pool. The lock went with the session and
    the work done under it is committed, so this is no reason to fail the request (it made a 500
    of a PATCH whose bytes were saved), nor to hide the error the work itself raised."""
    try:
        await pool.release(conn)
    except Exception as exc:
        if not connection_broken(exc):
            raise
        log.warning("the connection of upload %s's lock closed on its way back to the pool", upload_id)


class PostgresAdvisoryLocks:
    """``LockManager`` over PostgreSQL advisory locks; exclusive across every process and node that
    shares the database. Compose it behind an in-process lock (``StackedLocks``) so tasks of one
    process queue in memory instead of polling the database."""

    def __init__(
        self, url: str, *, max_connections: int = 50, idle_connections: int = 2, timeout: float = DATABASE_TIMEOUT
    ) -> None:
        self._dsn = asyncpg_dsn(url)
        self._timeout = timeout  # for each statement and each new connection: a hung server is a 503
        self._max = max_connections
        self._min = idle_connections
        self._pool: Any = None
        self._pool_lock = asyncio.Lock()
        self._releases = ReleaseRegistry()
        self._listener: Any = None
        self._listener_lock = asyncio.Lock()
        self._listen_failed = False  # the last try to (re)open the LISTEN connection failed

    async def _get_pool(self) -> Any:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    import asyncpg

                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=min(self._min, self._max),
                        max_size=self._max,
                        # Idle lock connections above min_size are closed after a minute.
                        max_inactive_connection_lifetime=60.0,
                        # The default statement cache: the upload's saves run on its lock's
                        # connection (``sessions``), prepared once per connection.
                        server_settings={"application_name": "chunkd-locks"},
                        command_timeout=self._timeout,
                        timeout=self._timeout,
                    )
        return self._pool

    @asynccontextmanager
    async def hold(self, upload_id: str, *, timeout: float) -> AsyncIterator[None]:
        deadline = time.monotonic() + max(timeout, 0.0)
        key = advisory_key(upload_id)
        with _reaching(upload_id):
            pool = await self._get_pool()
        conn = await self._take(pool, upload_id, key, deadline, timeout)
        try:
            # A session's advisory locks die with it: once this connection closes (PostgreSQL
            # restarted, a connection reset, pg_terminate_backend), another node may take the lock while
            # this process still writes under it. Its writers here are told to let go then (their
            # ``lost`` callbacks: busy, not taken over), instead of going on unfenced.
            lost = functools.partial(self._lost, upload_id)
            conn.add_termination_listener(lost)
            session = LockSession(self._dsn, upload_id, conn)
            try:
                with lend(session):  # the upload's saves run on this session: fenced by the lock
                    yield
            finally:
                async with session.busy:  # a save still running in a task this one started
                    session.conn = None
                with suppress(Exception):  # a lost connection is detached from its pool proxy already
                    conn.remove_termination_listener(lost)
                await self._unlock(conn, key, upload_id)
        finally:
            await _give_back(pool, conn, upload_id)

    async def _take(self, pool: Any, upload_id: str, key: int, deadline: float, timeout: float) -> Any:
        """A pool connection that holds the upload's lock. An idle pooled connection may have died
        unnoticed (PostgreSQL restarted, ``pg_terminate_backend``): asyncpg learns it only on use,
        sometimes half way through reading the server's goodbye. Such a connection is closed and
        the lock asked for again on a new one, so a restart costs no request. A database that
        cannot be reached at all (no new connection, or every attempt's lost) is a
        ``StorageError``."""
        for attempt in range(_CONNECTION_ATTEMPTS):
            with _reaching(upload_id):  # a new connection could not be opened
                # With no idle connection and room for one, the acquire opens a connection: if
                # that is what runs out of time, the server is not answering, not every lock
                # connection in use.
                opening = pool.get_idle_size() == 0 and pool.get_size() < pool.get_max_size()
                try:
                    # Even a try-once (timeout 0) may wait a moment for a free connection.
                    conn = await pool.acquire(timeout=max(timeout, 1.0))
                except TimeoutError:  # an OSError too: answered here before it could look unreachable
                    if opening:
                        raise _unanswered(upload_id) from None
                    raise Busy(f"upload {upload_id} is locked (no lock connection free)") from None
            try:
                await self._poll(conn, upload_id, key, deadline)
                return conn
            except TimeoutError as exc:
                # The server took the connection but does not answer (hung): asking again on
                # another connection would only wait as long again.
                await _give_back(pool, conn, upload_id)
                raise _unanswered(upload_id) from exc
            except BaseException as exc:
                broken = connection_broken(exc)
                if broken:
                    log.warning("a lock connection was lost (%s); asking again on a new one", type(exc).__name__)
                    _discard(conn)
                await _give_back(pool, conn, upload_id)
                if not broken:
                    raise
                if attempt + 1 == _CONNECTION_ATTEMPTS:
                    raise _unreachable(upload_id) from exc
        raise AssertionError("unreachable: the last attempt raises")

    async def _poll(self, conn: Any, upload_id: str, key: int, deadline: float) -> None:
        delay = _FIRST_POLL
        requester = release_requester()
        next_ask = 0.0
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            now = time.monotonic()
            if requester is not None and now >= next_ask:
                # A take-over: ask whoever holds it (here or on another node) to let go.
                await self.request_release(upload_id, requester=requester)
                next_ask = now + ASK_AGAIN
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Busy(f"upload {upload_id} is being written by another node or request")
            # Jitter keeps waiters on several nodes from polling in lockstep.
            await asyncio.sleep(min(delay * (0.5 + random.random()), remaining))
            delay = min(delay * 2, _MAX_POLL)

    def _lost(self, upload_id: str, _conn: Any) -> None:
        stopped = self._releases.lose(upload_id)
        # A warning, not an error: its cause is the database's (a restart, a session ended), and the
        # writers resume from the upload's offset; every lock held then says it once.
        log.warning(
            "the connection holding upload %s's lock closed (database restarted or session ended); "
            "%d writer(s) here told to stop",
            upload_id,
            stopped,
        )

    @staticmethod
    async def _unlock(conn: Any, key: int, upload_id: str) -> None:
        try:
            released = await conn.fetchval("SELECT pg_advisory_unlock($1)", key)
        except asyncio.CancelledError:
            # Closing the session is what releases the lock for sure (the server drops a
            # session's locks with it).
            _discard(conn)
            raise
        except Exception:
            # A broken connection: its session, and so the lock, is gone already. The work done
            # under the lock is committed, so this is no reason to fail the request.
            log.warning("could not release the advisory lock of upload %s; closing its connection", upload_id)
            _discard(conn)
            return
        if not released:
            log.error("advisory lock of upload %s was gone before release (connection reset?)", upload_id)

    # ---- release requests ---------------------------------------------------------------------
    async def _listen(self) -> None:
        """Open the LISTEN connection if it is not open (again, after a connection loss)."""
        if self._listener is not None and not self._listener.is_closed():
            return
        async with self._listener_lock:
            if self._listener is not None and not self._listener.is_closed():
                return
            import asyncpg

            conn = await asyncpg.connect(
                self._dsn,
                statement_cache_size=0,
                server_settings={"application_name": "chunkd-lock-release"},
                timeout=self._timeout,
            )
            await conn.add_listener(RELEASE_CHANNEL, self._on_notify)
            self._listener = conn
            if self._listen_failed:
                self._listen_failed = False
                log.info("listening for lock release requests again; takeover from other nodes is on")

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        requester, _, upload_id = payload.partition(" ")
        self._releases.fire(upload_id, requester or None)

    @asynccontextmanager
    async def releasable(
        self,
        upload_id: str,
        release: Callable[[], None],
        *,
        requester: str | None = None,
        lost: Callable[[], None] | None = None,
    ) -> AsyncIterator[None]:
        try:
            await self._listen()
        except Exception as exc:
            # Still releasable from this process; another node then waits for the lock instead.
            # The database away fails this for every writer while it lasts: one line when it
            # begins (and one when listening again), not a traceback per request.
            log.log(
                logging.DEBUG if self._listen_failed else logging.WARNING,
                "could not LISTEN for lock release requests; takeover from other nodes is off: %s: %s",
                type(exc).__name__,
                exc,
            )
            self._listen_failed = True
        with self._releases.register(upload_id, release, requester, lost):
            yield

    async def request_release(self, upload_id: str, *, requester: str | None = None) -> None:
        if self._releases.fire(upload_id, requester):
            return  # the writer runs in this process, and has been told
        with _reaching(upload_id):
            pool = await self._get_pool()
            # Payload "<requester> <upload id>" (the requester may be empty; ids have no spaces).
            async with pool.acquire(timeout=5.0) as conn:
                await conn.execute("SELECT pg_notify($1, $2)", RELEASE_CHANNEL, f"{requester or ''} {upload_id}")

    async def close(self) -> None:
        if self._listener is not None:
            with suppress(Exception):
                await self._listener.close(timeout=2.0)
            self._listener = None
        if self._pool is not None:
            await closed_within(self._pool.close(), "the lock connection pool", drop=self._pool.terminate)
            self._pool = None
