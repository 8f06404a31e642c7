"""Cancel and expiry through the real service (SQLite, local disk) with a controllable clock."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chunkd.backends.blobs.local import LocalBlobStore
from chunkd.backends.locks.local import LocalLocks
from chunkd.backends.repository.sqlalchemy.database import create_engine, migrate
from chunkd.backends.repository.sqlalchemy.uploads import SqlUploadRepository
from chunkd.domain import errors as e
from chunkd.domain.metadata import CONCATENATION_SOURCE
from chunkd.domain.upload import Mode, Status, Upload
from chunkd.service.uploads import EngineConfig, UploadService
from tests.support.bodies import body

TTL = timedelta(minutes=10)
PART = 1000


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Setup:
    def __init__(self, service: UploadService, blobs: LocalBlobStore, clock: Clock) -> None:
        self.service, self.blobs, self.clock = service, blobs, clock
        self.events: list[tuple[str, Status]] = []

        async def listen(event: str, upload: Upload) -> None:
            self.events.append((event, upload.status))

        service.subscribe(listen)

    def stored(self, upload: Upload) -> list[str]:
        directory = self.blobs.root / upload.id[:2] / upload.id
        return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await migrate(engine)
    repo = SqlUploadRepository(engine)
    blobs = LocalBlobStore(tmp_path / "blobs", fsync=False)
    clock = Clock()
    config = EngineConfig(min_part_size=1, ttl=TTL, lock_timeout=1)
    yield Setup(UploadService(repo, blobs, LocalLocks(tmp_path / "locks"), config, clock=clock), blobs, clock)
    await repo.close()


async def started(setup: Setup, parts: int = 2) -> Upload:
    upload = await setup.service.create("alice", filename="f.bin", size_bytes=3 * PART, part_size=PART)
    for n in range(1, parts + 1):
        await setup.service.put_part("alice", upload.id, n, body(os.urandom(PART)))
    return upload


async def test_cancel_frees_parts_and_bytes_together(setup: Setup) -> None:
    upload = await started(setup)
    assert len(setup.stored(upload)) == 2
    cancelled = await setup.service.cancel("alice", upload.id)
    assert cancelled.status is Status.CANCELLED and cancelled.parts == {}
    got = await setup.service.get("alice", upload.id)
    assert got.status is Status.CANCELLED and got.parts == {} and got.expires_at is None
    assert setup.stored(upload) == []
    with pytest.raises(e.InvalidState):
        await setup.service.cancel("alice", upload.id)
    with pytest.raises(e.InvalidState):
        await setup.service.put_part("alice", upload.id, 3, body(os.urandom(PART)))
    assert setup.events[-1] == ("cancelled", Status.CANCELLED)


async def test_parts_push_expiry_forward(setup: Setup) -> None:
    upload = await started(setup, parts=1)
    setup.clock.now += TTL - timedelta(seconds=1)
    await setup.service.put_part("alice", upload.id, 2, body(os.urandom(PART)))
    setup.clock.now += TTL - timedelta(seconds=1)  # 2 TTLs after creation, but not idle for one
    assert await setup.service.expire_due() == 0
    got = await setup.service.get("alice", upload.id)
    assert got.status is Status.PENDING and got.expires_at == setup.clock.now + timedelta(seconds=1)


async def test_idle_upload_expires_and_is_freed(setup: Setup) -> None:
    idle = await started(setup)
    fresh = await setup.service.create("alice", filename="g.bin", size_bytes=10, part_size=PART)
    setup.clock.now += TTL / 2
    await setup.service.put_part("alice", fresh.id, 1, body(b"0123456789"))
    setup.clock.now += TTL / 2
    with pytest.raises(e.Expired):  # past its deadline, even before the reaper ran
        await setup.service.put_part("alice", idle.id, 3, body(os.urandom(PART)))
    assert await setup.service.expire_due() == 1
    got = await setup.service.get("alice", idle.id)
    assert (got.status, got.parts, got.expires_at) == (Status.EXPIRED, {}, None)
    assert setup.stored(idle) == []
    assert setup.events[-1] == ("expired", Status.EXPIRED)
    assert (await setup.service.get("alice", fresh.id)).status is Status.PENDING
    assert await setup.service.expire_due() == 0
    for action in (setup.service.complete, setup.service.cancel):
        with pytest.raises(e.Expired):
            await action("alice", idle.id)


async def test_expiry_skips_an_upload_whose_lock_is_held(setup: Setup) -> None:
    upload = await started(setup)
    setup.clock.now += TTL
    async with setup.service.locks.hold(upload.id, timeout=1):
        assert await setup.service.expire_due() == 0
    assert (await setup.service.get("alice", upload.id)).status is Status.PENDING
    assert await setup.service.expire_due() == 1


async def test_expiry_waits_for_nothing_and_never_hits_a_completed_upload(setup: Setup) -> None:
    upload = await started(setup, parts=3)
    await setup.service.complete("alice", upload.id)
    setup.clock.now += TTL * 10
    assert await setup.service.expire_due() == 0
    assert (await setup.service.get("alice", upload.id)).status is Status.COMPLETED
    assert len(setup.stored(upload)) == 3


async def test_a_part_streaming_when_its_upload_expires_is_refused_and_leaves_nothing(setup: Setup) -> None:
    upload = await started(setup, parts=1)
    gate = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield os.urandom(PART // 2)
        await gate.wait()
        yield os.urandom(PART // 2)

    sending = asyncio.create_task(setup.service.put_part("alice", upload.id, 2, slow_body()))
    await asyncio.sleep(0.05)
    setup.clock.now += TTL * 2  # no byte for two TTLs: idle
    assert await setup.service.expire_due() == 1
    gate.set()
    with pytest.raises(e.Expired):
        await sending
    got = await setup.service.get("alice", upload.id)
    assert got.status is Status.EXPIRED and got.parts == {}
    assert setup.stored(upload) == []


class _Crash(BaseException):
    """The process dying (kill -9) at that instant: nothing after it runs."""


@pytest.mark.parametrize("status", [Status.PENDING, Status.COMPLETED])
async def test_a_crash_while_a_delete_frees_the_bytes_never_leaves_a_record_without_them(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, status: Status
) -> None:
    upload = await started(setup, parts=3)
    if status is Status.COMPLETED:
        await setup.service.complete("alice", upload.id)
    real_delete = setup.blobs.delete

    async def delete_then_die(doomed: Upload) -> None:
        await real_delete(doomed)
        raise _Crash

    monkeypatch.setattr(setup.blobs, "delete", delete_then_die)
    with pytest.raises(_Crash):
        await setup.service.delete("alice", upload.id)
    # The delete was never answered, but its bytes are gone: so must its record be (a record left
    # behind would list parts, or a finished file, that no longer exist and could never be resumed).
    assert setup.stored(upload) == []
    with pytest.raises(e.NotFound):
        await setup.service.get("alice", upload.id)


@pytest.mark.parametrize("ending", ["cancel", "delete", "expire"])
async def test_a_part_whose_upload_ends_while_its_bytes_are_on_disk_gets_the_uploads_state(
    setup: Setup, ending: str
) -> None:
    # With fsync on, the part's commit syncs the upload's directory, which the ending has removed
    # with the bytes: that is the upload's end showing, not a storage fault (a 503 once).
    setup.blobs.fsync = True
    big = 3 * 1024 * 1024
    upload = await setup.service.create("alice", filename="f.bin", size_bytes=2 * big, part_size=big)
    await setup.service.put_part("alice", upload.id, 1, body(os.urandom(big)))
    gate = asyncio.Event()

    async def held_body() -> AsyncIterator[bytes]:
        yield os.urandom(2 * 1024 * 1024)
        await gate.wait()
        yield os.urandom(big - 2 * 1024 * 1024)

    sending = asyncio.create_task(setup.service.put_part("alice", upload.id, 2, held_body()))
    for _ in range(500):  # until part 2's first bytes are in their file
        if len(setup.stored(upload)) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(setup.stored(upload)) == 2
    if ending == "cancel":
        await setup.service.cancel("alice", upload.id)
    elif ending == "delete":
        await setup.service.delete("alice", upload.id)
    else:
        setup.clock.now += TTL * 2
        assert await setup.service.expire_due() == 1
    gate.set()
    expected = {"cancel": e.InvalidState, "delete": e.NotFound, "expire": e.Expired}[ending]
    with pytest.raises(expected):
        await sending
    assert setup.stored(upload) == []


async def test_a_concatenation_whose_sources_ended_in_time_completes_instead_of_expiring(setup: Setup) -> None:
    # The last source completed, but the assembly never ran (a kill -9 right after that commit,
    # stood in for by unsubscribing the engine's own listener): the reaper finishes it when it
    # comes due, rather than expiring a file whose bytes all arrived in time.
    service = setup.service
    data = [os.urandom(700), os.urandom(300)]
    sources = []
    for chunk in data:
        source = await service.create(
            "alice", filename="p", size_bytes=len(chunk), mode=Mode.APPEND, metadata={CONCATENATION_SOURCE: True}
        )
        sources.append(source)
    final = await service.concatenate("alice", [s.id for s in sources], filename="all.bin", unfinished=True)
    listeners = list(service.listeners)
    service.listeners.clear()
    for source, chunk in zip(sources, data, strict=True):
        await service.append("alice", source.id, 0, body(chunk), finish=True)
    service.listeners.extend(listeners)
    assert (await service.get("alice", final.id)).status is Status.PENDING
    setup.clock.now += TTL + timedelta(seconds=1)
    assert await service.expire_due() == 0
    got = await service.get("alice", final.id)
    assert got.status is Status.COMPLETED and got.md5 == hashlib.md5(b"".join(data)).hexdigest()


async def test_a_concatenation_whose_source_is_late_still_expires(setup: Setup) -> None:
    service = setup.service
    late = await service.create(
        "alice", filename="p", size_bytes=3, mode=Mode.APPEND, metadata={CONCATENATION_SOURCE: True}
    )
    final = await service.concatenate("alice", [late.id], filename="all.bin", unfinished=True)
    setup.clock.now += TTL + timedelta(seconds=1)
    assert await service.expire_due() == 2  # the source and the concatenation waiting on it
    assert (await service.get("alice", final.id)).status is Status.EXPIRED
