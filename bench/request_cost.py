"""What one request costs chunkd in CPU, without a client or an HTTP server in the way: the whole app
(every middleware, the engine, SQLite, the local store with fsync on) called directly as ASGI, with
request bodies handed over in 256 KiB messages as uvicorn hands them over. The figure is the
process's CPU time (all threads: ``time.process_time``) per request, which a busy machine
disturbs far less than wall time; wall time per request is printed beside it.

    .venv/bin/python bench/request_cost.py                         # every workload, 3 rounds
    .venv/bin/python bench/request_cost.py --only tus-256k --profile /tmp/tus.prof
    .venv/bin/python bench/request_cost.py --fsync false           # without the durability waits
    .venv/bin/python bench/request_cost.py --threads               # and each thread's share (clock ticks)

It measures the ``chunkd`` it imports: run it with ``PYTHONPATH=src`` for this checkout, or with another
checkout's ``src`` to compare two versions on the same script.

``--profile FILE`` writes a cProfile of the event loop's thread over the measured rounds (open it
with ``python -m pstats FILE``). Workloads:

- ``tus-256k``: sequential 256 KiB tus PATCHes to one upload;
- ``tus-small``: 64 KiB files by tus creation-with-upload (one POST each);
- ``native-small``: 64 KiB files by the Files API: create + one part + complete;
- ``head``: tus HEAD of one upload;
- ``parts-8m-1`` / ``parts-8m-4``: 8 MiB native parts of one upload, 1 or 4 in flight;
- ``parts-1m-4``: 1 MiB native parts, 4 in flight.

The access log goes to stdout (redirect it); the figures go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from chunkd.app import create_app
from chunkd.settings import Settings

KiB, MiB = 1024, 1024 * 1024
MESSAGE = 256 * KiB  # uvicorn's httptools protocol hands the body over in pieces of about this size


class Client:
    """Calls the ASGI app as uvicorn would, one request at a time per caller."""

    def __init__(self, app: Any, auth: bytes) -> None:
        self.app = app
        self.auth = auth

    async def request(
        self, method: str, path: str, body: bytes | memoryview = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        raw = [(b"host", b"bench"), (b"authorization", self.auth)]
        raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        if body or method in ("POST", "PUT", "PATCH"):
            raw.append((b"content-length", str(len(body)).encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": raw,
            "client": ("127.0.0.1", 1),
            "server": ("bench", 80),
            "state": {},
        }
        view = memoryview(body)
        position = 0
        done = False

        async def receive() -> dict[str, Any]:
            nonlocal position, done
            if done:
                await asyncio.sleep(3600)  # a disconnect is never coming
            piece = bytes(view[position : position + MESSAGE])
            position += len(piece)
            done = position >= len(view)
            return {"type": "http.request", "body": piece, "more_body": not done}

        status = 0
        response_headers: dict[bytes, bytes] = {}
        chunks: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers.update((bytes(k).lower(), bytes(v)) for k, v in message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, response_headers, b"".join(chunks)

    async def expect(self, status: int, method: str, path: str, body: bytes | memoryview = b"", **kw: Any) -> Any:
        got, headers, data = await self.request(method, path, body, **kw)
        if got != status:
            raise RuntimeError(f"{method} {path}: {got} {data[:300]!r}")
        return headers, data


TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}


def tus_256k(source: bytes, count: int) -> Callable[[Client], Awaitable[int]]:
    async def run(client: Client) -> int:
        chunk = 256 * KiB
        headers, _ = await client.expect(201, "POST", "/files", headers={**TUS, "Upload-Length": str(chunk * count)})
        path = headers[b"location"].decode().split("//", 1)[-1].split("/", 1)[-1]
        path = "/" + path if not path.startswith("/") else path
        for n in range(count):
            await client.expect(
                204,
                "PATCH",
                path,
                memoryview(source)[:chunk],
                headers={**OCTETS, "Upload-Offset": str(n * chunk)},
            )
        return count

    return run


def tus_small(source: bytes, count: int) -> Callable[[Client], Awaitable[int]]:
    async def run(client: Client) -> int:
        for _ in range(count):
            headers = {**OCTETS, "Upload-Length": str(64 * KiB)}
            await client.expect(201, "POST", "/files", memoryview(source)[: 64 * KiB], headers=headers)
        return count

    return run


def tus_head(count: int) -> Callable[[Client], Awaitable[int]]:
    async def run(client: Client) -> int:
        headers, _ = await client.expect(201, "POST", "/files", headers={**TUS, "Upload-Length": "10"})
        path = "/files/" + headers[b"location"].decode().rstrip("/").rsplit("/", 1)[1]
        for _ in range(count):
            await client.expect(200, "HEAD", path, headers=TUS)
        return count

    return run


def native_small(source: bytes, count: int) -> Callable[[Client], Awaitable[int]]:
    body = bytes(source[: 64 * KiB])
    md5 = hashlib.md5(body).hexdigest()

    async def run(client: Client) -> int:
        for _ in range(count):
            _, data = await client.expect(
                201,
                "POST",
                "/v1/files",
                json.dumps({"filename": "a.bin", "sizeBytes": len(body)}).encode(),
                headers={"Content-Type": "application/json"},
            )
            file_id = json.loads(data)["id"]
            await client.expect(200, "PUT", f"/v1/files/{file_id}/parts/1", body)
            await client.expect(
                200,
                "POST",
                f"/v1/files/{file_id}/complete",
                json.dumps({"md5": md5}).encode(),
                headers={"Content-Type": "application/json"},
            )
        return 3 * count

    return run


def native_parts(source: bytes, part: int, count: int, in_flight: int) -> Callable[[Client], Awaitable[int]]:
    total = part * count
    md5 = hashlib.md5(source[:part] * count).hexdigest() if part * count <= 256 * MiB else None

    async def run(client: Client) -> int:
        _, data = await client.expect(
            201,
            "POST",
            "/v1/files",
            json.dumps({"filename": "a.bin", "sizeBytes": total, "partSize": part}).encode(),
            headers={"Content-Type": "application/json"},
        )
        file_id = json.loads(data)["id"]
        numbers = iter(range(1, count + 1))

        async def sender() -> None:
            for n in numbers:
                await client.expect(200, "PUT", f"/v1/files/{file_id}/parts/{n}", memoryview(source)[:part])

        await asyncio.gather(*(sender() for _ in range(in_flight)))
        completion = {"md5": md5} if md5 else {}
        await client.expect(
            200,
            "POST",
            f"/v1/files/{file_id}/complete",
            json.dumps(completion).encode(),
            headers={"Content-Type": "application/json"},
        )
        return count

    return run


def workloads(scale: float, source: bytes) -> dict[str, Callable[[Client], Awaitable[int]]]:
    def n(count: int) -> int:
        return max(2, int(count * scale))

    return {
        "tus-256k": tus_256k(source, n(200)),
        "tus-small": tus_small(source, n(200)),
        "native-small": native_small(source, n(100)),
        "head": tus_head(n(500)),
        "parts-8m-1": native_parts(source, 8 * MiB, n(32), 1),
        "parts-8m-4": native_parts(source, 8 * MiB, n(32), 4),
        "parts-1m-4": native_parts(source, MiB, n(128), 4),
    }


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) so far of each of this process's threads, summed by thread name."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    by_name: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        name = names.get(int(task.name)) or stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        name = name.rstrip("0123456789_")  # asyncio_0, asyncio_1... count as one pool
        by_name[name] = by_name.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return by_name


async def main(args: argparse.Namespace) -> None:
    source = os.urandom(8 * MiB)
    chosen = workloads(args.scale, source)
    if args.only:
        chosen = {name: chosen[name] for name in args.only.split(",")}
    profiler = cProfile.Profile() if args.profile else None
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load {os.getloadavg()[0]:.1f}; fsync {args.fsync}",
        file=sys.stderr,
    )
    for name, run in chosen.items():
        with tempfile.TemporaryDirectory(prefix="chunkd-cost-", dir=args.work_dir) as tmp:
            settings = Settings(data_dir=Path(tmp), bootstrap_admin_key=False, fsync=args.fsync)
            app = create_app(settings)
            async with app.router.lifespan_context(app):
                _, key = await app.state.chunkd.keys.create("bench", "files:create,files:read,files:delete")
                client = Client(app, f"Bearer {key}".encode())
                await workloads(0.01, source)[name](client)  # warm-up: imports, caches, first statements
                cpu: list[float] = []
                loop_cpu: list[float] = []
                wall: list[float] = []
                threads0 = thread_cpu()
                total_requests = 0
                for _ in range(args.rounds):
                    # thread_time: the event loop's thread alone; the rest of process_time is worker
                    # threads (hashing, writes, fsync) and the SQLite writer.
                    cpu0, loop0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
                    if profiler is not None:
                        profiler.enable()
                    requests = await run(client)
                    if profiler is not None:
                        profiler.disable()
                    cpu.append((time.process_time() - cpu0) / requests * 1000)
                    loop_cpu.append((time.thread_time() - loop0) / requests * 1000)
                    wall.append((time.perf_counter() - wall0) / requests * 1000)
                    total_requests += requests
                threads1 = thread_cpu()
        if args.threads:
            for thread, seconds in sorted(threads1.items(), key=lambda item: -item[1]):
                spent = (seconds - threads0.get(thread, 0.0)) / total_requests * 1000
                if spent > 0:
                    print(f"    {thread:<24} {spent:7.3f} ms/request", file=sys.stderr)
        print(
            f"{name:<13} CPU {statistics.median(cpu):7.3f} ms/request (min {min(cpu):.3f}; "
            f"event loop {statistics.median(loop_cpu):.3f}), "
            f"wall {statistics.median(wall):7.3f} ms/request, {args.rounds} rounds",
            file=sys.stderr,
            flush=True,
        )
    if profiler is not None:
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated workload names")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every request count by this")
    parser.add_argument("--fsync", type=lambda v: v.lower() in ("1", "true", "yes"), default=True)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the measured rounds here")
    parser.add_argument("--threads", action="store_true", help="also print each thread's CPU per request")
    parser.add_argument("--work-dir", type=Path, help="where data dirs go (default: a temporary directory)")
    asyncio.run(main(parser.parse_args()))
