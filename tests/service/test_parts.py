"""UploadService.put_part with a declared size (a request's Content-Length): a wrong-sized part is
refused before any byte of its body is read; a right one is stored as usual."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chunkd.domain import errors as e
from tests.conftest import Api


async def test_declared_size_is_checked_before_the_body_is_read(api: Api) -> None:
    service = api.runtime.uploads
    upload = await service.create("alice", filename="f.bin", size_bytes=12, part_size=6, strict_part_size=False)
    pulled: list[bytes] = []

    async def body(data: bytes) -> AsyncIterator[bytes]:
        pulled.append(data)
        yield data

    with pytest.raises(e.PartSizeMismatch):
        await service.put_part("alice", upload.id, 1, body(b"x" * 5), declared_size=5)
    assert pulled == []  # refused on the declaration alone
    part = await service.put_part("alice", upload.id, 1, body(b"y" * 6), declared_size=6)
    assert part.size == 6 and pulled == [b"y" * 6]
    assert (await service.get("alice", upload.id)).bytes_received == 6
