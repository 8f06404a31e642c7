"""service.concatenate: a new completed upload made of other uploads' parts."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from chunkd.domain import errors as e
from chunkd.domain.upload import Mode, Status
from tests.conftest import Api


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def finished(api: Api, owner: str, data: bytes, pieces: int = 1) -> str:
    service = api.runtime.uploads
    upload = await service.create(owner, filename="p", size_bytes=len(data), mode=Mode.APPEND, frontend="test")
    step = -(-len(data) // pieces) if data else 1
    for start in range(0, len(data), step):
        await service.append(owner, upload.id, start, body(data[start : start + step]))
    await service.complete(owner, upload.id)
    return upload.id


async def test_concatenate_links_and_hashes(api: Api) -> None:
    service = api.runtime.uploads
    chunks = [os.urandom(30_000), b"", os.urandom(7)]
    ids = [await finished(api, "alice", chunk, pieces=3) for chunk in chunks]
    final = await service.concatenate("alice", ids, filename="all.bin", frontend="test", metadata={"k": 1})
    data = b"".join(chunks)
    assert final.status is Status.COMPLETED and final.size_bytes == len(data)
    assert final.md5 == hashlib.md5(data).hexdigest()
    assert final.metadata == {"k": 1} and final.filename == "all.bin"
    got = await service.get("alice", final.id)
    # Appends grow one part per source (three appends each); each source part is linked, in order.
    assert [p.offset for p in got.sorted_parts()] == [0, 30_000]
    assert got.crc64 is not None
    assert b"".join([c async for c in service.read(got, 5, len(data))]) == data[5:]
    for source in ids:  # the sources are untouched
        assert (await service.get("alice", source)).status is Status.COMPLETED


async def test_concatenate_validates_its_sources(api: Api) -> None:
    service = api.runtime.uploads
    done = await finished(api, "alice", b"abc")
    pending = await service.create("alice", filename="p", size_bytes=3, mode=Mode.APPEND, frontend="test")
    bobs = await finished(api, "bob", b"abc")
    with pytest.raises(e.InvalidInput):
        await service.concatenate("alice", [], filename="x")
    with pytest.raises(e.InvalidState):
        await service.concatenate("alice", [done, pending.id], filename="x")
    with pytest.raises(e.NotFound):
        await service.concatenate("alice", [done, bobs], filename="x")
    assert [u.id for u in await service.list_uploads("alice")] == [pending.id, done]  # nothing half-made left
