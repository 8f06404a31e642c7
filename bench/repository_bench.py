"""The metadata share of a hot-path request, in-process: CPU time (every thread of this process)
and wall time per *round* — what one tus PATCH asks of the upload repository: load the upload with
its last part, then save it with that part grown — for each repository backend, with 1 and with
16 concurrent writers (16 rounds on 16 uploads at once: what group commit shares).

    .venv/bin/python bench/repository_bench.py --rounds 2000
    .venv/bin/python bench/repository_bench.py --postgres     # also PostgreSQL (a throwaway server)

Backends as served — ``sqlite`` (raw sqlite3, group commit), ``postgresql`` (asyncpg, statements
prepared once) — and SQLAlchemy throughout on each (``sqlite-sqlalchemy`` over aiosqlite,
``postgresql-sqlalchemy`` over asyncpg): what the hot paths ran on before.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
from tests.support.uploads import make_upload  # noqa: E402

from chunkd.backends.repository import open_metadata  # noqa: E402
from chunkd.backends.repository.sqlalchemy import open_sql_metadata  # noqa: E402
from chunkd.domain.upload import Mode, Part  # noqa: E402
from chunkd.ports.metadata import MetadataStore  # noqa: E402

Round = Callable[[int], Awaitable[None]]


async def repository_rounds(store: MetadataStore, uploads: int) -> Round:
    """A round on upload ``n``: load it with its last part, grow the part, save both."""
    repo = store.uploads
    ids = []
    for _ in range(uploads):
        upload = make_upload(None, 256 * 1024, mode=Mode.APPEND, owner="bench", created=datetime.now(UTC))
        await repo.create(upload)
        part = Part(1, 0, 0, "", f"{upload.id}/1", upload.created_at, None, "0" * 16)
        upload.parts_received = 1
        await repo.save(upload, [part])
        ids.append(upload.id)

    async def one(n: int) -> None:
        upload = await repo.get(ids[n], "bench", parts_from=lambda row: max(row.parts_received, 1))
        assert upload is not None
        last = upload.parts[upload.parts_received]
        grown = replace(last, size=last.size + 256 * 1024)
        upload.bytes_received += 256 * 1024
        upload.updated_at = datetime.now(UTC)
        await repo.save(upload, [grown])

    return one


async def measure(one: Round, rounds: int, concurrency: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per round."""
    for n in range(concurrency):  # warm: first statements, connections
        await one(n)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(rounds // concurrency):
        await asyncio.gather(*(one(n) for n in range(concurrency)))
    done = (rounds // concurrency) * concurrency
    return 1000 * (time.process_time() - cpu) / done, 1000 * (time.perf_counter() - wall) / done


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--postgres", action="store_true", help="also PostgreSQL (starts a throwaway server)")
    args = parser.parse_args()
    backends: list[tuple[str, Callable[[], Awaitable[tuple[Round, Callable[[], Awaitable[None]]]]]]] = []
    tmp = Path(tempfile.mkdtemp(prefix="chunkd-repobench-"))

    def opener(name: str, open_store: Callable[[str], Awaitable[MetadataStore]], url: str) -> Any:
        async def make() -> tuple[Round, Callable[[], Awaitable[None]]]:
            store = await open_store(url)
            return await repository_rounds(store, 16), store.close

        return name, make

    backends.append(opener("sqlite", lambda u: open_metadata(u, run_migrations=True), f"sqlite:///{tmp / 'a.db'}"))
    backends.append(
        opener("sqlite-sqlalchemy", lambda u: open_sql_metadata(u, run_migrations=True), f"sqlite:///{tmp / 'b.db'}")
    )
    server = None
    if args.postgres:
        from tests.support.postgres import PostgresServer, find_pg_bin

        bin_dir = find_pg_bin()
        assert bin_dir is not None, "no PostgreSQL binaries found"
        server = await asyncio.to_thread(lambda: PostgresServer(bin_dir).start())
        pg_url = server.url(await asyncio.to_thread(server.create_database))
        backends.append(opener("postgresql", lambda u: open_metadata(u, run_migrations=True), pg_url))
        other_url = server.url(await asyncio.to_thread(server.create_database))
        backends.append(opener("postgresql-sqlalchemy", lambda u: open_sql_metadata(u, run_migrations=True), other_url))
    try:
        print(f"{'backend':<24} {'1 writer':>22} {'16 concurrent':>26}")
        for name, make in backends:
            one, close = await make()
            try:
                single = await measure(one, args.rounds, 1)
                many = await measure(one, args.rounds, 16)
            finally:
                await close()
            print(
                f"{name:<24} {single[0]:6.3f} ms CPU {single[1]:6.3f} ms wall"
                f"    {many[0]:6.3f} ms CPU {many[1]:6.3f} ms wall   (per round)",
                flush=True,
            )
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
