"""Streaming a body into a blob writer: limits, partial bodies, heartbeats, slices."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chunkd.backends.blobs.local import LocalBlobStore
from chunkd.domain import errors as e
from chunkd.domain.checksum import ResumableMD5
from chunkd.domain.upload import Mode, Part, Upload
from chunkd.service import streaming
from chunkd.service.crc import crc64nvme
from chunkd.service.streaming import BATCH_BYTES, BodyReader, StreamedPart, stream_into
from tests.support.uploads import make_upload

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs", fsync=False)


@pytest.fixture
def upload() -> Upload:
    return make_upload(None, 1, mode=Mode.APPEND, filename="f", created=NOW, ttl=None)


async def body(*chunks: bytes, delay: float = 0.0, fail: bool = False) -> AsyncIterator[bytes]:
    for chunk in chunks:
        if delay:
            await asyncio.sleep(delay)
        yield chunk
    if fail:
        raise ConnectionResetError("client went away")


async def stored(store: LocalBlobStore, upload: Upload, part: StreamedPart) -> bytes:
    ref = await part.writer.commit()
    info = Part(1, 0, part.size, part.md5, ref, NOW)
    return b"".join([c async for c in store.read_part(upload, info)])


async def test_streams_and_hashes(store: LocalBlobStore, upload: Upload) -> None:
    data = os.urandom(2 * BATCH_BYTES + 12345)
    part = StreamedPart(await store.open_writer(upload, 1, 0), ResumableMD5(), hashlib.sha256(), part_md5=True)
    pieces = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    await stream_into(part, body(*pieces), limit=len(data))
    assert part.size == len(data)
    assert part.md5 == hashlib.md5(data).hexdigest()
    assert part.crc64 == crc64nvme(data)
    assert part.whole is not None and part.whole.hexdigest() == part.md5
    assert part.extra is not None and part.extra.digest() == hashlib.sha256(data).digest()
    assert await stored(store, upload, part) == data


async def test_limit_stops_reading_at_once(store: LocalBlobStore, upload: Upload) -> None:
    read: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for i in range(1000):
            read.append(i)
            yield b"x" * 1000

    part = StreamedPart(await store.open_writer(upload, 1, 0), None, None)
    with pytest.raises(e.PartSizeMismatch):
        await stream_into(part, endless(), limit=5000, limit_error=lambda: e.PartSizeMismatch("too long"))
    assert len(read) == 6
    await part.writer.abort()


async def test_a_broken_body_hands_over_what_arrived(store: LocalBlobStore, upload: Upload) -> None:
    part = StreamedPart(await store.open_writer(upload, 1, 0), None, None)
    with pytest.raises(ConnectionResetError):
        await stream_into(part, body(b"abc", b"def", fail=True), limit=None)
    assert part.size == 6
    assert await stored(store, upload, part) == b"abcdef"


async def test_heartbeat_while_bytes_trickle_in_below_one_batch(store: LocalBlobStore, upload: Upload) -> None:
    # A slow client: far less than one batch in total, spread over many heartbeat intervals.
    beats: list[float] = []

    async def beat() -> None:
        beats.append(asyncio.get_running_loop().time())

    part = StreamedPart(await store.open_writer(upload, 1, 0), None, None)
    await stream_into(part, body(*[b"y" * 100] * 12, delay=0.02), limit=None, heartbeat=beat, heartbeat_every=0.05)
    assert part.size == 1200
    assert 2 <= len(beats) <= 6
    await part.writer.abort()


async def test_no_heartbeat_when_bytes_arrive_quickly(store: LocalBlobStore, upload: Upload) -> None:
    beats: list[int] = []

    async def beat() -> None:
        beats.append(1)

    part = StreamedPart(await store.open_writer(upload, 1, 0), None, None)
    await stream_into(part, body(b"z" * 1000, b"z" * 1000), limit=None, heartbeat=beat, heartbeat_every=30)
    assert beats == []
    await part.writer.abort()


async def test_body_reader_slices() -> None:
    reader = BodyReader(body(b"abcde", b"", b"fgh", b"ijklmnop"))
    assert b"".join([c async for c in reader.slice(3)]) == b"abc"
    assert b"".join([c async for c in reader.slice(7)]) == b"defghij"
    assert not await reader.at_end()
    assert b"".join([c async for c in reader.slice(100)]) == b"klmnop"
    assert await reader.at_end()
    assert b"".join([c async for c in reader.slice(5)]) == b""


async def test_a_write_after_abort_fails_and_creates_no_file(store: LocalBlobStore, upload: Upload) -> None:
    # A cancelled request's lane may still try to write after its part was aborted.
    writer = await store.open_writer(upload, 1, 0)
    await writer.write([b"abc"])
    await writer.abort()
    with pytest.raises(OSError, match="already committed or aborted"):
        await writer.write([b"late"])
    assert not list(store.root.rglob("*.part"))


def test_batches_shrink_as_streams_share_the_memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from chunkd.service import streaming

    monkeypatch.setattr(streaming, "_active_streams", 1)
    assert streaming.batch_bytes() == BATCH_BYTES
    monkeypatch.setattr(streaming, "_active_streams", 32)
    size = streaming.batch_bytes()
    assert streaming.MIN_BATCH_BYTES <= size < BATCH_BYTES
    # Every stream's accumulating batch plus its batches in flight stay within the budget.
    assert 32 * (streaming.PIPELINE_DEPTH + 1) * size <= streaming.STREAM_BUDGET_BYTES


def count_hops(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The functions handed to worker threads from now on."""
    hops: list[object] = []
    real_to_thread = asyncio.to_thread

    async def counted(func: object, *args: object) -> object:
        hops.append(func)
        return await real_to_thread(func, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio, "to_thread", counted)
    return hops


async def test_a_one_batch_body_is_durable_in_its_one_hop(
    tmp_path: Path, upload: Upload, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fsync on: the body's only batch is written, hashed and synced in one worker job, so the
    # commit after it only closes the file; an abort after the sync still drops the bytes.
    durable = LocalBlobStore(tmp_path / "durable", fsync=True)
    whole = ResumableMD5()
    part = StreamedPart(await durable.open_writer(upload, 1, 0), whole, None)
    await stream_into(part, body(b"x" * 1000), limit=None)
    assert part.size == 1000 and whole.hexdigest() == hashlib.md5(b"x" * 1000).hexdigest()
    hops = count_hops(monkeypatch)
    name = await part.writer.commit()
    assert hops == []  # nothing left to wait for in a worker thread
    assert (durable.root / upload.id[:2] / upload.id / name).read_bytes() == b"x" * 1000

    appended = await durable.open_appender(upload, Part(1, 0, 1000, "", name, NOW, crc64=part.crc_hex))
    more = StreamedPart(appended, ResumableMD5(), None, crc_seed=part.crc64)
    await stream_into(more, body(b"y" * 10), limit=None)
    await more.writer.abort()  # e.g. a checksum mismatch found after the sync
    assert (durable.root / upload.id[:2] / upload.id / name).read_bytes() == b"x" * 1000


async def test_a_longer_body_is_synced_after_its_last_write_before_the_commit(
    tmp_path: Path, upload: Upload, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fsync on, several batches: the sync is queued in the write lane right after the last write
    # (beside the digests still running), so it covers every byte and the commit only closes.
    durable = LocalBlobStore(tmp_path / "durable", fsync=True)
    data = os.urandom(2 * BATCH_BYTES + 4096)
    synced_sizes: list[int] = []
    real_fdatasync = os.fdatasync

    def recording_fdatasync(fd: int) -> None:
        synced_sizes.append(os.fstat(fd).st_size)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", recording_fdatasync)
    whole = ResumableMD5()
    part = StreamedPart(await durable.open_writer(upload, 1, 0), whole, hashlib.sha256())
    pieces = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    await stream_into(part, body(*pieces), limit=None)
    assert synced_sizes == [len(data)]
    assert whole.hexdigest() == hashlib.md5(data).hexdigest()
    assert part.extra is not None and part.extra.digest() == hashlib.sha256(data).digest()
    hops = count_hops(monkeypatch)
    name = await part.writer.commit()
    assert hops == [] and synced_sizes == [len(data)]
    assert (durable.root / upload.id[:2] / upload.id / name).read_bytes() == data


async def test_an_empty_or_broken_body_is_not_synced_before_its_caller_decides(
    tmp_path: Path, upload: Upload, monkeypatch: pytest.MonkeyPatch
) -> None:
    durable = LocalBlobStore(tmp_path / "durable", fsync=True)
    syncs: list[int] = []
    real_fdatasync = os.fdatasync

    def recording_fdatasync(fd: int) -> None:
        syncs.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", recording_fdatasync)
    empty = StreamedPart(await durable.open_writer(upload, 1, 0), ResumableMD5(), None)
    await stream_into(empty, body(), limit=None)
    assert syncs == [] and not (durable.root / upload.id[:2] / upload.id).exists()  # no file made for nothing
    await empty.writer.abort()
    broken = StreamedPart(await durable.open_writer(upload, 1, 0), ResumableMD5(), None)
    with pytest.raises(ConnectionResetError):
        await stream_into(broken, body(*[b"z" * 65536] * 40, fail=True), limit=None)
    assert syncs == []  # what arrived waits for the caller: kept (synced at commit) or aborted
    await broken.writer.abort()


async def test_a_busy_lane_lets_other_lanes_take_their_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lane runs its queued jobs back to back, but no more than a turn's worth before the lanes
    waiting for a thread go: with every thread held by lanes that are kept busy, other uploads'
    lanes would otherwise wait until those bodies ended."""
    one_thread = ThreadPoolExecutor(max_workers=1)
    monkeypatch.setattr(streaming, "_LANES", one_thread)
    ran: list[str] = []
    go = threading.Event()

    def job(name: str) -> None:
        go.wait()  # the busy lane's first job holds the only thread until both lanes are queued
        ran.append(name)

    busy, other = streaming._ThreadLane(), streaming._ThreadLane()
    done = [busy.push(functools.partial(job, "busy")) for _ in range(3 * streaming._TURN)]
    done.append(other.push(functools.partial(job, "other")))
    go.set()
    await asyncio.gather(*done)
    one_thread.shutdown()
    assert ran.index("other") == streaming._TURN, ran


async def test_a_failed_job_fails_the_lanes_later_jobs_unrun() -> None:
    lane = streaming._ThreadLane()
    ran: list[int] = []

    def job(n: int) -> None:
        if n == 1:
            raise OSError(5, "Input/output error")
        ran.append(n)

    outcomes = await asyncio.gather(*[lane.push(functools.partial(job, n)) for n in range(4)], return_exceptions=True)
    assert ran == [0]
    assert outcomes[0] is None and all(isinstance(o, OSError) for o in outcomes[1:]), outcomes
