"""``UploadService.append(exact_size=...)``: a chunk whose length a header announced is stored
whole or not at all."""

from __future__ import annotations

import hashlib
import os

import pytest

from chunkd.domain import errors as e
from chunkd.domain.upload import Mode
from tests.conftest import Api
from tests.support.bodies import body


async def test_exact_size_all_or_nothing(api: Api) -> None:
    service = api.runtime.uploads
    data = os.urandom(3000)
    upload = await service.create("alice", filename="a.bin", size_bytes=3000, mode=Mode.APPEND, frontend="test")
    with pytest.raises(e.SizeMismatch):
        await service.append("alice", upload.id, 0, body(data[:999]), exact_size=1000)
    with pytest.raises(e.SizeMismatch):
        await service.append("alice", upload.id, 0, body(data[:600], data[600:1001]), exact_size=1000)
    with pytest.raises(ConnectionResetError):  # a broken chunk is not kept partially either
        await service.append("alice", upload.id, 0, body(data[:500], fail_after=True), exact_size=1000)
    with pytest.raises(e.TooLarge):  # past the declared length before a byte is read
        await service.append("alice", upload.id, 0, body(data), exact_size=3001)
    assert (await service.get("alice", upload.id)).bytes_received == 0
    for start in range(0, 3000, 1000):
        done = await service.append("alice", upload.id, start, body(data[start : start + 1000]), exact_size=1000)
        assert done.bytes_received == start + 1000
    completed = await service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
    assert completed.md5 == hashlib.md5(data).hexdigest()
