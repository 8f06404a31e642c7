"""S3 layout rules that need no server: key building from server-side names only, group sizes for
small parts, and APPEND-mode S3 part targets that stay within S3's 10,000 parts."""

from __future__ import annotations

from pathlib import Path

import pytest

from chunkd.backends.blobs.s3 import MAX_S3_PART, MIN_S3_PART, S3BlobStore, from_settings
from chunkd.domain.upload import MAX_PARTS, Mode, Upload
from chunkd.settings import Settings
from tests.support.uploads import make_upload

MiB = 1024 * 1024
TiB = 1024**4


def upload(size: int | None, part_size: int = MiB, mode: Mode = Mode.PARTS, upload_id: str = "A" * 22) -> Upload:
    return make_upload(
        size, part_size, mode=mode, upload_id=upload_id, filename="clip (1).mp4", mime_type="video/mp4", ttl=None
    )


@pytest.fixture
def store() -> S3BlobStore:
    return S3BlobStore(client=None, bucket="b", prefix="pre")


def test_keys_come_from_server_names(store: S3BlobStore) -> None:
    u = upload(10)
    assert store.final_key(u) == f"pre/masters/{u.id}/clip (1).mp4"
    assert store.staging_key(u.id, "3.abcdefghijkl") == f"pre/staging/{u.id}/3.abcdefghijkl"
    for bad_ref in ("../x", "3.abc/def", "3", "x.abcdefghijkl"):
        with pytest.raises(ValueError):
            store.staging_key(u.id, bad_ref)
    with pytest.raises(ValueError):
        store.final_key(upload(10, upload_id="../../etc"))
    evil = upload(10)
    evil.filename = "a/../../b"
    with pytest.raises(ValueError):
        store.final_key(evil)
    evil.metadata["_s3"] = {"key": "pre/masters/OTHERUPLOADIDxxxxxxxxx/f"}  # a recorded key must be this upload's
    with pytest.raises(ValueError):
        store.final_key(evil)
    evil.metadata["_s3"] = {"key": f"pre/masters/{u.id}/../../staging/{u.id}/1.abcdefghijkl"}  # and one name
    with pytest.raises(ValueError):
        store.final_key(evil)


def test_append_parts_past_99999_have_keys(store: S3BlobStore) -> None:
    """An APPEND upload gets a part per append on S3, with no 10,000-part bound: the 100,000th
    (a tus upload in 1 MiB PATCHes, at about 98 GiB) was refused as an invalid reference (a 500,
    and the upload could go no further)."""
    u = upload(None, mode=Mode.APPEND)
    assert store.staging_key(u.id, "100000.abcdefghijkl") == f"pre/staging/{u.id}/100000.abcdefghijkl"
    assert store.staging_key(u.id, "4000000000.abcdefghijkl").endswith("/4000000000.abcdefghijkl")


@pytest.mark.parametrize(
    ("part_size", "k"), [(256 * 1024, 20), (2_000_000, 3), (5 * MiB - 1, 2), (5 * MiB, 1), (64 * MiB, 1)]
)
def test_small_parts_group_into_five_mib(part_size: int, k: int) -> None:
    u = upload(MAX_PARTS * part_size, part_size)
    assert S3BlobStore.group_size(u) == k
    assert k * part_size >= MIN_S3_PART or k == 1
    assert -(-(u.part_count or 0) // k) <= MAX_PARTS


def test_append_targets_fit_five_tib_in_10000_parts() -> None:
    unknown = upload(None, mode=Mode.APPEND)
    targets = [S3BlobStore.append_target(unknown, n) for n in range(1, MAX_PARTS + 1)]
    assert targets[0] == MIN_S3_PART and all(MIN_S3_PART <= t <= MAX_S3_PART for t in targets)
    assert targets == sorted(targets)
    assert sum(targets[:-1]) >= 5 * TiB  # every part but the last is a full target
    known = upload(5 * TiB, mode=Mode.APPEND)
    assert sum(S3BlobStore.append_target(known, n) for n in range(1, MAX_PARTS)) >= 5 * TiB


def test_bucket_is_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CHUNKD_S3_BUCKET"):
        from_settings(Settings(data_dir=tmp_path, storage="s3"))


def test_the_s3_store_declares_copying_uploads_and_local_storage_linking(store: S3BlobStore, tmp_path: Path) -> None:
    """Capabilities are composed once and named in the start-up log: S3 copies finished uploads
    inside the store (tus concatenation), local storage links parts."""
    from chunkd.backends.blobs.local import LocalBlobStore
    from chunkd.ports.blobs import StoreCapabilities

    s3 = StoreCapabilities.of(store)
    assert s3.copier is store and s3.linker is None and "copy-uploads" in s3.names()
    local = StoreCapabilities.of(LocalBlobStore(tmp_path))
    assert local.copier is None and local.linker is not None and "copy-uploads" not in local.names()
