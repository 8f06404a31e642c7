"""Several ``chunkd serve`` nodes sharing one PostgreSQL database, one secret and one storage,
as in production behind a load balancer (see docs/deploy.md).

Storage is whatever ``storage_env`` says: by default local disk on one data dir that every node
shares; for S3 pass ``{"CHUNKD_STORAGE": "s3", "CHUNKD_S3_ENDPOINT": ..., ...}`` instead and
nothing else changes."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.server import ChunkdServer

__all__ = ["start_cluster"]


def start_cluster(root: Path, database_url: str, storage_env: dict[str, str], nodes: int = 3) -> list[ChunkdServer]:
    """Start ``nodes`` servers on free ports; the caller kills them (``ChunkdServer.kill``)."""
    env = {
        "CHUNKD_DATABASE_URL": database_url,
        "CHUNKD_SECRET": secrets.token_hex(32),  # every node signs and verifies with the same key
        "CHUNKD_FSYNC": "false",  # a kill -9 does not lose the page cache; spare the shared disk
        **storage_env,
    }
    if storage_env.get("CHUNKD_STORAGE") == "s3":
        # Stateless nodes: nothing on a node's own disk matters (bytes in S3, metadata in PostgreSQL).
        servers = [ChunkdServer(root / f"node-{n}", env=env) for n in range(nodes)]
    else:
        data_dir = root / "shared-data"  # shared by all nodes: it holds the local storage
        servers = [ChunkdServer(data_dir, env=env) for _ in range(nodes)]
    # Started side by side: each start is mostly waiting for Python to import the app.
    with ThreadPoolExecutor(nodes) as pool:
        outcomes = [pool.submit(server.start) for server in servers]
        errors = [f.exception() for f in outcomes]
    if any(errors):
        for server in servers:
            server.kill()
        raise next(e for e in errors if e is not None)
    return servers
