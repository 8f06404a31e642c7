"""A ``chunkd serve`` node on PostgreSQL with two lock connections, and more tus PATCHes than that
streaming their bodies slowly at once (each holding its upload's lock the whole time): a new
upload and an append to another one are still served at once. Each held lock used to keep a lock
connection of its own, so as many slow clients as connections made every other append and
creation on the node wait, then answered 423 "locked"."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from chunkd.backends.locks.postgres import advisory_key, asyncpg_dsn
from tests.support.cluster import start_cluster
from tests.support.postgres import PostgresServer
from tests.support.server import ChunkdServer
from tests.support.takeover import stalled_tus_patch
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e]

LOCK_CONNECTIONS = 2
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture(scope="module")
def database(pg_server: PostgresServer) -> str:
    return pg_server.url(pg_server.create_database())


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[ChunkdServer]:
    env = {"CHUNKD_LOCK_CONNECTIONS": str(LOCK_CONNECTIONS)}
    (server,) = start_cluster(tmp_path_factory.mktemp("slow-holders"), database, env, nodes=1)
    try:
        yield server
    finally:
        server.kill()


def locked(database: str, upload_ids: list[str]) -> int:
    """How many of the uploads' advisory locks are held (by anyone)."""

    async def count() -> int:
        conn = await asyncpg.connect(asyncpg_dsn(database))
        try:
            low = [advisory_key(u) & 0xFFFFFFFF for u in upload_ids]
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND granted AND objid = ANY($1::bigint[])",
                    low,
                )
            )
        finally:
            await conn.close()

    return asyncio.run(count())


def test_slow_appends_holding_every_lock_connection_do_not_block_other_uploads(
    node: ChunkdServer, database: str
) -> None:
    key = node.create_key("alice")
    data = os.urandom(64 * 1024)
    stalled: list[tuple[str, socket.socket]] = []
    try:
        for _ in range(LOCK_CONNECTIONS + 1):
            upload_id, _, sock = stalled_tus_patch(node, key, data, sent=1024)
            stalled.append((upload_id, sock))
        ids = [u for u, _ in stalled]
        # The first ones hold every lock connection the node used to have, their bodies unfinished.
        wait_for(lambda: locked(database, ids) >= LOCK_CONNECTIONS, what="the slow PATCHes holding their locks")

        auth = {**TUS, "Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=node.url, headers=auth, timeout=60) as client:
            # A creation with its body (it takes the new upload's lock to append it)...
            created = client.post(
                "/files",
                content=data,
                headers={"Upload-Length": str(len(data)), "Content-Type": "application/offset+octet-stream"},
            )
            assert created.status_code == 201, created.text
            assert created.headers["upload-offset"] == str(len(data))
            # ...and an append to another upload.
            url = client.post("/files", headers={"Upload-Length": str(len(data))}).headers["location"]
            patched = client.patch(
                url,
                content=data,
                headers={"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
            )
            assert patched.status_code == 204, patched.text
            assert patched.headers["upload-offset"] == str(len(data))

            # Every slow PATCH holds its lock at once, more of them than lock connections.
            wait_for(lambda: locked(database, ids) == len(ids), what="every slow PATCH holding its lock")
            for _, sock in stalled:
                sock.close()
            stalled.clear()
            # Their clients gone, each commits what it received and lets go.
            wait_for(lambda: locked(database, ids) == 0, what="the slow PATCHes letting go")
            for upload_id in ids:
                head = client.head(f"/files/{upload_id}")
                assert int(head.headers["upload-offset"]) <= 1024, head.headers
    finally:
        for _, sock in stalled:
            sock.close()
