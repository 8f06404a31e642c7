"""A stalled tus PATCH is cut with 408 in tus's own dialect: docs/tus.md promises plain-text errors
with ``Tus-Resumable`` on every response, and tus clients read no JSON."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.raw_http import read_response as _read_response
from tests.support.server import ChunkdServer


@pytest.fixture
def stalling_server(tmp_path: Path) -> Iterator[tuple[ChunkdServer, str]]:
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_BODY_IDLE_TIMEOUT_SECONDS": "1", "CHUNKD_FSYNC": "false"})
    server.start()
    try:
        yield server, server.create_key("alice")
    finally:
        server.kill()


@pytest.mark.e2e
def test_stalled_tus_patch_is_a_plain_text_408(stalling_server: tuple[ChunkdServer, str]) -> None:
    server, key = stalling_server
    created = httpx.post(
        f"{server.url}/files/",
        headers={"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0", "Upload-Length": "3000"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    path = httpx.URL(created.headers["location"]).path
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(
            (
                f"PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nTus-Resumable: 1.0.0\r\n"
                "Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: 3000\r\n\r\n"
            ).encode()
            + b"a" * 1000
        )
        status, headers, body = _read_response(sock)  # then nothing more is sent
    assert status == 408, body
    assert headers.get("tus-resumable") == "1.0.0"
    assert headers.get("content-type", "").startswith("text/plain"), headers
    assert body and not body.lstrip().startswith(b"{")
