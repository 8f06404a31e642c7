"""For take-over tests (a request stalled on one server or worker, resumed on another): start a
request and go silent, and the MD5 a completed upload reports."""

from __future__ import annotations

import socket

import httpx

from tests.support.server import ChunkdServer

__all__ = ["completed_md5", "stall"]


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
