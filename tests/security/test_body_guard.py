"""Request bodies: a stalled body is cut after the idle timeout with the durable bytes kept; a body
longer than the upload allows is not read to its end; JSON bodies are capped before being read."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.security.conftest import MakeApi
from tests.support.raw_http import read_response
from tests.support.server import ChunkdServer


@pytest.fixture
def guarded_server(tmp_path: Path) -> Iterator[tuple[ChunkdServer, str]]:
    env = {
        "CHUNKD_BODY_IDLE_TIMEOUT_SECONDS": "1",
        "CHUNKD_MIN_PART_SIZE": "1",
        "CHUNKD_FSYNC": "false",
        "CHUNKD_BOOTSTRAP_ADMIN_KEY": "true",
    }
    server = ChunkdServer(tmp_path / "data", env=env)
    server.start()
    try:
        key = (server.data_dir / "bootstrap-admin-key").read_text().strip()
        yield server, key
    finally:
        server.kill()


def _create(server: ChunkdServer, key: str, size: int, part_size: int) -> str:
    response = httpx.post(
        f"{server.url}/v1/files",
        json={"filename": "slow.bin", "sizeBytes": size, "partSize": part_size},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.mark.e2e
def test_stalled_body_is_cut_and_durable_parts_kept(guarded_server: tuple[ChunkdServer, str]) -> None:
    server, key = guarded_server
    file_id = _create(server, key, 3000, 1000)
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        # Before the send: the server's idle clock cannot start earlier. Taken after it, a client
        # descheduled for over 0.1 s while the server read the bytes measured less than 0.9 s.
        started = time.monotonic()
        sock.sendall(
            (
                f"PUT /v1/files/{file_id}/content HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 3000\r\n\r\n"
            ).encode()
            + b"a" * 2500
        )
        status, headers, body = read_response(sock)  # ... and then send nothing more
        waited = time.monotonic() - started
    assert status == 408, body
    assert json.loads(body)["error"]["code"] == "body_timeout"
    assert headers.get("connection") == "close"
    assert 0.9 <= waited < 10
    got = httpx.get(f"{server.url}/v1/files/{file_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
    assert got["status"] == "PENDING"
    assert [p["partNumber"] for p in got["parts"]] == [1, 2] and got["bytesReceived"] == 2000
    # The rest can be sent later.
    rest = httpx.put(
        f"{server.url}/v1/files/{file_id}/parts/3", content=b"a" * 1000, headers={"Authorization": f"Bearer {key}"}
    )
    assert rest.status_code == 200


@pytest.mark.e2e
def test_over_long_body_is_not_read_to_the_end(guarded_server: tuple[ChunkdServer, str]) -> None:
    server, key = guarded_server
    file_id = _create(server, key, 3000, 1000)
    answered = threading.Event()
    result: dict[str, object] = {}
    budget = 512 * 1024 * 1024  # what the client is willing to send
    piece = b"b" * 65536
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            (
                f"PUT /v1/files/{file_id}/parts/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )

        def read() -> None:
            try:
                result["response"] = read_response(sock)
            finally:
                answered.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        sock.settimeout(5)
        try:
            while sent < budget and not answered.is_set():
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                sent += len(piece)
        except OSError:
            pass  # the server closed the connection: it stopped reading
        answered.wait(10)
    status, _, body = result["response"]  # type: ignore[misc]
    assert status == 400 and json.loads(body)["error"]["code"] == "part_size_mismatch"
    assert sent < 64 * 1024 * 1024, f"the client got to send {sent} bytes"


async def test_json_bodies_are_capped_before_reading(make_api: MakeApi) -> None:
    async with make_api(max_form_body_bytes=4096) as api:
        big = json.dumps({"filename": "a", "sizeBytes": 1, "pad": "x" * 10000}).encode()
        declared = await api.client.post(
            "/v1/files", content=big, headers={**api.auth(), "Content-Type": "application/json"}
        )
        assert declared.status_code == 413 and declared.json()["error"]["code"] == "too_large"

        async def chunks() -> object:
            for i in range(0, len(big), 1000):
                yield big[i : i + 1000]

        streamed = await api.client.post(
            "/v1/files", content=chunks(), headers={**api.auth(), "Content-Type": "application/json"}
        )
        assert streamed.status_code == 413, streamed.text
        small = await api.client.post("/v1/files", json={"filename": "a", "sizeBytes": 1}, headers=api.auth())
        assert small.status_code == 201
        # Byte uploads are not capped by the JSON limit.
        file_id = (
            await api.client.post(
                "/v1/files", json={"filename": "a", "sizeBytes": 10000, "partSize": 10000}, headers=api.auth()
            )
        ).json()["id"]
        part = await api.client.put(f"/v1/files/{file_id}/parts/1", content=b"z" * 10000, headers=api.auth())
        assert part.status_code == 200


@pytest.mark.e2e
def test_a_transfer_coding_other_than_chunked_is_501_and_stores_nothing(
    guarded_server: tuple[ChunkdServer, str],
) -> None:
    """The server undoes "chunked" only: "gzip, chunked" reached the routes still compressed and was
    stored as the file's bytes (a 204 with the compressed size as the offset). RFC 9112 §6.1: 501."""
    import gzip

    server, key = guarded_server
    auth = {"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0"}
    created = httpx.post(f"{server.url}/files/", headers={**auth, "Upload-Length": "720"}, timeout=10)
    path = "/files/" + created.headers["location"].rsplit("/", 1)[1]
    packed = gzip.compress(b"plain bytes " * 60)
    for head, dialect in (
        (
            f"PATCH {path} HTTP/1.1\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
            "Content-Type: application/offset+octet-stream\r\n",
            "tus",
        ),
        (f"PUT /v1/files/{_create(server, key, 720, 720)}/parts/1 HTTP/1.1\r\n", "native"),
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            sock.sendall(
                (head + f"Host: x\r\nAuthorization: Bearer {key}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").encode()
                + f"{len(packed):x}\r\n".encode()
                + packed
                + b"\r\n0\r\n\r\n"
            )
            status, headers, body = read_response(sock)
        assert status == 501, (dialect, body)
        assert b"Transfer-Encoding" in body
        if dialect == "tus":
            assert headers["tus-resumable"] == "1.0.0"
        else:
            assert json.loads(body)["error"]["field"] == "Transfer-Encoding"
    offset = httpx.head(f"{server.url}{path}", headers=auth, timeout=10).headers["upload-offset"]
    assert offset == "0"
