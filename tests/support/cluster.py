"""Several ``chunkd serve`` nodes sharing one PostgreSQL database, one secret and one storage,
as in production behind a load balancer (see docs/deploy.md).

Storage is whatever ``storage_env`` says: by default local disk on one data dir that every node
shares; for S3 pass ``{"CHUNKD_STORAGE": "s3", "CHUNKD_S3_ENDPOINT": ..., ...}`` instead and
nothing else changes."""

from __future__ import annotations

import secrets
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
    data_dir = root / "shared-data"  # shared by all nodes (holds the local storage, if used)
    servers = [ChunkdServer(data_dir, env=env) for _ in range(nodes)]
    started: list[ChunkdServer] = []
    try:
        for server in servers:
            started.append(server.start())
    except BaseException:
        for server in started:
            server.kill()
        raise
    return servers
