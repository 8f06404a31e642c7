"""The BlobStore port's contract, part two: what the engine relies on from any store (S3-sized
parts, appends, completion), over every backend in ``conftest.BLOB_BACKENDS``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chunkd.domain.upload import Mode, Part, Upload
from chunkd.ports.blobs import BlobStore
from tests.contract.conftest import BlobFixture
from tests.support.uploads import make_upload

MiB = 1024 * 1024


@pytest.fixture
def blob_store(blobs: BlobFixture) -> BlobStore:
    """The contract backends' store (conftest.BLOB_BACKENDS: every backend)."""
    return blobs.store


def new_upload(size: int, part_size: int, mode: Mode = Mode.PARTS) -> Upload:
    return make_upload(size, part_size, mode=mode, filename="contract file.bin", created=datetime.now(UTC), ttl=None)


async def store_part(store: BlobStore, upload: Upload, number: int, data: bytes, offset: int | None = None) -> Part:
    offset = upload.offset_of(number) if offset is None else offset
    writer = await store.open_writer(upload, number, offset)
    for start in range(0, len(data), 300_000):  # several writes per part
        await writer.write([data[start : start + 300_000]])
    ref = await writer.commit()
    part = Part(number, offset, len(data), hashlib.md5(data).hexdigest(), ref, datetime.now(UTC))
    upload.parts[number] = part
    return part


async def read_all(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def test_parts_round_trip_and_resends_get_new_refs(blob_store: BlobStore) -> None:
    upload = new_upload(3 * MiB, MiB)
    data = os.urandom(MiB)
    first = await store_part(blob_store, upload, 2, data)
    assert await read_all(blob_store.read_part(upload, first)) == data
    other = os.urandom(MiB)
    second = await store_part(blob_store, upload, 2, other)
    assert second.blob_ref != first.blob_ref  # a re-sent part never overwrites the earlier blob
    assert await read_all(blob_store.read_part(upload, first)) == data
    assert await read_all(blob_store.read_part(upload, second)) == other
    await blob_store.discard(upload, [first.blob_ref])
    with pytest.raises(Exception):  # noqa: B017 - each store raises its own not-found error
        await read_all(blob_store.read_part(upload, first))
    assert await read_all(blob_store.read_part(upload, second)) == other


async def test_aborted_writer_leaves_nothing(blob_store: BlobStore, tmp_path: Path) -> None:
    upload = new_upload(MiB, MiB)
    writer = await blob_store.open_writer(upload, 1, 0)
    await writer.write([b"x" * 1000])
    await writer.abort()
    sweep = getattr(blob_store, "sweep", None)
    assert sweep is not None
    assert await sweep({}, grace_seconds=0) == 0  # nothing was stored


async def test_empty_part(blob_store: BlobStore) -> None:
    upload = new_upload(0, MiB)
    part = await store_part(blob_store, upload, 1, b"")
    assert await read_all(blob_store.read_part(upload, part)) == b""
    await blob_store.complete(upload)
    assert await read_all(blob_store.read(upload, 0, 0)) == b""


@pytest.mark.parametrize("part_size", [MiB, 5 * MiB])
async def test_complete_then_read_any_range(blob_store: BlobStore, part_size: int) -> None:
    data = os.urandom(2 * part_size + 4321)
    upload = new_upload(len(data), part_size)
    for number in (3, 1, 2):
        await store_part(blob_store, upload, number, data[(number - 1) * part_size : number * part_size])
    await blob_store.complete(upload)
    assert await read_all(blob_store.read(upload, 0, len(data))) == data
    for lo, hi in [(0, 1), (part_size - 3, part_size + 3), (len(data) - 10, len(data)), (17, 2 * part_size + 1)]:
        assert await read_all(blob_store.read(upload, lo, hi)) == data[lo:hi]


async def test_appended_parts_complete(blob_store: BlobStore) -> None:
    sizes = [100_000, 3 * MiB, 1, 6 * MiB, 250_000]
    data = os.urandom(sum(sizes))
    upload = new_upload(len(data), MiB, Mode.APPEND)
    offset = 0
    for number, size in enumerate(sizes, 1):
        await store_part(blob_store, upload, number, data[offset : offset + size], offset)
        offset += size
    upload.bytes_received, upload.parts_received = len(data), len(sizes)
    await blob_store.complete(upload)
    assert await read_all(blob_store.read(upload, 0, len(data))) == data
    assert await read_all(blob_store.read(upload, 3 * MiB, 3 * MiB + 200_000)) == data[3 * MiB : 3 * MiB + 200_000]


async def test_delete_frees_everything(blob_store: BlobStore) -> None:
    data = os.urandom(2 * MiB)
    upload = new_upload(len(data), MiB)
    parts = [await store_part(blob_store, upload, n, data[(n - 1) * MiB : n * MiB]) for n in (1, 2)]
    await blob_store.complete(upload)
    await blob_store.delete(upload)
    for part in parts:
        with pytest.raises(Exception):  # noqa: B017
            await read_all(blob_store.read_part(upload, part))
    with pytest.raises(Exception):  # noqa: B017
        await read_all(blob_store.read(upload, 0, 10))
    sweep = getattr(blob_store, "sweep", None)
    assert sweep is not None and await sweep({}, grace_seconds=0) == 0


async def test_sweep_spares_live_and_young_blobs(blob_store: BlobStore) -> None:
    upload = new_upload(2 * MiB, MiB)
    kept = await store_part(blob_store, upload, 1, os.urandom(1000))
    orphan = await store_part(blob_store, upload, 2, os.urandom(1000))
    gone = new_upload(MiB, MiB)
    await store_part(blob_store, gone, 1, os.urandom(1000))
    sweep = getattr(blob_store, "sweep", None)
    assert sweep is not None
    live = {upload.id: {kept.blob_ref}}
    assert await sweep(live, grace_seconds=3600) == 0  # young: in-flight writes are spared
    assert await sweep(live, grace_seconds=0) == 2
    assert await read_all(blob_store.read_part(upload, kept)) != b""
    with pytest.raises(Exception):  # noqa: B017
        await read_all(blob_store.read_part(upload, orphan))
