"""The whole-file hash over parts that arrived ahead of the frontier is carried forward by a hash run
that the commits of the parts closing the gap start, so that ``complete`` has nothing left to read."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

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
    await service.finish_hash_runs()  # the parts were answered within the lag, the run going on
    stored = await service.get("alice", upload.id)
    assert stored.hash_offset == len(data)  # carried before complete, which has nothing left to read
    done = await service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
    assert done.md5 == hashlib.md5(data).hexdigest()
