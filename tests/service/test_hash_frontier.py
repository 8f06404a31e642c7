"""The whole-file MD5 frontier (invariant 4) through the real service, SQLite and local disk.

The blob store is wrapped in a subclass that counts ``read_part`` calls (it still reads the real
bytes), so the tests can tell when the service read parts back from storage and when it did not."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest

from chunkd.backends.blobs.local import LocalBlobStore
from chunkd.backends.locks.local import LocalLocks
from chunkd.backends.repository.sqlalchemy.database import create_engine, migrate
from chunkd.backends.repository.sqlalchemy.uploads import SqlUploadRepository
from chunkd.domain import errors as e
from chunkd.domain.checksum import ResumableMD5
from chunkd.domain.upload import Part, Status, Upload
from chunkd.service.uploads import EngineConfig, UploadService
from tests.support.waiting import until

PART = 64 * 1024


class CountingBlobStore(LocalBlobStore):
    """The real local store, recording which parts were read back."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.reads: list[int] = []
        self.gate = threading.Event()  # a read back waits for it (set: reads go straight through)
        self.gate.set()
        self.gated_from = 1  # ... if its part number is at least this

    async def read_part(self, upload: Upload, part: Part) -> AsyncIterator[bytes]:
        self.reads.append(part.number)
        async for chunk in super().read_part(upload, part):
            yield chunk

    def read_part_blocking(self, upload: Upload, part: Part) -> Generator[bytes, None, None]:
        self.reads.append(part.number)  # list.append is atomic: safe from the worker thread
        if part.number >= self.gated_from and not self.gate.wait(timeout=60):
            raise TimeoutError("the test never opened the gate")
        yield from super().read_part_blocking(upload, part)


class Engine:
    """One service over a data dir; ``restart()`` builds a fresh one over the same files."""

    def __init__(self, root: Path, *, hash_lag_bytes: int = 0) -> None:
        self.root = root
        self.service: UploadService
        # 0 by default: each part's answer waits for the hash run to pass it, so the tests below can
        # tell exactly where the frontier stands after each part.
        self.config = EngineConfig(min_part_size=1, hash_lag_bytes=hash_lag_bytes)

    async def start(self) -> Engine:
        engine = create_engine(f"sqlite:///{self.root / 'chunkd.db'}")
        await migrate(engine)
        self.repo = SqlUploadRepository(engine)
        self.blobs = CountingBlobStore(self.root / "blobs")
        self.service = UploadService(self.repo, self.blobs, LocalLocks(), self.config)
        return self

    async def restart(self) -> Engine:
        await self.repo.close()
        return await self.start()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    started = await Engine(tmp_path).start()
    try:
        yield started
    finally:
        await started.repo.close()


async def chunks(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def piece(data: bytes, number: int) -> bytes:
    return data[(number - 1) * PART : number * PART]


async def send(engine: Engine, upload: Upload, data: bytes, *numbers: int) -> None:
    for n in numbers:
        await engine.service.put_part("alice", upload.id, n, chunks(piece(data, n)))


async def new_upload(engine: Engine, data: bytes) -> Upload:
    return await engine.service.create("alice", filename="f.bin", size_bytes=len(data), part_size=PART)


async def frontier(engine: Engine, upload: Upload) -> tuple[int, str]:
    stored = await engine.repo.get(upload.id)
    assert stored is not None and stored.hash_state is not None
    return stored.hash_offset, ResumableMD5(stored.hash_state).hexdigest()


async def test_in_order_parts_are_hashed_while_streaming(engine: Engine) -> None:
    data = os.urandom(4 * PART + 123)
    upload = await new_upload(engine, data)
    for n in range(1, 6):
        await send(engine, upload, data, n)
        assert await frontier(engine, upload) == (min(n * PART, len(data)), hashlib.md5(data[: n * PART]).hexdigest())
    assert engine.blobs.reads == []
    done = await engine.service.complete("alice", upload.id)
    assert done.md5 == hashlib.md5(data).hexdigest()
    assert engine.blobs.reads == []


async def test_out_of_order_parts_are_read_back_once_when_the_gap_fills(engine: Engine) -> None:
    data = os.urandom(5 * PART)
    upload = await new_upload(engine, data)
    await send(engine, upload, data, 4, 2, 5)
    assert await frontier(engine, upload) == (0, hashlib.md5(b"").hexdigest())
    assert engine.blobs.reads == []
    await send(engine, upload, data, 1)  # streamed at the frontier, then carries over part 2
    assert await frontier(engine, upload) == (2 * PART, hashlib.md5(data[: 2 * PART]).hexdigest())
    assert engine.blobs.reads == [2]
    await send(engine, upload, data, 3)  # streamed at the frontier, then carries over 4 and 5
    assert await frontier(engine, upload) == (len(data), hashlib.md5(data).hexdigest())
    assert engine.blobs.reads == [2, 4, 5]
    engine.blobs.reads.clear()
    done = await engine.service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
    assert done.status is Status.COMPLETED
    assert engine.blobs.reads == []


async def test_resent_part_with_the_same_bytes_keeps_the_frontier(engine: Engine) -> None:
    data = os.urandom(4 * PART)
    upload = await new_upload(engine, data)
    await send(engine, upload, data, 1, 2, 3, 4)
    before = await engine.repo.get(upload.id)
    assert before is not None
    await send(engine, upload, data, 2)
    after = await engine.repo.get(upload.id)
    assert after is not None
    assert (after.hash_offset, after.hash_state) == (len(data), before.hash_state)
    assert after.parts[2].blob_ref != before.parts[2].blob_ref  # a fresh blob replaced the old one
    assert after.parts[2].hash_state == before.parts[2].hash_state
    assert after.bytes_received == len(data) and after.parts_received == 4
    assert engine.blobs.reads == []
    await engine.service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
    assert engine.blobs.reads == []


async def test_resent_part_with_different_bytes_rewinds_to_its_start(engine: Engine) -> None:
    data = bytearray(os.urandom(4 * PART))
    upload = await new_upload(engine, bytes(data))
    await send(engine, upload, bytes(data), 1, 2, 3)  # frontier at 3 * PART, part 4 missing
    data[PART : 2 * PART] = os.urandom(PART)
    await send(engine, upload, bytes(data), 2)
    # Rewound to part 2's start (part 1 is not re-read), then carried over the new part 2 and part 3.
    assert engine.blobs.reads == [2, 3]
    assert await frontier(engine, upload) == (3 * PART, hashlib.md5(data[: 3 * PART]).hexdigest())
    engine.blobs.reads.clear()
    data[0:PART] = os.urandom(PART)
    await send(engine, upload, bytes(data), 1)  # rewinds to zero
    assert engine.blobs.reads == [1, 2, 3]
    assert await frontier(engine, upload) == (3 * PART, hashlib.md5(data[: 3 * PART]).hexdigest())
    engine.blobs.reads.clear()
    await send(engine, upload, bytes(data), 4)
    done = await engine.service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
    assert done.md5 == hashlib.md5(data).hexdigest()
    assert engine.blobs.reads == []
    read = b"".join([c async for c in engine.service.read(await engine.service.get("alice", upload.id))])
    assert read == data


async def test_complete_after_a_restart_does_not_reread(engine: Engine) -> None:
    data = os.urandom(3 * PART + 7)
    upload = await new_upload(engine, data)
    await send(engine, upload, data, 3, 4, 1, 2)
    engine = await engine.restart()
    assert engine.blobs.reads == []
    done = await engine.service.complete("alice", upload.id)
    assert done.md5 == hashlib.md5(data).hexdigest()
    assert engine.blobs.reads == []


async def test_wrong_md5_leaves_the_upload_pending_and_completable(engine: Engine) -> None:
    data = os.urandom(2 * PART)
    upload = await new_upload(engine, data)
    await send(engine, upload, data, 2, 1)
    with pytest.raises(e.ChecksumMismatch) as caught:
        await engine.service.complete("alice", upload.id, md5="0" * 32)
    assert caught.value.details["actualMd5"] == hashlib.md5(data).hexdigest()
    assert (await engine.service.get("alice", upload.id)).status is Status.PENDING
    done = await engine.service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
    assert done.status is Status.COMPLETED


async def test_failed_content_check_leaves_the_upload_pending(engine: Engine) -> None:
    data = os.urandom(PART)
    upload = await new_upload(engine, data)
    await send(engine, upload, data, 1)

    async def refuse(_: Upload) -> None:
        raise e.InvalidInput("not a PDF", field="file")

    with pytest.raises(e.InvalidInput, match="not a PDF"):
        await engine.service.complete("alice", upload.id, check=refuse)
    assert (await engine.service.get("alice", upload.id)).status is Status.PENDING
    assert (await engine.service.complete("alice", upload.id)).status is Status.COMPLETED


async def test_a_rejected_part_changes_nothing(engine: Engine) -> None:
    data = os.urandom(2 * PART)
    upload = await new_upload(engine, data)
    await send(engine, upload, data, 1)
    before = await engine.repo.get(upload.id)
    wrong = hashlib.md5(b"something else").hexdigest()
    with pytest.raises(e.ChecksumMismatch):
        await engine.service.put_part("alice", upload.id, 2, chunks(piece(data, 2)), content_md5=wrong)
    with pytest.raises(e.PartSizeMismatch):
        await engine.service.put_part("alice", upload.id, 2, chunks(piece(data, 2)[:-1]))
    with pytest.raises(e.PartSizeMismatch):
        await engine.service.put_part("alice", upload.id, 2, chunks(piece(data, 2) + b"x"))
    after = await engine.repo.get(upload.id)
    assert after is not None and before is not None
    assert (after.parts.keys(), after.hash_offset, after.bytes_received) == (
        before.parts.keys(),
        before.hash_offset,
        before.bytes_received,
    )
    # Nothing of the refused bodies is left on disk.
    directory = engine.blobs.root / upload.id[:2] / upload.id
    assert sorted(p.name for p in directory.iterdir()) == [after.parts[1].blob_ref]


async def test_parts_ahead_are_answered_while_the_run_still_hashes_them(tmp_path: Path) -> None:
    """Within the lag, the part that fills the gap is answered without waiting for the hash run to
    read back the parts after it (here it cannot: the reads are held), and complete then waits for
    the run instead of reading them a second time."""
    engine = await Engine(tmp_path, hash_lag_bytes=64 * PART).start()
    try:
        data = os.urandom(5 * PART)
        upload = await new_upload(engine, data)
        await send(engine, upload, data, 2, 3, 4, 5)
        engine.blobs.gate.clear()
        await asyncio.wait_for(send(engine, upload, data, 1), timeout=30)  # answered with its reads held
        assert (await frontier(engine, upload))[0] == PART
        completing = asyncio.ensure_future(
            engine.service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
        )
        engine.blobs.gate.set()
        done = await asyncio.wait_for(completing, timeout=30)
        assert done.status is Status.COMPLETED and done.md5 == hashlib.md5(data).hexdigest()
        assert engine.blobs.reads == [2, 3, 4, 5]  # once each, by the run
    finally:
        engine.blobs.gate.set()
        await engine.repo.close()


async def test_a_part_waits_once_the_run_is_further_behind_than_the_lag(tmp_path: Path) -> None:
    """Beyond the lag the answer waits until the run has come within it, so what complete may still
    have to wait for stays bounded."""
    engine = await Engine(tmp_path, hash_lag_bytes=2 * PART).start()
    try:
        data = os.urandom(8 * PART)
        upload = await new_upload(engine, data)
        await send(engine, upload, data, *range(2, 9))
        engine.blobs.gated_from = 8  # the run can hash parts 2-7, and is then held
        engine.blobs.gate.clear()
        # Answered once the run is within the lag (6 of 8 parts hashed), not once the gap is all
        # hashed: the run records its progress in passes of half the lag.
        await asyncio.wait_for(send(engine, upload, data, 1), timeout=30)
        assert (await frontier(engine, upload))[0] >= len(data) - 2 * PART
        engine.blobs.gate.set()
        done = await engine.service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
        assert done.md5 == hashlib.md5(data).hexdigest()
        assert sorted(engine.blobs.reads) == list(range(2, 9))
    finally:
        engine.blobs.gate.set()
        await engine.repo.close()


async def test_an_upload_cancelled_under_its_hash_run_logs_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The run goes on after the parts are answered; a cancel frees the parts it was about to read.
    That is the upload ending, not a fault: nothing is logged as a warning."""
    engine = await Engine(tmp_path, hash_lag_bytes=64 * PART).start()
    try:
        data = os.urandom(3 * PART)
        upload = await new_upload(engine, data)
        await send(engine, upload, data, 2, 3)
        engine.blobs.gate.clear()
        await asyncio.wait_for(send(engine, upload, data, 1), timeout=30)
        await engine.service.cancel("alice", upload.id)
        with caplog.at_level(logging.DEBUG, logger="chunkd.service"):
            engine.blobs.gate.set()
            await engine.service.finish_hash_runs()
        assert engine.blobs.reads == [2]  # the run did try to read part 2 back, after the cancel
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert any("has ended" in r.getMessage() for r in caplog.records)
    finally:
        engine.blobs.gate.set()
        await engine.repo.close()


async def test_a_part_sent_again_while_the_run_reads_it_is_hashed_anew_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The run reads a part back without the lock; the same part sent again meanwhile drops the
    blob the run was about to read. Nothing the run read is recorded unless its part is still the
    stored one (checked under the lock), so the MD5 stays right; the run then hashes the new part
    instead of giving up with a warning ("could not carry the hash frontier") and leaving the rest
    to complete."""
    engine = await Engine(tmp_path, hash_lag_bytes=64 * PART).start()
    try:
        data = os.urandom(3 * PART)
        upload = await new_upload(engine, data)
        await send(engine, upload, data, 2, 3)
        engine.blobs.gated_from = 2
        engine.blobs.gate.clear()
        await asyncio.wait_for(send(engine, upload, data, 1), timeout=30)  # the run now waits to read part 2
        await until(lambda: engine.blobs.reads == [2], what="the run to start reading part 2")
        await send(engine, upload, data, 2)  # part 2 again: its old blob is gone
        with caplog.at_level(logging.DEBUG, logger="chunkd.service"):
            engine.blobs.gate.set()
            await engine.service.finish_hash_runs()
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert await frontier(engine, upload) == (len(data), hashlib.md5(data).hexdigest())
        done = await engine.service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
        assert done.md5 == hashlib.md5(data).hexdigest()
    finally:
        engine.blobs.gate.set()
        await engine.repo.close()
