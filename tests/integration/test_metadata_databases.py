"""The repository's round trips on SQLite and PostgreSQL alike (``settings`` is parametrised over
both): aware UTC datetimes to the microsecond, JSON metadata, binary hash state, conditional
updates' row counts, the usage aggregate, and keyset pagination."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, timedelta

import pytest

from chunkd.domain import errors as e
from chunkd.domain.checksum import ResumableMD5
from chunkd.domain.upload import Mode, Status
from chunkd.service.crc import crc64_hex, crc64nvme
from tests.conftest import Api


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_round_trip_of_every_column_type(api: Api) -> None:
    service, repo = api.runtime.uploads, api.runtime.repo
    meta = {"title": "Zürich 東京 \u0000 nul", "tags": ["a", "b"], "nested": {"n": 1, "f": 1.5, "none": None}}
    created = await service.create(
        "alice", filename="ü.bin", size_bytes=20, part_size=10, frontend="t", client_ref="ref-1", metadata=meta
    )
    await service.put_part("alice", created.id, 1, one(b"0123456789"))
    got = await repo.get(created.id, "alice")
    assert got is not None
    assert got.metadata == meta and got.client_ref == "ref-1" and got.filename == "ü.bin"
    assert got.created_at == created.created_at and got.created_at.tzinfo is not None
    assert got.created_at.utcoffset() == timedelta(0) and got.created_at.microsecond == created.created_at.microsecond
    state = ResumableMD5()
    state.update(b"0123456789")
    assert got.hash_state == state.state() and got.hash_offset == 10
    # A part's checksum is its CRC-64/NVME; its own MD5 only when asked for (Content-MD5).
    assert got.parts[1].crc64 == crc64_hex(crc64nvme(b"0123456789")) and got.parts[1].md5 == ""
    assert (await service.find("alice", "t", "ref-1")).id == created.id  # type: ignore[union-attr]
    with pytest.raises(e.Conflict):
        await service.create("alice", filename="x", size_bytes=1, part_size=1, frontend="t", client_ref="ref-1")
    for bad in ("x" * 129, "a\x00b", ""):
        with pytest.raises(e.InvalidInput):
            await service.create("alice", filename="x", size_bytes=1, part_size=1, frontend="t", client_ref=bad)


async def test_usage_expire_rowcount_and_pagination(api: Api) -> None:
    service, repo = api.runtime.uploads, api.runtime.repo
    done = await service.create("alice", filename="a", size_bytes=4, part_size=4)
    await service.put_part("alice", done.id, 1, one(b"abcd"))
    await service.complete("alice", done.id)
    await service.create("alice", filename="b", size_bytes=7, part_size=7)
    appending = await service.create("alice", filename="c", size_bytes=None, mode=Mode.APPEND)
    await service.append("alice", appending.id, 0, one(b"123"))
    await service.create("bob", filename="d", size_bytes=1000, part_size=1000)
    assert await repo.usage("alice") == (2, 7 + 3, 4)
    assert await repo.usage("nobody") == (0, 0, 0)

    later = service.clock() + timedelta(days=30)
    assert await repo.expire(appending.id, later) is True
    assert await repo.expire(appending.id, later) is False  # a conditional update counts its rows
    assert await repo.expire(done.id, later) is False
    assert (await repo.get(appending.id)).status is Status.EXPIRED  # type: ignore[union-attr]

    pages, before = [], None
    while True:
        page = await repo.list_uploads("alice", status=None, limit=2, before=before)
        pages.append([u.id for u in page])
        if len(page) < 2:
            break
        before = (page[-1].created_at, page[-1].id)
    ids = [i for page in pages for i in page]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert all(u.created_at.tzinfo is UTC or u.created_at.utcoffset() == timedelta(0) for u in page)
