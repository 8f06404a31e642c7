"""Hostile HTTP/1.1 from a raw socket against a real ``chunkd serve``, under uvicorn (chunkd's own
protocol, :mod:`chunkd.server.protocol`) and granian where the case applies to it: requests
pipelined behind others, smuggling attempts, upgrades, targets and versions RFC 9112 says what
to do with. Each request gets exactly its own answer, in order; what is refused is a 4xx (or a
505) and the end of the connection, never a 5xx, a traceback, or a connection left hanging."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.support.raw_http import ResponseReader
from tests.support.server import ChunkdServer

pytestmark = pytest.mark.e2e

HEAD_CAP = 8192
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module", params=["uvicorn", "granian"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChunkdServer]:
    env = {
        "CHUNKD_SERVER": request.param,
        "CHUNKD_MAX_HEADER_BYTES": str(HEAD_CAP),
        "CHUNKD_HEADER_TIMEOUT_SECONDS": "5",
        "CHUNKD_MIN_PART_SIZE": "1",
        "CHUNKD_FSYNC": "false",
    }
    started = ChunkdServer(tmp_path_factory.mktemp(f"framing-{request.param}") / "data", env=env).start()
    try:
        yield started
    finally:
        started.kill()


def _uvicorn_only(server: ChunkdServer, why: str) -> None:
    if server.env["CHUNKD_SERVER"] != "uvicorn":
        pytest.skip(f"granian (hyper) {why}")


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=20)


def _closed(sock: socket.socket, reader: ResponseReader) -> bool:
    """True when nothing but the end of the connection follows what was read (EOF or reset)."""
    if reader.buffer:
        return False
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def _healthy(reader: ResponseReader) -> None:
    status, headers = reader.next_head()
    assert (status, reader.read_body(int(headers["content-length"]))) == (200, b'{"status":"ok"}')


def _no_traceback(server: ChunkdServer) -> None:
    log = server.log.read_text()
    assert "Traceback" not in log and "request failed" not in log and "Exception in ASGI" not in log, log[-3000:]


@pytest.mark.parametrize(
    ("refused", "statuses"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", {400}),
        (b"GET /healthz HTTP/1.1\r\n\r\n", {400}),  # no Host
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2 * HEAD_CAP + b"\r\n\r\n", {431}),
        # A bad chunk size: 400, or the app's 405 when its answer comes before the body is read.
        (b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", {400, 405}),
    ],
    ids=["not-http", "no-host", "head-over-the-cap", "bad-chunk-size"],
)
def test_a_refused_request_pipelined_behind_others_is_answered_after_them(
    server: ChunkdServer, refused: bytes, statuses: set[int]
) -> None:
    """The refusal was written at once, ahead of the two responses still owed: the client read
    it as the answer to its first request, and the two responses, written once the lingering
    close had begun, failed (``request failed ... Cannot call write() after write_eof()``)."""
    if refused.startswith(b"GET /healthz HTTP/1.1\r\n\r\n"):
        _uvicorn_only(server, "hands a request without Host to the app with an empty one")
    with _connect(server.port) as sock:
        sock.sendall(HEALTHZ + HEALTHZ + refused)
        reader = ResponseReader(sock)
        _healthy(reader)
        _healthy(reader)
        got, headers = reader.next_head()
        assert got in statuses
        assert got == 405 or headers.get("connection") == "close"  # the server's own refusal says so
        reader.read_body(int(headers.get("content-length", "0")))
        assert _closed(sock, reader)
    with _connect(server.port) as sock:  # and the server serves the next client
        sock.sendall(HEALTHZ)
        _healthy(ResponseReader(sock))
    _no_traceback(server)


@pytest.mark.parametrize(
    ("framing", "body"),
    [(b"Content-Length: 5", b"hello"), (b"Transfer-Encoding: chunked", b"5\r\nhello\r\n0\r\n\r\n")],
    ids=["content-length", "chunked"],
)
def test_a_request_whose_upgrade_is_not_made_is_read_whole_and_the_next_one_answered(
    server: ChunkdServer, framing: bytes, body: bytes
) -> None:
    """An Upgrade chunkd does not perform (h2c here) is ignored, as RFC 9110 §7.8 allows: the
    request is HTTP/1.1 with its body. llhttp ended it at its head and uvicorn dropped the rest of
    the read: the part was refused as 0 bytes ("got 0") and the request behind it never answered."""
    key = server.create_key("alice")
    auth = {"Authorization": f"Bearer {key}"}
    created = httpx.post(
        f"{server.url}/v1/files", json={"filename": "u.bin", "sizeBytes": 5, "partSize": 5}, headers=auth
    )
    file_id = created.json()["id"]
    head = (
        f"PUT /v1/files/{file_id}/parts/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/octet-stream\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
    ).encode()
    with _connect(server.port) as sock:
        sock.sendall(head + framing + b"\r\n\r\n" + body + HEALTHZ)
        reader = ResponseReader(sock)
        status, headers = reader.next_head()
        answer = json.loads(reader.read_body(int(headers["content-length"])))
        assert (status, answer["partNumber"], answer["sizeBytes"]) == (200, 1, 5), answer
        _healthy(reader)
    parts = httpx.get(f"{server.url}/v1/files/{file_id}", headers=auth).json()["parts"]
    assert [(part["partNumber"], part["sizeBytes"]) for part in parts] == [(1, 5)]
    _no_traceback(server)


def test_a_read_holding_many_requests_whose_upgrade_is_ignored_answers_each(server: ChunkdServer) -> None:
    """Each ignored Upgrade's rest was parsed by a recursive call: a read holding a thousand such
    requests ran out of stack (RecursionError, tracebacks, the connection reset, none answered)."""
    upgrading = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n"
    count = 2000
    with _connect(server.port) as sock:
        sock.sendall(upgrading * count + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reader = ResponseReader(sock)
        for _ in range(count + 1):
            _healthy(reader)
        assert _closed(sock, reader)
    _no_traceback(server)


@pytest.mark.parametrize("finished", [True, False], ids=["whole", "unfinished"])
def test_a_request_target_over_the_cap_is_414(server: ChunkdServer, finished: bool) -> None:
    """RFC 9112 §3 (a MUST): 414 URI Too Long, not the 431 of a head over the cap."""
    _uvicorn_only(server, "answers 431: its read buffer holds the head, the target included")
    with _connect(server.port) as sock:
        sock.sendall(b"GET /v1/files/" + b"a" * 2 * HEAD_CAP + (b" HTTP/1.1\r\nHost: x\r\n\r\n" if finished else b""))
        reader = ResponseReader(sock)
        status, headers = reader.next_head()
        assert status == 414 and headers["connection"] == "close"
        assert str(HEAD_CAP).encode() in reader.read_body(int(headers["content-length"]))
        assert _closed(sock, reader)
    with _connect(server.port) as sock:  # a head over the cap by its fields is still a 431
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2 * HEAD_CAP + b"\r\n\r\n")
        assert ResponseReader(sock).next_head()[0] == 431


@pytest.mark.parametrize(
    "request_line",
    [b"GET /healthz HTTP/2.0", b"GET /healthz HTTP/0.9", b"GET /healthz HTTP/3.0", b"PRI * HTTP/2.0"],
    ids=["2.0", "0.9-with-a-head", "3.0", "http2-preface"],
)
def test_a_version_other_than_http_1_is_505(server: ChunkdServer, request_line: bytes) -> None:
    """RFC 9110 §15.6.6. llhttp took "HTTP/2.0" and "HTTP/0.9" with a head for HTTP/1.x requests
    (served 200, without the Host an HTTP/1.1 request must have); the others were a 400."""
    _uvicorn_only(server, "answers 400 or closes")
    with _connect(server.port) as sock:
        sock.sendall(request_line + (b"\r\n\r\nSM\r\n\r\n" if request_line.startswith(b"PRI") else b"\r\n\r\n"))
        reader = ResponseReader(sock)
        status, headers = reader.next_head()
        assert status == 505 and headers["connection"] == "close"
        assert b"HTTP/1.1" in reader.read_body(int(headers["content-length"]))
        assert _closed(sock, reader)


@pytest.mark.parametrize(
    "host",
    [b"a b", b"evil.example/x?", b"user@evil.example", b"x:port", b"[::1", b"a.example\r\nHost: b.example"],
    ids=["space", "path", "userinfo", "port", "bracket", "two-hosts"],
)
def test_a_host_that_is_not_host_and_port_is_refused(server: ChunkdServer, host: bytes) -> None:
    """RFC 9112 §3.2 (a MUST: 400 for a Host with an invalid value, or two). Both servers passed
    these on (uvicorn's protocol refused two Hosts itself, with a plain 400; granian did not),
    and the URLs chunkd hands out are built from the Host: uploadUrl and Location pointed at
    ``http://evil.example/x?/v1/files/...``."""
    with _connect(server.port) as sock:
        sock.sendall(b"POST /v1/files HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 2\r\n\r\n{}")
        reader = ResponseReader(sock)
        status, headers = reader.next_head()
        body = reader.read_body(int(headers["content-length"]))
        assert status == 400 and headers["connection"] == "close"
        if headers["content-type"] == "application/json":  # the app's (uvicorn refuses two Hosts before it)
            error = json.loads(body)["error"]
            assert (error["code"], error["field"]) == ("invalid_host", "Host")
        else:
            assert b"Host" in body
        assert _closed(sock, reader)
    with _connect(server.port) as sock:  # a host, a port, an IP literal, or empty (RFC 9112 §3.2) are served
        sock.sendall(
            b"".join(b"GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n" % h for h in (b"a.example:80", b"[::1]", b""))
        )
        reader = ResponseReader(sock)
        for _ in range(3):
            _healthy(reader)


@pytest.mark.parametrize(
    "request_line", [b"CONNECT evil.example:443 HTTP/1.1", b"GET evil.example:80 HTTP/1.1", b"GET * HTTP/1.1"]
)
def test_a_request_target_that_is_not_a_path_is_refused(server: ChunkdServer, request_line: bytes) -> None:
    """Under granian the routers got them and answered 307 to ``http://<Host>/`` (CONNECT too);
    under uvicorn ``GET *`` reached them. RFC 9112 §3.2: a server takes a path (origin-form),
    the absolute-form, and ``*`` for OPTIONS only."""
    with _connect(server.port) as sock:
        sock.sendall(request_line + b"\r\nHost: evil.example:443\r\n\r\n" + HEALTHZ)
        reader = ResponseReader(sock)
        status, headers = reader.next_head()
        assert status == 400 and headers["connection"] == "close"
        body = reader.read_body(int(headers["content-length"]))
        if headers["content-type"] == "application/json":  # the app's (uvicorn refuses most before it)
            assert json.loads(body)["error"]["field"] == "request-target"
        assert _closed(sock, reader)
    _no_traceback(server)


def test_an_http_1_0_request_with_transfer_encoding_is_refused(server: ChunkdServer) -> None:
    """RFC 9112 §6.1 (a MUST): an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    chunkd read the body as chunked and answered it (200); an HTTP/1.0 proxy in front sees a request
    without a body and, in the "chunks", a second request of its own: the two disagree on where
    the next request starts. granian refused it already."""
    smuggled = b"GET /v1/keys HTTP/1.1\r\nHost: x\r\n\r\n"
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)
    with _connect(server.port) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked
        )
        reader = ResponseReader(sock)
        status, headers = reader.next_head()
        assert status == 400 and headers.get("connection") == "close"
        reader.read_body(int(headers.get("content-length", "0")))
        assert _closed(sock, reader)
    _no_traceback(server)


NEXT = b"GET /v1/keys HTTP/1.1\r\nHost: x\r\n\r\n"  # 401 if it were taken for a request


@pytest.mark.parametrize(
    "hostile",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        b"Content-Length: 5\r\nContent-Length: 0\r\n\r\nhello",
        b"Content-Length: 0, 5\r\n\r\nhello",
        b"Content-Length: -5\r\n\r\nhello",
        b"Content-Length: +5\r\n\r\nhello",
        b"Content-Length: 0x5\r\n\r\nhello",
        b"Content-Length: 99999999999999999999999\r\n\r\n",
        b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
        b"X-A: a\r\n Content-Length: 5\r\n\r\nhello",  # obs-fold
        b"X-A: a\x00b\r\n\r\n",
        b"X-A: a\x01b\r\n\r\n",
        b"X-A : b\r\n\r\n",
        b"X-A\rContent-Length: 5\r\n\r\nhello",  # bare CR
    ],
    ids=[
        "cl-then-te",
        "te-then-cl",
        "two-lengths",
        "listed-lengths",
        "negative-length",
        "plus-length",
        "hex-length",
        "huge-length",
        "te-not-last-chunked",
        "te-xchunked",
        "te-space-before-colon",
        "chunk-size-overflow",
        "chunk-size-leading-space",
        "chunk-without-crlf",
        "chunked-bare-lf",
        "obs-fold",
        "nul-in-value",
        "control-in-value",
        "space-before-colon",
        "bare-cr",
    ],
)
def test_ambiguous_framing_is_refused_and_what_follows_is_not_a_request(server: ChunkdServer, hostile: bytes) -> None:
    """A smuggler's request (RFC 9112 §6.3, §5): the server answers it with a 4xx and closes; the
    request that another reading of its framing would find behind it is never answered."""
    with _connect(server.port) as sock:
        sock.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\n" + hostile + NEXT)
        reader = ResponseReader(sock)
        status, headers = reader.next_head()
        assert 400 <= status < 500
        reader.read_body(int(headers.get("content-length", "0")))
        assert _closed(sock, reader)  # no second answer: nothing was taken for the next request
    with _connect(server.port) as sock:
        sock.sendall(HEALTHZ)
        _healthy(ResponseReader(sock))
    _no_traceback(server)


@pytest.mark.parametrize(
    "broken",
    [b"zz\r\n", b"-5\r\nhello\r\n", b"5\r\nhelloXX", b"ffffffffffffffffffff\r\n"],
    ids=["letters", "negative", "no-crlf", "overflow"],
)
def test_a_chunked_body_broken_midway_is_a_400_and_nothing_is_recorded(server: ChunkdServer, broken: bytes) -> None:
    """A part whose chunked framing breaks after its first chunk. granian ends such a body as if
    the client had gone, and the client, still there, got a bare ``HTTP/1.1 499 <none>``; now a
    400 naming the body, in the dialect's shape (under uvicorn chunkd's protocol answers 400
    itself). The part is not recorded either way."""
    key = server.create_key("alice")
    auth = {"Authorization": f"Bearer {key}"}
    created = httpx.post(
        f"{server.url}/v1/files", json={"filename": "b.bin", "sizeBytes": 100, "partSize": 100}, headers=auth
    )
    file_id = created.json()["id"]
    head = (
        f"PUT /v1/files/{file_id}/parts/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with _connect(server.port) as sock:
        sock.sendall(head + b"5\r\nhello\r\n" + broken)
        reader = ResponseReader(sock)
        status, headers = reader.next_head()
        body = reader.read_body(int(headers["content-length"]))
        assert status == 400 and headers["connection"] == "close", body
        if headers["content-type"] == "application/json":
            assert json.loads(body)["error"]["field"] == "body"
        assert _closed(sock, reader)
    assert httpx.get(f"{server.url}/v1/files/{file_id}", headers=auth).json()["parts"] == []
    _no_traceback(server)


def test_an_absolute_form_targets_authority_is_the_host(server: ChunkdServer) -> None:
    """RFC 9112 §3.2.2 (a MUST): the server ignores Host and uses the target's authority. The
    Host field was passed on, and the uploadUrl the answer hands out named its site instead."""
    _uvicorn_only(server, "hands the app the target's path only: its authority is gone")
    key = server.create_key("alice")
    body = json.dumps({"filename": "a.bin", "sizeBytes": 5}).encode()
    with _connect(server.port) as sock:
        sock.sendall(
            b"POST http://files.example:8080/v1/files HTTP/1.1\r\nHost: other.example\r\n"
            b"Authorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            b"GET http://user@files.example/healthz HTTP/1.1\r\nHost: files.example\r\n\r\n"
            % (key.encode(), len(body), body)
        )
        reader = ResponseReader(sock)
        status, headers = reader.next_head()
        created = json.loads(reader.read_body(int(headers["content-length"])))
        assert status == 201 and created["uploadUrl"].startswith("http://files.example:8080/v1/files/"), created
        status, headers = reader.next_head()  # RFC 9110 §4.2.4: a userinfo is an error
        assert status == 400 and b"userinfo" in reader.read_body(int(headers["content-length"]))
        assert _closed(sock, reader)


def test_an_http_1_0_request_expecting_100_continue_gets_no_1xx(server: ChunkdServer) -> None:
    """RFC 9110 §10.1.1 (a MUST: ignore the expectation) and §15.2 (no 1xx to an HTTP/1.0 client):
    uvicorn wrote "HTTP/1.1 100 Continue" first, which a 1.0 client takes for the final answer."""
    key = server.create_key("alice")
    auth = {"Authorization": f"Bearer {key}"}
    created = httpx.post(
        f"{server.url}/v1/files", json={"filename": "e.bin", "sizeBytes": 5, "partSize": 5}, headers=auth
    )
    head = (
        f"PUT /v1/files/{created.json()['id']}/parts/1 HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/octet-stream\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    )
    with _connect(server.port) as sock:
        sock.sendall(head.encode() + b"hello")
        reader = ResponseReader(sock)
        status, headers = reader.next_head()
        assert status == 200, status
        assert json.loads(reader.read_body(int(headers["content-length"])))["sizeBytes"] == 5
