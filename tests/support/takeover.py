"""For take-over tests (a request stalled on one server or worker, resumed on another): start a
request and go silent, and the MD5 a completed upload reports."""

from __future__ import annotations

import socket

import httpx

from tests.support.server import ChunkdServer

__all__ = ["completed_md5", "stall", "stalled_draft_patch", "stalled_tus_patch"]


def stall(
    server: ChunkdServer, path: str, headers: dict[str, str], length: int, first: bytes, method: str = "PATCH"
) -> socket.socket:
    """Start a request of ``length`` bytes on ``server``, send ``first`` of them, and go silent."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=120)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + first)
    return sock


def completed_md5(server: ChunkdServer, key: str, upload_id: str) -> str:
    """The MD5 of ``upload_id``, which must be COMPLETED, as the Files API reports it."""
    info = httpx.get(f"{server.url}/v1/files/{upload_id}", headers={"Authorization": f"Bearer {key}"}).json()
    assert info["status"] == "COMPLETED"
    return str(info["md5"])


def stalled_tus_patch(
    server: ChunkdServer, key: str, data: bytes, sent: int
) -> tuple[str, dict[str, str], socket.socket]:
    """Create a tus upload for ``data`` and start a PATCH of all of it that goes silent after
    ``sent`` bytes: (the upload's id, the headers of a PATCH without its offset, the socket)."""
    tus = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {key}"}
    url = httpx.post(f"{server.url}/files", headers={**tus, "Upload-Length": str(len(data))}).headers["location"]
    upload_id = url.rsplit("/", 1)[1]
    octets = {**tus, "Content-Type": "application/offset+octet-stream"}
    stalled = stall(server, f"/files/{upload_id}", {**octets, "Upload-Offset": "0"}, len(data), data[:sent])
    return upload_id, octets, stalled


def stalled_draft_patch(
    server: ChunkdServer, key: str, data: bytes, sent: int
) -> tuple[str, dict[str, str], socket.socket]:
    """The same for the IETF draft: an upload created empty, and a PATCH that completes it with
    ``data`` going silent after ``sent`` bytes."""
    draft = {"Upload-Draft-Interop-Version": "8", "Authorization": f"Bearer {key}"}
    created = httpx.post(f"{server.url}/files", headers={**draft, "Upload-Complete": "?0"})
    upload_id = created.headers["location"].rsplit("/", 1)[1]
    append = {**draft, "Content-Type": "application/partial-upload", "Upload-Complete": "?1"}
    stalled = stall(server, f"/files/{upload_id}", {**append, "Upload-Offset": "0"}, len(data), data[:sent])
    return upload_id, append, stalled
