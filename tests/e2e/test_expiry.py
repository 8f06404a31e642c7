"""Expiry against a real server with a short TTL: idle uploads expire and their bytes are freed;
uploads receiving bytes (slowly, inside one part or part after part) do not; ``chunkd gc`` does
the same job from cron, as a separate process beside the running server."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.files import FilesClient, seeded_bytes
from tests.support.server import BIN, ChunkdServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

# Seconds. A working upload has this long, less the gap between its requests, to survive a stall
# of the server's disk: with 3 s, the steady upload below (a part every 0.9 s) expired if one
# commit's sync stalled for 2.1 s, and CI's host has stalled for 3 s (see GC_TTL).
TTL = 8.0
PART = 64 * 1024


# The gc test's uploads must be created and sent to within their TTL before it sleeps past it: on a
# loaded CI machine (4 workers, the host's disk stalling on fsync) a 3 s TTL once ran out between a
# create and its first part (409).
GC_TTL = 8.0


def short_ttl_server(tmp_path: Path, reaper_interval: float, ttl: float = TTL) -> ChunkdServer:
    return ChunkdServer(
        tmp_path / "data",
        env={
            "CHUNKD_FSYNC": "true",
            "CHUNKD_UPLOAD_TTL_SECONDS": str(ttl),
            "CHUNKD_REAPER_INTERVAL_SECONDS": str(reaper_interval),
            "CHUNKD_MIN_PART_SIZE": "1024",
        },
    )


@pytest.fixture(scope="module")
def reaping_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChunkdServer]:
    with short_ttl_server(tmp_path_factory.mktemp("reaping"), reaper_interval=0.2) as server:
        yield server


@pytest.fixture(scope="module")
def reaping_key(reaping_server: ChunkdServer) -> str:
    return reaping_server.create_key("alice")


def blob_bytes(server: ChunkdServer, file_id: str | None = None) -> int:
    """Bytes under the blob tree (of one upload), read while the server may remove them: a file or
    directory gone between the listing and its stat (the sweep a test waits for) is looked at again
    (this raised FileNotFoundError in CI, 2026-12-02)."""
    root = server.data_dir / "blobs"
    if file_id is not None:
        root = root / file_id[:2] / file_id
    while True:
        try:
            return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0
        except FileNotFoundError:
            continue


def wait_for_status(client: FilesClient, file_id: str, status: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = client.get(file_id)
        if state["status"] == status or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def trickle(data: bytes, pieces: int, every: float) -> Iterator[bytes]:
    step = -(-len(data) // pieces)
    for start in range(0, len(data), step):
        yield data[start : start + step]
        time.sleep(every)


def test_idle_upload_expires_and_its_bytes_are_freed(reaping_server: ChunkdServer, reaping_key: str) -> None:
    key = reaping_key
    data = seeded_bytes(60, 3 * PART)
    with FilesClient(reaping_server, key) as client:
        file_id = client.create(len(data), PART)["id"]
        assert client.put_part(file_id, 1, data[:PART]).status_code == 200
        assert client.put_part(file_id, 2, data[PART : 2 * PART]).status_code == 200
        assert blob_bytes(reaping_server, file_id) == 2 * PART
        state = wait_for_status(client, file_id, "EXPIRED", timeout=TTL + 10)
        assert state["status"] == "EXPIRED", state
        assert state["expiresAt"] is None and state["parts"] == []
        # The sweep commits the status first and removes the bytes right after: wait for them.
        directory = reaping_server.data_dir / "blobs" / file_id[:2] / file_id
        wait_for(
            lambda: blob_bytes(reaping_server, file_id) == 0 and not directory.exists(),
            timeout=30,
            what="the expired upload's bytes to be removed",
        )
        late = client.put_part(file_id, 3, data[2 * PART :])
        assert late.status_code == 409 and late.json()["error"]["code"] == "upload_expired"
        assert client.complete(file_id).status_code == 409
        assert client.http.post(f"/v1/files/{file_id}/cancel").status_code == 409
        listed = client.http.get("/v1/files", params={"status": "EXPIRED"}).json()["data"]
        assert file_id in [f["id"] for f in listed]


def test_uploads_receiving_bytes_do_not_expire(reaping_server: ChunkdServer, reaping_key: str) -> None:
    key = reaping_key
    with FilesClient(reaping_server, key) as client:
        idle = client.create(PART, PART)["id"]
        # One part whose body trickles in over more than two TTLs.
        slow = seeded_bytes(61, PART)
        slow_id = client.create(PART, PART)["id"]
        # Many parts, each one sent well within a TTL of the previous one.
        steady = seeded_bytes(62, 8 * PART)
        steady_id = client.create(len(steady), PART)["id"]

        answers: dict[str, Any] = {}

        def send_slow() -> None:
            with FilesClient(reaping_server, key) as own:
                answers["slow"] = own.put_part(slow_id, 1, trickle(slow, 16, every=TTL * 0.15))

        thread = threading.Thread(target=send_slow)
        thread.start()
        for number in range(1, 9):
            time.sleep(TTL * 0.3)
            response = client.put_part(steady_id, number, steady[(number - 1) * PART : number * PART])
            assert response.status_code == 200, response.text
        thread.join(timeout=120)
        assert answers["slow"].status_code == 200, answers["slow"].text

        # The reaper was at work meanwhile: the idle sibling expired.
        assert wait_for_status(client, idle, "EXPIRED", timeout=5)["status"] == "EXPIRED"
        for file_id, data in ((slow_id, slow), (steady_id, steady)):
            assert client.get(file_id)["status"] == "PENDING"
            done = client.complete(file_id, hashlib.md5(data).hexdigest())
            assert done.status_code == 200, done.text
            assert client.download_md5(file_id) == (len(data), hashlib.md5(data).hexdigest())


def test_chunkd_gc_beside_a_running_server(tmp_path: Path) -> None:
    # The server's own reaper runs once at start and then not for an hour: only gc can expire.
    server = short_ttl_server(tmp_path, reaper_interval=3600, ttl=GC_TTL)
    # Nor its orphan sweep: its first run, at start, could still be going when the orphan below is
    # planted and take it before gc does ("removed 0 orphaned blob(s)").
    server.env["CHUNKD_ORPHAN_SWEEP_INTERVAL_SECONDS"] = "0"
    server.start()
    try:
        key = server.create_key("alice")
        with FilesClient(server, key) as client:
            stale = client.create(2 * PART, PART)["id"]
            assert client.put_part(stale, 1, seeded_bytes(63, PART)).status_code == 200
            kept_data = seeded_bytes(64, PART)
            kept = client.create(PART, PART)["id"]
            assert client.put_part(kept, 1, kept_data).status_code == 200
            assert client.complete(kept).status_code == 200
            # A crash leftover: a part file no row points at, two hours old.
            orphan_dir = server.data_dir / "blobs" / "zz" / ("zz" + "x" * 20)
            orphan_dir.mkdir(parents=True)
            orphan = orphan_dir / "1.leftoverleftover.part"
            orphan.write_bytes(os.urandom(1000))
            two_hours_ago = time.time() - 7200
            os.utime(orphan, (two_hours_ago, two_hours_ago))
            os.utime(orphan_dir, (two_hours_ago, two_hours_ago))

            time.sleep(GC_TTL + 0.5)
            # Past its expiry it reads as EXPIRED at once, but nobody has expired it yet: its
            # bytes are still stored until gc does.
            assert client.get(stale)["status"] == "EXPIRED"
            assert blob_bytes(server, stale) == PART
            gc = subprocess.run(
                [str(BIN / "chunkd"), "gc", "--data-dir", str(server.data_dir)],
                env=server.env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert gc.returncode == 0, gc.stdout + gc.stderr
            assert "expired 1 upload(s)" in gc.stdout and "removed 1 orphaned blob(s)" in gc.stdout, gc.stdout

            state = client.get(stale)
            assert state["status"] == "EXPIRED" and state["parts"] == []
            assert blob_bytes(server, stale) == 0
            assert not orphan_dir.exists()
            assert client.download_md5(kept) == (PART, hashlib.md5(kept_data).hexdigest())
            # The server carries on normally after gc.
            fresh = client.create(PART, PART)["id"]
            assert client.put_part(fresh, 1, kept_data).status_code == 200
            assert client.complete(fresh).status_code == 200
    finally:
        server.kill()
