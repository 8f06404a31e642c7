"""The local store makes every name above a part file durable before the part is acknowledged: the
upload's directory in its shard, a new shard in the root, and the root in the data dir. A part
file's own sync covers its data and its entry in the upload's directory, nothing above it."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chunkd.backends.blobs import local_fs
from chunkd.backends.blobs.local import LocalBlobStore
from chunkd.domain.upload import Part, Upload
from tests.support.uploads import make_upload

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The directories fsynced, in order."""
    seen: list[Path] = []
    real = local_fs.fsync_dir

    def record(path: Path) -> None:
        seen.append(Path(path))
        real(path)

    monkeypatch.setattr(local_fs, "fsync_dir", record)
    return seen


async def put(store: LocalBlobStore, upload: Upload, number: int, data: bytes) -> Part:
    offset = upload.offset_of(number)
    writer = await store.open_writer(upload, number, offset)
    await writer.write([data])
    ref = await writer.commit()
    part = Part(number, offset, len(data), hashlib.md5(data).hexdigest(), ref, NOW)
    upload.parts[number] = part
    return part


async def test_a_first_part_makes_its_shard_and_directory_durable(tmp_path: Path, synced: list[Path]) -> None:
    root = tmp_path / "data" / "blobs"
    store = LocalBlobStore(root, fsync=True)
    assert synced == [tmp_path / "data"]  # the new root's entry
    upload = make_upload(10, 10, filename="a.bin", created=NOW, expires_at=NOW)
    shard, directory = root / upload.id[:2], root / upload.id[:2] / upload.id

    synced.clear()
    await put(store, upload, 1, b"0123456789")
    assert set(synced) == {root, shard, directory}

    # Settled: neither directory keeps the mark a concurrent writer would look for.
    assert not shard.stat().st_mode & stat.S_ISVTX and not directory.stat().st_mode & stat.S_ISVTX

    # A second part of the same upload: only its own name is new.
    synced.clear()
    second = make_upload(20, 10, upload_id=upload.id, filename="a.bin", created=NOW, expires_at=NOW)
    await put(store, second, 2, b"abcdefghij")
    assert synced == [directory]


async def test_a_new_upload_in_an_existing_shard_syncs_the_shard_not_the_root(
    tmp_path: Path, synced: list[Path]
) -> None:
    root = tmp_path / "blobs"
    store = LocalBlobStore(root, fsync=True)
    upload = make_upload(4, 4, filename="a.bin", created=NOW, expires_at=NOW)
    (root / upload.id[:2]).mkdir()
    synced.clear()
    await put(store, upload, 1, b"data")
    assert set(synced) == {root / upload.id[:2], root / upload.id[:2] / upload.id}
    assert root not in synced


async def test_a_maker_marks_each_directory_until_its_name_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "blobs"
    store = LocalBlobStore(root, fsync=True)
    upload = make_upload(4, 4, filename="a.bin", created=NOW, expires_at=NOW)
    shard, directory = root / upload.id[:2], root / upload.id[:2] / upload.id
    marked_while_synced: dict[Path, bool] = {}
    real = local_fs.fsync_dir

    def record(path: Path) -> None:
        for made in (shard, directory):
            if made.parent == Path(path):
                marked_while_synced[made] = bool(made.stat().st_mode & stat.S_ISVTX)
        real(path)

    monkeypatch.setattr(local_fs, "fsync_dir", record)
    await put(store, upload, 1, b"data")
    assert marked_while_synced == {shard: True, directory: True}
    assert not shard.stat().st_mode & stat.S_ISVTX and not directory.stat().st_mode & stat.S_ISVTX


async def test_a_part_in_directories_another_writer_just_made_syncs_them_itself(
    tmp_path: Path, synced: list[Path]
) -> None:
    """Parallel parts of a new upload race to make its directory (and new uploads in a new shard, the
    shard): a writer that finds it made cannot tell whether the maker's sync of the parent has
    returned. The maker marks what it made (the sticky bit) until then; a part is not acknowledged
    in a marked directory before its writer has synced the parent itself and taken the mark off.
    A mark left by a crash is settled the same way."""
    root = tmp_path / "blobs"
    store = LocalBlobStore(root, fsync=True)
    upload = make_upload(8, 4, filename="a.bin", created=NOW, expires_at=NOW)
    shard, directory = root / upload.id[:2], root / upload.id[:2] / upload.id
    # As a concurrent maker leaves them between its mkdirs and its syncs.
    os.mkdir(shard, 0o777 | stat.S_ISVTX)
    os.mkdir(directory, 0o777 | stat.S_ISVTX)
    synced.clear()
    await put(store, upload, 1, b"data")
    assert synced == [directory, root, shard]  # its own file's name, then the shard's and the directory's
    assert not shard.stat().st_mode & stat.S_ISVTX and not directory.stat().st_mode & stat.S_ISVTX
    synced.clear()
    second = make_upload(8, 4, upload_id=upload.id, filename="a.bin", created=NOW, expires_at=NOW)
    second.parts.update(upload.parts)
    await put(store, second, 2, b"more")
    assert synced == [directory]  # settled: only the new file's own name


async def test_a_directory_removed_before_the_file_is_made_is_made_again(tmp_path: Path) -> None:
    """``chunkd gc`` removes empty directories of uploads it does not know yet; a writer that
    finds its directory gone makes it again instead of failing."""
    store = LocalBlobStore(tmp_path / "blobs", fsync=True)
    upload = make_upload(4, 4, filename="a.bin", created=NOW, expires_at=NOW)
    first = await put(store, upload, 1, b"data")
    shutil.rmtree(tmp_path / "blobs" / upload.id[:2])
    upload.parts.clear()
    again = await put(store, upload, 1, b"more")
    assert again.blob_ref != first.blob_ref
    assert b"".join([c async for c in store.read_part(upload, again)]) == b"more"


async def test_linking_into_a_new_upload_makes_its_directory_durable(tmp_path: Path, synced: list[Path]) -> None:
    root = tmp_path / "blobs"
    store = LocalBlobStore(root, fsync=True)
    source = make_upload(4, 4, filename="a.bin", created=NOW, expires_at=NOW)
    part = await put(store, source, 1, b"data")
    target = make_upload(4, 4, filename="b.bin", created=NOW, expires_at=NOW)
    synced.clear()
    ref = await store.link_part(source, part, target, 1, 0)
    directory = root / target.id[:2] / target.id
    assert directory in synced and directory.parent in synced
    assert (directory / ref).read_bytes() == b"data"


async def test_a_source_with_too_many_links_is_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A tus final may name one partial 10,000 times, and several finals may: past the filesystem's
    # limit of links per file (ext4: 65,000) os.link fails with EMLINK, and the part is copied.
    store = LocalBlobStore(tmp_path / "blobs", fsync=True)
    source = make_upload(4, 4, filename="a.bin", created=NOW, expires_at=NOW)
    part = await put(store, source, 1, b"data")
    target = make_upload(4, 4, filename="b.bin", created=NOW, expires_at=NOW)

    def full_link(src: object, dst: object) -> None:
        raise OSError(errno.EMLINK, "Too many links")

    monkeypatch.setattr(os, "link", full_link)
    ref = await store.link_part(source, part, target, 1, 0)
    copied = tmp_path / "blobs" / target.id[:2] / target.id / ref
    assert copied.read_bytes() == b"data" and copied.stat().st_nlink == 1
    assert copied.stat().st_mode & 0o777 == 0o600
    assert b"".join([c async for c in store.read_part(source, part)]) == b"data"
