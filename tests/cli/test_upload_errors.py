"""``chunkd upload`` when the server goes away mid-upload: after the retries that ride out a
restart, one line that says the upload resumes when the same command is run again (exit 1), and
the upload remembered for that run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from chunkd.cli import app
from chunkd.client import Client, RetryPolicy
from chunkd.client.state import LocalFile, UploadState

KEY = "ck_0000000000000000_x"
FILE = {"id": "abc", "filename": "data.bin", "sizeBytes": 3, "status": "PENDING", "partSize": 3, "parts": []}


def test_a_server_gone_mid_upload_says_the_rerun_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/files":
            return httpx.Response(201, json=FILE)
        raise httpx.ConnectError("connection refused", request=request)  # stopped after the create

    def client(url: str, key: str, **options: Any) -> Client:
        fast = RetryPolicy(base_delay=0.001, max_delay=0.001)
        return Client(url, key, transport=httpx.MockTransport(answer), retry=fast, state_dir=tmp_path / "state")

    monkeypatch.setattr("chunkd.client.Client", client)
    path = tmp_path / "data.bin"
    path.write_bytes(b"abc")
    done = CliRunner().invoke(app, ["upload", str(path), "--url", "http://127.0.0.1:9", "--key", KEY])
    assert done.exit_code == 1, done.output
    said = " ".join(done.stderr.split())
    assert said.startswith("error: cannot reach the server at http://127.0.0.1:9: PUT "), said
    assert said.endswith("run the same command again once it answers: uploads resume where they stopped"), said
    assert UploadState(tmp_path / "state").get("http://127.0.0.1:9", KEY, LocalFile.of(path)) == "abc"
