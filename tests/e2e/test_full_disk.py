"""A real full disk: ``chunkd serve`` with its whole data dir on a small tmpfs. A tus upload larger
than the volume gets 507 when the space runs out, the offset it reports is exactly the bytes on disk,
the server keeps answering, and once the volume grows the upload resumes and completes with the
right MD5. Needs root (to mount); skipped with the reason otherwise."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ChunkdServer

MiB = 1024 * 1024
pytestmark = pytest.mark.e2e


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "volume"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40M", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


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
