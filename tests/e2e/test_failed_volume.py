"""A real failed volume: ``chunkd serve`` with its data dir on an ext4 filesystem (a loop device)
mounted ``errors=remount-ro``, on which the kernel is made to report an error (``trigger_fs_error``),
as it does on a disk fault: the filesystem turns read-only under the running server. Every request
that must write gets 503 saying storage failed (the metadata database's writes too, which were 500s
with a traceback), reads still answer, and once the volume is repaired the upload resumes and
completes with the right bytes. Needs root, a loop device and ext4; skipped with the reason otherwise."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.server import ChunkdServer

MiB = 1024 * 1024
pytestmark = pytest.mark.e2e
# A long journal commit interval: what is not made durable explicitly is lost when the volume
# fails, whatever the timing (ext4 would otherwise commit it on its own within 5 s).
OPTIONS = "errors=remount-ro,commit=300"


@dataclass
class Volume:
    path: Path
    device: str

    def fail(self) -> None:
        """The kernel's answer to a disk error: the filesystem is remounted read-only at once."""
        (Path("/sys/fs/ext4") / Path(self.device).name / "trigger_fs_error").write_text("test\n")

    def repair(self) -> None:
        subprocess.run(["umount", str(self.path)], check=True)
        subprocess.run(["e2fsck", "-fy", self.device], capture_output=True)  # exit 1: errors corrected
        subprocess.run(["mount", "-o", OPTIONS, self.device, str(self.path)], check=True)


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True)


@pytest.fixture
def ext4_volume(tmp_path: Path) -> Iterator[Volume]:
    if os.geteuid() != 0:
        pytest.skip("mounting a loop device needs root")
    if shutil.which("losetup") is None or shutil.which("mkfs.ext4") is None or shutil.which("e2fsck") is None:
        pytest.skip("losetup, mkfs.ext4 and e2fsck are needed")
    image = tmp_path / "volume.img"
    with open(image, "wb") as file:
        file.truncate(64 * MiB)
    # One test at a time picks a free loop device: two xdist workers asking at once may be handed
    # the same one (losetup finds a free device, then attaches it).
    with open(Path(tempfile.gettempdir()) / "chunkd-tests-losetup.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        attached = run("losetup", "-f", "--show", str(image))
    if attached.returncode != 0:
        pytest.skip(f"no loop device here: {attached.stderr.strip()}")
    device = attached.stdout.strip()
    mount = tmp_path / "volume"
    mount.mkdir()
    try:
        made = run("mkfs.ext4", "-q", "-F", device)
        mounted = run("mount", "-o", OPTIONS, device, str(mount)) if made.returncode == 0 else made
        if mounted.returncode != 0:
            pytest.skip(f"cannot make and mount an ext4 volume here: {mounted.stderr.strip()}")
        if not (Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error").exists():
            pytest.skip("this kernel cannot be made to report an ext4 error (no trigger_fs_error)")
        yield Volume(mount, device)
    finally:
        run("umount", "-l", str(mount))
        run("losetup", "-d", device)


def test_a_volume_turned_read_only_by_a_disk_error_is_503_and_the_upload_resumes(ext4_volume: Volume) -> None:
    server = ChunkdServer(ext4_volume.path / "data", env={"CHUNKD_FSYNC": "true", "CHUNKD_MIN_FREE_BYTES": "0"})
    server.log = ext4_volume.path.parent / "server.log"  # the log must not be on the failing volume
    server.start()
    try:
        key = server.create_key("alice")
        # What the test itself wrote (the database copied from a template, unsynced) reaches the
        # disk now; from here on only what chunkd made durable survives the failure.
        os.sync()
        auth = {"Authorization": f"Bearer {key}"}
        tus = {**auth, "Tus-Resumable": "1.0.0"}
        patch = {**tus, "Content-Type": "application/offset+octet-stream"}
        data = os.urandom(3 * MiB)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            created = client.post("/files/", headers={**tus, "Upload-Length": str(len(data))})
            assert created.status_code == 201, created.text
            path = "/files/" + created.headers["location"].rsplit("/", 1)[1]
            first = client.patch(path, headers={**patch, "Upload-Offset": "0"}, content=data[:MiB])
            assert first.status_code == 204, first.text

            ext4_volume.fail()
            refused = [
                client.patch(path, headers={**patch, "Upload-Offset": str(MiB)}, content=data[MiB : 2 * MiB]),
                client.post("/files/", headers={**tus, "Upload-Length": "10"}),  # the database's write
                client.post("/v1/files", headers=auth, json={"filename": "f.bin", "sizeBytes": 10}),
            ]
            for answer in refused:
                assert answer.status_code == 503, answer.text
                # The bytes' store, or the metadata database on the same failed volume, says so.
                assert "storage_unavailable" in answer.text or "database_unavailable" in answer.text, answer.text
                assert answer.headers["retry-after"]
            head = client.head(path, headers=tus)
            assert (head.status_code, head.headers["upload-offset"]) == (200, str(MiB))

        server.kill()
        ext4_volume.repair()
        server.start()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            again = client.head(path, headers=tus)
            assert again.status_code == 200, (again.status_code, again.headers)
            offset = int(again.headers["upload-offset"])
            assert offset == MiB
            rest = client.patch(path, headers={**patch, "Upload-Offset": str(offset)}, content=data[offset:])
            assert rest.status_code == 204, rest.text
            assert client.get(path, headers=tus).content == data
            state = client.get("/v1/files/" + path.rsplit("/", 1)[1], headers=auth).json()
            assert (state["status"], state["md5"]) == ("COMPLETED", hashlib.md5(data).hexdigest())
    finally:
        server.kill()


def test_the_server_secret_survives_a_disk_error_right_after_first_start(ext4_volume: Volume) -> None:
    # The secret (it signs part URLs, tokens, upload links) is made at first start; its name was
    # linked into the data dir without a sync of the directory, so a disk error (or a power cut)
    # soon after lost it, and the next start made another: everything signed before was refused.
    os.sync()
    server = ChunkdServer(ext4_volume.path / "data", env={"CHUNKD_FSYNC": "true"})
    server.log = ext4_volume.path.parent / "server.log"
    server.start()
    try:
        secret = (server.data_dir / "secret.key").read_bytes()
        ext4_volume.fail()
    finally:
        server.kill()
    ext4_volume.repair()
    assert (server.data_dir / "secret.key").read_bytes() == secret
