"""The access log of a real ``chunkd serve`` process: one line per request, in text or JSON, the
request id echoed, and no credential of any kind (API key, signed URL, access token) in it."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support.server import ChunkdServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

FIELDS = {
    "time",
    "request_id",
    "client",
    "method",
    "route",
    "status",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "owner",
    "key_id",
    "upload_id",
}


def access_lines(server: ChunkdServer, count: int, *, json_lines: bool) -> list[str]:
    """The server's access-log lines but those of ``start()``'s /healthz polls, once at least
    ``count`` are written (each is written just after its response is sent, so the last one may
    trail the client by a moment)."""
    deadline = time.monotonic() + 30
    while True:
        text = server.log.read_text(errors="replace")
        if json_lines:
            # The server log's lines are JSON objects too (time, level, logger, message).
            lines = [line for line in text.splitlines() if line.startswith('{"time":') and '"request_id":' in line]
        else:
            lines = [line for line in text.splitlines() if line.startswith("time=")]
        lines = [line for line in lines if "/healthz" not in line]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_json_access_log_has_every_field_and_no_secret(tmp_path: Path) -> None:
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_LOG_FORMAT": "json", "CHUNKD_FSYNC": "false"})
    server.start()
    try:
        key = server.create_key("alice")
        key_id, key_secret = key.split("_")[1], key.split("_", 2)[2]
        with httpx.Client(base_url=server.url) as client:
            created = client.post(
                "/v1/files",
                json={"filename": "a.bin", "sizeBytes": 5},
                headers={"Authorization": f"Bearer {key}", "X-Request-Id": "trace-42.a:b"},
            )
            assert created.status_code == 201
            assert created.headers["x-request-id"] == "trace-42.a:b"
            file_id = created.json()["id"]
            upload_url = created.json()["uploadUrl"]
            signature = parse_qs(urlsplit(upload_url).query)["signature"][0]
            # The signed URL: no credentials, the signature in the query string.
            put = client.put(upload_url, content=b"hello", headers={"X-Request-Id": "bad id\twith tab"})
            assert put.status_code in (200, 201), put.text
            generated = put.headers["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{32}", generated)
            token = client.post("/v1/auth/token", headers={"X-API-Key": key}).json()["accessToken"]
            got = client.get(f"/v1/files/{file_id}", headers={"Authorization": f"Bearer {token}"})
            assert got.status_code == 200
            basic = base64.b64encode(f"{key_id}:{key_secret}".encode()).decode()
            assert client.get("/v1/files", headers={"Authorization": f"Basic {basic}"}).status_code == 200
            assert client.get(f"/v1/files/{file_id}?signature=leaked-on-purpose").status_code == 401
            assert client.get("/nowhere/" + "x" * 50).status_code == 404

        lines = access_lines(server, 7, json_lines=True)
        assert len(lines) == 7, lines
        records = [json.loads(line) for line in lines]
        for record in records:
            assert set(record) == FIELDS
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
            assert record["duration_ms"] >= 0 and record["client"] == "127.0.0.1"
        create, signed_put, token_call, get, listing, bad_signature, unknown = records
        assert create["request_id"] == "trace-42.a:b"
        assert (create["method"], create["route"], create["status"], create["owner"]) == (
            "POST",
            "/v1/files",
            201,
            "alice",
        )
        assert create["bytes_out"] == len(created.content) and create["bytes_in"] > 0
        assert signed_put["request_id"] == generated
        assert signed_put["route"] == "/v1/files/{file_id}/content"
        assert signed_put["upload_id"] == file_id and signed_put["bytes_in"] == 5
        assert token_call["route"] == "/v1/auth/token" and token_call["owner"] == "alice"
        assert get["upload_id"] == file_id and get["owner"] == "alice" and get["status"] == 200
        assert listing["owner"] == "alice" and listing["route"] == "/v1/files"
        assert bad_signature["status"] == 401 and bad_signature["owner"] is None
        assert unknown["route"] == "unmatched" and unknown["status"] == 404

        log = server.log.read_text()
        for secret in (key, key_secret, signature, token, basic, "leaked-on-purpose", "bad id"):
            assert secret not in log, f"a credential reached the log: {secret[:12]}…"
        assert "?" not in "".join(r["route"] for r in records)
    finally:
        server.kill()


def test_text_access_log_is_logfmt(tmp_path: Path) -> None:
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_FSYNC": "false"})
    server.start()
    try:
        key = server.create_key("bob")
        response = httpx.get(f"{server.url}/v1/files", headers={"X-API-Key": key, "X-Request-Id": "req-7"})
        assert response.status_code == 200 and response.headers["x-request-id"] == "req-7"
        (line,) = access_lines(server, 1, json_lines=False)
        pattern = (
            r"time=\S+Z request_id=req-7 client=127\.0\.0\.1 method=GET route=/v1/files status=200 "
            r"bytes_in=0 bytes_out=\d+ duration_ms=[\d.]+ owner=bob key_id=[0-9a-f]{16} upload_id=-"
        )
        assert re.fullmatch(pattern, line), line
        assert key not in server.log.read_text()
    finally:
        server.kill()


def test_access_log_can_be_turned_off(tmp_path: Path) -> None:
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_ACCESS_LOG": "false"})
    server.start()
    try:
        assert httpx.get(f"{server.url}/readyz").headers["x-request-id"]  # ids are still given
        server.stop()
        assert "route=" not in server.log.read_text()
    finally:
        server.kill()


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"], ids=["no-proxy-trusted", "loopback-proxy-trusted"])
def test_forwarded_headers_are_believed_only_from_trusted_proxies(tmp_path: Path, trusted: str) -> None:
    """``X-Forwarded-For``/``-Proto`` name the client and the scheme of the URLs handed out only
    when the peer is one of ``CHUNKD_TRUSTED_PROXIES``. uvicorn's own default believed any loopback
    peer, so a local client could take any address (a fresh rate-limit budget per address)."""
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_FSYNC": "false", "CHUNKD_TRUSTED_PROXIES": trusted})
    server.env.pop("FORWARDED_ALLOW_IPS", None)  # uvicorn's own setting, from the environment
    server.start()
    try:
        key = server.create_key("alice")
        forwarded = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
        with httpx.Client(base_url=server.url) as client:
            created = client.post(
                "/files",
                headers={"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0", "Upload-Length": "1", **forwarded},
            )
        assert created.status_code == 201, created.text
        [line] = access_lines(server, 1, json_lines=False)
        if trusted:
            assert "client=203.0.113.9 " in line and created.headers["location"].startswith("https://")
        else:
            assert "client=127.0.0.1 " in line and created.headers["location"].startswith("http://")
    finally:
        server.stop()


def bytes_read(pid: int) -> int:
    """What process ``pid`` has read so far (its sockets and files), from /proc."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError(f"no rchar in /proc/{pid}/io")


def test_a_client_gone_mid_body_is_logged_499_not_500(tmp_path: Path) -> None:
    """A PATCH whose client closes the connection mid-body keeps what arrived (tus) and is logged
    499, as nginx logs a client that went away: it was logged 500, which an operator's alerts on
    5xx count as a server fault."""
    import socket

    from tests.support.waiting import wait_for

    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_FSYNC": "false"})
    server.start()
    try:
        key = server.create_key("alice")
        tus = {"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0"}
        with httpx.Client(base_url=server.url) as client:
            location = client.post("/files", headers={**tus, "Upload-Length": "1000000"}).headers["location"]
        path = urlsplit(location).path
        host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
        with socket.create_connection((host, port)) as sock:
            head = (
                f"PATCH {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nTus-Resumable: 1.0.0\r\n"
                "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: 1000000\r\n\r\n"
            )
            sock.sendall(head.encode() + b"x" * 100_000)
        lines = access_lines(server, 2, json_lines=False)
        patch = [line for line in lines if "method=PATCH" in line]
        assert patch and "status=499 " in patch[0], lines
        with httpx.Client(base_url=server.url) as client:  # and what arrived is kept, to resume from
            offset = client.head(location, headers=tus).headers["upload-offset"]
        assert int(offset) > 0

        # A download asking for a SHA-512 of a large file, its client gone at once: the hashing
        # stops (a 499) rather than reading the whole file for nobody (it was answered 200).
        size = 128 * 2**20
        with httpx.Client(base_url=server.url, timeout=120) as client:
            made = client.post(
                "/files",
                content=b"\0" * size,
                headers={**tus, "Upload-Length": str(size), "Content-Type": "application/offset+octet-stream"},
            )
        assert made.status_code == 201, made.text
        done = urlsplit(made.headers["location"]).path
        assert server.process is not None
        pid = server.process.pid
        began = bytes_read(pid)
        with socket.create_connection((host, port)) as sock:
            sock.sendall(
                f"GET {done} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                "Tus-Resumable: 1.0.0\r\nWant-Repr-Digest: sha-512=10\r\n\r\n".encode()
            )
            # Gone once the server is reading the file for its hash (not at once: on a loaded
            # machine the server could hash all 128 MiB before it saw a client gone that early).
            wait_for(lambda: bytes_read(pid) - began > 8 * 2**20, what="the server reading the file to hash it")
        lines = access_lines(server, 5, json_lines=False)
        download = [line for line in lines if "method=GET" in line and f"upload_id={done.rsplit('/', 1)[1]}" in line]
        assert download and "status=499 " in download[0], lines
    finally:
        server.stop()


def test_a_file_deleted_mid_download_ends_it_short_with_one_line(tmp_path: Path) -> None:
    """A delete while the file is being downloaded: the download ends after bytes that are all
    right (a part file already open stays readable, the next one is gone), the connection is
    closed, and the server logs one line, not a traceback (it logged Starlette's "Caught handled
    exception, but response already started" with two tracebacks)."""
    from tests.support.waiting import wait_for

    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_FSYNC": "false"})
    server.start()
    try:
        auth = {"Authorization": f"Bearer {server.create_key('alice')}"}
        part = 5 * 2**20
        data = b"".join(bytes([n]) * part for n in range(4))
        with httpx.Client(base_url=server.url, headers=auth, timeout=60) as client:
            created = client.post("/v1/files", json={"filename": "a.bin", "sizeBytes": len(data), "partSize": part})
            file_id = created.json()["id"]
            for n in range(4):
                sent = client.put(f"/v1/files/{file_id}/parts/{n + 1}", content=data[n * part : (n + 1) * part])
                assert sent.status_code == 200, sent.text
            assert client.post(f"/v1/files/{file_id}/complete", json={}).status_code == 200
            received = b""
            with client.stream("GET", f"/v1/files/{file_id}/content") as download:
                chunks = download.iter_raw(65536)
                received += next(chunks)
                assert client.delete(f"/v1/files/{file_id}").status_code == 204
                with pytest.raises(httpx.RemoteProtocolError):
                    for chunk in chunks:
                        received += chunk
        assert part <= len(received) < len(data) and received == data[: len(received)]
        cut = wait_for(lambda: [line for line in server.log.read_text().splitlines() if "cut short" in line])
        assert len(cut) == 1 and f"download of file {file_id} cut short after" in cut[0], cut
        # Eight requests: create, four parts, complete, the delete, and the download, whose line is
        # written last (when its response ends), so waiting for seven could miss it.
        download_line = [line for line in access_lines(server, 8, json_lines=False) if "method=GET" in line]
        assert download_line and "status=200 " in download_line[0]
        log = server.log.read_text()
        assert "Traceback" not in log and "ASGI" not in log, log
    finally:
        server.stop()


def test_json_mode_writes_every_line_of_the_server_as_json(tmp_path: Path) -> None:
    """With CHUNKD_LOG_FORMAT=json only the access lines were JSON: the start-up line, the bootstrap
    key's line, uvicorn's warnings and chunkd's own server lines were plain text in the same output."""
    import socket

    from tests.support.raw_http import read_response

    env = {"CHUNKD_LOG_FORMAT": "json", "CHUNKD_FSYNC": "false", "CHUNKD_BOOTSTRAP_ADMIN_KEY": "true"}
    env["CHUNKD_MAX_HEADER_BYTES"] = "8192"
    server = ChunkdServer(tmp_path / "data", env=env).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")  # uvicorn's own warning
            assert read_response(sock)[0] == 400
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
            assert read_response(sock)[0] == 431  # chunkd.server's info line
        expected = ("chunkd listening on", "created an admin API key", "Invalid HTTP request", "answered 431")

        def logged() -> str | None:
            text = server.log.read_text()
            return text if all(piece in text for piece in expected) else None

        text = wait_for(logged, 60, "the four lines")
    finally:
        server.stop()
    records = [json.loads(line) for line in server.log.read_text().splitlines() if line.strip()]
    assert all(isinstance(record, dict) and record.get("time") for record in records), text
    by_message = {record.get("message", ""): record for record in records}
    warning = next(record for message, record in by_message.items() if "Invalid HTTP request" in message)
    assert (warning["level"], warning["logger"]) == ("WARNING", "uvicorn.error")
