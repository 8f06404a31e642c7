"""chunkd alone on the metadata-heavy hot paths: server CPU per request.

Runs ``chunkd serve`` (the checkout on ``PYTHONPATH``, else this one; SQLite, local disk, fsync on,
a fresh data dir) and, in turn, the three workloads whose cost per request is mostly per-request
overhead rather than bytes: sequential 256 KiB tus PATCHes, 64 KiB tus creation-with-upload, and
native create + one part + complete of 64 KiB. Prints server CPU (utime + stime of the server
process, from /proc) per request and requests per second for each; ``--clients`` sends the small
files from that many threads (group commit shows up there).

    .venv/bin/python bench/metadata_bench.py --requests 400
    PYTHONPATH=/path/to/other/checkout/src .venv/bin/python bench/metadata_bench.py   # A/B
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.compare import (  # noqa: E402
    KiB,
    Server,
    Side,
    Source,
    cpu_seconds,
    native_small,
    start_chunkd,
    tus_sequential,
    tus_small,
    warm_up,
)


def workloads(requests: int, clients: int) -> dict[str, tuple[Side, int]]:
    """name → (the client side, requests it sends)."""
    return {
        "tus-patch-256k": (tus_sequential(requests * 256 * KiB, 256 * KiB), requests + 1),
        "tus-create-64k": (tus_small(requests, 64 * KiB, clients), requests),
        "native-64k": (native_small(requests // 3, 64 * KiB, clients), 3 * (requests // 3)),
    }


def run(server: Server, side: Side, source: Source, requests: int) -> dict[str, float]:
    before_cpu, started = cpu_seconds(server.roots()), time.perf_counter()
    outcome = side(server, source)
    wall, cpu = time.perf_counter() - started, cpu_seconds(server.roots()) - before_cpu
    if outcome.cleanup is not None:
        outcome.cleanup()
    return {"cpu_ms_per_request": 1000 * cpu / requests, "requests_per_s": requests / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per workload (default 300)")
    parser.add_argument("--clients", type=int, default=1, help="client threads for the small files (default 1)")
    parser.add_argument("--only", help="comma-separated workload names")
    parser.add_argument("--json", type=Path, help="append the figures here as one JSON line")
    args = parser.parse_args()
    chosen = workloads(args.requests, args.clients)
    if args.only:
        chosen = {name: chosen[name] for name in args.only.split(",")}
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="chunkd-metabench-") as tmp:
        work = Path(tmp)
        source = Source(work / "source.bin", args.requests * 256 * KiB)
        server = start_chunkd(work)
        try:
            warm_up(server, source)
            for name, (side, requests) in chosen.items():
                figures[name] = run(server, side, source, requests)
                print(
                    f"{name:<16} {figures[name]['cpu_ms_per_request']:6.2f} ms CPU/request"
                    f"  {figures[name]['requests_per_s']:7.1f} requests/s",
                    flush=True,
                )
        finally:
            server.stop()
            source.close()
    if args.json:
        with args.json.open("a") as out:
            out.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
