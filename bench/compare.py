"""chunkd side by side with its peers, on this machine, in one command.

Starts chunkd (``chunkd serve`` from this checkout's virtualenv: SQLite, local disk, default settings,
fsync on, a fresh data dir per workload, a key from ``chunkd keys create``) and the peer of each workload:
@tus/server + @tus/file-store (``bench/node``), nginx's WebDAV PUT, or a one-node Ceph RADOS Gateway
(``scripts/services/ceph-rgw.sh``). Each workload runs alternately on chunkd and on its peer (A, B, A, B …)
for ``--rounds`` rounds with the same client code on both sides (``http.client`` in threads, one keep-alive
connection per thread; boto3 for the gateway), and the script prints per-workload medians, the ratio of
each round (> 1: chunkd is better), the server's CPU per request (utime + stime of the server's process
tree from /proc, before and after each run) and its peak RSS (summed over the process tree, sampled every
20 ms), and how busy the client was (its CPU time over the wall time: near 100 % of one core means the
client, not the server, set the pace).

    .venv/bin/python bench/compare.py                       # everything, issue 10's sizes, 3 rounds
    .venv/bin/python bench/compare.py --only tus-256k,tus-1g --rounds 5
    .venv/bin/python bench/compare.py --quick --rounds 1    # small sizes, a minute or so
    .venv/bin/python bench/compare.py --size 0.25 --json results.json
    .venv/bin/python bench/compare.py --chunkd-only --only parts-8m-4   # chunkd's side alone
    PYTHONPATH=<other checkout>/src .venv/bin/python bench/compare.py --chunkd-only   # ... of another version

Workloads (``--only`` takes these names; ``--list`` prints them).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import mmap
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
from bench.upload_bench import NGINX_CONF  # noqa: E402
from tests.support.files import random_file  # noqa: E402
from tests.support.proc import process_tree as descendants  # noqa: E402
from tests.support.s3 import CephRgw  # noqa: E402
from tests.support.server import ChunkdServer, free_port  # noqa: E402

KiB, MiB, GiB = 1024, 1024**2, 1024**3
BIN = Path(sys.executable).parent
NODE_DIR = ROOT / "bench" / "node"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"
T = TypeVar("T")


# ---------------------------------------------------------------- servers and what they cost


def process_tree(roots: list[int]) -> set[int]:
    """The given processes and all their descendants."""
    return set().union(*(descendants(root) for root in roots))


def cpu_seconds(roots: list[int]) -> float:
    """utime + stime (all threads) summed over the process tree."""
    total = 0
    for pid in process_tree(roots):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_bytes(roots: list[int]) -> int:
    """Resident memory summed over the process tree."""
    total = 0
    for pid in process_tree(roots):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total


class PeakSampler:
    """Samples the process tree's RSS every 20 ms in a thread; ``peak`` is the largest sum seen."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.peak = rss_bytes(roots)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes(self.roots))

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.roots))


@dataclass
class Server:
    """One running server under test."""

    name: str
    port: int
    headers: dict[str, str]
    roots: Callable[[], list[int]]
    stop: Callable[[], None]
    store: Path | None = None  # where the server keeps uploaded bytes, when a run must read or clear them
    extra: dict[str, Any] = field(default_factory=dict)


def wait_for_port(port: int, alive: Callable[[], bool], what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not alive():
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited before it listened: {tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def spawn(command: list[str], log: Path, name: str, port: int, **kwargs: Any) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
    wait_for_port(port, lambda: process.poll() is None, name, log)
    return process


def terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_chunkd(work: Path, workers: int = 1) -> Server:
    env = {"CHUNKD_FSYNC": "true", "CHUNKD_WORKERS": str(workers)}
    node = ChunkdServer(work / "chunkd-data", env=env).start()
    key = node.create_key("bench")
    assert node.process is not None
    pid = node.process.pid
    return Server("chunkd", node.port, {"Authorization": f"Bearer {key}"}, lambda: [pid], node.stop)


def node_ready() -> str | None:
    """None when node and bench/node's packages are installed, else what is missing."""
    if shutil.which("node") is None:
        return "node is not installed (scripts/services/node.sh)"
    for package in ("@tus/server", "@tus/file-store"):
        if not (NODE_DIR / "node_modules" / package / "package.json").exists():
            return f"{package} is not installed in bench/node (scripts/services/node.sh)"
    return None


def start_tus_node(work: Path) -> Server:
    if (missing := node_ready()) is not None:
        raise RuntimeError(missing)
    store = work / "tus-node-data"
    store.mkdir()
    port = free_port()
    process = spawn(["node", str(NODE_DIR / "server.js"), str(port), str(store)], work / "tus-node.log", "node", port)
    return Server("@tus/server", port, {}, lambda: [process.pid], lambda: terminate(process), store=store)


def start_floor(work: Path, kind: str) -> Server:
    store = work / f"floor-{kind}"
    store.mkdir()
    port = free_port()
    command = [
        str(BIN / "uvicorn"),
        f"bench.floor_app:{kind}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--log-level",
        "warning",
    ]
    env = {**os.environ, "FLOOR_DIR": str(store), "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = spawn(command, work / f"floor-{kind}.log", f"floor {kind}", port, cwd=ROOT, env=env)
    return Server(f"floor: {kind}", port, {}, lambda: [process.pid], lambda: terminate(process), store=store)


def start_nginx(work: Path) -> Server:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        raise RuntimeError("nginx is not installed (scripts/services/nginx.sh)")
    root = work / "nginx"
    (root / "dav").mkdir(parents=True)
    # nginx's workers run unprivileged: they must be able to reach and write the body and DAV directories.
    for directory in (work.parent, work):
        directory.chmod(0o711)
    for directory in (root, root / "dav"):
        directory.chmod(0o777)
    port = free_port()
    (root / "nginx.conf").write_text(NGINX_CONF.format(root=root, port=port))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    process = spawn([nginx, "-c", str(root / "nginx.conf")], root / "stdout.log", "nginx", port)
    return Server("nginx WebDAV", port, {}, lambda: [process.pid], lambda: terminate(process), store=root / "dav")


class Rgw:
    """The one-node Ceph RADOS Gateway, started once for the whole command (bootstrapping costs seconds)
    with ``rgw multipart min part size`` lowered to 1 MiB so the 1 MiB-part workloads are allowed."""

    def __init__(self, work: Path, memstore_bytes: int) -> None:
        self.work = work
        self.memstore_bytes = memstore_bytes
        self.gateway: CephRgw | None = None
        self.client: Any = None
        self.bucket = ""

    def server(self) -> Server:
        if self.gateway is None:
            os.environ["CEPH_MEMSTORE_BYTES"] = str(self.memstore_bytes)
            os.environ["CEPH_RGW_EXTRA_CONF"] = f"rgw multipart min part size = {MiB}"
            self.gateway = CephRgw(self.work / "ceph").start()
            self.client = self.gateway.client()
            self.bucket = self.gateway.new_bucket()
        run = self.work / "ceph" / "run"
        port = int(urlsplit(self.gateway.endpoint).port or 80)

        def roots() -> list[int]:
            return [int((run / f"{name}.pid").read_text()) for name in ("mon", "osd", "rgw")]

        return Server("Ceph RGW", port, {}, roots, lambda: None, extra={"rgw": self})

    def collect_garbage(self) -> None:
        """Frees deleted objects' bytes now (memstore keeps them in RAM until garbage collection)."""
        conf = self.work / "ceph" / "ceph.conf"
        subprocess.run(
            ["radosgw-admin", "--conf", str(conf), "gc", "process", "--include-all"],
            check=False,
            capture_output=True,
            timeout=300,
        )

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()


# ---------------------------------------------------------------- the client


class Conn:
    """One keep-alive HTTP/1.1 connection (``http.client``: the cheapest Python client, so the client
    costs as little as it can of the two shared cores)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.http = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600, blocksize=MiB)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, expect: int = 200
    ) -> tuple[dict[str, str], bytes]:
        self.http.request(method, path, body=body, headers={**self.server.headers, **(headers or {})})
        response = self.http.getresponse()
        data = response.read()
        if response.status != expect:
            raise RuntimeError(f"{self.server.name}: {method} {path} answered {response.status}: {data[:300]!r}")
        return {k.lower(): v for k, v in response.getheaders()}, data

    def close(self) -> None:
        self.http.close()


@contextmanager
def connections(server: Server) -> Iterator[Callable[[], Conn]]:
    """A connection per thread (made on first use), all closed at the end."""
    local = threading.local()
    made: list[Conn] = []
    lock = threading.Lock()

    def get() -> Conn:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = Conn(server)
            with lock:
                made.append(conn)
        return conn

    try:
        yield get
    finally:
        for conn in made:
            conn.close()


def path_of(location: str) -> str:
    parts = urlsplit(location)
    return parts.path if parts.scheme else location


def tus_create(conn: Conn, length: int, body: Any = None) -> str:
    headers = {**TUS, "Upload-Length": str(length)}
    if body is not None:
        headers["Content-Type"] = OCTETS
    got, _ = conn.request("POST", "/files", body=body, headers=headers, expect=201)
    if body is not None and int(got.get("upload-offset", -1)) != len(body):
        raise RuntimeError(f"{conn.server.name}: creation-with-upload stored {got.get('upload-offset')} bytes")
    return path_of(got["location"])


def tus_patch(conn: Conn, path: str, offset: int, body: Any) -> None:
    headers = {**TUS, "Content-Type": OCTETS, "Upload-Offset": str(offset)}
    got, _ = conn.request("PATCH", path, body=body, headers=headers, expect=204)
    if int(got["upload-offset"]) != offset + len(body):
        raise RuntimeError(f"{conn.server.name}: PATCH left offset {got['upload-offset']}, not {offset + len(body)}")


def tus_delete(conn: Conn, path: str) -> None:
    conn.request("DELETE", path, headers=TUS, expect=204)


def native_create(conn: Conn, size: int, part_size: int | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {"filename": "bench.bin", "sizeBytes": size}
    if part_size:
        document["partSize"] = part_size
    _, data = conn.request("POST", "/v1/files", json.dumps(document), {"Content-Type": "application/json"}, expect=201)
    return dict(json.loads(data))


def native_complete(conn: Conn, file_id: str, md5: str) -> None:
    _, data = conn.request(
        "POST", f"/v1/files/{file_id}/complete", json.dumps({"md5": md5}), {"Content-Type": "application/json"}
    )
    if json.loads(data)["status"] != "COMPLETED":
        raise RuntimeError(f"chunkd did not complete {file_id}: {data[:300]!r}")


def native_delete(conn: Conn, file_id: str) -> None:
    conn.request("DELETE", f"/v1/files/{file_id}", expect=204)


def clear_store(server: Server) -> None:
    """Drops what a peer stored in the last run (it has no cheap delete of its own)."""
    if server.store is not None:
        for entry in server.store.iterdir():
            entry.unlink()


def forget(server: Server, locations: list[str]) -> Callable[[], None]:
    """A cleanup that deletes the given tus uploads: chunkd's through its Files API (the tus upload's id is
    its file id), a peer's by emptying its store."""

    def cleanup() -> None:
        if server.name == "chunkd":
            with connections(server) as conn:
                for location in locations:
                    native_delete(conn(), location.rstrip("/").rsplit("/", 1)[1])
        else:
            clear_store(server)

    return cleanup


# ---------------------------------------------------------------- workloads


class Source:
    """The random bytes every run sends (one file, memory-mapped so a slice is sent without a copy)."""

    def __init__(self, path: Path, size: int) -> None:
        random_file(path, size)
        self._file = open(path, "rb")  # noqa: SIM115 (kept open for the map; closed by close())
        self._map = mmap.mmap(self._file.fileno(), size, prot=mmap.PROT_READ)
        self.view = memoryview(self._map)
        self._md5: dict[tuple[int, int], str] = {}

    def md5(self, start: int, size: int) -> str:
        if (start, size) not in self._md5:
            self._md5[start, size] = hashlib.md5(self.view[start : start + size]).hexdigest()
        return self._md5[start, size]

    def close(self) -> None:
        try:
            self.view.release()
            self._map.close()
        except BufferError:  # a slice is still referenced (by a traceback): the process is ending anyway
            pass
        self._file.close()


@dataclass
class Outcome:
    """What one side did in one run: how many requests, bytes and files, and each request's latency."""

    requests: int = 0
    bytes: int = 0
    files: int = 0
    latencies: list[float] = field(default_factory=list)
    cleanup: Callable[[], None] | None = None  # run after the clock stops: deletes what the run stored


Side = Callable[[Server, Source], Outcome]


@dataclass
class Workload:
    name: str
    title: str
    peer: str  # tus | rgw | nginx
    metric: str  # MiB/s | files/s | s | MiB RSS
    chunkd: Side
    other: Side
    floors: bool = False
    source_bytes: int = 0
    # Run once before the first round, off the clock: what the client must know in advance (the
    # file's MD5 a verified upload sends), so the first round does not also time working it out.
    prepare: Callable[[Source], object] | None = None


def timed(latencies: list[float], fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, its duration appended to ``latencies``."""
    started = time.perf_counter()
    result = fn(*args)
    latencies.append(time.perf_counter() - started)
    return result


def tus_sequential(total: int, chunk: int) -> Side:
    """One upload sent as sequential PATCHes of ``chunk`` bytes over one keep-alive connection."""

    def run(server: Server, source: Source) -> Outcome:
        out = Outcome(bytes=total, files=1)
        with connections(server) as conn:
            c = conn()
            location = tus_create(c, total)
            out.requests += 1
            for offset in range(0, total, chunk):
                body = source.view[offset : min(offset + chunk, total)]
                timed(out.latencies, tus_patch, c, location, offset, body)
                out.requests += 1
        out.cleanup = forget(server, [location])
        return out

    return run


def tus_small(count: int, size: int, clients: int) -> Side:
    """``count`` files, each one tus creation-with-upload request, from ``clients`` threads."""

    def run(server: Server, source: Source) -> Outcome:
        out = Outcome(requests=count, bytes=count * size, files=count)
        with connections(server) as conn, ThreadPoolExecutor(clients) as pool:

            def one(i: int) -> tuple[float, str]:
                started = time.perf_counter()
                location = tus_create(conn(), size, source.view[i * size : (i + 1) * size])
                return time.perf_counter() - started, location

            results = list(pool.map(one, range(count)))
        out.latencies = [latency for latency, _ in results]
        out.cleanup = forget(server, [location for _, location in results])
        return out

    return run


def native_small(count: int, size: int, clients: int) -> Side:
    """``count`` files through chunkd's Files API: create, one part, complete with the MD5."""

    def run(server: Server, source: Source) -> Outcome:
        out = Outcome(requests=3 * count, bytes=count * size, files=count)
        with connections(server) as conn, ThreadPoolExecutor(clients) as pool:

            def one(i: int) -> float:
                c = conn()
                started = time.perf_counter()
                file_id = native_create(c, size)["id"]
                c.request("PUT", f"/v1/files/{file_id}/parts/1", source.view[i * size : (i + 1) * size])
                native_complete(c, file_id, source.md5(i * size, size))
                return time.perf_counter() - started

            out.latencies = list(pool.map(one, range(count)))
        return out

    return run


def native_parts(total: int, part: int, in_flight: int) -> Side:
    """One file in ``part``-byte parts, ``in_flight`` at a time, then complete with its MD5."""

    def run(server: Server, source: Source) -> Outcome:
        count = -(-total // part)
        out = Outcome(requests=count + 2, bytes=total, files=1)
        with connections(server) as conn, ThreadPoolExecutor(in_flight) as pool:
            file_id = native_create(conn(), total, part)["id"]

            def send(n: int) -> float:
                started = time.perf_counter()
                conn().request(
                    "PUT", f"/v1/files/{file_id}/parts/{n}", source.view[(n - 1) * part : min(n * part, total)]
                )
                return time.perf_counter() - started

            out.latencies = list(pool.map(send, range(1, count + 1)))
            native_complete(conn(), file_id, source.md5(0, total))

        def cleanup() -> None:
            with connections(server) as conn:
                native_delete(conn(), file_id)

        out.cleanup = cleanup
        return out

    return run


def rgw_parts(total: int, part: int, in_flight: int) -> Side:
    """The same with boto3's S3 multipart: create, upload_part from a pool of ``in_flight`` threads, complete."""

    def run(server: Server, source: Source) -> Outcome:
        rgw: Rgw = server.extra["rgw"]
        s3, bucket, key = rgw.client, rgw.bucket, f"bench-{time.monotonic_ns()}"
        count = -(-total // part)
        out = Outcome(requests=count + 2, bytes=total, files=1)
        upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]

        def send(n: int) -> tuple[float, dict[str, Any]]:
            body = bytes(source.view[(n - 1) * part : min(n * part, total)])
            started = time.perf_counter()
            etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=body)["ETag"]
            return time.perf_counter() - started, {"PartNumber": n, "ETag": etag}

        with ThreadPoolExecutor(in_flight) as pool:
            results = list(pool.map(send, range(1, count + 1)))
        out.latencies = [latency for latency, _ in results]
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": [p for _, p in results]}
        )

        def cleanup() -> None:
            size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
            if size != total:
                raise RuntimeError(f"RGW stored {size} bytes, not {total}")
            s3.delete_object(Bucket=bucket, Key=key)
            rgw.collect_garbage()

        out.cleanup = cleanup
        return out

    return run


def native_whole(total: int) -> Side:
    """A verified file: create, one PUT of the whole body to its ``uploadUrl``, complete with its MD5."""

    def run(server: Server, source: Source) -> Outcome:
        out = Outcome(requests=3, bytes=total, files=1)
        with connections(server) as conn:
            c = conn()
            created = native_create(c, total)
            target = path_of(created["uploadUrl"])
            headers = {"Content-Type": "application/octet-stream", **created.get("uploadHeaders", {})}
            c.request("PUT", target, source.view[:total], headers)
            native_complete(c, created["id"], source.md5(0, total))

        def cleanup() -> None:
            with connections(server) as conn:
                native_delete(conn(), created["id"])

        out.cleanup = cleanup
        return out

    return run


def nginx_whole(total: int) -> Side:
    """The same bytes with one WebDAV PUT, then ``md5sum`` of the stored file (the verification nginx lacks)."""

    def run(server: Server, source: Source) -> Outcome:
        assert server.store is not None
        out = Outcome(requests=1, bytes=total, files=1)
        with connections(server) as conn:
            conn().request("PUT", "/bench.bin", source.view[:total], expect=201)
        stored = server.store / "bench.bin"
        digest = subprocess.run(["md5sum", str(stored)], check=True, capture_output=True, text=True).stdout.split()[0]
        if digest != source.md5(0, total):
            raise RuntimeError("nginx stored other bytes than were sent")
        out.cleanup = stored.unlink
        return out

    return run


def tus_one_patch(total: int) -> Side:
    return tus_sequential(total, total)


def tus_concurrent(uploads: int, size: int) -> Side:
    """``uploads`` tus uploads at once, each one PATCH of ``size`` bytes (for the server's peak RSS)."""

    def run(server: Server, source: Source) -> Outcome:
        out = Outcome(requests=2 * uploads, bytes=uploads * size, files=uploads)
        with connections(server) as conn, ThreadPoolExecutor(uploads) as pool:

            def one(i: int) -> tuple[float, str]:
                c = conn()
                location = tus_create(c, size)
                started = time.perf_counter()
                tus_patch(c, location, 0, source.view[:size])
                return time.perf_counter() - started, location

            results = list(pool.map(one, range(uploads)))
        out.latencies = [latency for latency, _ in results]
        out.cleanup = forget(server, [location for _, location in results])
        return out

    return run


def tus_many(clients: int, files_each: int, smallest: int, largest: int, chunk: int) -> Side:
    """``clients`` concurrent clients, each sending ``files_each`` files of random sizes in ``chunk``-byte PATCHes."""
    sizes = [
        [random.Random(c * 1000 + f).randrange(smallest, largest + 1) for f in range(files_each)]
        for c in range(clients)
    ]

    def run(server: Server, source: Source) -> Outcome:
        out = Outcome(bytes=sum(map(sum, sizes)), files=clients * files_each)
        lock = threading.Lock()

        locations: list[str] = []

        def client(c: int) -> None:
            latencies: list[float] = []
            conn = Conn(server)
            try:
                for size in sizes[c]:
                    location = timed(latencies, tus_create, conn, size)
                    for offset in range(0, size, chunk):
                        timed(
                            latencies,
                            tus_patch,
                            conn,
                            location,
                            offset,
                            source.view[offset : min(offset + chunk, size)],
                        )
                    locations.append(location)
            finally:
                conn.close()
            with lock:
                out.latencies.extend(latencies)

        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, range(clients)))
        out.requests = len(out.latencies)
        out.cleanup = forget(server, locations)
        return out

    return run


def workloads(scale: float) -> list[Workload]:
    """Issue 10's table, every size multiplied by ``scale`` (counts too, with floors that keep each one meaningful)."""

    def size(n: int, unit: int, least: int = 1) -> int:
        return max(least * unit, int(n * scale) // unit * unit)

    def count(n: int, least: int) -> int:
        return max(least, int(n * scale))

    tus256 = size(256 * MiB, MiB, 2)
    small = count(1000, 32)
    whole = size(GiB, MiB, 8)
    rss_each = size(64 * MiB, 256 * KiB)
    many = 100 if scale >= 0.1 else count(100, 8)  # the client count is the point: sizes shrink first
    many_files = 5 if scale >= 0.5 else 2
    many_lo, many_hi = size(MiB, 64 * KiB, 4), size(4 * MiB, 64 * KiB, 8)
    result = [
        Workload(
            "tus-256k",
            f"tus, {tus256 // MiB} MiB as sequential 256 KiB PATCHes, one keep-alive client",
            "tus",
            "MiB/s",
            tus_sequential(tus256, 256 * KiB),
            tus_sequential(tus256, 256 * KiB),
            floors=True,
        ),
        Workload(
            "tus-1m",
            f"tus, {tus256 // MiB} MiB as sequential 1 MiB PATCHes",
            "tus",
            "MiB/s",
            tus_sequential(tus256, MiB),
            tus_sequential(tus256, MiB),
        ),
    ]
    for clients in (1, 16):
        result.append(
            Workload(
                f"small-tus-{clients}",
                f"{small} files of 64 KiB, tus creation-with-upload, {clients} client{'s' if clients > 1 else ''}",
                "tus",
                "files/s",
                tus_small(small, 64 * KiB, clients),
                tus_small(small, 64 * KiB, clients),
            )
        )
    for clients in (1, 16):
        result.append(
            Workload(
                f"small-native-{clients}",
                f"{small} files of 64 KiB, chunkd /v1/files (create + 1 part + complete) vs tus "
                f"creation-with-upload, {clients} client{'s' if clients > 1 else ''}",
                "tus",
                "files/s",
                native_small(small, 64 * KiB, clients),
                tus_small(small, 64 * KiB, clients),
                prepare=lambda source: [source.md5(i * 64 * KiB, 64 * KiB) for i in range(small)],
            )
        )
    for part in (8 * MiB, MiB):
        total = size(GiB, part, 2)
        for flight in (1, 4):
            result.append(
                Workload(
                    f"parts-{part // MiB}m-{flight}",
                    f"{total // MiB} MiB in {part // MiB} MiB parts, {flight} in flight (RGW: boto3 multipart)",
                    "rgw",
                    "MiB/s",
                    native_parts(total, part, flight),
                    rgw_parts(total, part, flight),
                    prepare=lambda source, total=total: source.md5(0, total),
                )
            )
    result += [
        Workload(
            "verified-1g",
            f"a verified {whole // MiB} MiB file: create + PUT uploadUrl + complete(md5) vs nginx WebDAV PUT + md5sum",
            "nginx",
            "s",
            native_whole(whole),
            nginx_whole(whole),
            prepare=lambda source: source.md5(0, whole),
        ),
        Workload(
            "tus-1g",
            f"one {whole // MiB} MiB tus PATCH",
            "tus",
            "MiB/s",
            tus_one_patch(whole),
            tus_one_patch(whole),
            floors=True,
        ),
        Workload(
            "rss-32",
            f"32 concurrent tus uploads of {rss_each // MiB or rss_each // KiB}"
            f" {'MiB' if rss_each >= MiB else 'KiB'}: server peak RSS",
            "tus",
            "MiB RSS",
            tus_concurrent(32, rss_each),
            tus_concurrent(32, rss_each),
        ),
        Workload(
            "many-100",
            f"{many} concurrent clients x {many_files} files of "
            f"{many_lo / MiB:g}-{many_hi / MiB:g} MiB in 256 KiB PATCHes",
            "tus",
            "MiB/s",
            tus_many(many, many_files, many_lo, many_hi, 256 * KiB),
            tus_many(many, many_files, many_lo, many_hi, 256 * KiB),
            floors=True,
        ),
    ]
    need = {
        "tus-256k": tus256,
        "tus-1m": tus256,
        "verified-1g": whole,
        "tus-1g": whole,
        "rss-32": rss_each,
        "many-100": many_hi,
    }
    for w in result:
        w.source_bytes = need.get(w.name, size(GiB, MiB, 16) if w.name.startswith("parts") else small * 64 * KiB)
    return result


# ---------------------------------------------------------------- measuring


@dataclass
class Run:
    target: str
    round: int
    wall_s: float
    value: float
    requests: int
    server_cpu_s: float
    cpu_ms_per_request: float
    peak_rss_mib: float
    client_cpu_share: float  # client CPU seconds / wall seconds (1.0 = one core busy)
    p99_ms: float | None


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def warm_up(server: Server, source: Source) -> None:
    """One small upload before the first measured run, so lazy imports and first-use caches are not timed."""
    if server.name == "Ceph RGW":
        return
    if server.name == "nginx WebDAV":
        nginx_whole(64 * KiB)(server, source).cleanup()  # type: ignore[misc]
        return
    with connections(server) as conn:
        location = tus_create(conn(), 2 * 64 * KiB, source.view[: 64 * KiB])
        tus_patch(conn(), location, 64 * KiB, source.view[64 * KiB : 128 * KiB])
        if server.name == "chunkd":
            native_whole(64 * KiB)(server, source).cleanup()  # type: ignore[misc]
    forget(server, [location])()


def measure(workload: Workload, server: Server, side: Side, source: Source, round_no: int) -> Run:
    roots = server.roots()
    cpu0, client0 = cpu_seconds(roots), client_cpu()
    started = time.perf_counter()
    with PeakSampler(roots) as sampler:
        out = side(server, source)
    wall = time.perf_counter() - started
    server_cpu = cpu_seconds(roots) - cpu0
    client = client_cpu() - client0
    if out.cleanup is not None:
        out.cleanup()
    value = {
        "MiB/s": out.bytes / MiB / wall,
        "files/s": out.files / wall,
        "s": wall,
        "MiB RSS": sampler.peak / MiB,
    }[workload.metric]
    p99 = statistics.quantiles(out.latencies, n=100)[98] * 1000 if len(out.latencies) >= 2 else None
    return Run(
        server.name,
        round_no,
        wall,
        value,
        out.requests,
        server_cpu,
        server_cpu * 1000 / max(out.requests, 1),
        sampler.peak / MiB,
        client / wall,
        p99,
    )


def ratio(metric: str, chunkd: float, peer: float) -> float:
    """> 1 means chunkd is better: more throughput, or less time or memory."""
    if metric in ("s", "MiB RSS"):
        return peer / chunkd if chunkd else 0.0
    return chunkd / peer if peer else 0.0


def summarise(workload: Workload, runs: list[Run]) -> dict[str, Any]:
    by: dict[str, list[Run]] = {}
    for run in runs:
        by.setdefault(run.target, []).append(run)
    names = list(by)
    peer_name = names[1] if len(names) > 1 else None  # None: --chunkd-only
    chunkd, peer = by["chunkd"], by[peer_name] if peer_name else []
    rounds = [ratio(workload.metric, a.value, b.value) for a, b in zip(chunkd, peer, strict=False)]
    medians: dict[str, dict[str, Any]] = {
        name: {
            "value": statistics.median(r.value for r in rs),
            "cpu_ms_per_request": statistics.median(r.cpu_ms_per_request for r in rs),
            "peak_rss_mib": max(r.peak_rss_mib for r in rs),
            "client_cpu_share": statistics.median(r.client_cpu_share for r in rs),
            "p99_ms": statistics.median(p99s) if len(p99s := [r.p99_ms for r in rs if r.p99_ms is not None]) else None,
        }
        for name, rs in by.items()
    }
    return {
        "name": workload.name,
        "title": workload.title,
        "metric": workload.metric,
        "peer": peer_name,
        "medians": medians,
        "ratio_of_medians": (
            ratio(workload.metric, medians["chunkd"]["value"], medians[peer_name]["value"]) if peer_name else None
        ),
        "round_ratios": rounds,
        "runs": [asdict(r) for r in runs],
    }


def fmt(value: float, metric: str) -> str:
    return f"{value:.2f} s" if metric == "s" else f"{value:.1f} {metric}"


def print_table(summaries: list[dict[str, Any]]) -> None:
    print()
    print(
        "| workload | chunkd | peer | ratio (median; per round) | server CPU ms/request chunkd / peer "
        "| peak RSS MiB chunkd / peer | p99 ms chunkd / peer | client CPU (of one core) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for s in summaries:
        a, metric = s["medians"]["chunkd"], s["metric"]
        client = max(m["client_cpu_share"] for m in s["medians"].values())
        if s["peer"] is None:  # --chunkd-only
            p99 = f"{a['p99_ms']:.0f}" if a["p99_ms"] is not None else "–"
            print(
                f"| {s['name']}: {s['title']} | {fmt(a['value'], metric)} | – | – "
                f"| {a['cpu_ms_per_request']:.2f} | {a['peak_rss_mib']:.0f} | {p99} | {client:.0%} |"
            )
            continue
        b = s["medians"][s["peer"]]
        rounds = ", ".join(f"{r:.2f}" for r in s["round_ratios"])
        both = a["p99_ms"] is not None and b["p99_ms"] is not None
        p99 = f"{a['p99_ms']:.0f} / {b['p99_ms']:.0f}" if both else "–"
        print(
            f"| {s['name']}: {s['title']} | {fmt(a['value'], metric)} | {s['peer']} {fmt(b['value'], metric)} "
            f"| {s['ratio_of_medians']:.2f}× ({rounds}) "
            f"| {a['cpu_ms_per_request']:.2f} / {b['cpu_ms_per_request']:.2f} "
            f"| {a['peak_rss_mib']:.0f} / {b['peak_rss_mib']:.0f} | {p99} | {client:.0%} |"
        )
        for name, m in s["medians"].items():
            if name.startswith("floor"):
                print(
                    f"| {s['name']} {name} (same client) | {fmt(m['value'], metric)} | | | "
                    f"{m['cpu_ms_per_request']:.2f} | {m['peak_rss_mib']:.0f} | | {m['client_cpu_share']:.0%} |"
                )


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem) / MiB, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated workload names (default: all)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each runs chunkd then its peer (default 3)")
    parser.add_argument("--size", type=float, default=1.0, help="multiply every size and count by this (default 1)")
    parser.add_argument("--quick", action="store_true", help="small sizes (--size 1/128) for a smoke test")
    parser.add_argument("--no-floors", action="store_true", help="skip the bare ASGI floor servers")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--list", action="store_true", help="print the workloads and exit")
    parser.add_argument("--report", type=Path, help="print the table of a saved --json file and exit")
    parser.add_argument("--work-dir", type=Path, help="where data dirs go (default: a temporary directory)")
    parser.add_argument(
        "--chunkd-only",
        action="store_true",
        help="run only chunkd's side of each workload (no peer, no floors): for comparing two versions of chunkd",
    )
    parser.add_argument(
        "--chunkd-workers",
        type=int,
        default=1,
        help="chunkd's server processes (CHUNKD_WORKERS; default 1, chunkd's own default)",
    )
    args = parser.parse_args()
    if args.report:
        saved = json.loads(args.report.read_text())
        print(
            f"{saved['date']}, {saved['machine']['cores']} cores ({saved['machine']['cpu']}), "
            f"scale {saved['scale']:g}, {saved['rounds']} round(s), medians; ratio > 1: chunkd better"
        )
        print_table(saved["workloads"])
        return
    # A plain kill must still stop every server this command started (the finally blocks below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    scale = 1 / 128 if args.quick else args.size
    chosen = workloads(scale)
    if args.list:
        for w in chosen:
            print(f"{w.name:<16} {w.title}")
        return
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = set(wanted) - {w.name for w in chosen}
        if unknown:
            raise SystemExit(f"unknown workloads: {', '.join(sorted(unknown))} (--list shows them)")
        chosen = [w for w in chosen if w.name in wanted]

    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    host = machine()
    print(
        f"{started_at}; {host['cores']} × {host['cpu']}; load {host['loadavg'][0]:.1f}; scale {scale:g}; "
        f"chunkd workers {args.chunkd_workers}",
        flush=True,
    )
    summaries: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="chunkd-compare-", dir=args.work_dir) as tmp:
        work = Path(tmp)
        source = Source(work / "source.bin", max([256 * KiB, *(w.source_bytes for w in chosen)]))
        parts_bytes = max((w.source_bytes for w in chosen if w.peer == "rgw" and not args.chunkd_only), default=0)
        rgw = Rgw(work, max(2 * GiB, 3 * parts_bytes + GiB))
        try:
            for workload in chosen:
                print(f"\n{workload.name}: {workload.title}", flush=True)
                wdir = work / workload.name
                wdir.mkdir()
                servers: list[tuple[Server, Side]] = []
                try:
                    servers.append((start_chunkd(wdir, args.chunkd_workers), workload.chunkd))
                    if not args.chunkd_only:
                        if workload.peer == "rgw":
                            peer = rgw.server()
                        else:
                            peer = (start_tus_node if workload.peer == "tus" else start_nginx)(wdir)
                        servers.append((peer, workload.other))
                    if workload.floors and not args.no_floors and not args.chunkd_only:
                        for kind in ("drain", "store"):
                            servers.append((start_floor(wdir, kind), workload.other))
                    if workload.prepare is not None:
                        workload.prepare(source)
                    for server, _ in servers:
                        warm_up(server, source)
                    runs: list[Run] = []
                    for round_no in range(1, args.rounds + 1):
                        for server, side in servers:
                            run = measure(workload, server, side, source, round_no)
                            runs.append(run)
                            p99 = f", p99 {run.p99_ms:.0f} ms" if run.p99_ms is not None else ""
                            print(
                                f"  round {round_no} {server.name:<14} {fmt(run.value, workload.metric):>14}"
                                f"  server CPU {run.cpu_ms_per_request:.2f} ms/request, peak RSS"
                                f" {run.peak_rss_mib:.0f} MiB{p99}, client CPU {run.client_cpu_share:.0%}",
                                flush=True,
                            )
                finally:
                    for server, _ in servers:
                        server.stop()
                summaries.append(summarise(workload, runs))
                shutil.rmtree(wdir, ignore_errors=True)
                if args.json:  # after each workload, so an interrupted run keeps what it measured
                    write_json(args.json, started_at, host, scale, args.rounds, summaries)
        finally:
            rgw.stop()
            source.close()
    print(
        f"\n{started_at}, {host['cores']} cores ({host['cpu']}), {args.rounds} round(s), medians; "
        f"ratio > 1: chunkd better",
        flush=True,
    )
    print_table(summaries)


def write_json(path: Path, date: str, host: dict[str, Any], scale: float, rounds: int, summaries: list[Any]) -> None:
    document = {
        "date": date,
        "machine": host,
        "scale": scale,
        "rounds": rounds,
        "load_now": os.getloadavg(),
        "workloads": summaries,
    }
    path.write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
