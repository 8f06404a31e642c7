"""The upload engine on S3 storage (a real Ceph RGW): parts in and out of order, small parts
coalesced into ≥ 5 MiB S3 parts, appends, replaced parts, crash leftovers, cancel, gc, downloads."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chunkd.app import create_app
from chunkd.backends.blobs import s3 as s3_module
from chunkd.backends.blobs.s3 import DATABASE_MARK, MIN_S3_PART, STATE, S3BlobStore
from chunkd.backends.blobs.s3_client import PATIENT_CALLS, PATIENT_READ_TIMEOUT
from chunkd.domain.checksum import ResumableMD5
from chunkd.domain.errors import Busy
from chunkd.domain.upload import Mode, Status, Upload
from chunkd.service.uploads import UploadService
from chunkd.settings import Settings
from tests.conftest import Api
from tests.support.s3 import CephRgw
from tests.support.tus import append_in_slices

MiB = 1024 * 1024


@pytest.fixture
def s3_settings(tmp_path: Path, ceph_rgw: CephRgw, s3_bucket: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        bootstrap_admin_key=False,
        fsync=False,
        min_part_size=1,
        reaper_interval_seconds=3600,
        lock_timeout_seconds=30,
        storage="s3",
        s3_endpoint=ceph_rgw.endpoint,
        s3_bucket=s3_bucket,
        s3_access_key=ceph_rgw.access_key,
        s3_secret_key=ceph_rgw.secret_key,
        s3_prefix="chunkd/",
    )


@pytest.fixture
async def s3_api(s3_settings: Settings) -> AsyncIterator[Api]:
    app = create_app(s3_settings)
    async with app.router.lifespan_context(app):
        runtime = app.state.chunkd
        _, key = await runtime.keys.create("alice", "files:create,files:read,files:delete")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client, runtime, {"alice": key})


async def body(data: bytes, piece: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


def store_of(api: Api) -> S3BlobStore:
    store = api.runtime.blobs
    assert isinstance(store, S3BlobStore)
    return store


def s3(api: Api) -> Any:
    return store_of(api).client


def bucket_state(api: Api) -> tuple[list[str], list[dict[str, Any]]]:
    store = store_of(api)
    objects = s3(api).list_objects_v2(Bucket=store.bucket).get("Contents", [])
    uploads = s3(api).list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    # Less the store's database mark (``DATABASE_MARK``), made by the app's first sweep.
    return [o["Key"] for o in objects if not o["Key"].endswith(f"/{DATABASE_MARK}")], uploads


def s3_parts(api: Api, upload_id: str, key: str, mp_id: str) -> dict[int, int]:
    listed = s3(api).list_parts(Bucket=store_of(api).bucket, Key=key, UploadId=mp_id).get("Parts", [])
    return {p["PartNumber"]: p["Size"] for p in listed}


async def put_parts(service: UploadService, upload_id: str, data: bytes, part_size: int, order: list[int]) -> None:
    for n in order:
        await service.put_part("alice", upload_id, n, body(data[(n - 1) * part_size : n * part_size]))


async def check_complete(api: Api, upload_id: str, data: bytes, s3_part_count: int) -> None:
    service = api.runtime.uploads
    done = await service.complete("alice", upload_id, md5=hashlib.md5(data).hexdigest())
    assert done.md5 == hashlib.md5(data).hexdigest()
    store = store_of(api)
    key = store.final_key(done)
    assert key == f"chunkd/masters/{upload_id}/{done.filename}"
    head = s3(api).head_object(Bucket=store.bucket, Key=key)
    assert head["ContentLength"] == len(data)
    # A multipart object's ETag is md5-of-md5s-N: proof it was assembled by CompleteMultipartUpload.
    assert head["ETag"].strip('"').endswith(f"-{s3_part_count}")
    objects, uploads = bucket_state(api)
    assert objects == [key] and uploads == []  # staged parts dropped, no multipart upload left
    got = b"".join([c async for c in service.read(done)])
    assert got == data
    lo, hi = MIN_S3_PART - 10, MIN_S3_PART + 20  # across an S3 part boundary
    assert b"".join([c async for c in service.read(done, lo, hi)]) == data[lo:hi]


async def test_big_parts_out_of_order_map_one_to_one(s3_api: Api) -> None:
    service = s3_api.runtime.uploads
    part = 5 * MiB
    data = os.urandom(3 * part + 1234)
    upload = await service.create("alice", filename="big film.mp4", size_bytes=len(data), part_size=part)
    await put_parts(service, upload.id, data, part, [3, 1, 4])
    state = (await service.get("alice", upload.id)).metadata[STATE]
    key, mp_id = state["key"], state["uploadId"]
    # Parts 1, 3 and 4 were turned into S3 parts (server-side copies) as they arrived.
    assert s3_parts(s3_api, upload.id, key, mp_id) == {1: part, 3: part, 4: 1234}
    await put_parts(service, upload.id, data, part, [2])
    await check_complete(s3_api, upload.id, data, 4)


async def test_small_parts_are_coalesced_progressively(s3_api: Api) -> None:
    service = s3_api.runtime.uploads
    part = 1 * MiB  # five engine parts make one S3 part
    data = os.urandom(12 * part + 77)
    upload = await service.create("alice", filename="x.bin", size_bytes=len(data), part_size=part)
    await put_parts(service, upload.id, data, part, [7, 8, 9, 10, 6, 13, 2, 3, 1])
    state = (await service.get("alice", upload.id)).metadata[STATE]
    assert s3_parts(s3_api, upload.id, state["key"], state["uploadId"]) == {2: 5 * part}
    await put_parts(service, upload.id, data, part, [4, 12, 11, 5])
    state = (await service.get("alice", upload.id)).metadata[STATE]
    assert s3_parts(s3_api, upload.id, state["key"], state["uploadId"]) == {1: 5 * part, 2: 5 * part, 3: 2 * part + 77}
    await check_complete(s3_api, upload.id, data, 3)


async def test_replaced_part_rebuilds_its_group(s3_api: Api) -> None:
    service = s3_api.runtime.uploads
    part = 1 * MiB
    data = bytearray(os.urandom(6 * part))
    upload = await service.create("alice", filename="y.bin", size_bytes=len(data), part_size=part)
    await put_parts(service, upload.id, bytes(data), part, [1, 2, 3, 4, 5, 6])
    data[2 * part : 3 * part] = os.urandom(part)  # part 3 re-sent with other bytes, after S3 part 1 was built
    await put_parts(service, upload.id, bytes(data), part, [3])
    await check_complete(s3_api, upload.id, bytes(data), 2)


async def test_appends_of_any_size(s3_api: Api) -> None:
    service = s3_api.runtime.uploads
    sizes = [200 * 1024] * 20 + [7 * MiB, 100, 3 * MiB, 300 * 1024]
    data = os.urandom(sum(sizes))
    upload = await service.create("alice", filename="tus.bin", size_bytes=None, mode=Mode.APPEND)
    offset = 0
    for size in sizes:
        await service.append("alice", upload.id, offset, body(data[offset : offset + size]))
        offset += size
    state = (await service.get("alice", upload.id)).metadata[STATE]
    # The twenty 200 KB appends plus the head of the 7 MiB one were re-uploaded as S3 part 1; the
    # rest of the 7 MiB append was copied server-side as part 2; the small tail waits for complete.
    head = MIN_S3_PART - 20 * 200 * 1024
    assert s3_parts(s3_api, upload.id, state["key"], state["uploadId"]) == {1: MIN_S3_PART, 2: 7 * MiB - head}
    await service.declare_size("alice", upload.id, len(data))
    await check_complete(s3_api, upload.id, data, 3)


async def test_tus_patch_that_ends_an_upload_of_many_appends_completes_it(s3_api: Api) -> None:
    """The PATCH that reaches Upload-Length completes the upload in the same write. S3 stores one
    object per append, so that PATCH loads every part for the store's completion: the part it has
    just made, not yet saved, must be among them (it was not, and every such PATCH failed with a
    500, leaving the upload stuck one PATCH short of its end)."""
    data = os.urandom(2 * MiB + 300 * 1024)
    tus = {**s3_api.auth(), "Tus-Resumable": "1.0.0"}
    created = await s3_api.client.post("/files", headers={**tus, "Upload-Length": str(len(data))})
    assert created.status_code == 201, created.text
    url = created.headers["location"]
    await append_in_slices(s3_api.client, url, data, (MiB, MiB, 300 * 1024), tus)  # three staged objects
    done = await s3_api.runtime.uploads.get("alice", url.rsplit("/", 1)[1])
    assert done.status is Status.COMPLETED and done.md5 == hashlib.md5(data).hexdigest()
    assert b"".join([c async for c in s3_api.runtime.uploads.read(done)]) == data


async def test_appends_survive_a_completion_whose_record_was_lost(s3_api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The PATCH that ends a tus upload completes it in S3, then loses its lock (PostgreSQL
    restarted) before the COMPLETED record is saved: the upload stays PENDING at its last recorded
    offset, and the client resumes from there. The completion must not have deleted the staged
    parts that record still names: it did, and the resumed upload could never complete (every
    PATCH that needed those parts was a 503), its acknowledged bytes lost."""
    url, data, head = await _tus_completion_record_lost(s3_api, monkeypatch)
    await _resume_tus_completion(s3_api, url, data, head)


TUS_APPEND = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}


async def _tus_completion_record_lost(
    s3_api: Api, monkeypatch: pytest.MonkeyPatch, size: int = MIN_S3_PART + MiB, head: int = 100 * 1024
) -> tuple[str, bytes, int]:
    """A tus upload of one recorded PATCH (``head`` bytes) whose second, final PATCH completed the
    file in S3 and then lost its lock at the COMPLETED record: (its URL, its bytes, ``head``)."""
    data = os.urandom(size)
    append = {**s3_api.auth(), **TUS_APPEND}
    created = await s3_api.client.post(
        "/files", headers={**s3_api.auth(), "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data))}
    )
    url = created.headers["location"]
    first = await s3_api.client.patch(url, content=data[:head], headers={**append, "Upload-Offset": "0"})
    assert first.status_code == 204, first.text
    repo = s3_api.runtime.uploads.repo
    real_save = repo.save

    async def lock_lost_at_the_record(target: Upload, *args: Any, **kwargs: Any) -> None:
        if target.status is Status.COMPLETED:
            raise Busy("the upload's lock was lost before this write was saved")
        await real_save(target, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(repo, "save", lock_lost_at_the_record)
        lost = await s3_api.client.patch(url, content=data[head:], headers={**append, "Upload-Offset": str(head)})
    assert lost.status_code == 423, lost.text
    return url, data, head


async def _resume_tus_completion(s3_api: Api, url: str, data: bytes, head: int) -> None:
    """The client resumes from the offset the server reports, in two PATCHes: the first is big
    enough for the store to build an S3 part from the staged parts, the recorded one included."""
    tus = {**s3_api.auth(), "Tus-Resumable": "1.0.0"}
    offset = int((await s3_api.client.head(url, headers=tus)).headers["upload-offset"])
    assert offset == head
    middle = offset + MIN_S3_PART
    for start, end in ((offset, middle), (middle, len(data))):
        resumed = await s3_api.client.patch(
            url, content=data[start:end], headers={**tus, **TUS_APPEND, "Upload-Offset": str(start)}
        )
        assert resumed.status_code == 204, resumed.text
    done = await s3_api.runtime.uploads.get("alice", url.rsplit("/", 1)[1])
    assert done.status is Status.COMPLETED and done.md5 == hashlib.md5(data).hexdigest()
    assert b"".join([c async for c in s3_api.runtime.uploads.read(done)]) == data
    objects, uploads = bucket_state(s3_api)
    assert objects == [store_of(s3_api).final_key(done)] and uploads == []  # staged parts freed once recorded


async def test_crash_leftovers_are_adopted_or_rebuilt(s3_api: Api) -> None:
    """A crash after S3 work but before its state was saved: the multipart upload is adopted (no
    stray), S3 parts not marked built are rebuilt, and the result is right."""
    service = s3_api.runtime.uploads
    part = 1 * MiB
    data = os.urandom(11 * part)
    upload = await service.create("alice", filename="z.bin", size_bytes=len(data), part_size=part)
    await put_parts(service, upload.id, data, part, list(range(1, 11)))
    loaded = await s3_api.runtime.repo.get(upload.id)
    assert loaded is not None
    loaded.metadata.pop(STATE)  # as if the state had never been saved
    await s3_api.runtime.repo.save(loaded)
    await put_parts(service, upload.id, data, part, [11])
    assert len(bucket_state(s3_api)[1]) == 1
    await check_complete(s3_api, upload.id, data, 3)


async def test_cancel_and_delete_leave_nothing(s3_api: Api) -> None:
    service = s3_api.runtime.uploads
    part = 1 * MiB
    data = os.urandom(7 * part)
    first = await service.create("alice", filename="a.bin", size_bytes=len(data), part_size=part)
    await put_parts(service, first.id, data, part, [1, 2, 3, 4, 5, 7])
    assert len(bucket_state(s3_api)[1]) == 1
    await service.cancel("alice", first.id)
    second = await service.create("alice", filename="b.bin", size_bytes=len(data), part_size=part)
    await put_parts(service, second.id, data, part, list(range(1, 8)))
    await service.complete("alice", second.id)
    await service.delete("alice", second.id)
    assert bucket_state(s3_api) == ([], [])


async def test_gc_sweeps_strays(s3_api: Api) -> None:
    service = s3_api.runtime.uploads
    store = store_of(s3_api)
    client = s3(s3_api)
    live = await service.create("alice", filename="live.bin", size_bytes=6 * MiB, part_size=MiB)
    await put_parts(service, live.id, os.urandom(6 * MiB), MiB, [1, 2, 3, 4, 5])
    ghost = "G" * 22
    client.create_multipart_upload(Bucket=store.bucket, Key=f"chunkd/masters/{ghost}/f.bin")
    client.put_object(Bucket=store.bucket, Key=f"chunkd/staging/{ghost}/1.abcdefghijkl", Body=b"x")
    client.put_object(Bucket=store.bucket, Key=f"chunkd/staging/{live.id}/9.abcdefghijkl", Body=b"x")
    before_objects, before_uploads = bucket_state(s3_api)
    removed = await store.sweep(await s3_api.runtime.repo.live_blobs(), grace_seconds=0)
    assert removed == 3
    objects, uploads = bucket_state(s3_api)
    assert len(uploads) == 1 and uploads[0]["Key"].startswith(f"chunkd/masters/{live.id}/")
    assert sorted(objects) == sorted(k for k in before_objects if ghost not in k and "9.abcdefghijkl" not in k)
    assert len(before_uploads) == 2


async def test_sweeps_on_two_nodes_at_once_both_end(s3_api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every node sweeps at its start and then every interval, so nodes started together sweep
    together: both list a stray multipart upload, one aborts it, and the other's abort found it
    gone (404) and failed its whole sweep (a StorageError: the strays after it were left, and
    ``chunkd gc`` failed). An abort of what is gone already is done."""
    store = store_of(s3_api)
    client = s3(s3_api)
    ghost = "G" * 22
    client.create_multipart_upload(Bucket=store.bucket, Key=f"chunkd/masters/{ghost}/f.bin")
    client.put_object(Bucket=store.bucket, Key=f"chunkd/staging/{ghost}/1.abcdefghijkl", Body=b"x")
    listed = store._multipart_uploads

    async def listed_then_swept_elsewhere(folder: str) -> list[dict[str, Any]]:
        found = await listed(folder)
        for mp in found:  # the other node's sweep aborts them between this listing and its use
            # (it may find one gone already: RGW listed one upload twice once, or this app's own
            # reaper swept through this same listing)
            with contextlib.suppress(client.exceptions.NoSuchUpload):
                client.abort_multipart_upload(Bucket=store.bucket, Key=mp["Key"], UploadId=mp["UploadId"])
        return found

    monkeypatch.setattr(store, "_multipart_uploads", listed_then_swept_elsewhere)
    await store.sweep(await s3_api.runtime.repo.live_blobs(), grace_seconds=0)
    monkeypatch.undo()
    objects, uploads = bucket_state(s3_api)
    assert not uploads and not [k for k in objects if ghost in k]


async def test_download_streams_with_range(s3_api: Api) -> None:
    data = os.urandom(6 * MiB + 5)
    auth = s3_api.auth()
    created = await s3_api.client.post(
        "/v1/files", json={"filename": "d.bin", "sizeBytes": len(data), "partSize": 3 * MiB}, headers=auth
    )
    file_id = created.json()["id"]
    for n, start in enumerate(range(0, len(data), 3 * MiB), 1):
        put = await s3_api.client.put(
            f"/v1/files/{file_id}/parts/{n}", content=data[start : start + 3 * MiB], headers=auth
        )
        assert put.status_code == 200, put.text
    done = await s3_api.client.post(f"/v1/files/{file_id}/complete", headers=auth)
    assert done.status_code == 200, done.text
    whole = await s3_api.client.get(f"/v1/files/{file_id}/content", headers=auth)
    assert whole.status_code == 200 and whole.content == data
    ranged = await s3_api.client.get(f"/v1/files/{file_id}/content", headers={**auth, "Range": "bytes=100-5242999"})
    assert ranged.status_code == 206 and ranged.content == data[100:5243000]


async def test_a_whole_file_put_streams_part_after_part_into_the_store(s3_api: Api) -> None:
    """One PUT to the uploadUrl, cut into 3 MiB parts that each go to S3 while the next streams in;
    the whole-file MD5 runs on across them, so complete checks it without reading anything back."""
    data = os.urandom(10 * MiB + 7)
    auth = s3_api.auth()
    created = await s3_api.client.post(
        "/v1/files", json={"filename": "w.bin", "sizeBytes": len(data), "partSize": 3 * MiB}, headers=auth
    )
    file_id = created.json()["id"]
    put = await s3_api.client.put(f"/v1/files/{file_id}/content", content=data, headers=auth)
    assert put.status_code == 200, put.text
    assert [p["sizeBytes"] for p in put.json()["parts"]] == [3 * MiB, 3 * MiB, 3 * MiB, MiB + 7]
    stored = await s3_api.runtime.uploads.get("alice", file_id)
    assert stored.hash_offset == len(data)  # hashed as it streamed: nothing left to read back
    done = await s3_api.client.post(
        f"/v1/files/{file_id}/complete", json={"md5": hashlib.md5(data).hexdigest()}, headers=auth
    )
    assert done.status_code == 200 and done.json()["status"] == "COMPLETED", done.text
    whole = await s3_api.client.get(f"/v1/files/{file_id}/content", headers=auth)
    assert whole.status_code == 200 and whole.content == data


async def test_a_whole_file_put_with_a_wrong_content_md5_leaves_nothing_in_the_bucket(s3_api: Api) -> None:
    """A Content-MD5 sent with the whole body is checked at its end, from the MD5 the parts were
    hashed into as they went to S3: a mismatch records none of them and removes their objects; the
    right body PUT again is stored and completes."""
    data = os.urandom(7 * MiB + 3)
    auth = s3_api.auth()
    created = await s3_api.client.post(
        "/v1/files", json={"filename": "w.bin", "sizeBytes": len(data), "partSize": 3 * MiB}, headers=auth
    )
    file_id = created.json()["id"]
    url = f"/v1/files/{file_id}/content"
    right = base64.b64encode(hashlib.md5(data).digest()).decode()
    corrupted = data[: 5 * MiB] + bytes([data[5 * MiB] ^ 1]) + data[5 * MiB + 1 :]
    refused = await s3_api.client.put(url, content=corrupted, headers={**auth, "Content-MD5": right})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "Content-MD5", refused.text
    assert (await s3_api.runtime.uploads.get("alice", file_id)).parts == {}
    assert bucket_state(s3_api) == ([], [])  # the held parts' objects were removed
    put = await s3_api.client.put(url, content=data, headers={**auth, "Content-MD5": right})
    assert put.status_code == 200, put.text
    done = await s3_api.client.post(f"/v1/files/{file_id}/complete", headers=auth)
    assert done.status_code == 200 and done.json()["status"] == "COMPLETED", done.text
    whole = await s3_api.client.get(url, headers=auth)
    assert whole.status_code == 200 and whole.content == data


async def test_presigned_download_redirect(s3_settings: Settings) -> None:
    s3_settings.s3_presigned_downloads = True
    app = create_app(s3_settings)
    async with app.router.lifespan_context(app):
        runtime = app.state.chunkd
        service: UploadService = runtime.uploads
        data = os.urandom(MiB + 3)
        upload = await service.create("alice", filename='résumé "1".pdf', size_bytes=len(data), part_size=MiB)
        await put_parts(service, upload.id, data, MiB, [2, 1])
        await service.complete("alice", upload.id)
        _, key = await runtime.keys.create("alice", "files:read")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.get(f"/v1/files/{upload.id}/content", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 307
        url = response.headers["location"]
        async with httpx.AsyncClient() as direct:
            got = await direct.get(url)
            assert got.status_code == 200 and got.content == data
            assert got.headers["content-type"] == "application/pdf"
            assert "filename*=UTF-8''r%C3%A9sum%C3%A9" in got.headers["content-disposition"]
            part = await direct.get(url, headers={"Range": "bytes=10-19"})
            assert part.status_code == 206 and part.content == data[10:20]
            assert (await direct.get(url.replace("Signature=", "Signature=0"))).status_code == 403


async def test_complete_after_a_crash_that_followed_s3_completion(s3_api: Api) -> None:
    """CompleteMultipartUpload succeeded but the process died before the engine recorded it: the
    retried complete builds the file again instead of failing on the vanished multipart upload."""
    service = s3_api.runtime.uploads
    data = os.urandom(6 * MiB + 1)
    upload = await service.create("alice", filename="c.bin", size_bytes=len(data), part_size=3 * MiB)
    await put_parts(service, upload.id, data, 3 * MiB, [1, 2, 3])
    loaded = await s3_api.runtime.repo.get(upload.id)
    assert loaded is not None
    await store_of(s3_api).complete(loaded)  # S3 side done; the engine's record stays PENDING
    assert (await service.get("alice", upload.id)).status.value == "PENDING"
    await check_complete(s3_api, upload.id, data, 2)


async def test_a_part_re_sent_after_a_lost_completion_is_in_the_file(s3_api: Api) -> None:
    """A completion finished the file in S3 but its record was lost; the client then re-sent a part
    with other bytes (its right, the upload being PENDING). The next complete must build the file
    again: it trusted the object already at the key, of the right size, and served the old bytes
    under the new MD5."""
    service = s3_api.runtime.uploads
    part = 3 * MiB
    data = bytearray(os.urandom(2 * part + 1))
    upload = await service.create("alice", filename="c.bin", size_bytes=len(data), part_size=part)
    await put_parts(service, upload.id, bytes(data), part, [1, 2, 3])
    loaded = await s3_api.runtime.repo.get(upload.id)
    assert loaded is not None
    await store_of(s3_api).complete(loaded)  # S3 side done; the engine's record stays PENDING
    data[part : 2 * part] = os.urandom(part)
    await put_parts(service, upload.id, bytes(data), part, [2])
    await check_complete(s3_api, upload.id, bytes(data), 2)


async def test_a_multipart_upload_aborted_behind_the_engines_back_is_built_again(s3_api: Api) -> None:
    """A bucket lifecycle rule (or an operator) aborted the upload's multipart upload: every
    complete failed with a 503 on the vanished upload. It is built again from the staged parts."""
    service = s3_api.runtime.uploads
    data = os.urandom(3 * MIN_S3_PART)
    upload = await service.create("alice", filename="a.bin", size_bytes=len(data), part_size=MIN_S3_PART)
    await put_parts(service, upload.id, data, MIN_S3_PART, [1, 2])
    _, uploads = bucket_state(s3_api)
    assert len(uploads) == 1
    s3(s3_api).abort_multipart_upload(
        Bucket=store_of(s3_api).bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]
    )
    await put_parts(service, upload.id, data, MIN_S3_PART, [3])
    await check_complete(s3_api, upload.id, data, 3)


@pytest.mark.parametrize(
    ("size", "head"),
    [(300_000, 100 * 1024), (MIN_S3_PART + MiB, MIN_S3_PART + 1000)],
    ids=["no-s3-part-recorded", "an-s3-part-recorded"],
)
async def test_a_resumed_append_after_a_lost_completion_is_in_the_file(
    s3_api: Api, monkeypatch: pytest.MonkeyPatch, size: int, head: int
) -> None:
    """The PATCH that ended a tus upload completed it in S3 and lost its COMPLETED record; the
    client resumed from the recorded offset with other bytes. The file served is the one whose
    MD5 is recorded: the one the resumed PATCHes made. In the second case the first PATCH was big
    enough for an S3 part, so the recorded multipart upload is the one the lost completion
    finished: it is gone, and the file is built again from the staged parts."""
    url, data, head = await _tus_completion_record_lost(s3_api, monkeypatch, size=size, head=head)
    recorded = await s3_api.runtime.repo.get(url.rsplit("/", 1)[1])
    assert recorded is not None
    finished_mp = recorded.metadata.get(STATE, {}).get("uploadId")
    assert (finished_mp is not None) == (head >= MIN_S3_PART)
    changed = data[:head] + os.urandom(len(data) - head)
    tus = {**s3_api.auth(), "Tus-Resumable": "1.0.0"}
    resumed = await s3_api.client.patch(
        url, content=changed[head:], headers={**tus, **TUS_APPEND, "Upload-Offset": str(head)}
    )
    assert resumed.status_code == 204, resumed.text
    done = await s3_api.runtime.uploads.get("alice", url.rsplit("/", 1)[1])
    assert done.status is Status.COMPLETED and done.md5 == hashlib.md5(changed).hexdigest()
    assert b"".join([c async for c in s3_api.runtime.uploads.read(done)]) == changed
    assert bucket_state(s3_api) == ([store_of(s3_api).final_key(done)], [])
    assert done.metadata[STATE]["uploadId"] != finished_mp  # built again in a new multipart upload


async def test_failed_clean_up_after_completion_does_not_fail_complete(
    s3_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway dropping the connection while staged parts are deleted must not turn a file that
    is complete in S3 into an error (found by the S3 multi-node benchmark: it answered 500)."""
    service = s3_api.runtime.uploads
    done, data = await _complete_with_cleanup_dropped(s3_api, monkeypatch, "x.bin")
    assert done.status.value == "COMPLETED"
    read = b"".join([chunk async for chunk in service.read(await service.get("alice", done.id))])
    assert read == data


async def _complete_with_cleanup_dropped(
    s3_api: Api, monkeypatch: pytest.MonkeyPatch, filename: str
) -> tuple[Upload, bytes]:
    """A three-part file completed while the gateway drops the connection as its staged parts are
    deleted (the later clean-ups of the test go through)."""
    service = s3_api.runtime.uploads
    store = store_of(s3_api)
    data = os.urandom(2 * MiB + 5)
    upload = await service.create("alice", filename=filename, size_bytes=len(data), part_size=MiB)
    await put_parts(service, upload.id, data, MiB, [1, 2, 3])
    real_cleanup = store._cleanup

    async def dropped_connection(target: Any, *, keep_final: bool) -> None:
        if keep_final:
            raise ConnectionError("the gateway closed the connection")
        await real_cleanup(target, keep_final=keep_final)

    monkeypatch.setattr(store, "_cleanup", dropped_connection)
    return await service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest()), data


async def _tus_partial(api: Api, data: bytes) -> str:
    tus = {"Tus-Resumable": "1.0.0", **api.auth()}
    made = await api.client.post("/files", headers={**tus, "Upload-Length": str(len(data)), "Upload-Concat": "partial"})
    assert made.status_code == 201, made.text
    upload_id = made.headers["location"].rsplit("/", 1)[1]
    sent = await api.client.patch(
        f"/files/{upload_id}",
        content=data,
        headers={**tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert sent.status_code == 204, sent.text
    return upload_id


def _count_calls(api: Api, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    store = store_of(api)
    calls: list[tuple[str, dict[str, Any]]] = []
    real_call = store.call

    async def counting(method: str, **kwargs: Any) -> Any:
        calls.append((method, kwargs))
        return await real_call(method, **kwargs)

    monkeypatch.setattr(store, "call", counting)
    return calls


@pytest.mark.parametrize("multipart_copy", [False, True], ids=["copy-object", "multipart-copy"])
async def test_tus_concatenation_copies_inside_the_store(
    s3_api: Api, monkeypatch: pytest.MonkeyPatch, multipart_copy: bool
) -> None:
    """Partials of ≥ 5 MiB (and a small last one) become S3 parts of the final by server-side
    copies: chunkd uploads none of their bytes and reads none from the partials' objects (it reads
    the final's copies once, but for the first partial, to compute the whole-file MD5)."""
    if multipart_copy:  # a source past CopyObject's limit is copied in ranges
        monkeypatch.setattr(s3_module, "COPY_OBJECT_LIMIT", MIN_S3_PART)
    sizes = (6 * MiB, MIN_S3_PART + 12_345, 100_000)
    chunks = [os.urandom(n) for n in sizes]
    partials = [await _tus_partial(s3_api, chunk) for chunk in chunks]
    calls = _count_calls(s3_api, monkeypatch)
    urls = " ".join(f"/files/{i}" for i in partials)
    made = await s3_api.client.post(
        "/files", headers={"Tus-Resumable": "1.0.0", **s3_api.auth(), "Upload-Concat": f"final;{urls}"}
    )
    assert made.status_code == 201, made.text
    final_id = made.headers["location"].rsplit("/", 1)[1]
    data = b"".join(chunks)
    final = await s3_api.runtime.uploads.get("alice", final_id)
    assert final.status.value == "COMPLETED" and final.md5 == hashlib.md5(data).hexdigest()

    methods = [method for method, _ in calls]
    uploaded = [kwargs.get("ContentLength", 0) for method, kwargs in calls if method in ("put_object", "upload_part")]
    assert uploaded == [], "no byte of the partials was uploaded through chunkd"
    read_keys = [str(kwargs["Key"]) for method, kwargs in calls if method == "get_object"]
    assert not [k for k in read_keys if any(p in k for p in partials)], "nothing read from the partials' objects"
    assert len(read_keys) == 2  # the MD5 read of the 2nd and 3rd copies; the 1st partial's state is reused
    if multipart_copy:
        assert methods.count("copy_object") == 1  # the small last partial
        assert methods.count("upload_part_copy") == 2 + 2 + 3  # two copies in ranges, then three S3 parts
    else:
        assert methods.count("copy_object") == 3 and methods.count("upload_part_copy") == 3
    got = await s3_api.client.get(f"/files/{final_id}", headers=s3_api.auth())
    assert got.status_code == 200 and got.content == data
    keys, uploads = bucket_state(s3_api)
    assert not uploads and not [k for k in keys if f"staging/{final_id}/" in k]


async def test_tus_concatenation_of_a_small_partial_streams_it(s3_api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A partial under S3's 5 MiB part minimum (not the last) cannot be an S3 part of its own: its
    copy is concatenated with what follows through chunkd, and the final is still right."""
    chunks = [os.urandom(300_000), os.urandom(6 * MiB)]
    partials = [await _tus_partial(s3_api, chunk) for chunk in chunks]
    calls = _count_calls(s3_api, monkeypatch)
    urls = " ".join(f"/files/{i}" for i in partials)
    made = await s3_api.client.post(
        "/files", headers={"Tus-Resumable": "1.0.0", **s3_api.auth(), "Upload-Concat": f"final;{urls}"}
    )
    assert made.status_code == 201, made.text
    final_id = made.headers["location"].rsplit("/", 1)[1]
    data = b"".join(chunks)
    assert (await s3_api.runtime.uploads.get("alice", final_id)).md5 == hashlib.md5(data).hexdigest()
    uploaded = [kwargs["ContentLength"] for method, kwargs in calls if method == "upload_part"]
    assert uploaded == [MIN_S3_PART]  # the small partial and the start of the next, re-uploaded once
    assert [m for m, _ in calls].count("upload_part_copy") == 1  # the rest of the big one
    got = await s3_api.client.get(f"/files/{final_id}", headers=s3_api.auth())
    assert got.content == data


async def test_tus_concatenation_may_name_a_partial_twice(s3_api: Api) -> None:
    """The same partial named twice (tus allows it) is copied inside the store once per mention."""
    big, small = os.urandom(6 * MiB), os.urandom(100_000)
    big_id, small_id = await _tus_partial(s3_api, big), await _tus_partial(s3_api, small)
    urls = " ".join(f"/files/{i}" for i in (big_id, small_id, big_id, small_id))
    made = await s3_api.client.post(
        "/files", headers={"Tus-Resumable": "1.0.0", **s3_api.auth(), "Upload-Concat": f"final;{urls}"}
    )
    assert made.status_code == 201, made.text
    final_id = made.headers["location"].rsplit("/", 1)[1]
    data = big + small + big + small
    assert (await s3_api.runtime.uploads.get("alice", final_id)).md5 == hashlib.md5(data).hexdigest()
    got = await s3_api.client.get(f"/files/{final_id}", headers=s3_api.auth())
    assert got.content == data


async def test_complete_of_a_small_append_upload_after_a_crash_that_followed_s3_completion(s3_api: Api) -> None:
    """An APPEND upload under 5 MiB gets its multipart upload only at completion, so the state that
    names it is saved with the COMPLETED record: a crash right after CompleteMultipartUpload leaves
    the retried complete with no record of it. It builds the file again from the staged parts
    (kept until the record is saved) in a new multipart upload, and leaves no stray one."""
    service = s3_api.runtime.uploads
    data = os.urandom(300_000)
    upload = await service.create("alice", filename="t.bin", size_bytes=len(data), mode=Mode.APPEND)
    await service.append("alice", upload.id, 0, body(data[:100_000]))
    await service.append("alice", upload.id, 100_000, body(data[100_000:]))
    loaded = await s3_api.runtime.repo.get(upload.id)
    assert loaded is not None and "uploadId" not in loaded.metadata.get(STATE, {})
    await store_of(s3_api).complete(loaded)  # S3 side done; the engine's record stays PENDING
    done = await service.complete("alice", upload.id, md5=hashlib.md5(data).hexdigest())
    assert done.status is Status.COMPLETED
    assert bucket_state(s3_api) == ([store_of(s3_api).final_key(done)], [])  # no stray multipart upload
    assert b"".join([c async for c in service.read(done)]) == data
    # The key it was found at is recorded: a later rename does not lose the file.
    renamed = await service.rename("alice", upload.id, "other name.bin")
    assert b"".join([c async for c in service.read(renamed)]) == data


async def test_complete_that_carried_the_hash_survives_a_crash_before_its_record(
    s3_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``complete`` carries a hash frontier that fell behind (the node that stored the parts died
    before it did) by reading staged parts, then S3's completion deletes them. If the COMPLETED
    record is then not written (a crash, the database away), the retried complete must not need
    those parts again: the carried frontier is recorded before the store finishes the file."""
    service = s3_api.runtime.uploads
    repo = service.repo
    data = os.urandom(6 * MiB + 1)
    upload = await service.create("alice", filename="h.bin", size_bytes=len(data), part_size=3 * MiB)
    await put_parts(service, upload.id, data, 3 * MiB, [1, 2, 3])
    loaded = await repo.get(upload.id)
    assert loaded is not None
    loaded.hash_offset, loaded.hash_state = 0, ResumableMD5().state()
    await repo.save(loaded)
    real_save = repo.save

    async def dies_before_recording_completion(target: Upload, *args: Any, **kwargs: Any) -> None:
        if target.status is Status.COMPLETED:
            raise ConnectionError("the node died before the COMPLETED record was written")
        await real_save(target, *args, **kwargs)

    monkeypatch.setattr(repo, "save", dies_before_recording_completion)
    with pytest.raises(ConnectionError):
        await service.complete("alice", upload.id)
    monkeypatch.setattr(repo, "save", real_save)
    assert (await service.get("alice", upload.id)).status is Status.PENDING
    await check_complete(s3_api, upload.id, data, 2)


async def test_gc_sweeps_the_staged_parts_a_completion_could_not_delete(
    s3_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staged parts whose deletion failed after a completion were referenced by the completed
    upload's part rows, so ``chunkd gc`` kept them for as long as the file lived (twice its size
    in the bucket). The file is complete in S3, so gc removes them and keeps the file."""
    service = s3_api.runtime.uploads
    store = store_of(s3_api)
    done, data = await _complete_with_cleanup_dropped(s3_api, monkeypatch, "g.bin")
    key = store.final_key(done)
    assert len(bucket_state(s3_api)[0]) == 4  # the file and its three staged parts
    # A pending upload with an S3 part built (a multipart upload open) keeps everything.
    big = os.urandom(MIN_S3_PART + 5)
    pending = await service.create("alice", filename="p.bin", size_bytes=len(big), part_size=MIN_S3_PART)
    await put_parts(service, pending.id, big, MIN_S3_PART, [1])
    kept = sorted(k for k in bucket_state(s3_api)[0] if pending.id in k)
    assert len(kept) == 1
    repo = s3_api.runtime.repo
    assert await store.sweep(await repo.live_blobs(), grace_seconds=0, completed=await repo.completed_ids()) == 3
    objects, uploads = bucket_state(s3_api)
    assert sorted(objects) == sorted([key, *kept])
    assert [u["Key"] for u in uploads] == [store.final_key(await service.get("alice", pending.id))]
    assert b"".join([c async for c in service.read(await service.get("alice", done.id))]) == data


async def test_gc_keeps_the_staged_parts_of_a_completion_whose_record_was_lost(
    s3_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file S3 has assembled does not make its staged parts spent while the upload is PENDING
    (its COMPLETED record was lost with its lock): the upload resumes on them. gc deleted them
    as those of a finished file, and the resumed upload could never complete. What gc frees is
    the final PATCH's own staged object, which no row names: the engine keeps the blob of a save
    whose outcome it cannot know (its lock lost) for gc to judge."""
    repo = s3_api.runtime.uploads.repo
    url, data, head = await _tus_completion_record_lost(s3_api, monkeypatch)
    store = store_of(s3_api)
    assert await store.sweep(await repo.live_blobs(), grace_seconds=0, completed=await repo.completed_ids()) == 1
    await _resume_tus_completion(s3_api, url, data, head)


async def test_object_store_faults_during_complete_are_503_and_retryable(
    s3_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway answering 503 SlowDown (or being unreachable) while a file is completed is a
    storage fault: 503 with Retry-After in the client's dialect, not a 500; the upload stays
    PENDING and completes once the gateway is back."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    auth = s3_api.auth()
    store = store_of(s3_api)
    data = os.urandom(2 * MiB + 5)
    created = await s3_api.client.post(
        "/v1/files", json={"filename": "f.bin", "sizeBytes": len(data), "partSize": MiB}, headers=auth
    )
    file_id = created.json()["id"]
    for n, start in enumerate(range(0, len(data), MiB), 1):
        put = await s3_api.client.put(f"/v1/files/{file_id}/parts/{n}", content=data[start : start + MiB], headers=auth)
        assert put.status_code == 200, put.text

    def slow_down(**kwargs: Any) -> Any:
        error = {"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}}
        raise ClientError({**error, "ResponseMetadata": {"HTTPStatusCode": 503}}, "CompleteMultipartUpload")

    def unreachable(**kwargs: Any) -> Any:
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    faults = ((slow_down, "complete_multipart_upload"), (unreachable, "list_parts"), (slow_down, "head_object"))
    for fault, method in faults:
        with monkeypatch.context() as patched:
            patched.setattr(store.patient_client if method in PATIENT_CALLS else store.client, method, fault)
            refused = await s3_api.client.post(f"/v1/files/{file_id}/complete", headers=auth)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "storage_unavailable"
        assert int(refused.headers["retry-after"]) > 0
        assert (await s3_api.client.get(f"/v1/files/{file_id}", headers=auth)).json()["status"] == "PENDING"
    done = await s3_api.client.post(f"/v1/files/{file_id}/complete", headers=auth)
    assert done.status_code == 200, done.text
    got = await s3_api.client.get(f"/v1/files/{file_id}/content", headers=auth)
    assert got.content == data


async def test_a_store_that_hangs_is_a_503_and_the_upload_resumes(
    s3_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that takes connections and never answers: each try waits at most
    ``s3_timeout_seconds``, so the part is refused with a 503 (nothing recorded) instead of holding
    the request and the upload's lock for minutes; the same part is taken once the store answers."""
    settings = s3_settings.model_copy(update={"s3_timeout_seconds": 0.5, "s3_attempts": 2})
    hung = socket.create_server(("127.0.0.1", 0))  # listens, never accepts or answers
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime = app.state.chunkd
        store = runtime.blobs
        assert isinstance(store, S3BlobStore)
        config = store.client.meta.config
        assert (config.read_timeout, config.connect_timeout, config.retries["total_max_attempts"]) == (0.5, 0.5, 2)
        # Server-side copies and completions may keep a slow cluster busy for minutes before it answers.
        patient = store.patient_client.meta.config
        assert (patient.read_timeout, patient.connect_timeout) == (PATIENT_READ_TIMEOUT, 0.5)
        _, key = await runtime.keys.create("alice", "files:create,files:read")
        auth = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            created = await client.post("/v1/files", json={"filename": "h.bin", "sizeBytes": 10}, headers=auth)
            file_id = created.json()["id"]
            with hung, monkeypatch.context() as patched:
                patched.setattr(
                    store,
                    "client",
                    s3_module.make_client(
                        endpoint=f"http://127.0.0.1:{hung.getsockname()[1]}",
                        region="us-east-1",
                        access_key="k",
                        secret_key="s",
                        max_connections=2,
                        timeout=0.5,
                        attempts=2,
                    ),
                )
                refused = await client.put(f"/v1/files/{file_id}/parts/1", content=b"0123456789", headers=auth)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "storage_unavailable"
            assert (await client.get(f"/v1/files/{file_id}", headers=auth)).json()["bytesReceived"] == 0
            taken = await client.put(f"/v1/files/{file_id}/parts/1", content=b"0123456789", headers=auth)
            assert taken.status_code == 200, taken.text


@pytest.mark.parametrize("ending", ["cancel", "delete"])
async def test_an_ending_the_object_store_fails_to_free_is_done_and_gc_frees_it(
    s3_api: Api, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """A cancel or delete is recorded first and its bytes are freed after: the store failing then
    (a 500 before, a 503 once storage faults were mapped) told the client to retry an operation
    that was done, and a retried cancel got 409. It answers as done; gc frees the bytes later."""
    from botocore.exceptions import EndpointConnectionError

    auth = s3_api.auth()
    store = store_of(s3_api)
    data = os.urandom(7 * MiB)
    created = await s3_api.client.post(
        "/v1/files", json={"filename": "e.bin", "sizeBytes": len(data), "partSize": MiB}, headers=auth
    )
    file_id = created.json()["id"]
    for n in range(1, 7):
        put = await s3_api.client.put(
            f"/v1/files/{file_id}/parts/{n}", content=data[(n - 1) * MiB : n * MiB], headers=auth
        )
        assert put.status_code == 200, put.text
    assert bucket_state(s3_api)[1]  # a multipart upload is open (S3 part 1 was built)

    def unreachable(**kwargs: Any) -> Any:
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    with monkeypatch.context() as patched:
        for method in ("abort_multipart_upload", "delete_objects"):
            patched.setattr(store.client, method, unreachable)
        if ending == "cancel":
            ended = await s3_api.client.post(f"/v1/files/{file_id}/cancel", headers=auth)
            assert ended.status_code == 200 and ended.json()["status"] == "CANCELLED", ended.text
        else:
            ended = await s3_api.client.delete(f"/v1/files/{file_id}", headers=auth)
            assert ended.status_code == 204, ended.text
    assert await store.sweep(await s3_api.runtime.repo.live_blobs(), grace_seconds=0) == 7
    assert bucket_state(s3_api) == ([], [])


async def test_a_download_while_the_object_store_fails_is_503_before_any_byte(
    s3_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file was first read once the 200 and its headers were sent, so a store that could not
    serve it (unreachable, 503) cut a 200 short: the client saw a broken transfer, not a status
    saying to try again. The first bytes are read before the answer starts."""
    from botocore.exceptions import EndpointConnectionError

    service = s3_api.runtime.uploads
    data = os.urandom(MiB + 5)
    upload = await service.create("alice", filename="d.bin", size_bytes=len(data), part_size=MiB)
    await put_parts(service, upload.id, data, MiB, [1, 2])
    await service.complete("alice", upload.id)

    def unreachable(**kwargs: Any) -> Any:
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    with monkeypatch.context() as patched:
        patched.setattr(store_of(s3_api).client, "get_object", unreachable)
        for ranged in ({}, {"Range": "bytes=10-19"}):
            refused = await s3_api.client.get(f"/v1/files/{upload.id}/content", headers={**s3_api.auth(), **ranged})
            assert refused.status_code == 503, refused.text
            assert int(refused.headers["retry-after"]) > 0
    got = await s3_api.client.get(f"/v1/files/{upload.id}/content", headers=s3_api.auth())
    assert got.status_code == 200 and got.content == data
    empty = await service.create("alice", filename="e.bin", size_bytes=0)
    await service.complete("alice", empty.id)
    nothing = await s3_api.client.get(f"/v1/files/{empty.id}/content", headers=s3_api.auth())
    assert nothing.status_code == 200 and nothing.content == b""


async def test_a_file_deleted_between_its_lookup_and_its_first_read_is_404(
    s3_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delete commits (and removes the object) after the download looked the file up and
    before it read a byte: a 404 as for any missing file, not the 503 of a store that is down."""
    service = s3_api.runtime.uploads
    upload = await service.create("alice", filename="d.bin", size_bytes=MiB, part_size=MiB)
    await put_parts(service, upload.id, os.urandom(MiB), MiB, [1])
    await service.complete("alice", upload.id)
    real_read = service.blobs.read

    async def read_after_a_delete(found: Upload, start: int, end: int) -> AsyncIterator[bytes]:
        await service.delete("alice", found.id)
        async for chunk in real_read(found, start, end):
            yield chunk

    monkeypatch.setattr(service.blobs, "read", read_after_a_delete)
    gone = await s3_api.client.get(f"/v1/files/{upload.id}/content", headers=s3_api.auth())
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found", gone.text


async def test_a_multipart_copy_left_by_a_crash_is_aborted_by_cancel_and_gc(s3_api: Api) -> None:
    """A concatenation copies a source past CopyObject's limit into a staged part by a multipart
    copy on the staged key. A node dying during that copy left the multipart upload open, and only
    those under masters/ were ever aborted: neither the upload's cancel nor gc freed its parts."""
    service = s3_api.runtime.uploads
    store = store_of(s3_api)
    client = s3(s3_api)
    live = await service.create("alice", filename="c.bin", size_bytes=None, mode=Mode.APPEND)
    ghost = "H" * 22
    for upload_id in (ghost, live.id):
        made = client.create_multipart_upload(Bucket=store.bucket, Key=f"chunkd/staging/{upload_id}/1.abcdefghijkl")
        client.upload_part(
            Bucket=store.bucket, Key=made["Key"], UploadId=made["UploadId"], PartNumber=1, Body=b"x" * 1000
        )
    assert await store.sweep(await s3_api.runtime.repo.live_blobs(), grace_seconds=0) == 1
    assert [u["Key"] for u in bucket_state(s3_api)[1]] == [f"chunkd/staging/{live.id}/1.abcdefghijkl"]
    await service.cancel("alice", live.id)
    assert bucket_state(s3_api) == ([], [])
