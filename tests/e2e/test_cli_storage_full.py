"""``chunkd upload`` against a real ``chunkd serve`` whose storage is full (its free-space floor set
above the volume's free bytes, so every part is refused with 507 and ``Retry-After: 30``): a few
tries, then one clear line and exit 1, the upload remembered; the same command, once the server has
room, resumes it. The command runs in this process (typer's runner) so that its waits can be made
short: the tries are counted through ``on_retry``, never timed."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from chunkd.cli import app
from chunkd.client import Client, RetryNotice, RetryPolicy
from chunkd.client.state import LocalFile, UploadState
from tests.support.files import MiB
from tests.support.server import ChunkdServer

pytestmark = pytest.mark.e2e

SHORT_WAITS = RetryPolicy(base_delay=0.001, max_delay=0.001, max_retry_after=0.001)


@pytest.fixture
def notices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[RetryNotice]:
    """The CLI's client, with short waits and its own state dir; the retries it was told of."""
    told: list[RetryNotice] = []

    def client(url: str, key: str, *, on_retry: Any = None, **options: Any) -> Client:
        def tell(notice: RetryNotice) -> None:
            told.append(notice)
            on_retry(notice)

        return Client(url, key, retry=SHORT_WAITS, on_retry=tell, state_dir=tmp_path / "state", **options)

    monkeypatch.setattr("chunkd.client.Client", client)
    return told


def test_storage_full_stops_after_a_few_tries_says_so_and_the_rerun_resumes(
    tmp_path: Path, notices: list[RetryNotice]
) -> None:
    server = ChunkdServer(tmp_path / "data").start()
    try:
        key = server.create_key("alice")
        path = tmp_path / "big.bin"
        data = os.urandom(3 * MiB)
        path.write_bytes(data)
        # What a run stopped after the first part leaves: the upload, its part 1, the state entry.
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=60) as http:
            created = http.post("/v1/files", json={"filename": "big.bin", "sizeBytes": len(data), "partSize": MiB})
            upload_id = created.json()["id"]
            assert http.put(f"/v1/files/{upload_id}/parts/1", content=data[:MiB]).status_code == 200
        state = UploadState(tmp_path / "state")
        state.put(server.url, key, LocalFile.of(path), upload_id)

        # More free bytes kept in reserve than any volume has: every new byte is refused, as on a full disk.
        server.env["CHUNKD_MIN_FREE_BYTES"] = str(2**60)
        server.restart()
        command = ["upload", str(path), "--url", server.url, "--key", key, "--parallel", "1", "--json"]
        done = CliRunner().invoke(app, command)
        assert done.exit_code == 1, done.output
        # Three tries of a part (two waits), not eight (3.5 minutes at the server's Retry-After: 30). The
        # next part may have started before the failure stopped the others: it stops at its first wait.
        assert {n.reason for n in notices} == {"HTTP 507 storage_full"}
        waits = Counter(n.url.rsplit("/", 1)[1] for n in notices)
        assert waits["2"] == 2 and max(waits.values()) == 2, waits
        said = " ".join(done.stderr.split()).split(" error: ", 1)[1]  # after the retry notices
        assert said.startswith(f"{path}: the server's storage is full (the storage volume has less than"), said
        assert said.endswith("run the same command again to resume the upload once it has room"), said
        assert state.get(server.url, key, LocalFile.of(path)) == upload_id  # kept for the rerun

        server.env["CHUNKD_MIN_FREE_BYTES"] = "0"  # room again
        server.restart()
        notices.clear()
        done = CliRunner().invoke(app, command)
        assert done.exit_code == 0, done.output
        assert notices == []
        summary = json.loads(done.stdout)
        assert (summary["id"], summary["md5"]) == (upload_id, hashlib.md5(data).hexdigest())
    finally:
        server.kill()
