"""tus checksum-trailer against a real ``chunkd serve``: a chunked PATCH whose ``Upload-Checksum``
comes after the last chunk, sent from a raw socket (no HTTP client library sends trailers)."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ChunkdServer

pytestmark = pytest.mark.e2e

TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ChunkdServer]:
    live = ChunkdServer(tmp_path / "data")
    live.start()
    try:
        yield live
    finally:
        live.kill()


def create(server: ChunkdServer, key: str, length: int) -> str:
    made = httpx.post(
        f"{server.url}/files", headers={**TUS, "Authorization": f"Bearer {key}", "Upload-Length": str(length)}
    )
    assert made.status_code == 201, made.text
    return made.headers["location"].rsplit("/", 1)[1]


def offset(server: ChunkdServer, key: str, upload_id: str) -> int:
    response = httpx.head(f"{server.url}/files/{upload_id}", headers={**TUS, "Authorization": f"Bearer {key}"})
    return int(response.headers["upload-offset"])


def chunked_patch(
    server: ChunkdServer,
    key: str,
    upload_id: str,
    at: int,
    data: bytes,
    trailer: str | None,
    *,
    announce: bool = True,
) -> tuple[int, str]:
    """A PATCH with a chunked body in 3 chunks and ``trailer`` as its trailer section; the status
    and body of the answer."""
    head = [
        f"PATCH /files/{upload_id} HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        f"Authorization: Bearer {key}",
        "Tus-Resumable: 1.0.0",
        "Content-Type: application/offset+octet-stream",
        f"Upload-Offset: {at}",
        "Transfer-Encoding: chunked",
        "Connection: close",
    ]
    return send_chunked(server, head, data, trailer, announce=announce)


def send_chunked(
    server: ChunkdServer, head: list[str], data: bytes, trailer: str | None, *, announce: bool = True
) -> tuple[int, str]:
    """The request of ``head`` with ``data`` as a chunked body in 3 chunks and ``trailer`` as its
    trailer section; the status and body of the answer."""
    if announce:
        head = [*head, "Trailer: Upload-Checksum"]
    body = b""
    step = max(1, -(-len(data) // 3))
    for start in range(0, len(data), step):
        piece = data[start : start + step]
        body += b"%x\r\n" % len(piece) + piece + b"\r\n"
    body += b"0\r\n" + (f"{trailer}\r\n".encode() if trailer else b"") + b"\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.decode("latin-1")


def checksum(algorithm: str, data: bytes) -> str:
    digest = zlib.crc32(data).to_bytes(4, "big") if algorithm == "crc32" else hashlib.new(algorithm, data).digest()
    return f"Upload-Checksum: {algorithm} {base64.b64encode(digest).decode()}"


def test_checksum_trailer_is_announced_and_verified(server: ChunkdServer) -> None:
    key = server.create_key("alice")
    assert "checksum-trailer" in httpx.options(f"{server.url}/files").headers["tus-extension"].split(",")
    data = os.urandom(300_000)
    upload_id = create(server, key, len(data))

    # A matching trailer in each algorithm: the bytes are kept.
    at = 0
    for algorithm, size in (("sha1", 70_000), ("md5", 50_000), ("crc32", 30_000)):
        piece = data[at : at + size]
        status, text = chunked_patch(server, key, upload_id, at, piece, checksum(algorithm, piece))
        assert status == 204, text
        at += size
        assert offset(server, key, upload_id) == at

    # A wrong digest: 460, and nothing of the request is kept.
    piece = data[at:]
    status, text = chunked_patch(server, key, upload_id, at, piece, checksum("sha256", b"something else"))
    assert status == 460, text
    assert offset(server, key, upload_id) == at

    # Announced but missing, or malformed: 400, nothing kept.
    assert chunked_patch(server, key, upload_id, at, piece, None)[0] == 400
    assert chunked_patch(server, key, upload_id, at, piece, "Upload-Checksum: sha256 !!")[0] == 400
    assert offset(server, key, upload_id) == at

    # A trailer nobody announced is not read (and so not verified), as for any other trailer.
    status, _ = chunked_patch(server, key, upload_id, at, piece, checksum("sha1", b"x"), announce=False)
    assert status == 204
    done = httpx.get(f"{server.url}/v1/files/{upload_id}", headers={"Authorization": f"Bearer {key}"}).json()
    assert done["status"] == "COMPLETED" and done["md5"] == hashlib.md5(data).hexdigest()


def test_a_creation_with_upload_verifies_its_checksum_trailer(server: ChunkdServer) -> None:
    """A creation with upload is a PATCH in all but name (the creation-with-upload extension: "all
    semantics of PATCH apply"): its trailer is verified too. A wrong one made an upload of the
    unverified bytes, answered 201."""
    key = server.create_key("alice")
    data = os.urandom(100_000)

    def creation(trailer: str) -> tuple[int, str]:
        head = [
            "POST /files HTTP/1.1",
            f"Host: 127.0.0.1:{server.port}",
            f"Authorization: Bearer {key}",
            "Tus-Resumable: 1.0.0",
            "Content-Type: application/offset+octet-stream",
            f"Upload-Length: {len(data)}",
            "Transfer-Encoding: chunked",
            "Connection: close",
        ]
        return send_chunked(server, head, data, trailer)

    status, text = creation(checksum("sha256", b"something else"))
    assert status == 460, text
    files = httpx.get(f"{server.url}/v1/files", headers={"Authorization": f"Bearer {key}"}).json()["data"]
    assert files == []  # refused with no Location: nothing left behind
    status, text = creation(checksum("sha1", data))
    assert status == 201, text
    [made] = httpx.get(f"{server.url}/v1/files", headers={"Authorization": f"Bearer {key}"}).json()["data"]
    assert made["status"] == "COMPLETED" and made["md5"] == hashlib.md5(data).hexdigest()


def test_a_trailer_ends_its_request_only(server: ChunkdServer) -> None:
    """On a kept-alive connection, the request after one with a trailer is read as usual (the
    trailer fields belong to the first message and never reach the next one's headers)."""
    key = server.create_key("alice")
    upload_id = create(server, key, 10)
    piece = b"0123456789"
    patch = (
        (
            f"PATCH /files/{upload_id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nTus-Resumable: 1.0.0\r\n"
            "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nTransfer-Encoding: chunked\r\n"
            "Trailer: Upload-Checksum\r\n\r\n"
        ).encode()
        + b"a\r\n"
        + piece
        + b"\r\n0\r\n"
        + checksum("md5", piece).encode()
        + b"\r\n\r\n"
    )
    head = (
        f"HEAD /files/{upload_id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nTus-Resumable: 1.0.0\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(patch + head)  # pipelined
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    first, second = [part for part in answer.split(b"\r\n\r\n") if part][:2]
    assert first.startswith(b"HTTP/1.1 204"), answer
    assert second.startswith(b"HTTP/1.1 200") and b"upload-offset: 10" in second.lower(), answer


def test_the_last_patch_completes_with_a_good_trailer(server: ChunkdServer) -> None:
    key = server.create_key("alice")
    data = os.urandom(1_000_003)
    upload_id = create(server, key, len(data))
    status, text = chunked_patch(server, key, upload_id, 0, data, checksum("sha256", data))
    assert status == 204, text
    done = httpx.get(f"{server.url}/files/{upload_id}", headers={"Authorization": f"Bearer {key}"})
    assert done.content == data


def test_granian_does_not_announce_it_and_refuses_the_trailer(tmp_path: Path) -> None:
    """granian passes no trailers to the app: the extension is not announced, and a PATCH that
    announces a checksum trailer is refused before a byte is kept (it could not be verified)."""
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_SERVER": "granian"}).start()
    try:
        key = server.create_key("alice")
        extensions = httpx.options(f"{server.url}/files").headers["tus-extension"].split(",")
        assert "checksum-trailer" not in extensions and "concatenation-unfinished" in extensions
        upload_id = create(server, key, 10)
        status, text = chunked_patch(server, key, upload_id, 0, b"0123456789", checksum("md5", b"0123456789"))
        assert status == 400 and "trailers" in text
        assert offset(server, key, upload_id) == 0
    finally:
        server.kill()


def test_trailers_share_the_head_cap(tmp_path: Path) -> None:
    """Trailer fields are bounded like the head (``CHUNKD_MAX_HEADER_BYTES``): past it the answer is
    431 and nothing of the request is kept."""
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_MAX_HEADER_BYTES": "8192"}).start()
    try:
        key = server.create_key("alice")
        upload_id = create(server, key, 10)
        huge = checksum("md5", b"0123456789") + "\r\nX-Padding: " + "a" * 20_000
        status, _ = chunked_patch(server, key, upload_id, 0, b"0123456789", huge)
        assert status == 431
        assert offset(server, key, upload_id) == 0
    finally:
        server.kill()
