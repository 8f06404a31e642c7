"""Real tus clients (tuspy, tus-js-client under node) against a real ``chunkd serve``, with the
server killed mid-upload and connections cut mid-PATCH. The stored file's MD5 must equal the
source's every time."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cutting_proxy import CuttingProxy
from tests.support.files import random_file
from tests.support.server import ChunkdServer

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
TESTS = Path(__file__).resolve().parents[1]
JS_CLIENT = TESTS / "e2e" / "js" / "tus_upload.cjs"
HELD_CLIENT = TESTS / "e2e" / "js" / "tus_held.cjs"
TUS = {"Tus-Resumable": "1.0.0"}


def stored(server: ChunkdServer, key: str, url: str) -> dict:
    upload_id = url.rstrip("/").rsplit("/", 1)[1]
    response = httpx.get(f"{server.url}/v1/files/{upload_id}", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()


def download_md5(server: ChunkdServer, key: str, url: str) -> str:
    digest = hashlib.md5()
    with httpx.stream("GET", url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.slow
def test_tuspy_resumes_after_the_server_is_killed(live_server: ChunkdServer, tmp_path: Path) -> None:
    from tusclient import client as tus_client
    from tusclient.storage.filestorage import FileStorage

    key = live_server.create_key("alice")
    source = tmp_path / "video.bin"
    md5 = random_file(source, 64 * MiB)
    storage = FileStorage(str(tmp_path / "tus-urls.json"))

    def uploader():
        client = tus_client.TusClient(f"{live_server.url}/files", headers={"Authorization": f"Bearer {key}"})
        return client.uploader(
            str(source), chunk_size=5 * MiB, store_url=True, url_storage=storage, metadata={"filename": "video.bin"}
        )

    first = uploader()
    for _ in range(4):
        first.upload_chunk()
    assert first.offset == 20 * MiB
    # Kill -9 while the fifth chunk is on the wire.
    failure: list[BaseException] = []

    def send_one() -> None:
        try:
            first.upload_chunk()
        except Exception as exc:  # the server died under it: whatever the client raises is expected
            failure.append(exc)

    sender = threading.Thread(target=send_one)
    sender.start()
    time.sleep(0.02)
    live_server.kill()
    sender.join(timeout=60)
    live_server.start()

    second = uploader()  # finds the stored URL and asks the server where to resume (HEAD)
    assert second.url == first.url
    assert 20 * MiB <= second.offset <= 25 * MiB
    second.upload()
    info = stored(live_server, key, second.url)
    assert info["status"] == "COMPLETED"
    assert info["md5"] == md5
    assert info["filename"] == "video.bin"
    assert download_md5(live_server, key, second.url) == md5


def require_tus_js_client() -> None:
    if shutil.which("node") is None or not (TESTS / "node_modules" / "tus-js-client").exists():
        pytest.fail("node and tests/node_modules/tus-js-client are needed: run scripts/test-deps.sh")


def run_js(server: ChunkdServer, endpoint: str, key: str, file: Path, **options: object) -> dict:
    require_tus_js_client()
    result = subprocess.run(
        ["node", str(JS_CLIENT), endpoint, key, str(file), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_tus_js_client_parallel_uploads_concatenate(live_server: ChunkdServer, tmp_path: Path) -> None:
    key = live_server.create_key("alice")
    source = tmp_path / "parallel.bin"
    md5 = random_file(source, 16 * MiB + 12345)
    out = run_js(live_server, f"{live_server.url}/files", key, source, parallelUploads=4, chunkSize=2 * MiB)
    info = stored(live_server, key, out["url"])
    assert info["status"] == "COMPLETED" and info["md5"] == md5
    assert info["sizeBytes"] == 16 * MiB + 12345
    head = httpx.head(out["url"], headers={**TUS, "Authorization": f"Bearer {key}"})
    assert head.headers["upload-concat"].startswith("final;")
    assert len(head.headers["upload-concat"][len("final;") :].split(" ")) == 4
    assert download_md5(live_server, key, out["url"]) == md5


@pytest.mark.parametrize("protocol", ["ietf-draft-03", "ietf-draft-05"])
def test_tus_js_client_draft_modes_with_a_stream_complete(
    live_server: ChunkdServer, tmp_path: Path, protocol: str
) -> None:
    """With a stream, tus-js-client cannot tell its last slice: every request says Upload-Complete:
    ?0, and it reports success at the length. chunkd completes there (interop 5, 6), as tusd does;
    the upload was left PENDING until it expired."""
    key = live_server.create_key("alice")
    source = tmp_path / "stream.bin"
    md5 = random_file(source, 3 * MiB + 5)
    out = run_js(live_server, f"{live_server.url}/files", key, source, protocol=protocol, stream=True, chunkSize=MiB)
    info = stored(live_server, key, out["url"])
    assert info["status"] == "COMPLETED" and info["md5"] == md5


@pytest.mark.parametrize(
    "options",
    [
        {"uploadLengthDeferred": True, "pipe": True},
        {"uploadLengthDeferred": True, "pipe": True, "protocol": "ietf-draft-05"},
        {"uploadDataDuringCreation": True},
        {"uploadDataDuringCreation": True, "protocol": "ietf-draft-03"},
        {"overridePatchMethod": True},
    ],
    ids=[
        "deferred-length",
        "deferred-length-draft-05",
        "data-during-creation",
        "data-during-creation-draft-03",
        "override-patch-method",
    ],
)
def test_tus_js_client_options(
    e2e_server: ChunkdServer, e2e_key: str, tmp_path: Path, options: dict[str, object]
) -> None:
    """tus-js-client's options that change what goes on the wire: a length told only with the last
    PATCH (creation-defer-length; the draft's Upload-Complete: ?1 there), the first chunk in the
    creation request (creation-with-upload), PATCH sent as POST with X-HTTP-Method-Override."""
    source = tmp_path / "options.bin"
    md5 = random_file(source, 3 * MiB + 5)
    out = run_js(e2e_server, f"{e2e_server.url}/files", e2e_key, source, chunkSize=MiB, **options)
    info = stored(e2e_server, e2e_key, out["url"])
    assert info["status"] == "COMPLETED" and info["md5"] == md5
    assert info["sizeBytes"] == 3 * MiB + 5 and info["filename"] == "options.bin"


@pytest.mark.parametrize("protocol", ["tus-v1", "ietf-draft-05"])
def test_tus_js_client_terminates_an_upload(
    e2e_server: ChunkdServer, e2e_key: str, tmp_path: Path, protocol: str
) -> None:
    """``upload.abort(true)`` (an application's cancel) sends DELETE: the upload and its bytes go."""
    source = tmp_path / "cancelled.bin"
    random_file(source, 3 * MiB)
    out = run_js(
        e2e_server, f"{e2e_server.url}/files", e2e_key, source, chunkSize=MiB, terminateAfter=MiB, protocol=protocol
    )
    assert out["terminated"] == MiB
    upload_id = out["url"].rstrip("/").rsplit("/", 1)[1]
    gone = httpx.get(f"{e2e_server.url}/v1/files/{upload_id}", headers={"Authorization": f"Bearer {e2e_key}"})
    assert gone.status_code == 404


def held_url(client: subprocess.Popen[str]) -> str:
    """The upload URL tus_held.cjs prints when it holds its PATCH (the client's error if it ended first)."""
    assert client.stdout is not None and client.stderr is not None
    line = client.stdout.readline()
    if not line:
        pytest.fail(f"tus_held.cjs ended before holding a PATCH: {client.stderr.read()}")
    return str(json.loads(line)["held"])


def test_tus_js_client_retries_across_a_server_restart(live_server: ChunkdServer, tmp_path: Path) -> None:
    """The server is killed (-9) before each client's third PATCH is sent (tus 1.0 and both draft
    modes, one client each) and started again while they retry: each asks where to resume (HEAD)
    and goes on from its two acknowledged MiB, on the same upload, and stores the source's bytes."""
    require_tus_js_client()
    key = live_server.create_key("alice")
    source = tmp_path / "restart.bin"
    size = 6 * MiB + 3
    md5 = random_file(source, size)
    clients = [
        subprocess.Popen(
            ["node", str(HELD_CLIENT), f"{live_server.url}/files", key, str(source), json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for options in ({"chunkSize": MiB, "protocol": p} for p in ("tus-v1", "ietf-draft-03", "ietf-draft-05"))
    ]
    try:
        held = [held_url(client) for client in clients]
        live_server.kill()
        for client in clients:  # each held PATCH now meets a closed port
            assert client.stdin is not None
            client.stdin.write("go\n")
            client.stdin.flush()
        live_server.start()
        outputs = [client.communicate(timeout=120) for client in clients]
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
    for client, url, (out, err) in zip(clients, held, outputs, strict=True):
        assert client.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        assert result["url"] == url
        methods = result["methods"]
        assert methods.count("POST") == 1 and "HEAD" in methods
        resumed = methods[len(methods) - methods[::-1].index("HEAD") :]
        assert resumed == ["PATCH"] * 5  # 4 MiB + 3 bytes left after the two acknowledged MiB
        info = stored(live_server, key, url)
        assert info["status"] == "COMPLETED" and info["md5"] == md5
        assert sum(part["sizeBytes"] for part in info["parts"]) == size


def test_tuspy_sends_checksums_and_uploads_async(e2e_server: ChunkdServer, e2e_key: str, tmp_path: Path) -> None:
    """tuspy's ``upload_checksum`` (an ``Upload-Checksum: sha1`` on every PATCH, the checksum
    extension) and its asyncio uploader (aiohttp)."""
    from tusclient import client as tus_client

    source = tmp_path / "checked.bin"
    md5 = random_file(source, 3 * MiB + 1)
    client = tus_client.TusClient(f"{e2e_server.url}/files", headers={"Authorization": f"Bearer {e2e_key}"})
    checked = client.uploader(str(source), chunk_size=MiB, upload_checksum=True, metadata={"filename": "checked.bin"})
    checked.upload()
    concurrent = client.async_uploader(str(source), chunk_size=2 * MiB, upload_checksum=True)
    asyncio.run(concurrent.upload())
    for url in (checked.url, concurrent.url):
        assert url is not None
        info = stored(e2e_server, e2e_key, url)
        assert info["status"] == "COMPLETED" and info["md5"] == md5


def test_tus_js_client_parallel_uploads_in_a_draft_mode_are_refused_naming_the_field(
    e2e_server: ChunkdServer, e2e_key: str, tmp_path: Path
) -> None:
    """The draft has no concatenation: tus-js-client's final POST in a draft mode (Upload-Concat, no
    Upload-Complete) is a 400 naming Upload-Complete, which the client reports (docs/tus.md)."""
    require_tus_js_client()
    source = tmp_path / "parallel-draft.bin"
    random_file(source, 2 * MiB)
    options = json.dumps({"parallelUploads": 2, "protocol": "ietf-draft-05"})
    result = subprocess.run(
        ["node", str(JS_CLIENT), f"{e2e_server.url}/files", e2e_key, str(source), options],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "while creating upload" in result.stderr and "response code: 400" in result.stderr
    assert '"field": "Upload-Complete"' in result.stderr


def test_tus_js_client_resumes_after_a_connection_is_cut_mid_patch(live_server: ChunkdServer, tmp_path: Path) -> None:
    key = live_server.create_key("alice")
    source = tmp_path / "cut.bin"
    size = 24 * MiB
    md5 = random_file(source, size)
    proxy = CuttingProxy(live_server.port, cut_after=9 * MiB)
    try:
        # One PATCH for the whole file (chunkSize: Infinity): the cut lands in the middle of it.
        out = run_js(live_server, f"http://127.0.0.1:{proxy.port}/files", key, source)
    finally:
        proxy.close()
    assert proxy.cuts == 1
    info = stored(live_server, key, out["url"])
    assert info["status"] == "COMPLETED" and info["md5"] == md5
    # The cut PATCH's bytes were kept: the client resumed from the middle, not from zero (a restart
    # from zero would have sent the 9 MiB before the cut twice).
    assert sum(part["sizeBytes"] for part in info["parts"]) == size
    assert size <= proxy.forwarded < size + 9 * MiB // 2
    assert download_md5(live_server, key, out["url"].replace(f":{proxy.port}", f":{live_server.port}")) == md5


def test_a_dropped_patch_keeps_the_bytes_that_arrived(live_server: ChunkdServer) -> None:
    """Under uvicorn, a client that vanishes mid-body reaches the engine as a broken body and the
    bytes that arrived are committed: HEAD resumes from there."""
    key = live_server.create_key("alice")
    data = os.urandom(8 * MiB)
    headers = {**TUS, "Authorization": f"Bearer {key}"}
    created = httpx.post(f"{live_server.url}/files", headers={**headers, "Upload-Length": str(len(data))})
    url = created.headers["location"]
    path = url.split(str(live_server.port), 1)[1]
    sock = socket.create_connection(("127.0.0.1", live_server.port))
    sock.sendall(
        (
            f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()
    )
    sock.sendall(data[: 3 * MiB])
    time.sleep(0.5)  # let the server read what was sent
    sock.close()
    offset = 0
    deadline = time.monotonic() + 120  # bounds only a server that never commits what arrived
    with httpx.Client(headers=headers) as http:
        while not offset and time.monotonic() < deadline:
            offset = int(http.head(url).headers["upload-offset"])
            time.sleep(0 if offset else 0.05)
    assert 2 * MiB <= offset <= 3 * MiB
    rest = httpx.patch(
        url,
        content=data[offset:],
        headers={**headers, "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)},
        timeout=60,  # httpx's default 5 s: 5+ MiB written and synced, then the completion, on a loaded disk
    )
    assert rest.status_code == 204, rest.text
    info = stored(live_server, key, url)
    assert info["md5"] == hashlib.md5(data).hexdigest()


@pytest.fixture
def patient_server(tmp_path: Path) -> Iterator[ChunkdServer]:
    """A server whose upload lock waits an hour: a request that waited for it would never end."""
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_FSYNC": "true", "CHUNKD_LOCK_TIMEOUT_SECONDS": "3600"})
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_a_new_patch_ends_a_stalled_one(patient_server: ChunkdServer) -> None:
    """tusd v2's behaviour under uvicorn: a PATCH whose client stalls mid-body (connection open,
    no bytes) is ended by the client's retry; its bytes are kept and the upload resumes at once
    (not after a lock timeout: the server's is an hour, longer than the retry's own timeout)."""
    live_server = patient_server
    key = live_server.create_key("alice")
    data = os.urandom(6 * MiB)
    headers = {**TUS, "Authorization": f"Bearer {key}"}
    url = httpx.post(f"{live_server.url}/files", headers={**headers, "Upload-Length": str(len(data))}).headers[
        "location"
    ]
    path = url.split(str(live_server.port), 1)[1]
    stalled = socket.create_connection(("127.0.0.1", live_server.port))
    try:
        stalled.sendall(
            (
                f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
                f"Content-Length: {len(data)}\r\n\r\n"
            ).encode()
        )
        stalled.sendall(data[: 2 * MiB])
        time.sleep(0.5)
        octets = {**headers, "Content-Type": "application/offset+octet-stream"}
        retry = httpx.patch(url, content=data, headers={**octets, "Upload-Offset": "0"}, timeout=120)
        assert retry.status_code == 409, retry.text  # the stale request committed its bytes first
        stalled.settimeout(10)
        assert stalled.recv(100).startswith(b"HTTP/1.1 400")
    finally:
        stalled.close()
    offset = int(httpx.head(url, headers=headers).headers["upload-offset"])
    assert MiB <= offset <= 2 * MiB
    rest = httpx.patch(url, content=data[offset:], headers={**octets, "Upload-Offset": str(offset)}, timeout=30)
    assert rest.status_code == 204, rest.text
    assert stored(live_server, key, url)["md5"] == hashlib.md5(data).hexdigest()
