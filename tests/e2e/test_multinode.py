"""Three ``chunkd serve`` nodes on one PostgreSQL and one storage, no sticky sessions: the parts
of one 256 MiB upload go round-robin to the nodes, one node is killed with SIGKILL in the middle
of a part, the upload is completed on another node and downloaded (MD5-checked) from the third
once it is back. Concurrent completes on two nodes make exactly one file.

Storage comes from the ``cluster_storage_env`` fixture: one S3 store (the session's Ceph RADOS
Gateway) shared by stateless nodes, each with its own empty data dir, as in production."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.cluster import start_cluster
from tests.support.postgres import PostgresServer
from tests.support.s3 import CephRgw
from tests.support.server import ChunkdServer

pytestmark = [pytest.mark.e2e]

MiB = 1024 * 1024
PART = 8 * MiB


@pytest.fixture(scope="module")
def cluster_storage_env(ceph_rgw: CephRgw) -> dict[str, str]:
    """Storage settings every node gets: the same bucket on the session's S3 gateway."""
    return ceph_rgw.env(ceph_rgw.new_bucket(), prefix="cluster/")


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, pg_server: PostgresServer, cluster_storage_env: dict[str, str]
) -> Iterator[list[ChunkdServer]]:
    servers = start_cluster(
        tmp_path_factory.mktemp("cluster"), pg_server.url(pg_server.create_database()), cluster_storage_env, nodes=3
    )
    try:
        yield servers
    finally:
        for server in servers:
            server.kill()


def _client(server: ChunkdServer, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)


@pytest.mark.slow
def test_round_robin_parts_with_a_node_killed_mid_upload(cluster: list[ChunkdServer]) -> None:
    a, b, c = cluster
    key = a.create_key("alice")
    # 12 parts: 4 over the three nodes, the one C dies in, then that one again and 7 more over the
    # other two (it was 256 MiB: the run's costliest test on CPU, RGW's not counted, for nothing the
    # smaller file does not show).
    data = os.urandom(96 * MiB)
    md5 = hashlib.md5(data).hexdigest()
    count = len(data) // PART
    clients = {s.port: _client(s, key) for s in cluster}
    try:
        created = clients[a.port].post(
            "/v1/files", json={"filename": "big.bin", "sizeBytes": len(data), "partSize": PART}
        )
        assert created.status_code == 201, created.text
        file_id = created.json()["id"]

        def put(server: ChunkdServer, number: int) -> None:
            chunk = memoryview(data)[(number - 1) * PART : number * PART]
            response = clients[server.port].put(f"/v1/files/{file_id}/parts/{number}", content=bytes(chunk))
            assert response.status_code == 200, (server.port, number, response.text)
            # On S3 every part gets its own MD5 (the store checks S3's ETags against it): it is the ETag.
            assert response.json()["etag"] == f'"{hashlib.md5(chunk).hexdigest()}"'

        # First third: round-robin over all three nodes, four parts in flight at a time.
        first = count // 3
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda n: put(cluster[n % 3], n), range(1, first + 1)))

        # Node C dies (SIGKILL) while a part is streaming into it.
        victim = first + 1
        streaming = threading.Event()

        def slow_body() -> Iterator[bytes]:
            chunk = data[(victim - 1) * PART : victim * PART]
            for offset in range(0, len(chunk), MiB):
                yield chunk[offset : offset + MiB]
                streaming.set()
                time.sleep(0.2)

        def doomed() -> BaseException | int:
            try:
                return clients[c.port].put(f"/v1/files/{file_id}/parts/{victim}", content=slow_body()).status_code
            except httpx.HTTPError as exc:
                return exc

        with ThreadPoolExecutor(1) as pool:
            outcome = pool.submit(doomed)
            assert streaming.wait(30)
            c.kill()
            assert isinstance(outcome.result(timeout=60), httpx.HTTPError)

        # The rest, including the part that died with C, round-robin over the two live nodes.
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda n: put((a, b)[n % 2], n), range(victim, count + 1)))

        state = clients[b.port].get(f"/v1/files/{file_id}").json()
        assert state["bytesReceived"] == len(data)
        assert [p["partNumber"] for p in state["parts"]] == list(range(1, count + 1))

        done = clients[a.port].post(f"/v1/files/{file_id}/complete", json={"md5": md5})
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "COMPLETED"

        c.start()  # back on the same database and storage: it serves the file completed elsewhere
        got = hashlib.md5()
        with clients[c.port].stream("GET", f"/v1/files/{file_id}/content") as response:
            assert response.status_code == 200
            assert response.headers["etag"] == f'"{md5}"'
            for chunk in response.iter_bytes(MiB):
                got.update(chunk)
        assert got.hexdigest() == md5
        tail = clients[b.port].get(f"/v1/files/{file_id}/content", headers={"Range": f"bytes={len(data) - 100}-"})
        assert tail.status_code == 206 and tail.content == data[-100:]
    finally:
        for client in clients.values():
            client.close()


def test_concurrent_completes_on_two_nodes_make_one_file(cluster: list[ChunkdServer]) -> None:
    a, b, _ = cluster
    key = a.create_key("bob")
    data = os.urandom(3 * MiB + 5)
    with _client(a, key) as on_a, _client(b, key) as on_b:
        created = on_a.post("/v1/files", json={"filename": "one.bin", "sizeBytes": len(data), "partSize": MiB})
        assert created.status_code == 201, created.text
        file_id = created.json()["id"]
        # The upload URL signed by node A is accepted by node B (the nodes share CHUNKD_SECRET).
        signed = created.json()["uploadUrl"].replace(a.url, b.url)
        assert signed.startswith(b.url)
        put = httpx.put(signed, content=data, timeout=60)
        assert put.status_code == 200, put.text

        barrier = threading.Barrier(4)

        def complete(client: httpx.Client) -> httpx.Response:
            barrier.wait()
            return client.post(f"/v1/files/{file_id}/complete", json={"md5": hashlib.md5(data).hexdigest()})

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(complete, [on_a, on_b, on_a, on_b]))
        assert [r.status_code for r in results] == [200] * 4, [r.text for r in results]
        assert len({r.json()["completedAt"] for r in results}) == 1
        assert [f["id"] for f in on_b.get("/v1/files").json()["data"]] == [file_id]
        assert on_b.get(f"/v1/files/{file_id}/content").content == data
