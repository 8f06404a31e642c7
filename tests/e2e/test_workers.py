"""``chunkd serve --workers 2`` on the embedded defaults (SQLite, local disk): both workers serve
one port; a request on one worker takes over an upload stalled on the other (tus HEAD, the IETF
draft's PATCH); ``/metrics`` from either counts both; a worker that dies is started again, and the
workers die with the supervisor (whose metrics directory the next start removes).

Which worker a connection reached is read from /proc: the worker holding the server's end of it."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from chunkd.backends.locks.local import LocalLocks
from tests.support.proc import children, holds, tcp_socket
from tests.support.server import ChunkdServer
from tests.support.takeover import completed_md5, stalled_draft_patch, stalled_tus_patch
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc")]

MiB = 1024 * 1024
DEADLINE = 120.0


def workers_of(server: ChunkdServer) -> list[int]:
    assert server.process is not None
    return children(server.process.pid)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChunkdServer]:
    # Locks wait an hour: a take-over that waited for the stalled request's lock would fail the test
    # (the client's timeout) instead of passing late.
    env = {"CHUNKD_WORKERS": "2", "CHUNKD_LOCK_TIMEOUT_SECONDS": "3600"}
    node = ChunkdServer(tmp_path_factory.mktemp("workers") / "data", env=env).start()
    try:
        wait_for(lambda: len(workers_of(node)) == 2, what="two workers")
        yield node
    finally:
        node.kill()


@pytest.fixture(scope="module")
def key(server: ChunkdServer) -> str:
    return server.create_key("alice")


def worker_serving(server: ChunkdServer, sock: socket.socket) -> int:
    """The worker that accepted ``sock``'s connection (waits until one has)."""

    def accepted() -> int | None:
        peer = tcp_socket(server.port, sock.getsockname()[1])  # the server's end
        if peer is None:
            return None
        return next((pid for pid in workers_of(server) if holds(pid, [peer.inode])), None)

    worker: int = wait_for(accepted, what="a worker to accept the connection")
    return worker


@contextlib.contextmanager
def connection_to(
    server: ChunkdServer, *, not_on: int | None = None, on: int | None = None
) -> Iterator[http.client.HTTPConnection]:
    """A keep-alive connection served by a worker other than ``not_on`` (or by ``on``): new
    connections are made until the kernel hands one to such a worker."""
    for _ in range(200):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=DEADLINE)
        conn.connect()
        assert conn.sock is not None
        worker = worker_serving(server, conn.sock)
        if (not_on is None or worker != not_on) and (on is None or worker == on):
            try:
                yield conn
            finally:
                conn.close()
            return
        conn.close()
    raise AssertionError("the kernel never handed a connection to the other worker")


def wait_until_locked(server: ChunkdServer, upload_id: str) -> None:
    """Until a worker holds the upload's lock (its request is streaming), seen held three probes in
    a row: a take-over tried before that would find the lock free, and the stalled request, arriving
    at the lock later, would take over from it instead (the newest writer wins)."""
    fd = os.open(server.data_dir / "locks", os.O_RDWR)
    offset = LocalLocks._offset(upload_id)
    held = 0

    def probe() -> bool:
        nonlocal held
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError:
            held += 1
            return held == 3
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
        held = 0
        return False

    try:
        wait_for(probe, what="a worker to hold the upload's lock")
    finally:
        os.close(fd)


def request(
    conn: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> http.client.HTTPResponse:
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    return response


def test_a_tus_head_on_one_worker_takes_over_a_patch_stalled_on_the_other(server: ChunkdServer, key: str) -> None:
    data = os.urandom(5 * MiB)
    upload_id, octets, stalled = stalled_tus_patch(server, key, data, 2 * MiB)
    try:
        stalled_on = worker_serving(server, stalled)
        wait_until_locked(server, upload_id)
        with connection_to(server, not_on=stalled_on) as conn:
            # What tus-js-client does on a retry: HEAD (which ends the stale PATCH), then PATCH.
            head = request(conn, "HEAD", f"/files/{upload_id}", octets)
            assert head.status == 200, head.status
            offset = int(head.headers["upload-offset"])
            assert 0 <= offset <= 2 * MiB
            done = request(
                conn, "PATCH", f"/files/{upload_id}", {**octets, "Upload-Offset": str(offset)}, data[offset:]
            )
            assert done.status == 204, done.status
        response = stalled.recv(4096)  # the stalled request was ended (tus answers 400 to it)
        assert response.startswith(b"HTTP/1.1 400") or response == b""
    finally:
        stalled.close()
    assert completed_md5(server, key, upload_id) == hashlib.md5(data).hexdigest()


def test_a_draft_patch_on_one_worker_takes_over_without_a_head(server: ChunkdServer, key: str) -> None:
    data = os.urandom(3 * MiB)
    upload_id, append, stalled = stalled_draft_patch(server, key, data, MiB // 2)
    try:
        stalled_on = worker_serving(server, stalled)
        wait_until_locked(server, upload_id)
        with connection_to(server, not_on=stalled_on) as conn:
            done = request(conn, "PATCH", f"/files/{upload_id}", {**append, "Upload-Offset": "0"}, data)
            if done.status == 409:  # the stalled request committed what it had: resume from there
                offset = int(done.headers["upload-offset"])
                assert 0 < offset <= MiB // 2
                done = request(
                    conn, "PATCH", f"/files/{upload_id}", {**append, "Upload-Offset": str(offset)}, data[offset:]
                )
            assert done.status == 200, done.status
    finally:
        stalled.close()
    assert completed_md5(server, key, upload_id) == hashlib.md5(data).hexdigest()


NOT_FOUND = 'chunkd_http_requests_total{method="GET",route="/v1/files/{file_id}",status="404"}'


def not_found_counted(conn: http.client.HTTPConnection, ops_key: str) -> float:
    """What ``/metrics``, asked on ``conn``, counts of 404 answers to GET /v1/files/{file_id}."""
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {ops_key}"})
    response = conn.getresponse()
    text = response.read().decode()
    assert response.status == 200, text
    counted = [line for line in text.splitlines() if line.startswith(NOT_FOUND + " ")]
    return float(counted[0].rsplit(" ", 1)[1]) if counted else 0.0


def test_metrics_from_either_worker_count_both(server: ChunkdServer, key: str) -> None:
    ops_key = server.create_key("ops", "metrics:read")
    first, second = workers_of(server)
    with connection_to(server, on=first) as conn:
        before = not_found_counted(conn, ops_key)
    auth = {"Authorization": f"Bearer {key}"}
    for worker in (first, second, first):
        with connection_to(server, on=worker) as conn:
            assert request(conn, "GET", "/v1/files/AAAAAAAAAAAAAAAAAAAAAA", auth).status == 404
    for worker in (first, second):
        with connection_to(server, on=worker) as conn:
            assert not_found_counted(conn, ops_key) == before + 3


def test_a_worker_that_dies_is_started_again(tmp_path: Path) -> None:
    with ChunkdServer(tmp_path / "data", env={"CHUNKD_WORKERS": "2"}) as node:
        wait_for(lambda: len(workers_of(node)) == 2, what="two workers")
        key = node.create_key("alice")
        gone = workers_of(node)[0]
        os.kill(gone, signal.SIGKILL)
        wait_for(lambda: len(workers_of(node)) == 2 and gone not in workers_of(node), what="a new worker")
        tus = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {key}", "Upload-Length": "5"}
        for worker in workers_of(node):
            with connection_to(node, on=worker) as conn:
                created = request(
                    conn, "POST", "/files", {**tus, "Content-Type": "application/offset+octet-stream"}, b"hello"
                )
                assert created.status == 201 and created.headers["upload-offset"] == "5"


def test_the_workers_die_with_the_supervisor(tmp_path: Path) -> None:
    # ... and the next start removes the metrics directory the killed supervisor left behind.
    (tmp := tmp_path / "tmp").mkdir()
    env = {"CHUNKD_WORKERS": "2", "TMPDIR": str(tmp)}
    with ChunkdServer(tmp_path / "data", env=env) as node:
        wait_for(lambda: len(workers_of(node)) == 2, what="two workers")
        workers = workers_of(node)
        [left] = tmp.glob("chunkd-metrics-*")
        assert node.process is not None
        os.kill(node.process.pid, signal.SIGKILL)  # the supervisor alone, not its process group
        node.process.wait(timeout=30)

        def gone() -> bool:
            return not any(_alive(pid) for pid in workers)

        wait_for(gone, what="the workers to exit")
    assert left.is_dir()
    node = ChunkdServer(tmp_path / "data", env=env).start()
    try:
        [own] = tmp.glob("chunkd-metrics-*")
        assert own != left and not left.exists()
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)
        assert node.process.wait(timeout=DEADLINE) == 0
        assert not list(tmp.glob("chunkd-metrics-*"))
    finally:
        node.kill()


def _alive(pid: int) -> bool:
    """Not a zombie (a dead worker stays one until init reaps it)."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def test_sigterm_stops_every_worker(tmp_path: Path) -> None:
    node = ChunkdServer(tmp_path / "data", env={"CHUNKD_WORKERS": "2"}).start()
    try:
        wait_for(lambda: len(workers_of(node)) == 2, what="two workers")
        workers = workers_of(node)
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)
        assert node.process.wait(timeout=DEADLINE) == 0
        assert not any(_alive(pid) for pid in workers)
    finally:
        node.kill()
