"""Per-upload locks across nodes: PostgreSQL session-level advisory locks.

Each ``hold`` polls ``pg_try_advisory_lock(key)`` on one of a few dedicated connections of this
process (``carriers``: one session holds the locks of many uploads) until it succeeds or the
timeout passes, and ``pg_advisory_unlock(key)`` on the same connection in ``finally``. The key is a
64-bit hash of the upload id.

Why these choices:

- *Session-level* locks (not ``pg_advisory_xact_lock``) so no transaction stays open while a part
  streams in or fsyncs; the lock's life is the ``hold`` block's, not a transaction's.
- *A few shared carriers, not a connection per held lock*: a tus append holds its lock while its
  body streams, so with a connection each, as many slow clients as connections kept every other
  upload of the node waiting, then refused (423). A carrier is lent to many holders, one
  statement at a time (``carriers``).
- *Connections separate from the repository's pool*: a holder needs a repository connection while
  it holds its lock, so sharing one pool could leave every connection held by lock owners waiting
  for one more (a deadlock until the pool timeout). And not an asyncpg pool either: its
  ``pg_advisory_unlock_all()`` on each connection it takes back would drop the other holders' locks.
- *Polling* ``pg_try_advisory_lock`` instead of a blocking ``pg_advisory_lock``: a cancelled
  waiter (client gone, timeout) can never end up owning a lock it does not know about; one whose
  answer was lost is unlocked at once, before this process asks for that key again.
- *One hold of an upload per process at the database*: a session's advisory lock is re-entrant,
  so a second ``pg_try_advisory_lock`` of a key on the carrier already holding it would succeed.
  A key held or being asked for here is not asked for again until it is let go (``_taken``).
- *Crash safety*: the lock belongs to the server session, so when a node dies (``kill -9``,
  power loss) PostgreSQL releases it as soon as it notices the connection is gone: at once for
  a dead process (the kernel closes its socket); for a vanished machine, after the server's
  TCP keepalive gives up (``tcp_keepalives_idle`` etc., see docs/deploy.md).
- *Fenced writes*: the session holding the lock is lent to the upload's saves while it is held
  (``sessions``), so a save commits only while the lock is still held. When a carrier's session
  ends, every writer whose lock it held is told (``lost``), and later holds go to a new carrier.
- *Unlocks that cannot be skipped*: an unlock runs in a task of its own, so a cancelled request
  still lets go; a carrier on which it cannot run (lost, hung) is closed, which is what lets go for
  sure, taking the other locks on it with it (their writers are told).

Release requests (a newer request asking a stale writer on another node to let go) travel by
``NOTIFY chunkd_lock_release, '<upload id>'``. Each process LISTENs on one dedicated connection
of its own (not a carrier: its notifications must not wait for the carriers' statements), opened
when its first writer registers a release callback; the notification calls the callbacks
registered in that process. PostgreSQL delivers a notification to every listening session
including the sender's (the payload names the requester, so a writer is never stopped by
its own take-over echoing back), and only after the sending statement commits (autocommit here), so the
cost is one round trip for the asker and nothing for uploads nobody takes over.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

from sqlalchemy.engine import make_url

from chunkd.backends.locks.carriers import Carrier, Carriers
from chunkd.backends.locks.release import ReleaseRegistry
from chunkd.backends.locks.sessions import LockSession, lend, turn
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


# A lock asked for on a carrier that turns out dead is asked for again, on a new one.
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
    """Close a lock connection for good (the locks on it go with it; its holders are told, and a new
    carrier takes its place)."""
    with suppress(Exception):  # already closed and detached by the pool after a connection loss
        conn.terminate()


class PostgresAdvisoryLocks:
    """``LockManager`` over PostgreSQL advisory locks; exclusive across every process and node that
    shares the database. Compose it behind an in-process lock (``StackedLocks``) so tasks of one
    process queue in memory instead of polling the database."""

    def __init__(
        self, url: str, *, max_connections: int = 8, idle_connections: int = 2, timeout: float = DATABASE_TIMEOUT
    ) -> None:
        self._dsn = asyncpg_dsn(url)
        self._timeout = timeout  # for each statement and each new connection: a hung server is a 503
        # At most ``max_connections`` carriers; ``idle_connections`` of them stay open unused.
        self._carriers = Carriers(self._connect, most=max_connections, idle=idle_connections, lost=self._lost)
        # The keys this process holds or is asking for, on any carrier: a session's advisory lock is
        # re-entrant, so a second hold of one upload on the carrier holding it would be granted.
        self._taken: set[int] = set()
        self._tidying: set[asyncio.Task[None]] = set()  # unlocks under way (``_spawn``)
        self._releases = ReleaseRegistry()
        self._listener: Any = None
        self._listener_lock = asyncio.Lock()
        self._listen_failed = False  # the last try to (re)open the LISTEN connection failed

    async def _connect(self) -> Any:
        import asyncpg

        return await asyncpg.connect(
            self._dsn,
            # The default statement cache: the saves of the uploads whose locks a carrier holds
            # run on it (``sessions``), each prepared once per connection.
            server_settings={"application_name": "chunkd-locks"},
            command_timeout=self._timeout,
            timeout=self._timeout,
        )

    async def _carrier(self, upload_id: str) -> Carrier:
        with _reaching(upload_id):  # a new connection could not be opened
            try:
                return await self._carriers.take()
            except TimeoutError:  # an OSError too: answered here before it could look unreachable
                raise _unanswered(upload_id) from None

    @asynccontextmanager
    async def hold(self, upload_id: str, *, timeout: float) -> AsyncIterator[None]:
        deadline = time.monotonic() + max(timeout, 0.0)
        key = advisory_key(upload_id)
        # Once the carrier's session ends (PostgreSQL restarted, a connection reset,
        # pg_terminate_backend), another node may take the lock while this process still writes
        # under it: its writers here are told to let go then (``_lost``), instead of going on unfenced.
        carrier = await self._take(upload_id, key, deadline)
        session = LockSession(self._dsn, upload_id, carrier.conn, carrier.busy, self._timeout)
        try:
            with lend(session):  # the upload's saves run on this session: fenced by the lock
                yield
        finally:
            try:
                # A save still running in a task this one started ends first (on a hung server,
                # only as long as a statement may wait: the unlock then closes the carrier).
                with suppress(TimeoutError):
                    async with turn(session.busy, self._timeout):
                        session.conn = None
            finally:
                session.conn = None
                carrier.held.pop(key, None)
                # Shielded: a cancelled request still lets go of the lock, and of nothing else (closing
                # the carrier would drop the other uploads' locks on it).
                await asyncio.shield(self._spawn(self._release(carrier, key, upload_id)))

    async def _take(self, upload_id: str, key: int, deadline: float) -> Carrier:
        """A carrier that holds the upload's lock, asked for with ``pg_try_advisory_lock`` until
        the deadline. A carrier found dead (PostgreSQL restarted, ``pg_terminate_backend``: asyncpg
        learns it only on use, sometimes half way through reading the server's goodbye) is
        replaced and the lock asked for again, so a restart costs no request. A database that
        cannot be reached at all (no new connection, or every attempt's lost) is a
        ``StorageError``; one that does not answer, ``_unanswered``."""
        delay = _FIRST_POLL
        requester = release_requester()
        next_ask = 0.0
        broken = 0
        while True:
            if key not in self._taken:  # else held, or asked for, by another task of this process
                self._taken.add(key)  # before any wait: two tasks must not both ask one carrier
                try:
                    carrier = await self._carrier(upload_id)
                except BaseException:
                    self._taken.discard(key)
                    raise
                asked = False
                try:
                    async with carrier.turn(self._timeout) as conn:
                        asked = True
                        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                            # Recorded before the loop turns again, so a loss of the carrier from
                            # now on tells this lock's writers (``Carriers``).
                            carrier.held[key] = upload_id
                            return carrier
                except BaseException as exc:
                    lost_session = connection_broken(exc) and not isinstance(exc, TimeoutError)
                    if asked and not lost_session:
                        # Cancelled or timed out with the statement sent: the lock may have been
                        # granted, its answer lost. Unlocked before anyone here asks for it again
                        # (the key stays taken till then), so nobody owns a lock it does not know of.
                        tidy = self._spawn(self._release(carrier, key, upload_id, known=False))
                        if isinstance(exc, TimeoutError):
                            raise _unanswered(upload_id) from exc  # the unlock goes on meanwhile
                        await asyncio.shield(tidy)
                        raise
                    self._taken.discard(key)
                    self._carriers.give_back(carrier)
                    if isinstance(exc, TimeoutError):  # its turn never came: the server hangs
                        raise _unanswered(upload_id) from exc
                    if not lost_session:
                        raise
                    log.warning("a lock connection was lost (%s); asking again on a new one", type(exc).__name__)
                    self._carriers.discard(carrier)
                    broken += 1
                    if broken == _CONNECTION_ATTEMPTS:
                        raise _unreachable(upload_id) from exc
                    continue
                self._taken.discard(key)
                self._carriers.give_back(carrier)
            now = time.monotonic()
            if requester is not None and now >= next_ask:
                # A take-over: ask whoever holds it (here or on another node) to let go.
                await self.request_release(upload_id, requester=requester)
                next_ask = now + ASK_AGAIN
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Busy(f"upload {upload_id} is being written by another node or request")
            # Jitter keeps waiters on several nodes from polling in lockstep. Slept without the
            # carrier: the other uploads on it go on meanwhile.
            await asyncio.sleep(min(delay * (0.5 + random.random()), remaining))
            delay = min(delay * 2, _MAX_POLL)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """``work`` as a task of its own, kept till it ends (``close`` waits for it)."""
        task = asyncio.ensure_future(work)
        self._tidying.add(task)
        task.add_done_callback(self._tidying.discard)
        return task

    async def _release(self, carrier: Carrier, key: int, upload_id: str, *, known: bool = True) -> None:
        """Unlock ``key`` on ``carrier`` and give both back. ``known``: the lock was held (else it
        may have been granted unseen, and finding it free is no news). A carrier on which the
        unlock cannot be run is closed: that is what releases the lock for sure."""
        try:
            async with turn(carrier.busy, self._timeout):
                if known:
                    await self._unlock(carrier.conn, key, upload_id)
                    return
                with suppress(Exception):
                    await carrier.conn.fetchval("SELECT pg_advisory_unlock($1)", key)
                    return
                self._carriers.discard(carrier)
        except TimeoutError:  # its turn never came: the statements ahead of it wait on a hung server
            log.warning("could not release the advisory lock of upload %s in time; closing its connection", upload_id)
            self._carriers.discard(carrier)
        finally:
            self._taken.discard(key)
            self._carriers.give_back(carrier)

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
            # session's locks with it, and the other uploads' on it: they are told).
            _discard(conn)
            raise
        except Exception:
            # A broken connection: its session, and so the lock, is gone already (or a server that
            # does not answer: closing it is what lets go). The work done under the lock is
            # committed, so this is no reason to fail the request.
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
        carrier = await self._carrier(upload_id)
        try:
            async with carrier.turn(self._timeout) as conn:
                # Payload "<requester> <upload id>" (the requester may be empty; ids have no spaces).
                await conn.execute("SELECT pg_notify($1, $2)", RELEASE_CHANNEL, f"{requester or ''} {upload_id}")
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                raise _unanswered(upload_id) from exc
            if not connection_broken(exc):
                raise
            self._carriers.discard(carrier)  # its session is gone
            raise _unreachable(upload_id) from exc
        finally:
            self._carriers.give_back(carrier)

    async def close(self) -> None:
        if self._listener is not None:
            with suppress(Exception):
                await self._listener.close(timeout=2.0)
            self._listener = None
        await closed_within(self._close_carriers(), "the lock connection pool", drop=self._carriers.terminate)

    async def _close_carriers(self) -> None:
        await asyncio.gather(*self._tidying, return_exceptions=True)  # unlocks under way end first
        await self._carriers.close()
