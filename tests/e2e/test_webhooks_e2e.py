"""Webhooks against real processes: ``chunkd serve`` (one node on SQLite, or two on PostgreSQL) and a
receiver process that verifies every Standard Webhooks signature. Nothing is lost when chunkd is
killed with SIGKILL after a completion and before its delivery, nor while the receiver is down, and
two nodes sharing the outbox never deliver one event twice."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cluster import start_cluster
from tests.support.postgres import PostgresServer
from tests.support.server import ChunkdServer, free_port
from tests.support.webhook_receiver import WebhookReceiver, webhook_env

pytestmark = [pytest.mark.e2e]

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
ADMIN = "files:create,files:read,files:delete,webhooks:admin"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[WebhookReceiver]:
    """Not started: each test decides when the receiver is up."""
    server = WebhookReceiver(tmp_path / "receiver", free_port())
    server.set_secret("/operator", SECRET)
    try:
        yield server
    finally:
        server.stop()


def client(server: ChunkdServer, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def upload(http: httpx.Client, data: bytes) -> str:
    created = http.post("/v1/files", json={"filename": "f.bin", "sizeBytes": len(data)})
    assert created.status_code == 201, created.text
    file_id: str = created.json()["id"]
    assert http.put(f"/v1/files/{file_id}/parts/1", content=data).status_code == 200
    done = http.post(f"/v1/files/{file_id}/complete", json={"md5": hashlib.md5(data).hexdigest()})
    assert done.status_code == 200, done.text
    return file_id


def register(http: httpx.Client, receiver: WebhookReceiver, path: str) -> str:
    made = http.post("/v1/webhooks", json={"url": receiver.url(path)})
    assert made.status_code == 201, made.text
    receiver.set_secret(path, made.json()["secret"])
    endpoint_id: str = made.json()["id"]
    return endpoint_id


def events_of(messages: list[dict[str, Any]], file_ids: set[str]) -> Counter[tuple[str, str]]:
    """(file id, event type) → how many deliveries arrived."""
    assert all(m["verified"] for m in messages), messages
    return Counter(
        (m["payload"]["data"]["id"], m["payload"]["type"]) for m in messages if m["payload"]["data"]["id"] in file_ids
    )


def all_delivered(http: httpx.Client, endpoint_id: str, count: int) -> bool:
    log = http.get(f"/v1/webhooks/{endpoint_id}/deliveries").json()["data"]
    return len(log) == count and all(d["status"] == "delivered" for d in log)


def test_kill_9_between_completion_and_delivery(tmp_path: Path, receiver: WebhookReceiver) -> None:
    """The receiver is down when the uploads complete and chunkd is killed with SIGKILL right after;
    once both are back every event arrives, exactly once per endpoint."""
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_FSYNC": "true", **webhook_env(receiver, SECRET)})
    server.start()
    try:
        key = server.create_key("alice", ADMIN)
        with client(server, key) as http:
            endpoint = register(http, receiver, "/alice")
            files = {upload(http, os.urandom(1000 + n)) for n in range(3)}
        server.kill()  # SIGKILL: nothing delivered yet (the receiver is not even listening)
        assert receiver.messages() == []
        receiver.start()
        server.start()
        with client(server, key) as http:
            expected = {(f, t) for f in files for t in ("upload.created", "upload.completed")}
            for path in ("/operator", "/alice"):
                got = receiver.wait_for(lambda ms: set(events_of(ms, files)) >= expected, path=path, timeout=120)
                assert set(events_of(got, files)) == expected
            receiver.wait_for(lambda _: all_delivered(http, endpoint, 6), timeout=60)
        for path in ("/operator", "/alice"):
            assert set(events_of(receiver.messages(path), files).values()) == {1}, path
    finally:
        server.kill()


def test_receiver_down_for_a_while_then_back(tmp_path: Path, receiver: WebhookReceiver) -> None:
    server = ChunkdServer(tmp_path / "data", env=webhook_env(receiver, SECRET))
    server.start()
    try:
        key = server.create_key("alice", ADMIN)
        with client(server, key) as http:
            endpoint = register(http, receiver, "/alice")
            file_id = upload(http, b"hello webhooks")

            def retried(_: object) -> bool:  # attempts fail (connection refused) and are retried
                log = http.get(f"/v1/webhooks/{endpoint}/deliveries").json()["data"]
                return len(log) == 2 and all(d["attempts"] >= 2 and d["status"] == "pending" for d in log)

            receiver.wait_for(retried, timeout=60)
            log = http.get(f"/v1/webhooks/{endpoint}/deliveries").json()["data"]
            assert all(d["lastError"] and d["nextAttemptAt"] for d in log)
            receiver.start()
            receiver.wait_for(lambda _: all_delivered(http, endpoint, 2), timeout=60)
            expected = {(file_id, "upload.created"), (file_id, "upload.completed")}
            for path in ("/operator", "/alice"):
                got = receiver.wait_for(lambda ms: set(events_of(ms, {file_id})) == expected, path=path)
                assert set(events_of(got, {file_id}).values()) == {1}
    finally:
        server.kill()


async def undelivered(database_url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        pending = await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered' OR lease_until IS NOT NULL"
        )
        undispatched = await conn.fetchval("SELECT count(*) FROM events WHERE NOT dispatched")
        return int(pending) + int(undispatched)
    finally:
        await conn.close()


def test_two_nodes_on_postgresql_deliver_each_event_once(
    tmp_path: Path, pg_server: PostgresServer, receiver: WebhookReceiver
) -> None:
    """Both nodes write events and both deliver from the shared outbox; the receiver answers slowly,
    so deliveries are in flight while the other node looks for work. Every event arrives, once."""
    # The fixture's own receiver, made slow: the fixture stops it even if the nodes fail to start
    # (a second receiver started here outlived the run when start_cluster raised).
    receiver.delay = 0.05
    slow = receiver.start()
    database_url = pg_server.url(pg_server.create_database())
    nodes = start_cluster(tmp_path / "cluster", database_url, webhook_env(slow, SECRET), nodes=2)
    try:
        key = nodes[0].create_key("alice", ADMIN)
        clients = [client(node, key) for node in nodes]
        files = {upload(clients[n % 2], os.urandom(100 + n)) for n in range(12)}
        expected = {(f, t) for f in files for t in ("upload.created", "upload.completed")}
        got = slow.wait_for(lambda ms: set(events_of(ms, files)) >= expected, path="/operator", timeout=120)
        assert set(events_of(got, files)) == expected
        for http in clients:
            http.close()
        # Once the outbox shows every delivery done (and nothing leased), no second copy can still come.
        slow.wait_for(lambda _: asyncio.run(undelivered(database_url)) == 0, timeout=60)
        assert set(events_of(slow.messages("/operator"), files).values()) == {1}
    finally:
        for node in nodes:
            node.kill()
        slow.stop()
