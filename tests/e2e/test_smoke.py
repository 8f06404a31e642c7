"""The README's quick start against a real server process."""

from __future__ import annotations

import hashlib
import os

import httpx

from tests.support.server import ChunkdServer


def test_create_upload_complete_download(live_server: ChunkdServer) -> None:
    key = live_server.create_key("alice")
    data = os.urandom(3 * 1024 * 1024 + 123)
    auth = {"Authorization": f"Bearer {key}"}
    # Not httpx's default 5 s: each answer waits for 2 MiB to be synced (CHUNKD_FSYNC), on a loaded disk.
    with httpx.Client(base_url=live_server.url, headers=auth, timeout=60) as client:
        created = client.post("/v1/files", json={"filename": "a.bin", "sizeBytes": len(data), "partSize": 2**21})
        assert created.status_code == 201, created.text
        file_id = created.json()["id"]
        for number, start in enumerate(range(0, len(data), 2**21), start=1):
            put = client.put(f"/v1/files/{file_id}/parts/{number}", content=data[start : start + 2**21])
            assert put.status_code == 200, put.text
        done = client.post(f"/v1/files/{file_id}/complete", json={"md5": hashlib.md5(data).hexdigest()})
        assert done.status_code == 200, done.text
        assert client.get(f"/v1/files/{file_id}/content").content == data


def test_start_up_log_names_the_store_and_its_capabilities(live_server: ChunkdServer) -> None:
    # Printed once the app has started (the server answered /healthz by now).
    assert "storage local, capabilities: append-in-place, link-parts, sweep" in live_server.log.read_text()
