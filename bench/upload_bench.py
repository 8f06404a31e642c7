"""Upload benchmark: a generated file (1 GiB by default) sent to chunkd in 8 MiB parts, sequentially
and 4 in parallel (by httpx client threads, and by one curl process), and in one ``curl -T`` to its
``uploadUrl``, then completed; prints MB/s, the
latency of ``complete`` and the server's peak RSS, and the same bytes written with ``curl -T`` to
nginx's WebDAV PUT on this machine, with the ratios.

    .venv/bin/python bench/upload_bench.py [--size 1G] [--part-size 8M] [--server uvicorn|granian|both]
                                           [--rounds 2] [--no-nginx]

The script starts its own ``chunkd serve`` (fsync on, as in production) on a fresh data dir and, if
``nginx`` is installed, an nginx with ``dav_methods PUT`` on a free port. Runs alternate between the
targets so that background noise hits both alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.files import random_file
from tests.support.server import ChunkdServer, free_port

MiB = 1024 * 1024


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": MiB, "G": 1024 * MiB}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def peak_rss(pid: int) -> int:
    """The largest VmHWM (the kernel's high-water mark of resident memory) in the process tree of
    ``pid``: with granian the app runs in a worker process below the one we started."""
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            peak = max(peak, peak_rss(int(child)))
    return peak


def create_upload(client: httpx.Client, name: str, size: int, part_size: int) -> dict:
    created = client.post("/v1/files", json={"filename": name, "sizeBytes": size, "partSize": part_size})
    created.raise_for_status()
    return dict(created.json())


def complete_and_delete(client: httpx.Client, file_id: str, md5: str) -> float:
    """Complete the upload with the source's MD5 (checked by the server), delete it, and return how
    long ``complete`` took in ms."""
    started = time.perf_counter()
    done = client.post(f"/v1/files/{file_id}/complete", json={"md5": md5})
    complete_ms = (time.perf_counter() - started) * 1000
    done.raise_for_status()
    assert done.json()["status"] == "COMPLETED"
    client.delete(f"/v1/files/{file_id}")
    return complete_ms


def upload_parts(url: str, key: str, path: Path, size: int, part_size: int, parallel: int, md5: str) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    count = -(-size // part_size)
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        file_id = create_upload(client, path.name, size, part_size)["id"]
        local = threading.local()

        def send(number: int) -> float:
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=url, headers=headers, timeout=300)
            with open(path, "rb") as handle:
                handle.seek((number - 1) * part_size)
                data = handle.read(part_size)
            started = time.perf_counter()
            response = local.client.put(f"/v1/files/{file_id}/parts/{number}", content=data)
            response.raise_for_status()
            return time.perf_counter() - started

        started = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            latencies = list(pool.map(send, range(1, count + 1)))
        upload_seconds = time.perf_counter() - started
        complete_ms = complete_and_delete(client, file_id, md5)
    return {
        "mbps": size / MiB / upload_seconds,
        "complete_ms": complete_ms,
        "part_p50_ms": statistics.median(latencies) * 1000,
    }


def split_file(path: Path, part_size: int, directory: Path) -> list[Path]:
    """The file cut into part files, so curl can send each part as its own PUT."""
    directory.mkdir(exist_ok=True)
    pieces = []
    with open(path, "rb") as source:
        while data := source.read(part_size):
            piece = directory / f"{len(pieces) + 1}.bin"
            piece.write_bytes(data)
            pieces.append(piece)
    return pieces


def upload_parts_curl(
    url: str, key: str, pieces: list[Path], size: int, part_size: int, parallel: int, md5: str
) -> dict:
    """The same parts sent by one curl process (``--parallel-max`` at a time, on reused
    connections): a client as cheap as the one nginx gets, where the httpx client threads above
    spend about 1.2 CPU-seconds per GiB of the same two cores."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        file_id = create_upload(client, "bench.bin", size, part_size)["id"]
        command = ["curl", "-sS", "-H", f"Authorization: Bearer {key}", "-H", "Expect:", "-w", "%{http_code}\\n"]
        if parallel > 1:
            command += ["--parallel", "--parallel-max", str(parallel)]
        for number, piece in enumerate(pieces, start=1):
            command += ["-T", str(piece), "-o", "/dev/null", f"{url}/v1/files/{file_id}/parts/{number}"]
        started = time.perf_counter()
        codes = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()
        upload_seconds = time.perf_counter() - started
        if codes != ["200"] * len(pieces):
            raise RuntimeError(f"curl part uploads answered {sorted(set(codes))}")
        complete_ms = complete_and_delete(client, file_id, md5)
    return {"mbps": size / MiB / upload_seconds, "complete_ms": complete_ms}


def upload_whole(url: str, key: str, path: Path, size: int, part_size: int, md5: str) -> dict:
    """The same file with one ``curl -T`` to the upload's signed ``uploadUrl`` (the server cuts it
    into parts itself): the like-for-like comparison with nginx's ``curl -T``."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        body = create_upload(client, path.name, size, part_size)
        upload_url = body["uploadUrl"] if body["uploadUrl"].startswith("http") else url + body["uploadUrl"]
        extra = [arg for name, value in body["uploadHeaders"].items() for arg in ("-H", f"{name}: {value}")]
        started = time.perf_counter()
        subprocess.run(
            ["curl", "-sSf", "-o", "/dev/null", "-H", "Expect:", *extra, "-T", str(path), upload_url], check=True
        )
        upload_seconds = time.perf_counter() - started
        complete_ms = complete_and_delete(client, body["id"], md5)
    return {"mbps": size / MiB / upload_seconds, "complete_ms": complete_ms}


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy; fastcgi_temp_path {root}/fcgi;
    uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{ root {root}/dav; dav_methods PUT; create_full_put_path on; }}
    }}
}}
"""


class Nginx:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        (root / "dav").mkdir(parents=True)
        # nginx's workers run unprivileged: they must be able to write the body and DAV directories.
        root.parent.chmod(0o711)
        for directory in (root, root / "dav"):
            directory.chmod(0o777)
        (root / "nginx.conf").write_text(NGINX_CONF.format(root=root, port=self.port))
        self.process = subprocess.Popen(["nginx", "-c", str(root / "nginx.conf")], stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/", timeout=0.5)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def put(self, path: Path, size: int) -> float:
        started = time.perf_counter()
        subprocess.run(
            ["curl", "-sSf", "-o", "/dev/null", "-T", str(path), f"http://127.0.0.1:{self.port}/{path.name}"],
            check=True,
        )
        seconds = time.perf_counter() - started
        stored = self.root / "dav" / path.name
        if stored.stat().st_size != size:
            raise RuntimeError("nginx stored a file of the wrong size")
        stored.unlink()
        return size / MiB / seconds

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1G")
    parser.add_argument("--part-size", default="8M")
    parser.add_argument("--server", default="uvicorn", choices=["uvicorn", "granian", "both"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the chunkd servers (repeatable)")
    args = parser.parse_args()
    size, part_size = parse_size(args.size), parse_size(args.part_size)
    servers = ["uvicorn", "granian"] if args.server == "both" else [args.server]

    with tempfile.TemporaryDirectory(prefix="chunkd-bench-") as tmp:
        root = Path(tmp)
        source = root / "source.bin"
        print(f"generating {size / MiB:.0f} MiB …", flush=True)
        md5 = random_file(source, size)
        pieces = split_file(source, part_size, root / "parts")
        nginx = Nginx(root / "nginx") if not args.no_nginx and shutil.which("nginx") else None
        nodes = {}
        for name in servers:
            env = {"CHUNKD_SERVER": name, "CHUNKD_FSYNC": "true", **dict(e.split("=", 1) for e in args.env)}
            node = ChunkdServer(root / f"data-{name}", env=env)
            nodes[name] = (node.start(), node.create_key("bench"))
        results: dict[str, list[dict]] = {}
        try:
            for _ in range(args.rounds):
                for name, (node, key) in nodes.items():
                    for parallel in (1, 4):
                        assert node.process is not None
                        run = upload_parts(node.url, key, source, size, part_size, parallel, md5)
                        results.setdefault(f"chunkd/{name} {parallel}x{part_size // MiB}MiB parts", []).append(run)
                    for parallel in (1, 4):
                        run = upload_parts_curl(node.url, key, pieces, size, part_size, parallel, md5)
                        results.setdefault(f"chunkd/{name} {parallel}x{part_size // MiB}MiB parts, curl", []).append(
                            run
                        )
                    run = upload_whole(node.url, key, source, size, part_size, md5)
                    results.setdefault(f"chunkd/{name} curl -T uploadUrl", []).append(run)
                if nginx:
                    results.setdefault("nginx WebDAV curl -T", []).append({"mbps": nginx.put(source, size)})
            peaks = {}
            for name, (node, _) in nodes.items():
                assert node.process is not None
                peaks[name] = peak_rss(node.process.pid)
        finally:
            for node, _ in nodes.values():
                node.kill()
            if nginx:
                nginx.stop()

    print(f"\n{size / MiB:.0f} MiB, best of {args.rounds} rounds (machine: {os.cpu_count()} cores)")
    print(f"{'target':<42} {'MB/s':>8} {'complete ms':>12} {'part p50 ms':>12}")
    best: dict[str, float] = {}
    for name, runs in results.items():
        top = max(runs, key=lambda r: r["mbps"])
        best[name] = top["mbps"]
        complete = f"{min(r['complete_ms'] for r in runs):.1f}" if "complete_ms" in top else "-"
        p50 = f"{top['part_p50_ms']:.1f}" if "part_p50_ms" in top else "-"
        print(f"{name:<42} {top['mbps']:>8.1f} {complete:>12} {p50:>12}")
    for name, peak in peaks.items():
        print(f"chunkd/{name} server peak RSS: {peak / MiB:.1f} MiB")
    if "nginx WebDAV curl -T" in best:
        reference = best["nginx WebDAV curl -T"]
        for name, mbps in best.items():
            if name.startswith("chunkd"):
                print(f"ratio {name} / nginx: {mbps / reference:.2f}")


if __name__ == "__main__":
    main()
