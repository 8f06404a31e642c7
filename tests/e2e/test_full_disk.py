"""A real full disk: ``chunkd serve`` with its whole data dir on a small tmpfs. A tus upload larger
than the volume gets 507 when the space runs out, the offset it reports is exactly the bytes on disk,
the server keeps answering, and once the volume grows the upload resumes and completes with the
right MD5. Needs root (to mount); skipped with the reason otherwise."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ChunkdServer
from tests.support.volumes import tmpfs
from tests.support.waiting import wait_for

MiB = 1024 * 1024
pytestmark = pytest.mark.e2e


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path, "40M") as volume:
        yield volume


def grow(volume: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(volume)], check=True)


def test_tus_upload_on_a_full_volume_resumes_when_space_is_back(small_volume: Path) -> None:
    server = ChunkdServer(
        small_volume / "data", env={"CHUNKD_FSYNC": "true", "CHUNKD_MIN_FREE_BYTES": str(2 * MiB)}
    ).start()
    try:
        key = server.create_key("alice")
        auth = {"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0"}
        data = os.urandom(64 * MiB)
        with httpx.Client(base_url=server.url, headers=auth, timeout=60) as client:
            created = client.post("/files", headers={"Upload-Length": str(len(data))})
            assert created.status_code == 201, created.text
            path = "/files/" + created.headers["location"].rsplit("/", 1)[1]
            patch = {"Content-Type": "application/offset+octet-stream"}
            offset, refused = 0, None
            while offset < len(data):
                piece = data[offset : offset + 4 * MiB]
                answer = client.patch(path, content=piece, headers={**patch, "Upload-Offset": str(offset)})
                if answer.status_code != 204:
                    refused = answer
                    break
                offset += len(piece)
            assert refused is not None and refused.status_code == 507, refused and refused.text
            reported = int(client.head(path).headers["upload-offset"])
            assert reported == offset  # the refused PATCH added nothing
            upload_id = path.rsplit("/", 1)[1]
            on_disk = sum(f.stat().st_size for f in (small_volume / "data" / "blobs").rglob(f"{upload_id}/*"))
            assert on_disk >= reported  # no recorded byte is missing from storage
            assert client.get("/healthz").status_code == 200
            assert client.get("/v1/files").status_code == 200  # the database still answers
            grow(small_volume, "160M")
            while offset < len(data):
                piece = data[offset : offset + 4 * MiB]
                answer = client.patch(path, content=piece, headers={**patch, "Upload-Offset": str(offset)})
                assert answer.status_code == 204, answer.text
                offset += len(piece)
            info = client.get(f"/v1/files/{upload_id}").json()
            assert info["status"] == "COMPLETED" and info["md5"] == hashlib.md5(data).hexdigest()
            assert hashlib.md5(client.get(f"/v1/files/{upload_id}/content").content).hexdigest() == info["md5"]
    finally:
        server.kill()


def fill(volume: Path) -> Path:
    """Another writer takes every free byte of ``volume``."""
    filler = volume / "filler"
    with open(filler, "wb", buffering=0) as out:
        for size in (MiB, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * size)
    return filler


def test_deleting_and_cancelling_free_a_full_metadata_volume(small_volume: Path) -> None:
    """The volume of the SQLite database (and the blobs) is full: uploads are refused, but a delete
    or a cancel, which is how a user frees space, works, and their bytes are freed. Both were 507:
    SQLite's WAL had no room for the delete itself."""
    data_dir = small_volume / "data"
    server = ChunkdServer(data_dir, env={"CHUNKD_FSYNC": "true", "CHUNKD_MIN_FREE_BYTES": "0"}).start()
    try:
        key = server.create_key("alice")
        auth = {"Authorization": f"Bearer {key}"}
        tus = {**auth, "Tus-Resumable": "1.0.0"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=60) as client:
            ids = []
            for _ in range(2):
                made = client.post("/v1/files", json={"filename": "a.bin", "sizeBytes": 2 * MiB, "partSize": MiB})
                ids.append(made.json()["id"])
                assert client.put(f"/v1/files/{ids[-1]}/parts/1", content=os.urandom(MiB)).status_code == 200
            made = client.post(
                "/files",
                content=os.urandom(MiB),
                headers={**tus, "Upload-Length": str(2 * MiB), "Content-Type": "application/offset+octet-stream"},
            )
            assert made.status_code == 201, made.text
            ids.append(made.headers["location"].rsplit("/", 1)[1])
            filler = fill(small_volume)
            refused = client.post("/v1/files", json={"filename": "b.bin", "sizeBytes": 10})
            assert refused.status_code == 507, refused.text  # what adds is still refused

            deleted = client.delete(f"/v1/files/{ids[0]}")
            assert deleted.status_code == 204, deleted.text
            cancelled = client.post(f"/v1/files/{ids[1]}/cancel")
            assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED", cancelled.text
            terminated = client.delete(f"/files/{ids[2]}", headers=tus)
            assert terminated.status_code == 204, terminated.text
            assert client.get(f"/v1/files/{ids[0]}").status_code == 404
            assert client.get(f"/v1/files/{ids[1]}").json()["status"] == "CANCELLED"
            assert client.get(f"/v1/files/{ids[2]}").status_code == 404
            assert not [p for p in (data_dir / "blobs").rglob("*") if p.is_file() and p.parent.name in ids]

            filler.unlink()
            assert client.post("/v1/files", json={"filename": "b.bin", "sizeBytes": 10}).status_code == 201
            # The room a delete may use is kept again for the next full volume.
            reserve = data_dir / "chunkd.db-reserve"
            wait_for(lambda: reserve.exists() and reserve.stat().st_blocks * 512 >= 4 * MiB, what="the reserve")
    finally:
        server.kill()


def test_a_native_part_on_a_full_volume_is_507_records_nothing_and_is_sent_again(small_volume: Path) -> None:
    server = ChunkdServer(small_volume / "data", env={"CHUNKD_FSYNC": "true", "CHUNKD_MIN_FREE_BYTES": "0"}).start()
    try:
        key = server.create_key("alice")
        data = os.urandom(8 * MiB)
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            made = client.post("/v1/files", json={"filename": "a.bin", "sizeBytes": len(data), "partSize": 4 * MiB})
            file_id = made.json()["id"]
            assert client.put(f"/v1/files/{file_id}/parts/1", content=data[: 4 * MiB]).status_code == 200
            filler = small_volume / "filler"
            filler.write_bytes(b"\0" * (_free(small_volume) - 2 * MiB))  # part 2 runs out half-way
            full = client.put(f"/v1/files/{file_id}/parts/2", content=data[4 * MiB :])
            assert full.status_code == 507 and full.json()["error"]["code"] == "storage_full", full.text
            assert int(full.headers["retry-after"]) > 0
            state = client.get(f"/v1/files/{file_id}").json()
            assert [p["partNumber"] for p in state["parts"]] == [1] and state["bytesReceived"] == 4 * MiB
            assert not list((small_volume / "data" / "blobs").rglob("2.*"))  # its bytes are gone too
            filler.unlink()
            assert client.put(f"/v1/files/{file_id}/parts/2", content=data[4 * MiB :]).status_code == 200
            done = client.post(f"/v1/files/{file_id}/complete", json={"md5": hashlib.md5(data).hexdigest()})
            assert done.status_code == 200, done.text
            assert client.get(f"/v1/files/{file_id}/content").content == data
    finally:
        server.kill()


def _free(volume: Path) -> int:
    stats = os.statvfs(volume)
    return stats.f_bavail * stats.f_frsize


def test_a_server_restarted_on_a_full_volume_starts_and_deletes(small_volume: Path) -> None:
    """Stopped cleanly, SQLite removes its -wal and -shm files; on a full volume the next start
    could not make them again and failed (a disk I/O error), so no server was there to delete
    through, the way the docs say space is freed. The start uses the room kept for deletes."""
    data_dir = small_volume / "data"
    server = ChunkdServer(data_dir, env={"CHUNKD_FSYNC": "true", "CHUNKD_MIN_FREE_BYTES": "0"}).start()
    try:
        key = server.create_key("alice")
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            file_id = client.post("/v1/files", json={"filename": "a.bin", "sizeBytes": MiB}).json()["id"]
            assert client.put(f"/v1/files/{file_id}/parts/1", content=os.urandom(MiB)).status_code == 200
        reserve = data_dir / "chunkd.db-reserve"
        wait_for(lambda: reserve.exists() and reserve.stat().st_blocks * 512 >= 4 * MiB, what="the reserve")
        server.stop()
        assert not (data_dir / "chunkd.db-wal").exists()
        filler = fill(small_volume)
        server.start()
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            assert client.get(f"/v1/files/{file_id}").status_code == 200
            deleted = client.delete(f"/v1/files/{file_id}")
            assert deleted.status_code == 204, deleted.text
            filler.unlink()
            assert client.post("/v1/files", json={"filename": "b.bin", "sizeBytes": 10}).status_code == 201
    finally:
        server.kill()
