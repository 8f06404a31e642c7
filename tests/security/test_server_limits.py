"""The HTTP server's own limits, from a raw socket against a real ``chunkd serve`` (uvicorn with
chunkd's protocol): a request head over the cap gets 431 and the connection closes; a head not
finished in time gets 408; a silent connection is closed; a trickled body is cut with 408 and the
durable parts stay; a client that goes away leaves one info line and no traceback;
``limit_concurrency`` answers 503; informational responses reach the client before the request
body is complete."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.proc import process_tree, wait_until_read
from tests.support.raw_http import ResponseReader, read_response
from tests.support.server import ChunkdServer, free_port, wait_until_up
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

HEAD_CAP = 8192


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ChunkdServer, str]]:
    env = {
        "CHUNKD_MAX_HEADER_BYTES": str(HEAD_CAP),
        "CHUNKD_HEADER_TIMEOUT_SECONDS": "1",
        "CHUNKD_MIN_BODY_RATE_BYTES_PER_SECOND": "1000",
        "CHUNKD_MIN_BODY_RATE_WINDOW_SECONDS": "1",
        "CHUNKD_MIN_BODY_RATE_GRACE_SECONDS": "1",
        "CHUNKD_BODY_IDLE_TIMEOUT_SECONDS": "60",
        "CHUNKD_SEND_TIMEOUT_SECONDS": "2",
        "CHUNKD_MIN_PART_SIZE": "1",
        "CHUNKD_FSYNC": "false",
    }
    server = ChunkdServer(tmp_path_factory.mktemp("limits") / "data", env=env)
    server.start()
    try:
        yield server, server.create_key("alice")
    finally:
        server.kill()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=20)


def _closed(sock: socket.socket) -> bool:
    """True when the server closed the connection (EOF or reset), waiting for it."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def _wait_for_log(server: ChunkdServer, text: str, count: int = 1, timeout: float = 20.0) -> str:
    """The server log once ``text`` is in it ``count`` times."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log.read_text()
        if log.count(text) >= count:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the server log:\n{server.log.read_text()}")


def test_oversized_head_sent_at_once_gets_431_and_close(limited: tuple[ChunkdServer, str]) -> None:
    server, _ = limited
    with _connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
        status, headers, body = read_response(sock)
        assert status == 431 and headers["connection"] == "close", body
        assert str(HEAD_CAP).encode() in body
        assert _closed(sock)


def test_unfinished_head_over_the_cap_is_refused_without_waiting_for_its_end(
    limited: tuple[ChunkdServer, str],
) -> None:
    server, _ = limited
    with _connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        sock.settimeout(5)
        try:
            while sent < 64 * HEAD_CAP:  # never ends the header line
                sock.sendall(b"a" * 1024)
                sent += 1024
        except OSError:
            pass
        sock.settimeout(20)
        status, _, _ = read_response(sock)
        assert status == 431
        assert _closed(sock)
    # Many headers, each small, add up too.
    with _connect(server.port) as sock:
        headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(200))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        assert read_response(sock)[0] == 431


def test_head_under_the_cap_is_served(limited: tuple[ChunkdServer, str]) -> None:
    server, _ = limited
    with _connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (HEAD_CAP // 2) + b"\r\n\r\n")
        assert read_response(sock)[0] == 200
        # Keep-alive: the cap counts each request's head on its own.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (HEAD_CAP // 2) + b"\r\n\r\n")
        assert read_response(sock)[0] == 200


def test_half_sent_head_is_answered_408_and_closed(limited: tuple[ChunkdServer, str]) -> None:
    server, _ = limited
    with _connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # ... and never the blank line
        status, headers, body = read_response(sock)
        assert status == 408 and headers["connection"] == "close", body
        assert _closed(sock)


def test_silent_connection_is_closed(limited: tuple[ChunkdServer, str]) -> None:
    server, _ = limited
    with _connect(server.port) as sock:
        assert _closed(sock)


def test_keep_alive_connection_sending_a_slow_second_head_is_closed(limited: tuple[ChunkdServer, str]) -> None:
    server, _ = limited
    with _connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert read_response(sock)[0] == 408
        assert _closed(sock)


def test_trickled_body_is_cut_with_408_and_durable_parts_kept(limited: tuple[ChunkdServer, str]) -> None:
    server, key = limited
    auth = {"Authorization": f"Bearer {key}"}
    created = httpx.post(
        f"{server.url}/v1/files", json={"filename": "t.bin", "sizeBytes": 3000, "partSize": 1000}, headers=auth
    )
    file_id = created.json()["id"]
    answered = threading.Event()
    with _connect(server.port) as sock:
        sock.sendall(
            (
                f"PUT /v1/files/{file_id}/content HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 3000\r\n\r\n"
            ).encode()
            + b"a" * 2000
        )

        def trickle() -> None:  # 10 bytes a second: well under the 1,000 bytes/s minimum
            for _ in range(900):
                if answered.wait(0.1):
                    return
                try:
                    sock.sendall(b"a")
                except OSError:
                    return

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        try:
            status, headers, body = read_response(sock)
        finally:
            answered.set()
            sender.join()
    assert status == 408, body
    assert b"slower than 1000 bytes/s" in body
    assert headers.get("connection") == "close"
    got = httpx.get(f"{server.url}/v1/files/{file_id}", headers=auth).json()
    assert got["status"] == "PENDING" and [p["partNumber"] for p in got["parts"]] == [1, 2]


def test_dropped_client_is_one_info_line_without_traceback(limited: tuple[ChunkdServer, str]) -> None:
    server, key = limited
    auth = {"Authorization": f"Bearer {key}"}
    created = httpx.post(
        f"{server.url}/v1/files", json={"filename": "d.bin", "sizeBytes": 30000, "partSize": 30000}, headers=auth
    )
    file_id = created.json()["id"]
    line = f"client disconnected: PUT /v1/files/{file_id}/parts/1"
    for drops in range(1, 4):
        with _connect(server.port) as sock:
            sock.sendall(
                (
                    f"PUT /v1/files/{file_id}/parts/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                    "Content-Type: application/octet-stream\r\nContent-Length: 30000\r\n\r\n"
                ).encode()
                + b"a" * 10000
            )
        _wait_for_log(server, line, drops)
    log = server.log.read_text()
    assert log.count(line) == 3
    assert "Traceback" not in log and "Exception in ASGI application" not in log
    assert all(not entry.startswith(("ERROR", "WARNING")) for entry in log.splitlines() if file_id in entry), log


def _open_files_under(server: ChunkdServer, name: str) -> list[str]:
    """The paths of the files the server's processes hold open that contain ``name``."""
    found = []
    for pid in process_tree(server.process.pid):
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in descriptors:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if name in target:
                found.append(target)
    return found


def test_a_download_its_client_stopped_reading_is_cut_off(limited: tuple[ChunkdServer, str]) -> None:
    """It held its connection slot, file descriptor and buffers for ever (59 such clients took all
    60 slots of a server). Now: cut once the client takes under the minimum rate (1,000 bytes/s
    here) over the send timeout (2 s), and one info line. The stored file it was reading is closed
    then too: the cut-off body was left to the collector, and every such download kept its file
    open (and some MiB) for good."""
    server, key = limited
    auth = {"Authorization": f"Bearer {key}"}
    data = os.urandom(16 * 2**20)
    created = httpx.post(f"{server.url}/v1/files", json={"filename": "s.bin", "sizeBytes": len(data)}, headers=auth)
    file_id = created.json()["id"]
    assert httpx.put(f"{server.url}/v1/files/{file_id}/content", content=data, headers=auth).status_code == 200
    assert httpx.post(f"{server.url}/v1/files/{file_id}/complete", json={}, headers=auth).status_code == 200
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(60)
        sock.connect(("127.0.0.1", server.port))
        head = f"GET /v1/files/{file_id}/content HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
        sock.sendall(head.encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # then it stops reading
        _wait_for_log(server, f"client disconnected: GET /v1/files/{file_id}/content (ClientStoppedReading)", 1)
        assert _open_files_under(server, file_id) == []  # closed before the line is written
        taken = 0
        try:  # what was in flight, then the reset (or the end)
            while chunk := sock.recv(1 << 20):
                taken += len(chunk)
        except ConnectionResetError:
            pass
        assert taken < len(data)
    # A reader that keeps reading is not cut, however long it takes in all.
    with httpx.stream("GET", f"{server.url}/v1/files/{file_id}/content", headers=auth) as response:
        assert sum(len(chunk) for chunk in response.iter_bytes()) == len(data)


def _send_until_closed(sock: socket.socket, size: int) -> int:
    """Send up to ``size`` more body bytes; how many went before the server closed the connection."""
    sent = 0
    piece = b"b" * 65536
    try:
        while sent < size:
            sent += sock.send(piece[: size - sent])
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def test_a_response_before_the_body_ends_closes_instead_of_reading_the_rest(limited: tuple[ChunkdServer, str]) -> None:
    """A request refused before its body was read (here a 401 at its first bytes) ends its
    connection: the answer says ``connection: close`` and arrives whole, and the server stops
    reading soon after. It read (and dropped) all the rest of a 64 MiB body to find the next
    request, kept the connection for as long as a client trickled it, and, after ``Expect:
    100-continue``, waited for a body the client would never send."""
    server, _ = limited
    size = 64 * 2**20
    head = (
        "POST /api/v2/pm/upload/ HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {size}\r\n"
    )
    with _connect(server.port) as sock:
        sock.sendall(head.encode() + b"\r\n" + b"a" * 65536)
        status, headers, body = read_response(sock)
        assert status == 401 and b'"success":false' in body
        assert headers.get("connection") == "close"
        assert _send_until_closed(sock, size - 65536) < size // 2
    with _connect(server.port) as sock:
        sock.sendall(head.encode() + b"Expect: 100-continue\r\n\r\n")  # the body waits for a 100
        status, headers, _ = read_response(sock)
        assert status == 401 and headers.get("connection") == "close"
        assert _closed(sock)  # not held open for a body that will never come


@pytest.mark.parametrize("framing", [b"0\r\nX-Trailer: ", b"5;ext="], ids=["trailer", "chunk-extension"])
def test_endless_chunked_framing_is_cut_at_the_head_cap(informational_server: int, framing: bytes) -> None:
    """An unfinished trailer field was buffered whole by httptools (100 MB sent, 100 MB more held by
    the process) and an endless chunk extension was read for ever; both count against the head cap
    (64 KiB here) and are answered 431."""
    with _connect(informational_server) as sock:
        sock.sendall(b"POST /files/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n" + framing)
        assert _send_until_closed(sock, 64 * 2**20) < 32 * 2**20
        reader = ResponseReader(sock)
        status, _ = reader.next_head()
        while status == 104:
            status, _ = reader.next_head()
        assert status == 431


def test_chunked_bodies_with_small_chunks_and_trailers_are_read(informational_server: int) -> None:
    """Framing is counted between pieces of data only: many small chunks make no 431."""
    chunks = b"".join(b"1;n=%d\r\nx\r\n" % i for i in range(20000))  # ~230 KB of framing in all
    with _connect(informational_server) as sock:
        sock.sendall(
            b"POST /files/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + chunks
            + b"0\r\nX-Trailer: "
            + b"t" * 1000
            + b"\r\n\r\n"
        )
        reader = ResponseReader(sock)
        status, headers = reader.next_head()
        while status == 104:
            status, headers = reader.next_head()
        assert status == 200
        assert reader.read_body(int(headers["content-length"])) == b"read 20000; informational supported"


@pytest.mark.parametrize("hosts", [b"", b"Host: a.example\r\nHost: b.example\r\n"], ids=["no-host", "two-hosts"])
def test_a_request_without_exactly_one_host_is_refused(limited: tuple[ChunkdServer, str], hosts: bytes) -> None:
    """RFC 9112 §3.2 (a MUST). Two were passed on, and the URLs handed out (a tus Location, a pm
    file_url) used the first, whichever one a proxy in front had checked."""
    server, key = limited
    with _connect(server.port) as sock:
        sock.sendall(
            b"POST /files/ HTTP/1.1\r\n"
            + hosts
            + b"Tus-Resumable: 1.0.0\r\nUpload-Length: 5\r\n"
            + f"Authorization: Bearer {key}\r\nContent-Length: 0\r\n\r\n".encode()
        )
        status, headers, body = read_response(sock)
        assert status == 400 and b"Host" in body and headers.get("connection") == "close"
        assert _closed(sock)
    with _connect(server.port) as sock:  # HTTP/1.0 needs none
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert read_response(sock)[0] == 200


@pytest.mark.parametrize("kind", ["put", "tus"])
def test_sigterm_waits_for_requests_in_flight_only_so_long(tmp_path: Path, kind: str) -> None:
    """A body trickling in above the minimum rate held shutdown for as long as it lasted (an 8 MiB
    part at 2 KiB/s: over an hour). Now the drain is bounded by CHUNKD_SHUTDOWN_GRACE_SECONDS. The
    request cut then is answered 503 (retry), not a 500 with "Exception in ASGI application": and its
    clean-up, which ran after the app had closed its locks, no longer fails (a TypeError from the
    lock file's release)."""
    import signal

    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_SHUTDOWN_GRACE_SECONDS": "1"}).start()
    try:
        key = server.create_key("alice")
        auth = {"Authorization": f"Bearer {key}"}
        if kind == "put":
            created = httpx.post(f"{server.url}/v1/files", json={"filename": "t.bin", "sizeBytes": 10**7}, headers=auth)
            head = f"PUT /v1/files/{created.json()['id']}/content HTTP/1.1\r\n"
            head += "Content-Type: application/octet-stream\r\n"
        else:
            tus = {**auth, "Tus-Resumable": "1.0.0", "Upload-Length": str(10**7)}
            location = httpx.post(f"{server.url}/files/", headers=tus).headers["location"]
            head = f"PATCH {httpx.URL(location).path} HTTP/1.1\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
            head += "Content-Type: application/offset+octet-stream\r\n"
        stop = threading.Event()
        with _connect(server.port) as sock:
            sock.sendall(
                f"{head}Host: x\r\nAuthorization: Bearer {key}\r\nX-Request-Id: cut-{kind}\r\n"
                "Content-Length: 10000000\r\n\r\n".encode()
            )

            def trickle() -> None:  # 8 KiB a second: above the minimum rate, for minutes
                while not stop.wait(0.25):
                    try:
                        sock.sendall(b"a" * 2048)
                    except OSError:
                        return

            sender = threading.Thread(target=trickle, daemon=True)
            sender.start()
            # The request is in flight: the server has read it. Half a second's sleep stood for this, and
            # a server not run for that long (a loaded machine) got the SIGTERM before it had accepted
            # the connection, which was reset (seen with the server stopped for that half second).
            wait_until_read(sock, server.port)
            assert server.process is not None
            os.killpg(server.process.pid, signal.SIGTERM)
            try:
                status, headers, body = read_response(sock)
                assert status == 503 and headers.get("retry-after") and b"shutting down" in body, (status, body)
                assert headers.get("x-request-id") == f"cut-{kind}"  # the id its log lines name
                server.process.wait(timeout=30)  # it was still up, draining, as long as the body came
            finally:
                stop.set()
                sender.join()
        log = server.log.read_text()
        assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
        assert f"request cut by the shutdown: {head.split()[0]} {head.split()[1]}, request id cut-{kind}" in log
    finally:
        server.kill()


def _created(server: ChunkdServer, key: str) -> str:
    created = httpx.post(
        f"{server.url}/v1/files", json={"filename": "a", "sizeBytes": 10}, headers={"Authorization": f"Bearer {key}"}
    )
    return str(created.json()["id"])


def _in_flight(server: ChunkdServer, key: str, upload_id: str) -> socket.socket:
    """A connection whose request is in flight: a part PUT told to go on (100 Continue) whose body
    never comes."""
    sock = _connect(server.port)
    sock.sendall(
        f"PUT /v1/files/{upload_id}/parts/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        "Expect: 100-continue\r\nContent-Length: 10\r\n\r\n".encode()
    )
    assert sock.recv(1024).startswith(b"HTTP/1.1 100 ")
    return sock


def test_concurrency_limit_answers_503(tmp_path: Path) -> None:
    # The connections held have requests in flight: idle ones give way (the test below).
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_LIMIT_CONCURRENCY": "3"}).start()
    try:
        key = server.create_key("alice")
        uploads = [_created(server, key) for _ in range(2)]
        held = [_in_flight(server, key, upload_id) for upload_id in uploads]  # with the next one: 3
        try:
            for _ in range(3):
                with _connect(server.port) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    status, headers, body = read_response(sock)
                # Why, and when to try again (uvicorn's own was plain text without Retry-After).
                assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
                assert headers["content-type"] == "application/json"
                assert json.loads(body)["error"]["code"] == "overloaded"
        finally:
            for sock in held:
                sock.close()
    finally:
        server.kill()
    # One line when refusals begin, not one per refused request (uvicorn wrote one each).
    log = server.log.read_text()
    assert log.count("at the concurrency limit") == 1 and "Exceeded concurrency limit" not in log


def test_idle_connections_give_way_at_the_concurrency_limit(tmp_path: Path) -> None:
    # Connections that held the slots with no request in flight (silent, or kept alive after an
    # answer) had every new request answered 503 until they timed out: one address could shut
    # every other client out by opening the limit's worth of them again and again.
    env = {"CHUNKD_LIMIT_CONCURRENCY": "3", "CHUNKD_HEADER_TIMEOUT_SECONDS": "60"}
    server = ChunkdServer(tmp_path / "data", env=env).start()
    try:
        silent = [_connect(server.port) for _ in range(2)]
        kept = _connect(server.port)
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(kept)[0] == 200
        try:
            with _connect(server.port) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_response(sock)[0] == 200
            # The silent ones went first, the oldest first; the one kept alive still serves.
            assert all(_closed(sock) for sock in silent)
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(kept)[0] == 200
        finally:
            for sock in [*silent, kept]:
                sock.close()
    finally:
        server.kill()


@contextmanager
def _informational_app(root: Path, mode: str) -> Iterator[int]:
    """tests/support/informational_app.py under uvicorn with chunkd's protocol; yields its port."""
    port = free_port()
    log = root / f"informational-{mode}.log"
    sources = Path(__file__).resolve().parents[2]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.informational_app", str(port), mode],
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(sources / "src"), str(sources)])},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log.read_text()) from None
                time.sleep(0.05)
        yield port
    finally:
        process.kill()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def informational_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with _informational_app(tmp_path_factory.mktemp("informational"), "on") as port:
        yield port


def _read_head(sock: socket.socket, buffer: bytearray) -> bytes:
    """The next response head (up to the blank line) from ``buffer`` + the socket."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed; got {bytes(buffer)!r}")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    buffer[:] = rest
    return head


def test_informational_responses_arrive_before_the_body_is_complete(informational_server: int) -> None:
    with _connect(informational_server) as sock:
        sock.sendall(b"POST /files/ HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        buffer = bytearray()
        first = _read_head(sock, buffer).split(b"\r\n")
        assert first[0] == b"HTTP/1.1 104 Upload Resumption Supported"
        assert b"location: /files/abc" in first and b"upload-offset: 0" in first
        second = _read_head(sock, buffer).split(b"\r\n")
        assert second[0] == b"HTTP/1.1 104 Upload Resumption Supported" and b"upload-offset: 1" in second
        sock.sendall(b"67890")  # the body's end only after both 104s arrived
        final = _read_head(sock, buffer)
        assert final.startswith(b"HTTP/1.1 200 ")
        while len(buffer) < len(b"read 10; informational supported"):
            buffer += sock.recv(65536)
        assert bytes(buffer) == b"read 10; informational supported"


def test_informational_responses_are_not_offered_to_http_1_0(informational_server: int) -> None:
    with _connect(informational_server) as sock:
        sock.sendall(b"POST /files/ HTTP/1.0\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
        status, _, body = read_response(sock)
        assert status == 200 and body == b"read 2; informational unsupported"


@pytest.mark.parametrize("proxy_header", ["X-Forwarded-For: 10.0.0.9", "Forwarded: for=10.0.0.9", "Via: 1.1 edge"])
def test_informational_responses_are_not_offered_through_a_proxy_by_default(tmp_path: Path, proxy_header: str) -> None:
    """The default ("auto") offers them to a client that reached the server directly, not to a
    request a proxy forwarded: nginx 1.22 takes an upstream 104 for the final response, and a draft
    client's creation behind it stalled until the body timeout. "on" offers them to both."""
    request = f"POST /files/ HTTP/1.1\r\nHost: x\r\n{proxy_header}\r\nContent-Length: 2\r\n\r\nab".encode()
    direct = b"POST /files/ HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"
    with _informational_app(tmp_path, "auto") as port:
        with _connect(port) as sock:
            sock.sendall(request)
            status, _, body = read_response(sock)
            assert status == 200 and body == b"read 2; informational unsupported"
        with _connect(port) as sock:
            sock.sendall(direct)
            buffer = bytearray()
            assert _read_head(sock, buffer).startswith(b"HTTP/1.1 104 ")
    with _informational_app(tmp_path, "on") as port, _connect(port) as sock:
        sock.sendall(request)
        buffer = bytearray()
        assert _read_head(sock, buffer).startswith(b"HTTP/1.1 104 ")


def test_informational_responses_turned_off_are_not_offered(tmp_path: Path) -> None:
    with _informational_app(tmp_path, "off") as port, _connect(port) as sock:
        sock.sendall(b"POST /files/ HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
        status, _, body = read_response(sock)
        assert status == 200 and body == b"read 2; informational unsupported"


def test_server_limits_are_documented_settings() -> None:
    from chunkd.settings import Settings

    fields = Settings.model_fields
    for name in (
        "max_header_bytes",
        "header_timeout_seconds",
        "min_body_rate_bytes_per_second",
        "min_body_rate_window_seconds",
        "limit_concurrency",
    ):
        assert fields[name].description, name
    assert Settings().max_header_bytes == 64 * 1024


def test_granian_applies_the_head_cap_and_the_header_timeout(tmp_path: Path) -> None:
    env = {"CHUNKD_SERVER": "granian", "CHUNKD_MAX_HEADER_BYTES": "8192", "CHUNKD_HEADER_TIMEOUT_SECONDS": "1"}
    server = ChunkdServer(tmp_path / "data", env=env).start()
    try:
        with _connect(server.port) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
            assert read_response(sock)[0] == 431
        with _connect(server.port) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            assert _closed(sock)
    finally:
        server.kill()


@pytest.fixture(scope="module")
def failing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """tests/support/failing_app.py under uvicorn with chunkd's protocol; its port and log."""
    root = tmp_path_factory.mktemp("failing")
    port = free_port()
    log = root / "failing.log"
    sources = Path(__file__).resolve().parents[2]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.failing_app", str(port), str(root / "data")],
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(sources / "src"), str(sources)])},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}/healthz", "failing app", log, timeout=60)
        yield port, log
    finally:
        process.kill()
        process.wait(timeout=30)


@pytest.mark.parametrize("path", ["/bare/boom", "/boom"], ids=["no-response-yet", "after-the-apps-500"])
def test_a_request_the_app_fails_is_answered_500_and_closed_gracefully(
    failing_server: tuple[int, Path], path: str
) -> None:
    """The app raises after the first piece of a large body while the client is still sending it.
    uvicorn answered a text 500 of its own (or, after the app's error middleware had answered,
    nothing more) and closed the connection at once, with the body unread: a reset, which can
    destroy the answer before the client reads it. Now a JSON 500 naming the request id (when no
    answer had started), one error line with the same id, and a lingering close: the client reads
    the answer and then the end of the connection, not a reset."""
    port, log = failing_server
    request_id = f"failed-{path.strip('/').replace('/', '-')}"
    size = 64 * 2**20
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Request-Id: {request_id}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
    )
    with _connect(port) as sock:
        sock.sendall(head.encode() + b"a" * 65536)
        # The client goes on sending while the answer comes: the server has input it never reads.
        sender = threading.Thread(target=_send_until_closed, args=(sock, 4 * 2**20), daemon=True)
        sender.start()
        try:
            status, headers, body = read_response(sock)
            assert status == 500 and headers.get("connection") == "close", body
            assert headers["x-request-id"] == request_id
            # The server's own answer (nothing had started), or the app's error middleware's.
            assert headers["content-type"] == "application/json"
            error = json.loads(body)["error"]
            assert error["code"] == "internal_error" and error["requestId"] == request_id
            assert sock.recv(65536) == b""  # the end of the connection (a reset raises here)
        finally:
            with contextlib.suppress(OSError):  # ends the sender (a reset connection is not connected)
                sock.shutdown(socket.SHUT_RDWR)
            sender.join()
    text = wait_for(lambda: (t := log.read_text()).count(f"(request id {request_id})") and t, what="the error line")
    assert f"request failed: POST {path} (request id {request_id})" in text
    assert "RuntimeError: a bug" in text and "Exception in ASGI application" not in text
