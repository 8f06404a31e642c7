"""A storage fault (a full disk, an I/O error) in the middle of a body, for every dialect that
appends and for parts: the request gets 507 (or 503) in its own dialect, nothing past the durable
bytes is recorded, the server keeps answering, and the upload resumes once space is back."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from chunkd.backends.blobs import local, local_fs
from chunkd.backends.repository.sqlite.uploads import SqliteUploadRepository
from chunkd.domain.errors import NotFound, StorageError
from chunkd.domain.upload import Upload
from tests.api.test_pm_api import BOUNDARY, form
from tests.conftest import Api

TUS = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}


@dataclass
class Disk:
    """Room left on a simulated volume: the write syscall fails with ``error`` once it is used up,
    after writing what still fitted (as a real full disk does)."""

    room: int | None = None
    error: int = errno.ENOSPC

    def fill(self, room: int, error: int = errno.ENOSPC) -> None:
        self.room, self.error = room, error

    def free(self) -> None:
        self.room = None


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    state = Disk()
    real = local_fs.writev_all

    def writev_all(fd: int, chunks: Sequence[bytes]) -> int:
        if state.room is None:
            return real(fd, chunks)
        data = b"".join(chunks)
        fits = data[: state.room]
        written = real(fd, [fits]) if fits else 0
        state.room -= written
        if written < len(data):
            raise OSError(state.error, os.strerror(state.error))
        return written

    monkeypatch.setattr(local_fs, "writev_all", writev_all)
    yield state


async def stored_bytes(api: Api, upload_id: str) -> int:
    """Bytes really on disk for the upload's recorded parts (what a download could serve)."""
    upload = await api.runtime.uploads.get("alice", upload_id)
    store = api.runtime.uploads.blobs
    assert isinstance(store, local.LocalBlobStore)
    total = 0
    for part in upload.sorted_parts():
        on_disk = (store.root / upload_id[:2] / upload_id / part.blob_ref).stat().st_size
        total += min(on_disk, part.size)
    return total


async def test_tus_patch_on_a_full_disk_keeps_nothing_past_the_durable_bytes(api: Api, disk: Disk) -> None:
    data = os.urandom(3 * 1024 * 1024 + 77)
    headers = {**api.auth(), "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data))}
    created = await api.client.post("/files", headers=headers)
    upload_id = created.headers["location"].rsplit("/", 1)[1]
    first = 1024 * 1024
    ok = await api.client.patch(
        f"/files/{upload_id}", content=data[:first], headers={**api.auth(), **TUS, "Upload-Offset": "0"}
    )
    assert ok.status_code == 204
    disk.fill(room=600_000)  # the next PATCH runs out of space part-way
    full = await api.client.patch(
        f"/files/{upload_id}", content=data[first:], headers={**api.auth(), **TUS, "Upload-Offset": str(first)}
    )
    assert full.status_code == 507, full.text
    assert full.headers["tus-resumable"] == "1.0.0" and full.headers["content-type"].startswith("text/plain")
    head = await api.client.head(f"/files/{upload_id}", headers={**api.auth(), "Tus-Resumable": "1.0.0"})
    offset = int(head.headers["upload-offset"])
    assert offset == first  # nothing of the failed request was recorded
    assert await stored_bytes(api, upload_id) == offset
    # The server still answers, and the upload resumes once there is room again.
    assert (await api.client.get("/v1/files", headers=api.auth())).status_code == 200
    disk.free()
    rest = await api.client.patch(
        f"/files/{upload_id}", content=data[offset:], headers={**api.auth(), **TUS, "Upload-Offset": str(offset)}
    )
    assert rest.status_code == 204, rest.text
    done = (await api.client.get(f"/v1/files/{upload_id}", headers=api.auth())).json()
    assert done["status"] == "COMPLETED" and done["md5"] == hashlib.md5(data).hexdigest()
    content = await api.client.get(f"/v1/files/{upload_id}/content", headers=api.auth())
    assert content.content == data


async def test_an_io_error_is_503_and_records_nothing(api: Api, disk: Disk) -> None:
    data = os.urandom(2 * 1024 * 1024)
    headers = {**api.auth(), "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data))}
    created = await api.client.post("/files", headers=headers)
    upload_id = created.headers["location"].rsplit("/", 1)[1]
    disk.fill(room=100_000, error=errno.EIO)
    failed = await api.client.patch(
        f"/files/{upload_id}", content=data, headers={**api.auth(), **TUS, "Upload-Offset": "0"}
    )
    assert failed.status_code == 503, failed.text
    head = await api.client.head(f"/files/{upload_id}", headers={**api.auth(), "Tus-Resumable": "1.0.0"})
    assert head.headers["upload-offset"] == "0"


@pytest.mark.parametrize("size", [200_000, 3 * 1024 * 1024], ids=["one-write-body", "streamed-body"])
@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO], ids=["full", "io-error"])
async def test_a_tus_creation_with_upload_a_storage_fault_refuses_leaves_no_upload(
    api: Api, disk: Disk, size: int, error: int
) -> None:
    """The creation is answered 507/503 without Location, so its client can never reach the
    upload: none is left behind. One was left PENDING, counted against the owner's quotas (the
    client's retry once storage was back met its own pending-uploads quota) for its whole TTL."""
    data = os.urandom(size)
    headers = {**api.auth(), **TUS, "Upload-Length": str(len(data))}
    disk.fill(room=100_000, error=error)
    failed = await api.client.post("/files", content=data, headers=headers)
    assert failed.status_code == (507 if error == errno.ENOSPC else 503), failed.text
    assert "location" not in failed.headers
    assert (await api.client.get("/v1/files", headers=api.auth())).json()["data"] == []
    disk.free()
    retried = await api.client.post("/files", content=data, headers=headers)
    assert retried.status_code == 201, retried.text
    upload_id = retried.headers["location"].rsplit("/", 1)[1]
    done = (await api.client.get(f"/v1/files/{upload_id}", headers=api.auth())).json()
    assert done["status"] == "COMPLETED" and done["md5"] == hashlib.md5(data).hexdigest()


async def test_native_part_on_a_full_disk_is_507_and_not_stored(api: Api, disk: Disk) -> None:
    data = os.urandom(3 * 1024 * 1024)
    created = await api.client.post(
        "/v1/files", json={"filename": "f.bin", "sizeBytes": len(data), "partSize": 1024 * 1024}, headers=api.auth()
    )
    file_id = created.json()["id"]
    disk.fill(room=300_000)
    full = await api.client.put(f"/v1/files/{file_id}/parts/1", content=data[: 1024 * 1024], headers=api.auth())
    assert full.status_code == 507, full.text
    assert full.json()["error"]["code"] == "storage_full"
    got = (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()
    assert got["parts"] == [] and got["bytesReceived"] == 0
    disk.free()
    for n in range(3):
        part = data[n * 1024 * 1024 : (n + 1) * 1024 * 1024]
        assert (
            await api.client.put(f"/v1/files/{file_id}/parts/{n + 1}", content=part, headers=api.auth())
        ).status_code == 200
    done = await api.client.post(
        f"/v1/files/{file_id}/complete", json={"md5": hashlib.md5(data).hexdigest()}, headers=api.auth()
    )
    assert done.status_code == 200, done.text


async def test_media_chunk_on_a_full_disk_is_507_in_its_dialect(api: Api, disk: Disk) -> None:
    data = os.urandom(150_000)
    disk.fill(room=10_000)
    response = await api.client.post(
        "/api/v2/media/upload/chunk/",
        files={"image": ("photo.png", data, "image/png")},
        headers={**api.auth(), "Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"},
    )
    assert response.status_code == 507, response.text
    assert "detail" in response.json() or "error" in response.json()


async def test_pm_chunk_on_a_full_disk_is_507_and_retryable(api: Api, disk: Disk) -> None:
    data = os.urandom(100_000)
    disk.fill(room=10_000)
    body = form([("qquuid", "6c1b2b9e-8d0c-4a43-9a55-1d3f2a5e0c11"), ("qqfilename", "a.bin")], data)
    response = await api.client.post(
        "/api/v2/pm/upload/",
        content=body,
        headers={**api.auth(), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert response.status_code == 507, response.text
    answer = response.json()
    assert answer["success"] is False and answer.get("preventRetry") is not True


async def test_below_the_free_space_floor_new_bytes_and_uploads_are_refused(api: Api) -> None:
    store = api.runtime.uploads.blobs
    assert isinstance(store, local.LocalBlobStore)
    stats = os.statvfs(store.root)
    store.min_free_bytes = stats.f_bavail * stats.f_frsize * 2  # more than the volume has free
    created = await api.client.post("/v1/files", json={"filename": "f.bin", "sizeBytes": 10}, headers=api.auth())
    assert created.status_code == 507 and created.json()["error"]["code"] == "storage_full"
    store.min_free_bytes = 0
    assert (
        await api.client.post("/v1/files", json={"filename": "f", "sizeBytes": 1}, headers=api.auth())
    ).status_code == 201


async def test_a_full_database_is_507_and_the_upload_resumes(api: Api) -> None:
    # The metadata database's volume full too (no free-space floor, or another writer filled it):
    # SQLite's "database or disk is full" is the same clear 507 as a full blob volume, not a 500.
    repo = api.runtime.repo
    if not isinstance(repo, SqliteUploadRepository):
        pytest.skip("SQLite's own size limit stands in for a full volume")
    data = os.urandom(300_000)
    created = await api.client.post(
        "/files", headers={**api.auth(), "Tus-Resumable": "1.0.0", "Upload-Length": "300000"}
    )
    upload_id = created.headers["location"].rsplit("/", 1)[1]
    first = await api.client.patch(
        f"/files/{upload_id}", content=data[:100_000], headers={**api.auth(), **TUS, "Upload-Offset": "0"}
    )
    assert first.status_code == 204

    def limit(pages: int | None) -> Callable[[sqlite3.Connection], None]:
        def work(conn: sqlite3.Connection) -> None:
            count = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages if pages is not None else count}")

        return work

    await repo.writer.write(limit(None))  # not one page more: the next write that grows the file fails
    for _ in range(200):  # a row may fit in a page with room left: create until one does not
        refused = await api.client.post("/v1/files", json={"filename": "f.bin", "sizeBytes": 10}, headers=api.auth())
        if refused.status_code != 201:
            break
    assert refused.status_code == 507 and refused.json()["error"]["code"] == "storage_full", refused.text
    for _ in range(200):  # likewise for appends
        head = await api.client.head(f"/files/{upload_id}", headers={**api.auth(), "Tus-Resumable": "1.0.0"})
        offset = int(head.headers["upload-offset"])
        full = await api.client.patch(
            f"/files/{upload_id}",
            content=data[offset : offset + 1000],
            headers={**api.auth(), **TUS, "Upload-Offset": str(offset)},
        )
        if full.status_code != 204:
            break
    assert full.status_code == 507, full.text
    assert await stored_bytes(api, upload_id) >= offset
    await repo.writer.write(limit(2**30))
    rest = await api.client.patch(
        f"/files/{upload_id}", content=data[offset:], headers={**api.auth(), **TUS, "Upload-Offset": str(offset)}
    )
    assert rest.status_code == 204, rest.text
    done = (await api.client.get(f"/v1/files/{upload_id}", headers=api.auth())).json()
    assert done["status"] == "COMPLETED" and done["md5"] == hashlib.md5(data).hexdigest()


async def test_a_part_a_full_database_refuses_leaves_no_bytes_behind(api: Api) -> None:
    """The database says no for lack of room: the save's outcome is known, so the part's blob is
    freed at once (kept, it would only take more of the space that is short), not left for gc."""
    repo = api.runtime.repo
    if not isinstance(repo, SqliteUploadRepository):
        pytest.skip("SQLite's own size limit stands in for a full volume")
    created = await api.client.post(
        "/v1/files", json={"filename": "p.bin", "sizeBytes": 4000, "partSize": 10}, headers=api.auth()
    )
    file_id = created.json()["id"]
    count = (await repo.readers.read(lambda conn: conn.execute("PRAGMA page_count").fetchone()))[0]
    await repo.writer.write(lambda conn: conn.execute(f"PRAGMA max_page_count = {count}") and None)
    for number in range(1, 401):  # a row may fit in a page with room left: send parts until one does not
        put = await api.client.put(f"/v1/files/{file_id}/parts/{number}", content=b"0123456789", headers=api.auth())
        if put.status_code != 200:
            break
    assert put.status_code == 507 and put.json()["error"]["code"] == "storage_full", put.text
    store = api.runtime.uploads.blobs
    assert isinstance(store, local.LocalBlobStore)
    assert not list((store.root / file_id[:2] / file_id).glob(f"{number}.*.part"))
    await repo.writer.write(lambda conn: conn.execute("PRAGMA max_page_count = 1073741824") and None)


def part_file(api: Api, upload_id: str, number: int) -> Path:
    store = api.runtime.uploads.blobs
    assert isinstance(store, local.LocalBlobStore)
    (found,) = (store.root / upload_id[:2] / upload_id).glob(f"{number}.*.part")
    return found


async def test_a_part_lost_from_storage_is_503_at_complete_and_the_upload_resumes(api: Api) -> None:
    # Storage lost a part's file (a disk replaced, a restore, an operator) before complete had to
    # read it back to carry the MD5: the complete is a 503 naming storage, not a 500 traceback;
    # the upload stays PENDING and completes once the part is sent again.
    size = 100_000
    data = os.urandom(3 * size)
    created = await api.client.post(
        "/v1/files", json={"filename": "f.bin", "sizeBytes": len(data), "partSize": size}, headers=api.auth()
    )
    file_id = created.json()["id"]
    for number in (3, 2):  # ahead of the hash frontier: read back once part 1 arrives
        put = await api.client.put(
            f"/v1/files/{file_id}/parts/{number}", content=data[(number - 1) * size : number * size], headers=api.auth()
        )
        assert put.status_code == 200, put.text
    part_file(api, file_id, 2).unlink()
    first = await api.client.put(f"/v1/files/{file_id}/parts/1", content=data[:size], headers=api.auth())
    assert first.status_code == 200, first.text  # the hash run that fails here leaves it to complete
    md5 = hashlib.md5(data).hexdigest()
    failed = await api.client.post(f"/v1/files/{file_id}/complete", json={"md5": md5}, headers=api.auth())
    assert failed.status_code == 503, failed.text
    assert failed.json()["error"]["code"] == "storage_unavailable" and failed.headers["retry-after"]
    assert (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()["status"] == "PENDING"
    again = await api.client.put(f"/v1/files/{file_id}/parts/2", content=data[size : 2 * size], headers=api.auth())
    assert again.status_code == 200, again.text
    done = await api.client.post(f"/v1/files/{file_id}/complete", json={"md5": md5}, headers=api.auth())
    assert done.status_code == 200, done.text
    assert (await api.client.get(f"/v1/files/{file_id}/content", headers=api.auth())).content == data


async def test_a_download_whose_part_file_is_gone_is_503_before_any_byte(api: Api) -> None:
    data = os.urandom(50_000)
    created = await api.client.post("/v1/files", json={"filename": "f.bin", "sizeBytes": len(data)}, headers=api.auth())
    file_id = created.json()["id"]
    assert (await api.client.put(f"/v1/files/{file_id}/parts/1", content=data, headers=api.auth())).status_code == 200
    done = await api.client.post(f"/v1/files/{file_id}/complete", json={}, headers=api.auth())
    assert done.status_code == 200, done.text
    part_file(api, file_id, 1).unlink()
    gone = await api.client.get(f"/v1/files/{file_id}/content", headers=api.auth())
    assert gone.status_code == 503, gone.text
    assert gone.json()["error"]["code"] == "storage_unavailable"


async def test_an_append_to_a_part_file_storage_cut_short_is_503_not_zeros(api: Api) -> None:
    # Storage lost the tail of the part file a tus upload continues: the next PATCH is a 503 and
    # nothing is recorded; before, the file was padded with zeros to its recorded size and the
    # upload completed with the MD5 of the bytes that were sent, not of the bytes stored.
    data = os.urandom(200_000)
    created = await api.client.post(
        "/files", headers={**api.auth(), "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data))}
    )
    upload_id = created.headers["location"].rsplit("/", 1)[1]
    first = await api.client.patch(
        f"/files/{upload_id}", content=data[:100_000], headers={**api.auth(), **TUS, "Upload-Offset": "0"}
    )
    assert first.status_code == 204, first.text
    stored = part_file(api, upload_id, 1)
    os.truncate(stored, 60_000)
    rest = await api.client.patch(
        f"/files/{upload_id}", content=data[100_000:], headers={**api.auth(), **TUS, "Upload-Offset": "100000"}
    )
    assert rest.status_code == 503, rest.text
    state = (await api.client.get(f"/v1/files/{upload_id}", headers=api.auth())).json()
    assert (state["status"], state["bytesReceived"]) == ("PENDING", 100_000)
    assert stored.stat().st_size == 60_000  # not padded


async def test_a_part_whose_file_cannot_be_removed_after_a_fault_is_still_503(
    api: Api, disk: Disk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A disk error turns the volume read-only: the write fails, and so does the removal of the
    # half-written file on the way out. The answer is the fault's 503, not a 500 from the cleanup.
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.suffix == ".part":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        real_unlink(self, missing_ok=missing_ok)

    created = await api.client.post("/v1/files", json={"filename": "f.bin", "sizeBytes": 100_000}, headers=api.auth())
    file_id = created.json()["id"]
    disk.fill(room=30_000, error=errno.EIO)
    monkeypatch.setattr(Path, "unlink", unlink)
    failed = await api.client.put(f"/v1/files/{file_id}/parts/1", content=os.urandom(100_000), headers=api.auth())
    assert failed.status_code == 503, failed.text
    monkeypatch.setattr(Path, "unlink", real_unlink)
    disk.free()
    data = os.urandom(100_000)
    assert (await api.client.put(f"/v1/files/{file_id}/parts/1", content=data, headers=api.auth())).status_code == 200
    done = await api.client.post(f"/v1/files/{file_id}/complete", json={}, headers=api.auth())
    assert done.status_code == 200, done.text


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/files/{id}/content", {}),
        ("/v1/files/{id}/content", {"Range": "bytes=100-199"}),
        ("/v1/files/{id}/content", {"Want-Repr-Digest": "sha-256=10"}),  # read whole before the status line
        ("/files/{id}", {"Tus-Resumable": "1.0.0"}),
    ],
    ids=["native", "native-range", "native-digest", "tus"],
)
async def test_a_file_deleted_between_its_lookup_and_its_first_read_is_404(
    api: Api, monkeypatch: pytest.MonkeyPatch, path: str, headers: dict[str, str]
) -> None:
    # The delete commits after the download looked the file up and before it read a byte: the file
    # is gone, which is a 404 as for any missing file, not a 503 saying storage is down.
    data = os.urandom(50_000)
    if path.startswith("/files"):  # tus serves its own uploads
        made = await api.client.post("/files", content=data, headers={**api.auth(), **TUS, "Upload-Length": "50000"})
        assert made.status_code == 201, made.text
        file_id = made.headers["location"].rsplit("/", 1)[1]
    else:
        created = await api.client.post("/v1/files", json={"filename": "f", "sizeBytes": len(data)}, headers=api.auth())
        file_id = created.json()["id"]
        assert (await api.client.put(f"/v1/files/{file_id}/parts/1", content=data, headers=api.auth())).status_code
        assert (await api.client.post(f"/v1/files/{file_id}/complete", json={}, headers=api.auth())).status_code == 200
    service = api.runtime.uploads
    real_read = service.blobs.read

    async def read_after_a_delete(upload: Upload, start: int, end: int) -> AsyncIterator[bytes]:
        with contextlib.suppress(NotFound):  # the digest's read, then the body's
            await service.delete("alice", upload.id)
        async for chunk in real_read(upload, start, end):
            yield chunk

    monkeypatch.setattr(service.blobs, "read", read_after_a_delete)
    gone = await api.client.get(path.format(id=file_id), headers={**api.auth(), **headers})
    assert gone.status_code == 404, gone.text
    if path.startswith("/v1"):
        assert gone.json()["error"]["code"] == "not_found"


async def test_a_completed_file_whose_storage_fails_at_the_first_read_is_still_503(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same fault on a file still recorded is storage's: 503, as before.
    created = await api.client.post("/v1/files", json={"filename": "f.bin", "sizeBytes": 10}, headers=api.auth())
    file_id = created.json()["id"]
    assert (await api.client.put(f"/v1/files/{file_id}/parts/1", content=b"x" * 10, headers=api.auth())).status_code
    assert (await api.client.post(f"/v1/files/{file_id}/complete", json={}, headers=api.auth())).status_code == 200

    async def failing_read(upload: Upload, start: int, end: int) -> AsyncIterator[bytes]:
        raise StorageError("the volume went away")
        yield b""

    monkeypatch.setattr(api.runtime.uploads.blobs, "read", failing_read)
    failed = await api.client.get(f"/v1/files/{file_id}/content", headers=api.auth())
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "storage_unavailable", failed.text


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO], ids=["full", "io-error"])
async def test_an_ietf_draft_append_on_a_failing_disk_keeps_nothing_and_resumes(
    api: Api, disk: Disk, error: int
) -> None:
    # The draft's creation with a first piece, then an append storage cuts off part-way: 507 (or
    # 503) as a problem document, the offset retrieval says the acknowledged bytes, the client
    # resumes there once storage is back.
    data = os.urandom(2 * 1024 * 1024 + 11)
    draft = {**api.auth(), "Upload-Draft-Interop-Version": "8"}
    first = 700_000
    made = await api.client.post("/files", content=data[:first], headers={**draft, "Upload-Complete": "?0"})
    assert made.status_code == 201, made.text
    path = "/files/" + made.headers["location"].rsplit("/", 1)[1]
    append = {**draft, "Content-Type": "application/partial-upload"}
    disk.fill(room=300_000, error=error)
    failed = await api.client.patch(
        path, content=data[first:], headers={**append, "Upload-Offset": str(first), "Upload-Complete": "?1"}
    )
    assert failed.status_code == (507 if error == errno.ENOSPC else 503), failed.text
    assert failed.headers["content-type"].startswith("application/problem+json")
    offset = int((await api.client.head(path, headers=draft)).headers["upload-offset"])
    assert offset == first
    assert await stored_bytes(api, path.rsplit("/", 1)[1]) == offset
    disk.free()
    rest = await api.client.patch(
        path, content=data[offset:], headers={**append, "Upload-Offset": str(offset), "Upload-Complete": "?1"}
    )
    assert rest.status_code in (200, 204), rest.text
    done = (await api.client.get(f"/v1/files/{path.rsplit('/', 1)[1]}", headers=api.auth())).json()
    assert done["status"] == "COMPLETED" and done["md5"] == hashlib.md5(data).hexdigest()
