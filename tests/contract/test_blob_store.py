"""The BlobStore port's contract, run against every backend in ``conftest.BLOB_BACKENDS``."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chunkd.backends.blobs.local import LocalBlobStore
from chunkd.domain.errors import StorageError
from chunkd.domain.upload import Part, Status, Upload
from chunkd.ports.blobs import BlockingReader, PartLinker, Sweeper
from tests.contract.conftest import BlobFixture
from tests.support.uploads import make_upload

PART = 256 * 1024
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def new_upload(size: int, part_size: int = PART) -> Upload:
    return make_upload(size, part_size, filename="f.bin", created=NOW, expires_at=NOW)


async def write(blobs: BlobFixture, upload: Upload, number: int, data: bytes, *, piece: int = 64 * 1024) -> Part:
    """Stream ``data`` as part ``number`` in several writes and commit it; the part is added to the upload."""
    offset = upload.offset_of(number)
    writer = await blobs.store.open_writer(upload, number, offset)
    for start in range(0, len(data), piece):
        await writer.write([data[start : start + piece]])
    ref = await writer.commit()
    part = Part(number, offset, len(data), hashlib.md5(data).hexdigest(), ref, NOW)
    upload.parts[number] = part
    return part


async def read_part(blobs: BlobFixture, upload: Upload, part: Part) -> bytes:
    return b"".join([chunk async for chunk in blobs.store.read_part(upload, part)])


async def read(blobs: BlobFixture, upload: Upload, start: int, end: int) -> bytes:
    return b"".join([chunk async for chunk in blobs.store.read(upload, start, end)])


async def complete(blobs: BlobFixture, upload: Upload) -> None:
    await blobs.store.complete(upload)
    upload.status = Status.COMPLETED


async def test_commit_makes_a_part_readable(blobs: BlobFixture) -> None:
    upload = new_upload(PART + 100)
    data = os.urandom(PART)
    part = await write(blobs, upload, 1, data)
    assert await read_part(blobs, upload, part) == data
    assert part.blob_ref in await blobs.stored(upload)


async def test_one_write_of_many_chunks_keeps_their_order(blobs: BlobFixture) -> None:
    # More buffers than one writev takes (IOV_MAX is 1024 on Linux), some of them empty.
    upload = new_upload(PART + 100)
    data = os.urandom(PART)
    chunks = [data[start : start + 100] for start in range(0, len(data), 100)]
    chunks.insert(7, b"")
    offset = upload.offset_of(1)
    writer = await blobs.store.open_writer(upload, 1, offset)
    await writer.write(chunks)
    ref = await writer.commit()
    part = Part(1, offset, len(data), hashlib.md5(data).hexdigest(), ref, NOW)
    assert await read_part(blobs, upload, part) == data


async def test_abort_leaves_nothing(blobs: BlobFixture) -> None:
    upload = new_upload(2 * PART)
    kept = await write(blobs, upload, 1, os.urandom(PART))
    writer = await blobs.store.open_writer(upload, 2, PART)
    await writer.write([os.urandom(PART // 2)])
    await writer.abort()
    await writer.abort()  # safe to repeat
    untouched = await blobs.store.open_writer(upload, 2, PART)
    await untouched.abort()  # nothing written at all
    assert await blobs.stored(upload) == {kept.blob_ref}


async def test_empty_part(blobs: BlobFixture) -> None:
    upload = new_upload(0)
    part = await write(blobs, upload, 1, b"")
    assert await read_part(blobs, upload, part) == b""
    await complete(blobs, upload)
    assert await read(blobs, upload, 0, 0) == b""


async def test_resent_part_gets_a_new_ref_and_the_old_one_stays_until_discarded(blobs: BlobFixture) -> None:
    upload = new_upload(2 * PART)
    first = await write(blobs, upload, 1, os.urandom(PART))
    old_bytes = await read_part(blobs, upload, first)
    new_bytes = os.urandom(PART)
    second = await write(blobs, upload, 1, new_bytes)
    assert second.blob_ref != first.blob_ref
    assert await read_part(blobs, upload, first) == old_bytes  # never overwritten in place
    assert await read_part(blobs, upload, second) == new_bytes
    await blobs.store.discard(upload, [first.blob_ref])
    assert await blobs.stored(upload) == {second.blob_ref}
    assert await read_part(blobs, upload, second) == new_bytes
    await blobs.store.discard(upload, [first.blob_ref])  # best effort: already gone is fine


@pytest.mark.parametrize("piece", [1000, 64 * 1024, 3 * PART])
async def test_read_ranges_across_parts(blobs: BlobFixture, piece: int) -> None:
    size = 3 * PART + 777
    data = os.urandom(size)
    upload = new_upload(size)
    for number in (3, 1, 4, 2):  # written out of order
        await write(blobs, upload, number, data[(number - 1) * PART : number * PART], piece=piece)
    await complete(blobs, upload)
    ranges = [
        (0, size),
        (0, 1),
        (size - 1, size),
        (PART - 1, PART + 1),  # across one boundary
        (PART, 2 * PART),  # exactly one part
        (100, 3 * PART + 5),  # across every part
        (2 * PART + 3, 2 * PART + 3),  # empty
        (3 * PART, size),  # the short last part
    ]
    for start, end in ranges:
        assert await read(blobs, upload, start, end) == data[start:end], (start, end)


async def test_reads_of_several_uploads_do_not_mix(blobs: BlobFixture) -> None:
    a, b = new_upload(PART), new_upload(PART)
    data_a, data_b = os.urandom(PART), os.urandom(PART)
    await write(blobs, a, 1, data_a)
    await write(blobs, b, 1, data_b)
    await complete(blobs, a)
    await complete(blobs, b)
    assert await read(blobs, a, 0, PART) == data_a
    assert await read(blobs, b, 0, PART) == data_b


async def test_delete_frees_everything(blobs: BlobFixture) -> None:
    upload = new_upload(2 * PART)
    other = new_upload(PART)
    await write(blobs, upload, 1, os.urandom(PART))
    await write(blobs, upload, 2, os.urandom(PART))
    kept = await write(blobs, other, 1, os.urandom(PART))
    await blobs.store.delete(upload)
    assert await blobs.stored(upload) == set()
    assert await blobs.stored(other) == {kept.blob_ref}
    await blobs.store.delete(upload)  # again: no error
    await blobs.store.delete(new_upload(10))  # never had bytes: no error


async def test_delete_after_complete(blobs: BlobFixture) -> None:
    upload = new_upload(PART)
    await write(blobs, upload, 1, os.urandom(PART))
    await complete(blobs, upload)
    await blobs.store.delete(upload)
    assert await blobs.stored(upload) == set()


async def test_complete_twice_is_harmless(blobs: BlobFixture) -> None:
    data = os.urandom(2 * PART)
    upload = new_upload(len(data))
    await write(blobs, upload, 1, data[:PART])
    await write(blobs, upload, 2, data[PART:])
    await blobs.store.complete(upload)
    await blobs.store.complete(upload)
    upload.status = Status.COMPLETED
    assert await read(blobs, upload, 0, len(data)) == data


async def test_a_blocking_read_gives_the_bytes_read_part_gives(blobs: BlobFixture) -> None:
    if not isinstance(blobs.store, BlockingReader):
        pytest.skip(f"{blobs.backend.name} has no BlockingReader capability")
    size = 2 * 1024 * 1024 + 3  # more than one read's worth, and not a multiple of it
    upload = new_upload(size, size)
    data = os.urandom(size)
    part = await write(blobs, upload, 1, data, piece=1024 * 1024)
    chunks = await asyncio.to_thread(list, blobs.store.read_part_blocking(upload, part))
    assert len(chunks) > 1 and b"".join(chunks) == data == await read_part(blobs, upload, part)


async def test_a_blocking_read_of_a_part_storage_cut_short_is_a_storage_fault(tmp_path: Path) -> None:
    """The local store: a part file shorter than its record (storage lost bytes) is a StorageError
    (a 503 where the engine reads it back to hash it), not a hash over fewer bytes."""
    store = LocalBlobStore(tmp_path)
    upload = new_upload(PART)
    writer = await store.open_writer(upload, 1, 0)
    await writer.write([os.urandom(PART)])
    ref = await writer.commit()
    part = Part(1, 0, PART, "", ref, NOW)
    os.truncate(store._path(upload.id, ref), PART - 1)
    with pytest.raises(StorageError, match="shorter than its recorded size"):
        await asyncio.to_thread(list, store.read_part_blocking(upload, part))


async def test_link_part_shares_bytes_without_tying_lifetimes(blobs: BlobFixture) -> None:
    if not isinstance(blobs.store, PartLinker):
        pytest.skip(f"{blobs.backend.name} has no PartLinker capability")
    data = os.urandom(PART)
    source, target = new_upload(PART), new_upload(2 * PART)
    part = await write(blobs, source, 1, data)
    ref = await blobs.store.link_part(source, part, target, 2, PART)
    target.parts[2] = Part(2, PART, PART, part.md5, ref, NOW)
    await blobs.store.delete(source)
    assert await read_part(blobs, target, target.parts[2]) == data


async def test_sweep_spares_a_part_just_linked_from_an_old_one(blobs: BlobFixture) -> None:
    # A concatenation links its sources' parts first and records them after: a sweep in between
    # (``chunkd gc`` beside the server) must see the new link as young, however old its bytes are.
    sweep = getattr(blobs.store, "sweep", None)
    if sweep is None or not isinstance(blobs.store, PartLinker):
        pytest.skip(f"{blobs.backend.name} does not both link parts and sweep")
    assert isinstance(blobs.store, LocalBlobStore)  # the one store that links; aged below on its disk
    data = os.urandom(PART)
    source, target = new_upload(PART), new_upload(PART)
    part = await write(blobs, source, 1, data)
    written_long_ago = time.time() - 7200
    os.utime(blobs.store.root / source.id[:2] / source.id / part.blob_ref, (written_long_ago, written_long_ago))
    ref = await blobs.store.link_part(source, part, target, 1, 0)
    assert await sweep({source.id: {part.blob_ref}}, grace_seconds=3600) == 0
    target.parts[1] = Part(1, 0, PART, part.md5, ref, NOW)
    assert await read_part(blobs, target, target.parts[1]) == data


async def test_sweep_removes_only_unreferenced_old_blobs(blobs: BlobFixture) -> None:
    sweep = getattr(blobs.store, "sweep", None)
    if sweep is None:
        pytest.skip(f"{blobs.backend.name} has no sweep capability (its own lifecycle rules clean up)")
    live, orphan_dir = new_upload(2 * PART), new_upload(PART)
    kept_bytes = os.urandom(PART)
    kept = await write(blobs, live, 1, kept_bytes)
    stray = await write(blobs, live, 2, os.urandom(PART))  # committed, but no row points at it
    gone = await write(blobs, orphan_dir, 1, os.urandom(PART))
    # Young blobs are spared: they may belong to writes still in flight.
    assert await sweep({live.id: {kept.blob_ref}}, grace_seconds=3600) == 0
    assert await blobs.stored(live) == {kept.blob_ref, stray.blob_ref}
    await asyncio.sleep(0.02)
    # An upload written to lately keeps its unrecorded blobs, however old (a whole PUT holds some).
    assert await sweep({live.id: {kept.blob_ref}}, grace_seconds=0.01, spared={live.id}) == 1
    assert await blobs.stored(live) == {kept.blob_ref, stray.blob_ref}
    removed = await sweep({live.id: {kept.blob_ref}}, grace_seconds=0.01)
    assert removed == 1
    assert await blobs.stored(live) == {kept.blob_ref}
    assert await blobs.stored(orphan_dir) == set()
    assert gone.blob_ref not in await blobs.stored(orphan_dir)
    assert await read_part(blobs, live, kept) == kept_bytes


async def test_a_sweeper_keeps_the_mark_of_its_database(blobs: BlobFixture, caplog: pytest.LogCaptureFixture) -> None:
    store = blobs.store
    if not isinstance(store, Sweeper):
        pytest.skip(f"{blobs.backend.name} has no sweep capability")
    with caplog.at_level(logging.WARNING, logger="chunkd"):
        assert await store.database_mark() is None  # a new store
    assert not caplog.records  # no mark yet is a first start's answer, not a store fault to warn of
    await store.mark_database("db_first")
    await store.mark_database("db_" + "f" * 32)  # marked again: the newer mark stands, whole
    assert await store.database_mark() == "db_" + "f" * 32
    # The mark is no blob: a sweep that frees everything unreferenced leaves it.
    await store.sweep({}, grace_seconds=0)
    assert await store.database_mark() == "db_" + "f" * 32
