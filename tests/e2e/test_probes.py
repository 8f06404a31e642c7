"""The health probes answer HEAD as they answer GET, without a body (RFC 9110 §9.3.2): load
balancers and orchestrators probe with either."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.support.raw_http import read_response
from tests.support.server import ChunkdServer

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_a_probe_answers_head_like_get_without_a_body(e2e_server: ChunkdServer, path: str) -> None:
    with httpx.Client(base_url=e2e_server.url) as client:
        got, head = client.get(path), client.head(path)
    assert got.status_code == head.status_code == 200, (got.text, head.status_code)
    assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"] == "application/json"
    assert head.headers["content-length"] == got.headers["content-length"]


def test_head_of_a_file_object_keeps_the_connection_in_step(e2e_server: ChunkdServer, e2e_key: str) -> None:
    """A HEAD answered by a GET route: no body bytes on the wire (a client reading the next answer on
    the same connection would read them as its start), the GET's Content-Length."""
    auth = {"Authorization": f"Bearer {e2e_key}"}
    with httpx.Client(base_url=e2e_server.url, headers=auth) as client:
        file_id = client.post("/v1/files", json={"filename": "h.bin", "sizeBytes": 3}).json()["id"]
        got = client.get(f"/v1/files/{file_id}")
        for _ in range(3):  # one keep-alive connection throughout
            head = client.head(f"/v1/files/{file_id}")
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-length"] == got.headers["content-length"] == str(len(got.content))
            assert client.get(f"/v1/files/{file_id}").json()["id"] == file_id


def test_options_asterisk_asks_about_the_server(e2e_server: ChunkdServer) -> None:
    """``OPTIONS *`` (RFC 9110 §9.3.7) is about the server, not a resource: it was a 404."""
    with socket.create_connection(("127.0.0.1", e2e_server.port)) as sock:
        sock.sendall(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response(sock)
        assert status == 204 and body == b"" and "content-length" not in headers
        assert set(headers["allow"].split(", ")) >= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # the connection goes on
        assert read_response(sock)[0] == 200
