"""UploadService.put_whole: one body cut into the upload's parts. The whole-file hash is carried
from part to part as the bytes stream (no part is read back from storage), each part is committed
while the next one streams, and a body that breaks off keeps every part it completed."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import cast

import pytest

from chunkd.backends.blobs.local import LocalBlobStore
from chunkd.domain import errors as e
from chunkd.domain.checksum import ResumableMD5
from chunkd.domain.upload import Part, Upload
from chunkd.service.crc import crc64_hex, crc64nvme
from tests.conftest import Api
from tests.support.waiting import until

PART = 64 * 1024


async def body(data: bytes, *, piece: int = 10_000, break_after: int | None = None) -> AsyncIterator[bytes]:
    for start in range(0, len(data), piece):
        if break_after is not None and start >= break_after:
            raise ConnectionResetError("client went away")
        yield data[start : start + piece]


@pytest.mark.parametrize(
    ("part_size", "piece"),
    [(PART, 10_000), (2 * 1024 * 1024 + 4096, 100_003)],
    ids=["one-batch-parts", "parts-of-several-batches"],
)
async def test_whole_body_is_hashed_once_as_it_streams(
    api: Api, monkeypatch: pytest.MonkeyPatch, part_size: int, piece: int
) -> None:
    """Each part's whole-file state is the MD5 state after exactly its bytes, though the next part
    streams in (and is hashed in the same lane) before the last one has landed."""
    service = api.runtime.uploads
    data = os.urandom(5 * part_size + 123)
    upload = await service.create("alice", filename="f.bin", size_bytes=len(data), part_size=part_size)
    read_back: list[int] = []
    read_part, read_part_blocking = service.blobs.read_part, service.blobs.read_part_blocking  # type: ignore[attr-defined]

    def spy(upload: Upload, part: Part) -> AsyncIterator[bytes]:
        read_back.append(part.number)
        return read_part(upload, part)

    def spy_blocking(upload: Upload, part: Part) -> Iterator[bytes]:
        read_back.append(part.number)
        return cast("Iterator[bytes]", read_part_blocking(upload, part))

    monkeypatch.setattr(service.blobs, "read_part", spy)
    monkeypatch.setattr(service.blobs, "read_part_blocking", spy_blocking)
    done = await service.put_whole("alice", upload.id, body(data, piece=piece))
    assert read_back == []
    assert done.bytes_received == len(data) and done.hash_offset == len(data)
    for number, part in done.parts.items():
        chunk = data[(number - 1) * part_size : number * part_size]
        # One MD5 pass per byte: the whole file's; each part is checked by its CRC-64/NVME.
        assert (part.size, part.crc64) == (len(chunk), crc64_hex(crc64nvme(chunk)))
        after = ResumableMD5()
        after.update(data[: part.end])
        assert part.hash_state == after.state(), f"part {number}"
    completed = await service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
    assert completed.md5 == hashlib.md5(data).hexdigest()


async def test_each_part_has_its_own_md5_where_the_store_wants_one(api: Api) -> None:
    """A store that checks its parts by their MD5 (S3's ETags) has one computed for every part.
    The first part's is its whole-file MD5 (the file's first bytes are its own): taken from the
    state after its bytes, not from the hasher, which the next part of the body runs on into
    before the first is committed (its MD5, the ETag a client saw and the one S3's 1:1 part copy
    was checked against at completion, was that of its bytes and some of the next part's)."""
    service = api.runtime.uploads
    service.caps = dataclasses.replace(service.caps, part_md5=True)
    part_size = 2 * 1024 * 1024 + 4096
    data = os.urandom(3 * part_size + 123)
    upload = await service.create("alice", filename="f.bin", size_bytes=len(data), part_size=part_size)

    async def paced(data: bytes) -> AsyncIterator[bytes]:  # a client's pieces, the loop free between them
        for start in range(0, len(data), 100_003):
            await asyncio.sleep(0)
            yield data[start : start + 100_003]

    done = await service.put_whole("alice", upload.id, paced(data))
    for number, part in done.parts.items():
        chunk = data[(number - 1) * part_size : number * part_size]
        assert part.md5 == hashlib.md5(chunk).hexdigest(), f"part {number}"
    assert (await service.complete("alice", upload.id)).md5 == hashlib.md5(data).hexdigest()


async def test_a_broken_body_keeps_the_parts_it_completed(api: Api) -> None:
    service = api.runtime.uploads
    data = os.urandom(5 * PART)
    upload = await service.create("alice", filename="f.bin", size_bytes=len(data), part_size=PART)
    with pytest.raises(ConnectionResetError):
        await service.put_whole("alice", upload.id, body(data, break_after=2 * PART + 5000))
    kept = await service.get("alice", upload.id)
    assert sorted(kept.parts) == [1, 2] and kept.hash_offset == 2 * PART
    assert isinstance(service.blobs, LocalBlobStore)
    stored = list((service.blobs.root / upload.id[:2] / upload.id).glob("*.part"))
    assert len(stored) == 2  # the part in flight left no file
    # Resumed part by part from where it broke off.
    for number in (3, 4, 5):
        chunk = data[(number - 1) * PART : number * PART]
        await service.put_part("alice", upload.id, number, body(chunk))
    completed = await service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
    assert completed.bytes_received == len(data)


async def test_a_short_body_is_refused_and_keeps_its_whole_parts(api: Api) -> None:
    service = api.runtime.uploads
    data = os.urandom(3 * PART)
    upload = await service.create("alice", filename="f.bin", size_bytes=len(data), part_size=PART)
    with pytest.raises(e.SizeMismatch):
        await service.put_whole("alice", upload.id, body(data[: PART + 100]))
    kept = await service.get("alice", upload.id)
    assert sorted(kept.parts) == [1]


@pytest.mark.parametrize("wrong", ["short", "long", "broken"], ids=["short-body", "long-body", "body-broken-off"])
async def test_a_body_refused_or_broken_never_replaces_a_stored_part(api: Api, wrong: str) -> None:
    """Parts 1 and 2 stored; a whole PUT whose body turns out wrong (a chunked body shows its
    length only at its end) or breaks off leaves them as they were, byte for byte, while a part
    it completed that was not stored yet is kept for resuming (a broken body) as before. A refused
    whole PUT used to replace every stored part its body covered."""
    service = api.runtime.uploads
    data = os.urandom(3 * PART)
    upload = await service.create("alice", filename="f.bin", size_bytes=len(data), part_size=PART)
    for number in (1, 2):
        await service.put_part("alice", upload.id, number, body(data[(number - 1) * PART : number * PART]))
    before = await service.get("alice", upload.id)
    other = os.urandom(len(data))
    sent = {
        "short": body(other[: 2 * PART + 100]),
        "long": body(other + b"x"),
        "broken": body(other, break_after=2 * PART + 5000),
    }[wrong]
    with pytest.raises((e.SizeMismatch, ConnectionResetError)):
        await service.put_whole("alice", upload.id, sent)
    after = await service.get("alice", upload.id)
    assert sorted(after.parts) == [1, 2]
    assert {n: p.blob_ref for n, p in after.parts.items()} == {n: p.blob_ref for n, p in before.parts.items()}
    assert isinstance(service.blobs, LocalBlobStore)
    assert len(list((service.blobs.root / upload.id[:2] / upload.id).glob("*.part"))) == 2  # no blob left over
    await service.put_part("alice", upload.id, 3, body(data[2 * PART :]))
    completed = await service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
    assert completed.status.value == "COMPLETED"
    # A whole PUT of the right length replaces what the upload held.
    again = await service.create("alice", filename="g.bin", size_bytes=len(data), part_size=PART)
    await service.put_part("alice", again.id, 1, body(other[:PART]))
    await service.put_whole("alice", again.id, body(data))
    assert (await service.complete("alice", again.id)).md5 == hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("parts", [1, 3])
async def test_a_body_longer_than_the_file_never_leaves_it_whole(api: Api, parts: int) -> None:
    # Only a chunked body's end shows that it is too long. Its last part is refused with it, so
    # the upload never holds a full file of what the client said was wrong (a complete without
    # an md5 would otherwise finish it with the body's first sizeBytes bytes).
    service = api.runtime.uploads
    data = os.urandom(parts * PART)
    upload = await service.create("alice", filename="f.bin", size_bytes=len(data), part_size=PART)
    with pytest.raises(e.SizeMismatch):
        await service.put_whole("alice", upload.id, body(data + b"one byte too many"))
    kept = await service.get("alice", upload.id)
    assert sorted(kept.parts) == list(range(1, parts))
    assert isinstance(service.blobs, LocalBlobStore)
    assert len(list((service.blobs.root / upload.id[:2] / upload.id).glob("*.part"))) == parts - 1
    with pytest.raises(e.MissingParts):
        await service.complete("alice", upload.id)


async def test_a_part_that_cannot_be_made_durable_stops_the_body_while_the_next_streams(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Part 2's sync fails after part 3 has started to stream in (a part's end no longer waits for
    its sync): the PUT fails with the storage error, part 2 is not recorded and part 3 leaves no
    file, and the upload resumes from part 2."""
    service = api.runtime.uploads
    data = os.urandom(4 * PART)
    upload = await service.create("alice", filename="f.bin", size_bytes=len(data), part_size=PART)
    assert isinstance(service.blobs, LocalBlobStore)
    open_writer = service.blobs.open_writer

    async def failing_second(upload: Upload, number: int, offset: int) -> object:
        writer = await open_writer(upload, number, offset)
        if number == 2:

            def broken_disk() -> None:
                raise OSError(errno.EIO, "I/O error")

            monkeypatch.setattr(writer, "_sync_locked", broken_disk)
        return writer

    monkeypatch.setattr(service.blobs, "open_writer", failing_second)
    with pytest.raises(e.StorageError):
        await service.put_whole("alice", upload.id, body(data))
    kept = await service.get("alice", upload.id)
    assert sorted(kept.parts) == [1] and kept.hash_offset == PART
    assert len(list((service.blobs.root / upload.id[:2] / upload.id).glob("*.part"))) == 1
    monkeypatch.setattr(service.blobs, "open_writer", open_writer)
    for number in (2, 3, 4):
        await service.put_part("alice", upload.id, number, body(data[(number - 1) * PART : number * PART]))
    completed = await service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
    assert completed.bytes_received == len(data)


async def test_a_sweep_during_a_long_body_spares_the_replacements_it_holds(api: Api) -> None:
    """The replacements of stored parts wait unrecorded until the whole body has arrived. A body
    that took longer than the orphan grace had them swept as orphans: the PUT then recorded blobs
    that were gone, answered 2xx, and every complete failed. An upload written to within the grace
    (a commit, or the heartbeat of a body still arriving) keeps its unrecorded blobs; one idle for
    longer loses them, as crash leftovers."""
    service = api.runtime.uploads
    assert isinstance(service.blobs, LocalBlobStore)
    data, new = os.urandom(3 * PART), os.urandom(3 * PART)
    real_clock = service.clock
    service.clock = lambda: real_clock() - timedelta(hours=2)  # both uploads were last written then
    try:
        upload = await service.create("alice", filename="f.bin", size_bytes=len(data), part_size=PART)
        idle = await service.create("alice", filename="g.bin", size_bytes=len(data), part_size=PART)
        for number in (1, 2):
            await service.put_part("alice", upload.id, number, body(data[(number - 1) * PART : number * PART]))
        await service.put_part("alice", idle.id, 1, body(data[:PART]))
    finally:
        service.clock = real_clock
    recorded = {p.blob_ref for p in (await service.get("alice", upload.id)).parts.values()}
    directory = service.blobs.root / upload.id[:2] / upload.id
    gate = asyncio.Event()

    async def long_body() -> AsyncIterator[bytes]:
        yield new[: 2 * PART]
        await gate.wait()  # the rest of a long body is still on its way
        yield new[2 * PART :]

    def held() -> list[Path]:
        return [p for p in directory.iterdir() if p.name not in recorded]

    putting = asyncio.create_task(service.put_whole("alice", upload.id, long_body()))
    await until(lambda: len(held()) == 2, what="the two replacements held")
    two_hours_ago = time.time() - 2 * 3600
    for path in held():  # they arrived two hours ago, and the body is still coming:
        os.utime(path, (two_hours_ago, two_hours_ago))
    await service.repo.touch(upload.id, service.clock() + service.config.ttl)  # its heartbeat, every 30 s
    # A crash leftover of the upload idle for two hours; and other uploads are being written now.
    stray = service.blobs.root / idle.id[:2] / idle.id / "2.leftover0.part"
    stray.write_bytes(b"x")
    os.utime(stray, (two_hours_ago, two_hours_ago))
    busy = await service.create("bob", filename="h.bin", size_bytes=PART, part_size=PART)
    await service.put_part("bob", busy.id, 1, body(data[:PART]))

    assert await service.sweep_orphans(3600) == 1 and not stray.exists()
    assert len(held()) == 2
    gate.set()
    await putting
    done = await service.complete("alice", upload.id, md5=hashlib.md5(new).hexdigest())
    assert done.status.value == "COMPLETED"
