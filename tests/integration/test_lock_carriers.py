"""PostgreSQL advisory locks on a few shared connections ("carriers"): many more uploads held at
once than lock connections, each save still fenced by its own lock's session; a second hold of an
upload in one process refused although a session's advisory locks are re-entrant; and a carrier
lost under several holders tells each of them, and is replaced."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest

from chunkd.backends.locks.postgres import PostgresAdvisoryLocks, advisory_key, asyncpg_dsn
from chunkd.backends.locks.sessions import lock_session
from chunkd.backends.repository import open_metadata
from chunkd.domain import errors as e
from chunkd.domain.upload import Upload
from chunkd.ports.metadata import MetadataStore
from tests.support.postgres import PostgresServer
from tests.support.uploads import make_upload
from tests.support.waiting import until

CARRIERS = 2
# pg_locks splits a bigint advisory key in two 32-bit halves: the low one is ``objid``.
_HOLDERS = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = ANY($1::bigint[])"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


@pytest.fixture
async def metadata(pg_url: str) -> AsyncIterator[MetadataStore]:
    store = await open_metadata(pg_url, run_migrations=False)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def admin(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        yield conn
    finally:
        await conn.close()


async def holder_pids(admin: asyncpg.Connection, *upload_ids: str) -> list[int]:
    """The backend pid holding each upload's advisory lock, one per lock held."""
    low = [advisory_key(u) & 0xFFFFFFFF for u in upload_ids]
    return [row["pid"] for row in await admin.fetch(_HOLDERS, low)]


async def lock_sessions(admin: asyncpg.Connection) -> int:
    return int(
        await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'chunkd-locks'"
        )
    )


async def test_many_more_uploads_than_lock_connections_are_held_at_once_and_each_save_is_fenced(
    pg_url: str, metadata: MetadataStore, admin: asyncpg.Connection
) -> None:
    """Each lock used to keep a connection of its own: with every one held (slow clients streaming
    their bodies), every other upload of the node waited, then was refused. Now 3 x the
    connections + 1 uploads are held together on those connections, and each one's save runs on
    its own lock's session and commits."""
    locks = PostgresAdvisoryLocks(pg_url, max_connections=CARRIERS)
    uploads = [make_upload(filename=f"{n}.bin") for n in range(3 * CARRIERS + 1)]
    for upload in uploads:
        await metadata.uploads.create(upload)
    dsn = asyncpg_dsn(pg_url)
    all_held, go_on = asyncio.Event(), asyncio.Event()
    held: list[str] = []
    saved: list[str] = []
    carriers: set[int] = set()

    async def write(upload: Upload) -> None:
        async with locks.hold(upload.id, timeout=10):
            held.append(upload.id)
            if len(held) == len(uploads):
                all_held.set()
            await all_held.wait()  # every lock held at once before any save
            session = lock_session(dsn, upload.id)
            assert session is not None
            carriers.add(id(session.conn))
            await metadata.uploads.save(dataclasses.replace(upload, filename=f"saved-{upload.filename}"))
            saved.append(upload.id)
            await go_on.wait()

    try:
        writers = asyncio.gather(*(write(u) for u in uploads))
        await until(lambda: len(saved) == len(uploads) or writers.done(), what="every upload saved under its lock")
        assert not writers.done(), writers.exception()  # a hold refused ("no lock connection free")
        assert len(await holder_pids(admin, *(u.id for u in uploads))) == len(uploads)  # all still held
        assert await lock_sessions(admin) <= CARRIERS
        assert len(carriers) <= CARRIERS
        go_on.set()
        await writers
        for upload in uploads:
            stored = await metadata.uploads.get(upload.id)
            assert stored is not None and stored.filename == f"saved-{upload.filename}"
        assert await holder_pids(admin, *(u.id for u in uploads)) == []  # each let go
    finally:
        go_on.set()
        await locks.close()


async def test_a_second_hold_of_an_upload_in_one_process_waits_though_its_session_would_grant_it(
    pg_url: str, admin: asyncpg.Connection
) -> None:
    """A session's advisory lock is re-entrant: asked for again on the session that holds it, it
    is granted. With one carrier, both holds of the upload would be on that session; the second
    must still be refused (try once) or wait for the first to let go, without an outer lock."""
    locks = PostgresAdvisoryLocks(pg_url, max_connections=1)
    try:
        order: list[str] = []
        first_in = asyncio.Event()
        second_asked = asyncio.Event()

        async def first() -> None:
            async with locks.hold("twice", timeout=1):
                order.append("first in")
                first_in.set()
                with pytest.raises(e.Busy):
                    async with locks.hold("twice", timeout=0):
                        order.append("granted twice")
                await second_asked.wait()
                order.append("first out")

        async def second() -> None:
            await first_in.wait()
            second_asked.set()
            async with locks.hold("twice", timeout=10):
                order.append("second in")
                assert len(await holder_pids(admin, "twice")) == 1

        await asyncio.gather(first(), second())
        assert order == ["first in", "first out", "second in"]
        assert await holder_pids(admin, "twice") == []  # not left held once (re-entrant count)
    finally:
        await locks.close()


async def test_two_holds_of_an_upload_asked_for_at_once_are_not_both_granted(
    pg_url: str, admin: asyncpg.Connection
) -> None:
    """Both asked for before any carrier is open: both wait for the one being opened, and would
    both be granted on it if each only looked whether the upload was taken before that wait."""
    locks = PostgresAdvisoryLocks(pg_url, max_connections=1)
    granted: list[int] = []
    release = asyncio.Event()

    async def hold_once(n: int) -> None:
        async with locks.hold("at-once", timeout=0):
            granted.append(n)
            await release.wait()

    try:
        tasks = [asyncio.create_task(hold_once(n)) for n in (1, 2)]
        # The second hold may be refused before the first is granted (the carrier still opening, on a
        # loaded machine): wait for both outcomes, or for the two grants the check exists to catch.
        await until(
            lambda: len(granted) == 2 or (len(granted) == 1 and any(t.done() for t in tasks)),
            what="one hold granted and the other refused",
        )
        assert len(granted) == 1  # the other hold ended while this one is still held
        release.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert sum(isinstance(o, e.Busy) for o in outcomes) == 1, outcomes
        assert await holder_pids(admin, "at-once") == []
    finally:
        release.set()
        await locks.close()


async def test_a_carrier_lost_under_two_uploads_tells_both_and_is_replaced(
    pg_url: str, metadata: MetadataStore, admin: asyncpg.Connection
) -> None:
    """Both uploads' locks on one carrier; its session is ended (pg_terminate_backend, as a restart
    does): each upload's writer is told, a save under either is refused, another node may take
    both locks at once, and this process's next holds run on a new carrier, fenced as before."""
    locks = PostgresAdvisoryLocks(pg_url, max_connections=1)
    other_node = PostgresAdvisoryLocks(pg_url)
    a, b = make_upload(filename="a.bin"), make_upload(filename="b.bin")
    for upload in (a, b):
        await metadata.uploads.create(upload)
    told: dict[str, asyncio.Event] = {a.id: asyncio.Event(), b.id: asyncio.Event()}
    both_held, go_on = asyncio.Event(), asyncio.Event()
    holding: list[str] = []

    async def writer(upload: Upload) -> Exception | None:
        lost = told[upload.id]
        async with locks.releasable(upload.id, lambda: None, lost=lost.set), locks.hold(upload.id, timeout=5):
            holding.append(upload.id)
            if len(holding) == 2:
                both_held.set()
            await both_held.wait()
            await lost.wait()
            await go_on.wait()
            try:
                await metadata.uploads.save(dataclasses.replace(upload, filename="after.bin"))
            except e.Busy as refused:
                return refused
        return None

    try:
        writers = asyncio.gather(writer(a), writer(b))
        await until(lambda: both_held.is_set() or writers.done(), what="both uploads' locks held")
        assert not writers.done(), writers.exception()
        pids = set(await holder_pids(admin, a.id, b.id))
        assert len(pids) == 1  # one carrier holds both
        assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pids.pop())
        await until(lambda: all(t.is_set() for t in told.values()), what="both writers told")
        # The server dropped both locks with the session: another node takes them at once.
        async with other_node.hold(a.id, timeout=0), other_node.hold(b.id, timeout=0):
            go_on.set()
            refused = await writers
        assert all(isinstance(r, e.Busy) and "lock was lost" in str(r) for r in refused), refused
        for upload in (a, b):
            stored = await metadata.uploads.get(upload.id)
            assert stored is not None and stored.filename == upload.filename

        async with locks.hold(a.id, timeout=5), locks.hold(b.id, timeout=5):  # on a new carrier
            pids = set(await holder_pids(admin, a.id, b.id))
            assert len(pids) == 1
            await metadata.uploads.save(dataclasses.replace(a, filename="after.bin"))
        stored = await metadata.uploads.get(a.id)
        assert stored is not None and stored.filename == "after.bin"
    finally:
        go_on.set()
        await locks.close()
        await other_node.close()


async def test_a_save_cut_short_inside_its_transaction_closes_the_carrier_rather_than_lend_it_on(
    pg_url: str, metadata: MetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save cancelled while it commits (its client gone at that moment) leaves its connection
    inside the transaction. On a connection of its own that harmed only that hold; on a carrier the
    next upload's save would run inside that transaction, as a savepoint, and report a commit that
    never happens. The carrier is closed instead: both writers are told, and the other upload's
    save is refused, not silently lost."""
    locks = PostgresAdvisoryLocks(pg_url, max_connections=1)
    a, b = make_upload(filename="a.bin"), make_upload(filename="b.bin")
    for upload in (a, b):
        await metadata.uploads.create(upload)
    told = {a.id: asyncio.Event(), b.id: asyncio.Event()}
    real_exit = asyncpg.transaction.Transaction.__aexit__
    cut: list[bool] = []

    async def cut_short(self: object, *exc: object) -> object:
        if not cut:
            cut.append(True)
            raise asyncio.CancelledError  # neither COMMIT nor ROLLBACK sent
        return await real_exit(self, *exc)

    try:
        async with (
            locks.releasable(a.id, lambda: None, lost=told[a.id].set),
            locks.releasable(b.id, lambda: None, lost=told[b.id].set),
            locks.hold(a.id, timeout=5),
            locks.hold(b.id, timeout=5),
        ):
            monkeypatch.setattr(asyncpg.transaction.Transaction, "__aexit__", cut_short)
            with pytest.raises(asyncio.CancelledError):
                await metadata.uploads.save(dataclasses.replace(a, filename="after.bin"))
            await until(lambda: all(t.is_set() for t in told.values()), what="both writers told")
            with pytest.raises(e.Busy):
                await metadata.uploads.save(dataclasses.replace(b, filename="after.bin"))
        for upload in (a, b):
            stored = await metadata.uploads.get(upload.id)
            assert stored is not None and stored.filename == upload.filename
    finally:
        await locks.close()


async def test_a_hold_on_a_carrier_of_a_hung_database_is_503_and_holds_resume_once_it_answers(
    own_pg: PostgresServer, own_pg_url: str
) -> None:
    """The database stops answering while one upload holds its lock: another upload's lock, asked
    for on the same carrier, is a 503 within the statement timeout, as on a connection of its own;
    once the server answers again, locks are taken again."""
    locks = PostgresAdvisoryLocks(own_pg_url, max_connections=1, timeout=2.0)
    try:
        async with locks.hold("held-upload", timeout=1):
            own_pg.freeze()
            try:
                with pytest.raises(e.StorageError, match="did not answer in time"):
                    async with locks.hold("other-upload", timeout=1):
                        pass
            finally:
                own_pg.thaw()
        async with locks.hold("other-upload", timeout=10), locks.hold("held-upload", timeout=10):
            pass
    finally:
        await locks.close()
