"""What the access log and HTTP metrics cost per request: the whole app called directly as ASGI
(no client or server in the way), 2,000 GETs per round, with and without the ``AccessLog``
middleware, rounds interleaved in one process so that machine noise falls on both alike.

    .venv/bin/python bench/access_overhead_bench.py [--requests 2000] [--rounds 7] > /dev/null

The log lines go to stdout (hence the redirect); the figures go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from chunkd.app import create_app
from chunkd.settings import Settings


def _scope(path: str, auth: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench"), (b"authorization", auth)],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
        "state": {},
    }


async def main(requests: int, rounds: int) -> None:
    settings = Settings(data_dir=Path(tempfile.mkdtemp()), bootstrap_admin_key=False, fsync=False, rate_limits="")
    with_log = create_app(settings)
    without = create_app(settings)
    without.access_log = None  # ChunkdApp then builds its stack without the middleware
    async with with_log.router.lifespan_context(with_log), without.router.lifespan_context(without):
        _, key = await with_log.state.chunkd.keys.create("bench", "files:create,files:read")
        auth = f"Bearer {key}".encode()

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                assert message["status"] == 200, message

        for path in ("/healthz", "/v1/files"):
            times: dict[str, list[float]] = {"without": [], "with": []}
            for _ in range(rounds):
                for name, app in (("without", without), ("with", with_log)):
                    started = time.perf_counter()
                    for _ in range(requests):
                        await app(_scope(path, auth), receive, send)
                    times[name].append((time.perf_counter() - started) / requests * 1e6)
            a, b = statistics.median(times["without"]), statistics.median(times["with"])
            print(
                f"GET {path}: {a:.0f} µs/request without, {b:.0f} with: +{b - a:.0f} µs ({(b - a) / a:+.1%}); "
                f"min {min(times['without']):.0f} / {min(times['with']):.0f}",
                file=sys.stderr,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
