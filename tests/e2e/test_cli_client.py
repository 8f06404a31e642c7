"""``chunkd upload/download/ls/rm`` against a real ``chunkd serve``: a large file in parallel parts,
kill -9 of the CLI and of the server in the middle of an upload, a wrong key, ``--json`` output.
A counting proxy (tests/support/proxy.py) in front of the server records every part the CLI sends
and holds the CLI at a chosen point (after N parts, after N downloaded bytes), so the tests act
mid-upload or mid-download by waiting on conditions, however slow the machine is."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.files import MiB, random_file
from tests.support.proxy import CountingProxy
from tests.support.server import BIN, ChunkdServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

SUMMARY_KEYS = {"id", "filename", "sizeBytes", "md5", "status"}


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: its own state dir (where it remembers unfinished uploads)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKD_")}
    return {**env, "XDG_STATE_HOME": str(tmp_path / "state"), "COLUMNS": "200"}


def chunkd(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "chunkd"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def spawn(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(BIN / "chunkd"), *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while data := handle.read(MiB):
            digest.update(data)
    return digest.hexdigest()


class Api:
    """Direct look at the server (never through the proxy)."""

    def __init__(self, server: ChunkdServer, key: str) -> None:
        self.http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def pending_named(self, filename: str) -> str | None:
        try:
            files = self.http.get("/v1/files", params={"status": "PENDING"}).json()["data"]
        except httpx.HTTPError:
            return None
        return next((f["id"] for f in files if f["filename"] == filename), None)

    def file(self, file_id: str) -> dict[str, Any] | None:
        try:
            response = self.http.get(f"/v1/files/{file_id}")
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def held(self, file_id: str) -> set[int]:
        file = self.file(file_id)
        assert file is not None
        return {p["partNumber"] for p in file["parts"]}


@pytest.fixture
def api(e2e_server: ChunkdServer, e2e_key: str) -> Iterator[Api]:
    client = Api(e2e_server, e2e_key)
    yield client
    client.http.close()


def part_puts(proxy: CountingProxy, file_id: str) -> list[int]:
    prefix = f"/v1/files/{file_id}/parts/"
    return [
        int(r["path"][len(prefix) :])
        for r in proxy.requests()
        if r["phase"] == "sent" and r["method"] == "PUT" and r["path"].startswith(prefix)
    ]


def settled(proxy: CountingProxy) -> bool:
    """Every request the proxy took has ended (answered or failed)."""
    seen = proxy.requests()
    return {r["id"] for r in seen} == {r["id"] for r in seen if r["phase"] in ("answered", "failed")}


def holding(proxy: CountingProxy) -> bool:
    return any(r["phase"] == "held" for r in proxy.requests())


SIZE = 100 * MiB  # the parallel upload and download test


@pytest.mark.slow
def test_100_mib_in_parallel_parts_uploads_and_downloads_equal(
    tmp_path: Path, e2e_server: ChunkdServer, e2e_key: str, cli_env: dict[str, str], api: Api
) -> None:
    # 12 full 8 MiB parts and a short last one, 4 in flight: what a bigger file would add is only time.
    source = tmp_path / "big.bin"
    md5 = random_file(source, SIZE)
    env = {**cli_env, "CHUNKD_URL": e2e_server.url, "CHUNKD_KEY": e2e_key}
    done = chunkd("upload", str(source), "--parallel", "4", "--part-size", "8MiB", "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["md5"] == md5 and summary["sizeBytes"] == SIZE and summary["status"] == "COMPLETED"
    assert api.held(summary["id"]) == set(range(1, 14))  # 12 × 8 MiB + 4 MiB
    copy = tmp_path / "copy.bin"
    got = chunkd("download", summary["id"], "-o", str(copy), env=env)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == str(copy)
    assert copy.stat().st_size == SIZE and file_md5(copy) == md5
    source.unlink()
    copy.unlink()


def test_kill_9_of_the_cli_then_rerun_sends_only_the_missing_parts(
    tmp_path: Path, e2e_server: ChunkdServer, e2e_key: str, cli_env: dict[str, str], api: Api
) -> None:
    source = tmp_path / "killed-cli.bin"
    md5 = random_file(source, 24 * MiB + 5)
    # Two parts go through, the later ones wait in the proxy: the CLI is killed mid-upload.
    slow = CountingProxy(e2e_server.url, tmp_path / "first.log", pass_uploads=2).start()
    env = {**cli_env, "CHUNKD_URL": slow.url, "CHUNKD_KEY": e2e_key}
    args = ("upload", str(source), "--part-size", "1MiB", "--parallel", "3", "--json")
    try:
        cli = spawn(*args, env=env, log=tmp_path / "cli-1.log")
        file_id = wait_for(lambda: api.pending_named(source.name), what="the upload to be created")
        wait_for(lambda: len(api.held(file_id)) >= 2 and holding(slow), what="two parts stored, the next held")
        os.killpg(cli.pid, signal.SIGKILL)
        cli.wait(timeout=30)
        wait_for(lambda: settled(slow), what="the proxy to finish the killed requests")
    finally:
        slow.stop()
    held = api.held(file_id)
    assert 2 <= len(held) < 25

    # The same command again, through the same URL (the remembered upload is per server URL).
    fast = CountingProxy(e2e_server.url, tmp_path / "second.log", port=slow.port).start()
    try:
        rerun = chunkd(*args, env=env)
    finally:
        fast.stop()
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary == {
        "id": file_id,
        "filename": source.name,
        "sizeBytes": 24 * MiB + 5,
        "md5": md5,
        "status": "COMPLETED",
    }
    resent = part_puts(fast, file_id)
    assert not held & set(resent), f"parts the server held were sent again: {sorted(held & set(resent))}"
    assert sorted(resent) == sorted(set(range(1, 26)) - held)
    assert api.held(file_id) == set(range(1, 26))


def test_server_kill_9_and_restart_mid_upload_the_cli_retries_and_completes(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_FSYNC": "true"}).start()
    proxy = CountingProxy(server.url, tmp_path / "proxy.log", pass_uploads=2)
    try:
        key = server.create_key("alice")
        api = Api(server, key)
        source = tmp_path / "restarted.bin"
        md5 = random_file(source, 24 * MiB)
        proxy.start()
        env = {**cli_env, "CHUNKD_URL": proxy.url, "CHUNKD_KEY": key}
        cli = spawn(
            "upload", str(source), "--part-size", "1MiB", "--parallel", "3", "--json", env=env, log=tmp_path / "cli.log"
        )
        file_id = wait_for(lambda: api.pending_named(source.name), what="the upload to be created")
        wait_for(lambda: len(api.held(file_id)) >= 2 and holding(proxy), what="two parts stored, the next held")
        server.kill()  # kill -9 mid-upload; what the proxy held now meets a dead server
        proxy.release()
        wait_for(lambda: any(r["phase"] == "failed" for r in proxy.requests()), what="a request to fail")
        server.start()  # the same data dir and port
        assert cli.wait(timeout=240) == 0, (tmp_path / "cli.log").read_text()
        summary = json.loads((tmp_path / "cli.log").read_text().strip().splitlines()[-1])
        assert summary["id"] == file_id and summary["md5"] == md5 and summary["status"] == "COMPLETED"
        assert any(r["phase"] == "failed" or (r["status"] or 0) >= 500 for r in proxy.requests()), (
            "no request failed: the restart did not happen mid-upload"
        )
        assert "retrying in" in (tmp_path / "cli.log").read_text()  # the CLI says why it paused
        file = api.file(file_id)
        assert file is not None and file["status"] == "COMPLETED" and file["md5"] == md5
        api.http.close()
    finally:
        proxy.stop()
        server.kill()


def test_wrong_or_missing_key_is_a_clear_message_and_exit_1(
    tmp_path: Path, e2e_server: ChunkdServer, cli_env: dict[str, str]
) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(b"hello")
    wrong = "ck_0123456789abcdef_" + "x" * 43
    for args in (("upload", str(source)), ("ls",), ("download", "someid"), ("rm", "someid")):
        result = chunkd(*args, "--url", e2e_server.url, "--key", wrong, env=cli_env)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "refused the API key" in result.stderr and "CHUNKD_KEY" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    missing = chunkd("upload", str(source), "--url", e2e_server.url, env=cli_env)
    assert missing.returncode == 1 and "no API key" in missing.stderr


def test_json_prints_one_object_per_finished_file_and_failures_exit_non_zero(
    tmp_path: Path, e2e_server: ChunkdServer, e2e_key: str, cli_env: dict[str, str]
) -> None:
    first, second, empty = tmp_path / "one.txt", tmp_path / "two.bin", tmp_path / "empty"
    first.write_bytes(b"one\n")
    md5 = random_file(second, 3 * MiB + 7)
    empty.write_bytes(b"")
    env = {**cli_env, "CHUNKD_URL": e2e_server.url, "CHUNKD_KEY": e2e_key}
    result = chunkd(
        "upload",
        str(first),
        str(tmp_path / "absent.bin"),
        str(second),
        str(empty),
        "--part-size",
        "1M",
        "--json",
        env=env,
    )
    assert result.returncode == 1
    assert "absent.bin" in result.stderr and "No such file" in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [set(line) for line in lines] == [SUMMARY_KEYS] * 3
    assert [(line["filename"], line["sizeBytes"], line["md5"], line["status"]) for line in lines] == [
        ("one.txt", 4, hashlib.md5(b"one\n").hexdigest(), "COMPLETED"),
        ("two.bin", 3 * MiB + 7, md5, "COMPLETED"),
        ("empty", 0, hashlib.md5(b"").hexdigest(), "COMPLETED"),
    ]

    listed = chunkd("ls", "--status", "completed", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    ids = [json.loads(line)["id"] for line in listed.stdout.splitlines()]
    assert {line["id"] for line in lines} <= set(ids)
    removed = chunkd("rm", lines[0]["id"], env=env)
    assert removed.returncode == 0 and removed.stdout.strip() == f"deleted {lines[0]['id']}"
    again = chunkd("rm", lines[0]["id"], env=env)
    assert again.returncode == 1 and "not_found" in again.stderr


def test_a_file_whose_name_is_not_utf8_uploads_and_the_next_files_too(
    tmp_path: Path, e2e_server: ChunkdServer, e2e_key: str, cli_env: dict[str, str]
) -> None:
    """b'caf\\xe9.txt' (a Latin-1 name): the command stopped with a traceback, first in the SDK, then
    printing the name on a strict UTF-8 stdout (any UTF-8 locale but C), and the next files never went."""
    latin = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.txt")
    Path(latin).write_bytes(b"latin\n")
    other = tmp_path / "other.txt"
    other.write_bytes(b"other\n")
    env = {**cli_env, "CHUNKD_URL": e2e_server.url, "CHUNKD_KEY": e2e_key, "PYTHONIOENCODING": "utf-8:strict"}
    result = chunkd("upload", latin, str(other), env=env)
    assert result.returncode == 0, result.stderr
    assert [line.split(" → ")[0] for line in result.stdout.splitlines()] == [f"{tmp_path}/caf\ufffd.txt", str(other)]


def test_an_id_that_begins_with_a_dash_goes_after_double_dash(
    e2e_server: ChunkdServer, e2e_key: str, cli_env: dict[str, str]
) -> None:
    """Ids made before chunkd stopped minting ids that begin with '-' still reach the server."""
    env = {**cli_env, "CHUNKD_URL": e2e_server.url, "CHUNKD_KEY": e2e_key}
    dashed = "-" + "A" * 21
    for args in (("download", "--", dashed), ("rm", "--", dashed)):
        result = chunkd(*args, env=env)
        assert result.returncode == 1 and "not_found" in result.stderr, (args, result.stderr)


def test_bad_part_size_is_a_usage_error(tmp_path: Path, cli_env: dict[str, str]) -> None:
    result = chunkd("upload", str(tmp_path), "--part-size", "8 parsecs", "--key", "k", env=cli_env)
    assert result.returncode == 2 and "--part-size" in result.stderr


def test_kill_9_of_a_download_then_rerun_continues_with_range_and_verifies(
    tmp_path: Path, e2e_server: ChunkdServer, e2e_key: str, cli_env: dict[str, str]
) -> None:
    source = tmp_path / "down.bin"
    md5 = random_file(source, 12 * MiB)
    env = {**cli_env, "CHUNKD_URL": e2e_server.url, "CHUNKD_KEY": e2e_key}
    uploaded = chunkd("upload", str(source), "--json", env=env)
    assert uploaded.returncode == 0, uploaded.stderr
    file_id = json.loads(uploaded.stdout)["id"]
    target = tmp_path / "out" / "copy.bin"
    target.parent.mkdir()
    partial = target.with_name(f".copy.bin.{file_id}.part")

    # The proxy sends the first 2 MiB of the download and holds the rest: the CLI is killed mid-download.
    slow = CountingProxy(e2e_server.url, tmp_path / "slow.log", pass_response_bytes=2 * MiB).start()
    try:
        cli = spawn(
            "download", file_id, "-o", str(target), env={**env, "CHUNKD_URL": slow.url}, log=tmp_path / "cli.log"
        )
        # Also stop waiting if the CLI ended early, and show why.
        wait_for(
            lambda: (partial.exists() and partial.stat().st_size >= 2 * MiB) or cli.poll() is not None,
            what="2 MiB downloaded",
        )
        assert cli.poll() is None, (tmp_path / "cli.log").read_text()[-2000:]
        os.killpg(cli.pid, signal.SIGKILL)
        cli.wait(timeout=30)
    finally:
        slow.stop()
    assert not target.exists()
    kept = partial.stat().st_size
    assert 2 * MiB <= kept < 12 * MiB

    watched = CountingProxy(e2e_server.url, tmp_path / "again.log").start()
    try:
        again = chunkd("download", file_id, "-o", str(target), env={**env, "CHUNKD_URL": watched.url})
    finally:
        watched.stop()
    assert again.returncode == 0, again.stderr
    assert file_md5(target) == md5 and not partial.exists()
    content = [r for r in watched.requests() if r["path"].endswith("/content") and r["phase"] == "sent"]
    assert [r["range"] for r in content] == [f"bytes={kept}-"]


def test_a_key_with_a_trailing_newline_works_and_one_with_inner_whitespace_is_refused_unprinted(
    tmp_path: Path, e2e_server: ChunkdServer, e2e_key: str, cli_env: dict[str, str]
) -> None:
    """A key read with ``$(cat file)$'\\n'`` or pasted with a space was sent as is: httpx refused the
    header, and its message ("Illegal header value b'Bearer ck_…'") printed the whole secret,
    blamed on an unreachable server."""
    source = tmp_path / "a.bin"
    source.write_bytes(b"hello")
    env = {**cli_env, "CHUNKD_URL": e2e_server.url}
    for padded in (e2e_key + "\n", e2e_key + "\r", " " + e2e_key + " "):
        listed = chunkd("ls", env={**env, "CHUNKD_KEY": padded})
        assert listed.returncode == 0, listed.stderr
    secret = e2e_key.split("_", 2)[2]  # the secret is base64url: it may hold "_" itself
    assert len(secret) == 43
    for broken in (e2e_key[:10] + "\n" + e2e_key[10:], e2e_key[:10] + " " + e2e_key[10:]):
        refused = chunkd("upload", str(source), env={**env, "CHUNKD_KEY": broken})
        assert refused.returncode == 1, refused.stderr
        assert "whitespace or control characters" in refused.stderr and "cannot reach" not in refused.stderr
        assert secret not in refused.stderr and secret[-20:] not in refused.stderr + refused.stdout


class _InFlight(httpx.BaseTransport):
    """A real HTTP transport that counts the part PUTs in flight at once."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.lock = threading.Lock()
        self.now = self.most = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        part = request.method == "PUT" and "/parts/" in request.url.path
        if part:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
        try:
            response = self.inner.handle_request(request)
            response.read()
            return response
        finally:
            if part:
                with self.lock:
                    self.now -= 1


@pytest.mark.parametrize("parallel", [1, 3])
def test_parallel_n_keeps_at_most_n_parts_in_flight(
    tmp_path: Path, e2e_server: ChunkdServer, e2e_key: str, parallel: int
) -> None:
    """``--parallel N`` (the SDK's ``parallel``) is the number of parts in flight. One pool for the
    parts and the whole-file MD5 let a part take the hashing thread once it was done: N + 1."""
    from chunkd.client import Client

    data = os.urandom(12 * 262144 + 5)
    transport = _InFlight()
    with Client(e2e_server.url, e2e_key, transport=transport, remember_uploads=False) as client:
        file = client.upload(io.BytesIO(data), filename="p.bin", part_size=262144, parallel=parallel)
    assert file.status == "COMPLETED" and file.md5 == hashlib.md5(data).hexdigest()
    assert 1 <= transport.most <= parallel, transport.most


def test_recursive_uploads_every_file_below_a_directory_and_a_bare_directory_is_an_error(
    tmp_path: Path, e2e_server: ChunkdServer, e2e_key: str, cli_env: dict[str, str]
) -> None:
    tree = tmp_path / "shoot"
    (tree / "day2" / "raw").mkdir(parents=True)
    md5s = {
        "a.jpg": random_file(tree / "a.jpg", 70_000),
        "b.jpg": random_file(tree / "day2" / "b.jpg", 1),
        "c.cr2": random_file(tree / "day2" / "raw" / "c.cr2", 300_000),
    }
    os.mkfifo(tree / "day2" / "pipe")  # not a file: left alone, not waited on
    (tree / "loop").symlink_to(tree)  # a link to a directory is not followed
    env = {**cli_env, "CHUNKD_URL": e2e_server.url, "CHUNKD_KEY": e2e_key}

    bare = chunkd("upload", str(tree), env=env)
    assert bare.returncode == 1 and "is a directory (-r uploads the files in it)" in bare.stderr

    done = chunkd("upload", "-r", str(tree), "--json", env=env)
    assert done.returncode == 0, done.stderr
    sent = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(s["filename"], s["md5"], s["status"]) for s in sent] == [
        (name, md5s[name], "COMPLETED") for name in ("a.jpg", "b.jpg", "c.cr2")
    ]


def test_usage_prints_what_the_key_s_owner_holds_and_the_quotas(
    tmp_path: Path, e2e_server: ChunkdServer, cli_env: dict[str, str]
) -> None:
    key = e2e_server.create_key("dora")  # an owner of this test alone: the shared server has others' files
    env = {**cli_env, "CHUNKD_URL": e2e_server.url, "CHUNKD_KEY": key}
    source = tmp_path / "u.bin"
    random_file(source, 3000)
    assert chunkd("upload", str(source), env=env).returncode == 0
    shown = chunkd("usage", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {
        "pendingUploads": 0,
        "pendingBytes": 0,
        "storedBytes": 3000,
        "limits": {"maxPendingUploads": None, "maxPendingBytes": None, "maxStoredBytes": None},
    }
    text = chunkd("usage", env=env)
    assert text.returncode == 0 and "stored bytes     2.9 KiB (no limit)" in text.stdout, text.stdout
