"""The IETF resumable-upload draft against a real ``chunkd serve``: the 104 informational responses
read from a raw socket, and tus-js-client speaking the draft (``protocol: 'ietf-draft-03'``,
interop 5, and ``'ietf-draft-05'``, interop 6), also through a cut connection and across a
client restart (``findPreviousUploads``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cutting_proxy import CuttingProxy
from tests.support.files import random_file
from tests.support.raw_http import ResponseReader
from tests.support.server import ChunkdServer

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
TESTS = Path(__file__).resolve().parents[1]
RESUME_JS = TESTS / "e2e" / "js" / "tus_resume.cjs"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChunkdServer]:
    """A real server committing (and announcing) draft uploads every MiB, shared by the module's
    tests (each makes its own uploads)."""
    live = ChunkdServer(tmp_path_factory.mktemp("draft") / "data", env={"CHUNKD_RESUMABLE_PROGRESS_BYTES": str(MiB)})
    live.start()
    try:
        yield live
    finally:
        live.kill()


def request_head(server: ChunkdServer, method: str, path: str, key: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", f"Authorization: Bearer {key}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def completion(v: int, complete: bool) -> dict[str, str]:
    if v == 3:
        return {"Upload-Incomplete": "?0" if complete else "?1"}
    return {"Upload-Complete": "?1" if complete else "?0"}


@pytest.mark.parametrize("v", [3, 4, 5, 6, 7, 8])
def test_104_with_location_arrives_before_the_body_is_sent(server: ChunkdServer, v: int) -> None:
    key = server.create_key("alice")
    data = os.urandom(3 * MiB + 7)
    headers = {"Upload-Draft-Interop-Version": str(v), "Content-Length": str(len(data)), **completion(v, True)}
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request_head(server, "POST", "/files", key, headers))
        responses = ResponseReader(sock)
        # Not one byte of the body is sent yet: the 104 must come anyway.
        status, first = responses.next_head()
        assert status == 104
        assert first["location"].startswith(f"{server.url}/files/")
        assert first["upload-draft-interop-version"] == str(v)
        assert "max-size=" in first["upload-limit"]
        location = first["location"]
        sock.sendall(data)
        progress: list[int] = []
        while True:
            status, found = responses.next_head()
            if status != 104:
                break
            assert "location" not in found  # progress responses never carry Location
            progress.append(int(found["upload-offset"]))
        assert status == 201
        assert found["location"] == location
    if v >= 5:
        # The body is committed every MiB, and each commit announced with the durable offset.
        assert progress == [MiB, 2 * MiB, 3 * MiB]
    else:
        assert progress == []
    info = httpx.get(
        f"{server.url}/v1/files/{location.rsplit('/', 1)[1]}", headers={"Authorization": f"Bearer {key}"}
    ).json()
    assert info["status"] == "COMPLETED" and info["md5"] == hashlib.md5(data).hexdigest()


def test_no_104_without_an_interop_version(server: ChunkdServer) -> None:
    """A tus 1.0 creation (no Upload-Draft-Interop-Version) gets no informational response."""
    key = server.create_key("alice")
    headers = {
        "Tus-Resumable": "1.0.0",
        "Upload-Length": "5",
        "Content-Type": "application/offset+octet-stream",
        "Content-Length": "5",
        "Upload-Complete": "?1",
    }
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request_head(server, "POST", "/files", key, headers) + b"hello")
        status, _ = ResponseReader(sock).next_head()
    assert status == 201


def test_resume_after_the_connection_drops_after_the_104(server: ChunkdServer) -> None:
    """The point of the early 104: the client learnt the URL, its connection dies mid-body, and it
    resumes from the durable offset with HEAD and PATCH."""
    key = server.create_key("alice")
    data = os.urandom(4 * MiB)
    v = 8
    headers = {"Upload-Draft-Interop-Version": "8", "Content-Length": str(len(data)), **completion(v, True)}
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request_head(server, "POST", "/files", key, headers))
        responses = ResponseReader(sock)
        _, first = responses.next_head()
        location = first["location"]
        sock.sendall(data[: 2 * MiB + 100])
        status, progress = responses.next_head()
        assert status == 104 and progress["upload-offset"] == str(MiB)
    auth = {"Authorization": f"Bearer {key}", "Upload-Draft-Interop-Version": "8"}
    state = httpx.head(location, headers=auth)
    offset = int(state.headers["upload-offset"])
    assert MiB <= offset <= 2 * MiB + 100
    assert state.headers["upload-complete"] == "?0"
    done = httpx.patch(
        location,
        content=data[offset:],
        headers={
            **auth,
            "Upload-Offset": str(offset),
            "Upload-Complete": "?1",
            "Content-Type": "application/partial-upload",
        },
        timeout=60,  # httpx's default 5 s: MiBs written and synced, then the completion, on a loaded disk
    )
    assert done.status_code == 200, done.text
    assert done.json()["md5"] == hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("v", [3, 4, 5, 6, 7, 8])
def test_104_does_not_replace_100_continue(server: ChunkdServer, v: int) -> None:
    """Editor's copy: "the server MUST NOT omit the 100 (Continue) response because it has sent an
    interim response with the 104 (Upload Resumption Supported) status code"."""
    key = server.create_key("alice")
    headers = {"Upload-Draft-Interop-Version": str(v), "Content-Length": "5", "Expect": "100-continue"}
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request_head(server, "POST", "/files", key, {**headers, **completion(v, True)}))
        responses = ResponseReader(sock)
        assert responses.next_head()[0] == 104
        assert responses.next_head()[0] == 100  # the body is not sent before this
        sock.sendall(b"hello")
        assert responses.next_head()[0] == 201


@pytest.mark.parametrize("version", ["2", "10", "banana"])
def test_no_104_for_an_interop_version_not_spoken(server: ChunkdServer, version: str) -> None:
    """ "Server implementations of draft versions of the protocol MUST NOT send a 104 (Upload
    Resumption Supported) informational response when the interop version ... is missing or
    mismatching": the first response is the final 400."""
    key = server.create_key("alice")
    headers = {"Upload-Draft-Interop-Version": version, "Content-Length": "5", "Upload-Complete": "?1"}
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request_head(server, "POST", "/files", key, headers) + b"hello")
        status, found = ResponseReader(sock).next_head()
    assert status == 400
    assert found["content-type"] == "application/problem+json"


@pytest.mark.parametrize("v", [3, 4, 5, 6, 7, 8])
def test_incomplete_creation_keeps_one_location(server: ChunkdServer, v: int) -> None:
    """ "All interim and final response messages for the same request MUST contain an identical
    Location value" (when the final response does not complete the upload)."""
    key = server.create_key("alice")
    headers = {"Upload-Draft-Interop-Version": str(v), "Content-Length": "5", **completion(v, False)}
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request_head(server, "POST", "/files", key, headers))
        responses = ResponseReader(sock)
        status, interim = responses.next_head()
        assert status == 104 and "max-size=" in interim["upload-limit"]
        sock.sendall(b"hello")
        status, final = responses.next_head()
    assert status == 201
    assert final["location"] == interim["location"]
    assert final["upload-offset"] == "5" and "max-size=" in final["upload-limit"]


@pytest.mark.parametrize("v", [3, 4, 5, 6, 7, 8])
def test_append_progress_104s(server: ChunkdServer, v: int) -> None:
    """An append's interim responses (interop 5 on) carry Upload-Offset, each durable and never
    smaller than the one before, and never Location; 3 and 4 have none."""
    key = server.create_key("alice")
    auth = {"Authorization": f"Bearer {key}", "Upload-Draft-Interop-Version": str(v)}
    location = httpx.post(f"{server.url}/files", headers={**auth, **completion(v, False)}).headers["location"]
    data = os.urandom(3 * MiB + 11)
    headers = {
        "Upload-Draft-Interop-Version": str(v),
        "Upload-Offset": "0",
        "Content-Length": str(len(data)),
        "Content-Type": "application/partial-upload",
        **completion(v, True),
    }
    path = "/files/" + location.rsplit("/", 1)[1]
    progress: list[int] = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request_head(server, "PATCH", path, key, headers) + data)
        responses = ResponseReader(sock)
        while True:
            status, found = responses.next_head()
            if status != 104:
                break
            assert "location" not in found
            assert found["upload-draft-interop-version"] == str(v)
            progress.append(int(found["upload-offset"]))
        body = responses.read_body(int(found["content-length"]))
    assert status == 200
    assert progress == ([MiB, 2 * MiB, 3 * MiB] if v >= 5 else [])
    assert json.loads(body)["md5"] == hashlib.md5(data).hexdigest()


# ---- tus-js-client ---------------------------------------------------------------------------------------
def run_js(endpoint: str, key: str, file: Path, storage: Path, **options: object) -> dict:
    if shutil.which("node") is None or not (TESTS / "node_modules" / "tus-js-client").exists():
        pytest.fail("node and tests/node_modules/tus-js-client are needed: run scripts/test-deps.sh")
    result = subprocess.run(
        ["node", str(RESUME_JS), endpoint, key, str(file), str(storage), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout.strip().splitlines()[-1])


def stored_md5(server: ChunkdServer, key: str, url: str) -> tuple[str, dict]:
    upload_id = url.rstrip("/").rsplit("/", 1)[1]
    info = httpx.get(f"{server.url}/v1/files/{upload_id}", headers={"Authorization": f"Bearer {key}"}).json()
    digest = hashlib.md5()
    with httpx.stream("GET", f"{server.url}/files/{upload_id}", headers={"Authorization": f"Bearer {key}"}) as r:
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            digest.update(chunk)
    return digest.hexdigest(), info


@pytest.mark.parametrize("protocol", ["ietf-draft-03", "ietf-draft-05"])
def test_tus_js_client_speaking_the_draft(server: ChunkdServer, tmp_path: Path, protocol: str) -> None:
    key = server.create_key("alice")
    source = tmp_path / "draft.bin"
    md5 = random_file(source, 5 * MiB + 321)
    out = run_js(f"{server.url}/files", key, source, tmp_path / "urls.json", protocol=protocol, chunkSize=2 * MiB)
    download, info = stored_md5(server, key, out["url"])
    assert info["status"] == "COMPLETED" and info["md5"] == md5 == download
    assert info["filename"] == "draft.bin"


@pytest.mark.parametrize("protocol", ["ietf-draft-03", "ietf-draft-05"])
def test_tus_js_client_draft_through_a_cut_connection(server: ChunkdServer, tmp_path: Path, protocol: str) -> None:
    key = server.create_key("alice")
    source = tmp_path / "cut.bin"
    size = 12 * MiB
    md5 = random_file(source, size)
    proxy = CuttingProxy(server.port, cut_after=5 * MiB)
    try:
        # One PATCH for the whole file: the cut lands in its middle.
        out = run_js(f"http://127.0.0.1:{proxy.port}/files", key, source, tmp_path / "urls.json", protocol=protocol)
    finally:
        proxy.close()
    assert proxy.cuts == 1
    download, info = stored_md5(server, key, out["url"])
    assert info["status"] == "COMPLETED" and info["md5"] == md5 == download
    assert info["sizeBytes"] == size


@pytest.mark.parametrize("protocol", ["ietf-draft-03", "ietf-draft-05"])
def test_tus_js_client_draft_resumes_after_a_restart(server: ChunkdServer, tmp_path: Path, protocol: str) -> None:
    key = server.create_key("alice")
    source = tmp_path / "restart.bin"
    size = 9 * MiB
    md5 = random_file(source, size)
    storage = tmp_path / "urls.json"
    endpoint = f"{server.url}/files"
    first = run_js(endpoint, key, source, storage, protocol=protocol, chunkSize=2 * MiB, stopAfter=4 * MiB)
    assert first["stopped"] == 4 * MiB
    second = run_js(endpoint, key, source, storage, protocol=protocol, chunkSize=2 * MiB, resume=True)
    assert second["previous"] == 1
    assert second["url"] == first["url"]
    assert second["firstOffset"] == 4 * MiB  # resumed where the first process stopped
    download, info = stored_md5(server, key, second["url"])
    assert info["status"] == "COMPLETED" and info["md5"] == md5 == download


def curl_heads(output: bytes) -> list[tuple[int, dict[str, str]]]:
    """The responses ``curl -i`` printed, informational ones included: (status, lower-cased fields)."""
    heads: list[tuple[int, dict[str, str]]] = []
    for block in output.split(b"\r\n\r\n"):
        lines = block.decode("latin-1").split("\r\n")
        if lines[0].startswith("HTTP/"):
            fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            heads.append((int(lines[0].split()[1]), {name.lower(): value for name, value in fields.items()}))
    return heads


@pytest.mark.parametrize("v", [6, 8])
def test_curl_creates_resumes_and_completes(server: ChunkdServer, tmp_path: Path, v: int) -> None:
    """The draft by hand with curl: a creation carrying the first bytes (?0), the offset asked with
    HEAD, the rest appended with PATCH (application/partial-upload, ?1). curl shows the 104s."""
    curl = shutil.which("curl") or pytest.fail("curl is needed")
    key = server.create_key("alice")
    first, rest = tmp_path / "first", tmp_path / "rest"
    data = os.urandom(3 * MiB + 11)
    first.write_bytes(data[: 2 * MiB + 5])
    rest.write_bytes(data[2 * MiB + 5 :])
    draft = ["-H", f"Authorization: Bearer {key}", "-H", f"Upload-Draft-Interop-Version: {v}"]

    def run(*args: str) -> list[tuple[int, dict[str, str]]]:
        done = subprocess.run([curl, "-sS", "-i", *draft, *args], capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return curl_heads(done.stdout)

    name = 'Content-Disposition: attachment; filename="by curl.bin"'
    created = run(
        *("-X", "POST", "-H", "Upload-Complete: ?0", "-H", f"Upload-Length: {len(data)}", "-H", name),
        *("-H", "Content-Type: application/octet-stream", "--data-binary", f"@{first}", f"{server.url}/files"),
    )
    statuses = [status for status, _ in created]
    assert statuses[0] == 104 and statuses[-1] == 201
    location = created[0][1]["location"]
    assert created[-1][1]["location"] == location
    assert [int(h["upload-offset"]) for s, h in created if s == 104 and "upload-offset" in h] == [MiB, 2 * MiB]
    [(status, state)] = run("-I", location)
    assert status == 204
    assert [state["upload-offset"], state["upload-complete"]] == [str(2 * MiB + 5), "?0"]
    assert state["upload-length"] == str(len(data))
    appended = run(
        *("-X", "PATCH", "-H", f"Upload-Offset: {2 * MiB + 5}", "-H", "Upload-Complete: ?1"),
        *("-H", "Content-Type: application/partial-upload", "--data-binary", f"@{rest}", location),
    )
    status, final = appended[-1]
    assert status == 200 and final["upload-complete"] == "?1" and final["upload-offset"] == str(len(data))
    download, info = stored_md5(server, key, location)
    assert info["status"] == "COMPLETED" and info["md5"] == hashlib.md5(data).hexdigest() == download
    assert (info["filename"], info["mimeType"]) == ("by curl.bin", "application/octet-stream")
