"""APPEND-mode uploads through the service: offsets, partial bodies kept, checksums, limits."""

from __future__ import annotations

import hashlib
import os

import pytest

from chunkd.domain import errors as e
from chunkd.domain.checksum import new_stream_hasher
from chunkd.domain.upload import Mode
from tests.conftest import Api
from tests.support.bodies import body


async def test_append_keeps_partial_and_hashes(api: Api) -> None:
    service = api.runtime.uploads
    data = os.urandom(3 * 1024 * 1024 + 5)
    upload = await service.create("alice", filename="a.bin", size_bytes=None, mode=Mode.APPEND, frontend="test")
    with pytest.raises(ConnectionResetError):
        await service.append("alice", upload.id, 0, body(data[:1_500_000], fail_after=True))
    got = await service.get("alice", upload.id)
    assert got.bytes_received == 1_500_000
    with pytest.raises(e.OffsetMismatch):
        await service.append("alice", upload.id, 0, body(data))
    await service.declare_size("alice", upload.id, len(data))
    with pytest.raises(e.TooLarge):
        await service.append("alice", upload.id, 1_500_000, body(data[1_500_000:] + b"extra"))
    hasher = new_stream_hasher("sha1")
    with pytest.raises(e.ChecksumMismatch) as mismatch:
        await service.append(
            "alice", upload.id, 1_500_000, body(data[1_500_000:]), checksum=(hasher, b"x" * 20, "Upload-Checksum")
        )
    assert mismatch.value.field == "Upload-Checksum"  # the header the frontend named
    hasher = new_stream_hasher("sha1")
    good = hashlib.sha1(data[1_500_000:]).digest()
    await service.append(
        "alice", upload.id, 1_500_000, body(data[1_500_000:]), checksum=(hasher, good, "Upload-Checksum")
    )
    done = await service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
    assert done.md5 == hashlib.md5(data).hexdigest()
    read = b"".join([chunk async for chunk in service.read(await service.get("alice", upload.id))])
    assert read == data


async def test_one_writer_per_append_upload(api: Api) -> None:
    service = api.runtime.uploads
    upload = await service.create("alice", filename="a.bin", size_bytes=10, mode=Mode.APPEND, frontend="test")
    async with api.runtime.locks.hold(upload.id, timeout=1):
        with pytest.raises(e.Busy):
            await service.append("alice", upload.id, 0, body(b"0123456789"))
