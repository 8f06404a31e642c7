"""The whole-file hash over parts that arrived ahead of the frontier is carried forward after their
commit, outside the upload's lock, and saved only if nothing changed in between."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from chunkd.domain import errors as e
from chunkd.domain.upload import Part, Upload
from tests.conftest import Api

PART = 64 * 1024


async def body(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 16_384):
        await asyncio.sleep(0)
        yield data[start : start + 16_384]


def part_of(data: bytes, number: int) -> bytes:
    return data[(number - 1) * PART : number * PART]


async def test_parallel_parts_leave_the_frontier_at_the_end(api: Api) -> None:
    service = api.runtime.uploads
    data = os.urandom(12 * PART + 99)
    upload = await service.create("alice", filename="f.bin", size_bytes=len(data), part_size=PART)
    numbers = list(range(1, 14))
    await asyncio.gather(*(service.put_part("alice", upload.id, n, body(part_of(data, n))) for n in numbers))
    stored = await service.get("alice", upload.id)
    assert stored.hash_offset == len(data)  # carried by the parts' own requests, before complete
    done = await service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
    assert done.md5 == hashlib.md5(data).hexdigest()


async def test_a_part_replaced_while_it_is_hashed_is_not_taken_as_hashed(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = api.runtime.uploads
    data = os.urandom(3 * PART)
    changed = data[:PART] + os.urandom(PART) + data[2 * PART :]
    upload = await service.create("alice", filename="f.bin", size_bytes=len(data), part_size=PART)
    await service.put_part("alice", upload.id, 2, body(part_of(data, 2)))  # ahead of the frontier
    read_part = service.blobs.read_part
    replaced = False

    async def racing_read(upload: Upload, part: Part) -> AsyncIterator[bytes]:
        nonlocal replaced
        async for chunk in read_part(upload, part):
            yield chunk
        if part.number == 2 and not replaced:
            # Part 2 is re-sent with other bytes after the catch-up read the first version.
            replaced = True
            await service.put_part("alice", upload.id, 2, body(part_of(changed, 2)))

    monkeypatch.setattr(service.blobs, "read_part", racing_read)
    await service.put_part("alice", upload.id, 1, body(part_of(data, 1)))
    await service.put_part("alice", upload.id, 3, body(part_of(data, 3)))
    assert replaced
    with pytest.raises(e.ChecksumMismatch):
        await service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
    done = await service.complete("alice", upload.id, md5=hashlib.md5(changed).hexdigest())
    assert done.md5 == hashlib.md5(changed).hexdigest()


async def test_a_part_row_replaced_under_the_same_frontier_is_not_taken_as_hashed(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The frontier does not move when a part ahead of it is replaced, so only the part's blob
    # reference tells the catch-up that what it hashed is no longer the part.
    service = api.runtime.uploads
    data = os.urandom(2 * PART)
    changed = data[:PART] + os.urandom(PART)
    upload = await service.create("alice", filename="f.bin", size_bytes=len(data), part_size=PART)
    await service.put_part("alice", upload.id, 2, body(part_of(data, 2)))
    read_part = service.blobs.read_part

    async def racing_read(upload: Upload, part: Part) -> AsyncIterator[bytes]:
        async for chunk in read_part(upload, part):
            yield chunk
        current = await service.repo.get(upload.id, part_numbers=[2])
        assert current is not None
        writer = await service.blobs.open_writer(current, 2, PART)
        await writer.write([part_of(changed, 2)])
        ref = await writer.commit()
        new = Part(2, PART, PART, hashlib.md5(part_of(changed, 2)).hexdigest(), ref, current.parts[2].created_at)
        await service.repo.save(current, [new])

    monkeypatch.setattr(service.blobs, "read_part", racing_read)
    await service.put_part("alice", upload.id, 1, body(part_of(data, 1)))
    assert (await service.get("alice", upload.id)).hash_offset == PART  # the stale digest was dropped
    monkeypatch.setattr(service.blobs, "read_part", read_part)
    done = await service.complete("alice", upload.id, md5=hashlib.md5(changed).hexdigest())
    assert done.md5 == hashlib.md5(changed).hexdigest()


async def test_a_failed_catch_up_does_not_fail_the_part(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    service = api.runtime.uploads
    data = os.urandom(2 * PART)
    upload = await service.create("alice", filename="f.bin", size_bytes=len(data), part_size=PART)
    await service.put_part("alice", upload.id, 2, body(part_of(data, 2)))
    read_part = service.blobs.read_part

    async def broken_read(upload: Upload, part: Part) -> AsyncIterator[bytes]:
        raise OSError("disk went away")
        yield b""  # pragma: no cover - makes this an async generator

    monkeypatch.setattr(service.blobs, "read_part", broken_read)
    part = await service.put_part("alice", upload.id, 1, body(part_of(data, 1)))
    assert part.number == 1
    assert (await service.get("alice", upload.id)).hash_offset == PART  # part 2 still to hash
    monkeypatch.setattr(service.blobs, "read_part", read_part)
    done = await service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
    assert done.md5 == hashlib.md5(data).hexdigest()
