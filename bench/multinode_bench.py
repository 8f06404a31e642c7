"""16 parallel uploads of 64 MiB through 1 node vs 2 nodes on the same PostgreSQL and storage.

Prints aggregate MB/s and per-part latency p50/p99 for each. Starts its own throw-away PostgreSQL
(as the tests do) and ``chunkd serve`` nodes on 127.0.0.1. Storage: local disk on a data dir the
nodes share, unless ``CHUNKD_STORAGE=s3`` and the ``CHUNKD_S3_*`` settings are in the environment
(then every node gets them).

    .venv/bin/python bench/multinode_bench.py [--uploads 16] [--size-mib 64] [--part-mib 8]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.cluster import start_cluster
from tests.support.postgres import PostgresServer, find_pg_bin

MiB = 1024 * 1024


def storage_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k == "CHUNKD_STORAGE" or k.startswith("CHUNKD_S3_")} or {
        "CHUNKD_STORAGE": "local"
    }


def run(nodes: int, pg: PostgresServer, uploads: int, size: int, part: int, data: bytes) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="chunkd-bench-"))
    servers = start_cluster(root, pg.url(pg.create_database()), storage_env(), nodes=nodes)
    try:
        key = servers[0].create_key("bench")
        clients = [
            httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {key}"}, timeout=300) for s in servers
        ]
        latencies: list[float] = []
        md5 = hashlib.md5(data).hexdigest()
        turn = iter(range(10**9))

        def upload(i: int) -> None:
            created = clients[i % nodes].post(
                "/v1/files", json={"filename": f"{i}.bin", "sizeBytes": size, "partSize": part}
            )
            created.raise_for_status()
            file_id = created.json()["id"]
            for number in range(1, size // part + 1):
                client = clients[next(turn) % nodes]  # round-robin per part, as a load balancer would
                started = time.perf_counter()
                client.put(
                    f"/v1/files/{file_id}/parts/{number}", content=data[(number - 1) * part : number * part]
                ).raise_for_status()
                latencies.append(time.perf_counter() - started)
            done = clients[i % nodes].post(f"/v1/files/{file_id}/complete", json={"md5": md5})
            done.raise_for_status()

        started = time.perf_counter()
        with ThreadPoolExecutor(uploads) as pool:
            list(pool.map(upload, range(uploads)))
        elapsed = time.perf_counter() - started
        for client in clients:
            client.close()
        latencies.sort()
        return {
            "MB/s": uploads * size / elapsed / 1e6,
            "seconds": elapsed,
            "p50 ms": statistics.median(latencies) * 1000,
            "p99 ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        }
    finally:
        for server in servers:
            server.kill()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=16)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--part-mib", type=int, default=8)
    args = parser.parse_args()
    bin_dir = find_pg_bin()
    if bin_dir is None:
        sys.exit("PostgreSQL is not installed (scripts/services/postgres.sh installs it)")
    size, part = args.size_mib * MiB, args.part_mib * MiB
    data = os.urandom(size)  # every upload sends the same bytes: the client's CPU goes to HTTP
    pg = PostgresServer(bin_dir).start()
    try:
        print(
            f"{args.uploads} parallel uploads x {args.size_mib} MiB, {args.part_mib} MiB parts, storage {storage_env()}"
        )
        results = {n: run(n, pg, args.uploads, size, part, data) for n in (1, 2)}
    finally:
        pg.stop()
    print(f"{'nodes':>5} {'MB/s':>8} {'seconds':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for n, r in results.items():
        print(f"{n:>5} {r['MB/s']:>8.1f} {r['seconds']:>8.1f} {r['p50 ms']:>8.1f} {r['p99 ms']:>8.1f}")
    print(f"2 nodes / 1 node throughput: {results[2]['MB/s'] / results[1]['MB/s']:.2f}x")


if __name__ == "__main__":
    main()
