"""One large tus PATCH: chunkd against the reference Node server (@tus/server + @tus/file-store).

The same file is sent with a single ``PATCH`` by curl (``-T``, as a tus client with an unlimited
chunk size would) to both servers, alternating runs, and the PATCH's wall time is compared.
chunkd runs as it would in production: fsync before acknowledging, and the whole-file MD5
computed while the bytes arrive; @tus/file-store does neither. @tus/server is installed from
npm into a temporary directory (or ``--node-dir``, reused when already there).

    .venv/bin/python bench/tus_bench.py                 # 1 GiB, 3 rounds
    .venv/bin/python bench/tus_bench.py --size 256M --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.files import random_file

BIN = Path(sys.executable).parent
TUS_SERVER_VERSION = "2"
NODE_SERVER = """
import http from "node:http";
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";

const [port, directory] = process.argv.slice(2);
const tus = new Server({ path: "/files", datastore: new FileStore({ directory }) });
http.createServer((req, res) => tus.handle(req, res)).listen(Number(port), "127.0.0.1", () => {
  console.log("listening");
});
"""


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        try:
            req = urllib.request.Request(url, method="OPTIONS")
            with urllib.request.urlopen(req, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} did not start: {log.read_text()[-2000:]}")


def curl(*args: str) -> str:
    result = subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, check=True)
    return result.stdout


class Target:
    """One server under test: how to create an upload and send the file with one PATCH."""

    def __init__(self, name: str, url: str, headers: dict[str, str], pid: int) -> None:
        self.pid = pid
        self.name = name
        self.url = url
        self.headers = {"Tus-Resumable": "1.0.0", **headers}

    def _h(self, extra: dict[str, str] | None = None) -> list[str]:
        args: list[str] = []
        for key, value in {**self.headers, **(extra or {})}.items():
            args += ["-H", f"{key}: {value}"]
        return args

    def create(self, size: int) -> str:
        out = curl(
            "-D", "-", "-o", "/dev/null", "-X", "POST", *self._h({"Upload-Length": str(size)}), f"{self.url}/files"
        )
        for line in out.splitlines():
            if line.lower().startswith("location:"):
                location = line.split(":", 1)[1].strip()
                return location if location.startswith("http") else self.url + location
        raise SystemExit(f"{self.name}: no Location in {out!r}")

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the server process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def patch(self, location: str, file: Path) -> tuple[float, float]:
        """(wall seconds, server CPU seconds) of one PATCH of the whole file."""
        headers = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0", "Expect": ""}
        cpu = self.cpu_seconds()
        started = time.perf_counter()
        out = curl("-X", "PATCH", "-T", str(file), "-o", "/dev/null", "-w", "%{http_code}", *self._h(headers), location)
        elapsed = time.perf_counter() - started
        if out.strip() != "204":
            raise SystemExit(f"{self.name}: PATCH answered {out!r}")
        return elapsed, self.cpu_seconds() - cpu

    def delete(self, location: str) -> None:
        curl("-X", "DELETE", "-o", "/dev/null", *self._h(), location)


def start_chunkd(work: Path) -> tuple[subprocess.Popen[bytes], Target]:
    data = work / "chunkd-data"
    port = free_port()
    env = {**os.environ, "CHUNKD_BOOTSTRAP_ADMIN_KEY": "false", "CHUNKD_FSYNC": "true"}
    key = subprocess.run(
        [str(BIN / "chunkd"), "keys", "create", "--owner", "bench", "--scopes", "files:create,files:read,files:delete",
         "--data-dir", str(data)],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    log = work / "chunkd.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(BIN / "chunkd"), "serve", "--port", str(port), "--data-dir", str(data)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    wait_until_up(f"http://127.0.0.1:{port}/files", process, log)
    return process, Target("chunkd", f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}, process.pid)


def start_tus_node(work: Path, node_dir: Path) -> tuple[subprocess.Popen[bytes], Target]:
    if not (node_dir / "node_modules" / "@tus" / "file-store").exists():
        node_dir.mkdir(parents=True, exist_ok=True)
        print(f"installing @tus/server@{TUS_SERVER_VERSION} and @tus/file-store into {node_dir} ...", flush=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error",
             f"@tus/server@{TUS_SERVER_VERSION}", f"@tus/file-store@{TUS_SERVER_VERSION}"],
            cwd=node_dir, check=True,
        )  # fmt: skip
    script = node_dir / "tus-server.mjs"
    script.write_text(NODE_SERVER)
    store = work / "tus-node-data"
    store.mkdir()
    port = free_port()
    log = work / "tus-node.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["node", str(script), str(port), str(store)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    wait_until_up(f"http://127.0.0.1:{port}/files", process, log)
    return process, Target("@tus/server", f"http://127.0.0.1:{port}", {}, process.pid)


def verify_chunkd(target: Target, location: str, md5: str) -> None:
    upload_id = location.rstrip("/").rsplit("/", 1)[1]
    req = urllib.request.Request(f"{target.url}/v1/files/{upload_id}", headers=target.headers)
    with urllib.request.urlopen(req) as response:
        body = json.load(response)
    if body["status"] != "COMPLETED" or body["md5"] != md5:
        raise SystemExit(f"chunkd stored the wrong bytes: {body}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1G", help="file size, e.g. 1G, 256M (default 1G)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each sends the file once to each server")
    parser.add_argument("--node-dir", type=Path, help="where to install @tus/server (default: a temporary directory)")
    parser.add_argument("--work-dir", type=Path, help="where the file and both servers' data go (default: temp)")
    args = parser.parse_args()
    for tool in ("curl", "node", "npm"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed")
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="tus-bench-", dir=args.work_dir) as tmp:
        work = Path(tmp)
        node_dir = args.node_dir or work / "node"
        source = work / "source.bin"
        print(f"writing {size / 2**20:.0f} MiB of random bytes ...", flush=True)
        md5 = random_file(source, size)
        processes: list[subprocess.Popen[bytes]] = []
        try:
            chunkd_process, chunkd = start_chunkd(work)
            processes.append(chunkd_process)
            node_process, node = start_tus_node(work, node_dir)
            processes.append(node_process)
            times: dict[str, list[float]] = {chunkd.name: [], node.name: []}
            cpus: dict[str, list[float]] = {chunkd.name: [], node.name: []}
            for round_no in range(args.rounds):
                order = [chunkd, node] if round_no % 2 == 0 else [node, chunkd]
                for target in order:
                    location = target.create(size)
                    elapsed, cpu = target.patch(location, source)
                    if target is chunkd:
                        verify_chunkd(target, location, md5)
                    times[target.name].append(elapsed)
                    cpus[target.name].append(cpu)
                    print(
                        f"round {round_no + 1}: {target.name:<12} {size / elapsed / 2**20:8.1f} MiB/s"
                        f"  server CPU {cpu:.2f} s",
                        flush=True,
                    )
                    target.delete(location)
        finally:
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(timeout=30)
        print()
        print(f"file: {size / 2**20:.0f} MiB, one PATCH each, {args.rounds} round(s), median of runs")
        medians = {name: statistics.median(values) for name, values in times.items()}
        for name, value in medians.items():
            cpu = statistics.median(cpus[name])
            print(f"  {name:<12} {size / value / 2**20:8.1f} MiB/s  ({value:.2f} s; server CPU {cpu:.2f} s)")
        ratio = medians[node.name] / medians[chunkd.name]
        print(f"  ratio chunkd / @tus/server: {ratio:.2f}x  (chunkd fsyncs and computes the whole-file MD5)")


if __name__ == "__main__":
    main()
