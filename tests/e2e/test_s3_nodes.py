"""Two ``chunkd serve`` nodes on one PostgreSQL and one S3 bucket (the session's Ceph RGW), checked
against the bucket itself: a tus (and an IETF-draft) upload whose node is killed (SIGKILL) in the middle of a PATCH is
resumed on the other node from the last acknowledged byte; parts sent to both nodes out of order,
in parallel and twice; a complete and a cancel racing on the two nodes. Every outcome is one right
object, or nothing, and never a staged part or an open multipart upload left behind."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.cluster import start_cluster
from tests.support.postgres import PostgresServer
from tests.support.s3 import CephRgw
from tests.support.server import ChunkdServer
from tests.support.takeover import completed_md5

pytestmark = [pytest.mark.e2e]

MiB = 1024 * 1024
PREFIX = "nodes/"
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture(scope="module")
def bucket(ceph_rgw: CephRgw) -> str:
    return ceph_rgw.new_bucket()


@pytest.fixture(scope="module")
def nodes(
    tmp_path_factory: pytest.TempPathFactory, pg_server: PostgresServer, ceph_rgw: CephRgw, bucket: str
) -> Iterator[list[ChunkdServer]]:
    servers = start_cluster(
        tmp_path_factory.mktemp("s3-nodes"),
        pg_server.url(pg_server.create_database()),
        ceph_rgw.env(bucket, prefix=PREFIX),
        nodes=2,
    )
    try:
        yield servers
    finally:
        for server in servers:
            server.kill()


def in_bucket(ceph_rgw: CephRgw, bucket: str, upload_id: str) -> tuple[list[str], list[str]]:
    """The keys and the open multipart uploads' keys of one upload."""
    client: Any = ceph_rgw.client()
    objects = [
        o["Key"]
        for folder in ("staging", "masters")
        for o in client.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}{folder}/{upload_id}/").get("Contents", [])
    ]
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=f"{PREFIX}masters/{upload_id}/").get("Uploads", [])
    return sorted(objects), [u["Key"] for u in uploads]


DRAFT = {"Upload-Draft-Interop-Version": "8"}
# (creation headers, append headers, the last append's extra headers) per dialect.
DIALECTS = {
    "tus": (TUS, {**TUS, "Content-Type": "application/offset+octet-stream"}, {}),
    "draft": (
        {**DRAFT, "Upload-Complete": "?0"},
        {**DRAFT, "Content-Type": "application/partial-upload", "Upload-Complete": "?0"},
        {"Upload-Complete": "?1"},
    ),
}


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_patch_killed_on_node_a_resumes_on_node_b(
    nodes: list[ChunkdServer], ceph_rgw: CephRgw, bucket: str, dialect: str
) -> None:
    """tus and the IETF draft: node A dies (SIGKILL) in the middle of a PATCH; the client asks
    node B for the offset and sends the rest there. No acknowledged byte is lost (the draft may
    have acknowledged some of the killed PATCH in a progress 104), none is counted twice."""
    a, b = nodes
    key = a.create_key("tess")
    creation, patch, last = DIALECTS[dialect]
    auth = {"Authorization": f"Bearer {key}"}
    data = os.urandom(9 * MiB + 123)
    first, piece = 3 * MiB, 256 * 1024
    on_a = httpx.Client(base_url=a.url, headers=auth, timeout=120)
    on_b = httpx.Client(base_url=b.url, headers=auth, timeout=120)
    try:
        made = on_a.post("/files", headers={**creation, "Upload-Length": str(len(data))})
        assert made.status_code == 201, made.text
        upload_id = made.headers["location"].rsplit("/", 1)[1]
        path = f"/files/{upload_id}"
        sent = on_a.patch(path, content=data[:first], headers={**patch, "Upload-Offset": "0"})
        assert sent.status_code == 204 and sent.headers["upload-offset"] == str(first), sent.text

        streaming, killed = threading.Event(), threading.Event()

        def body() -> Iterator[bytes]:
            yield data[first : first + piece]
            streaming.set()
            killed.wait(120)  # the rest only once A is dead: the PATCH never ends on A
            yield data[first + piece :]

        def doomed() -> BaseException | int:
            headers = {**patch, **last, "Upload-Offset": str(first)}
            try:
                return on_a.patch(path, content=body(), headers=headers).status_code
            except httpx.HTTPError as exc:
                return exc

        with ThreadPoolExecutor(1) as pool:
            outcome = pool.submit(doomed)
            assert streaming.wait(60)
            a.kill()
            killed.set()
            assert isinstance(outcome.result(timeout=60), httpx.HTTPError)

        head = on_b.head(path, headers=creation if dialect == "draft" else TUS)
        assert head.status_code in (200, 204), head.text
        offset = int(head.headers["upload-offset"])
        assert first <= offset <= first + piece  # the acknowledged bytes, none beyond what A received
        done = on_b.patch(path, content=data[offset:], headers={**patch, **last, "Upload-Offset": str(offset)})
        assert done.status_code in (200, 204), done.text
        assert completed_md5(b, key, upload_id) == hashlib.md5(data).hexdigest()
        got = on_b.get(f"/v1/files/{upload_id}/content")
        assert got.status_code == 200 and got.content == data
        objects, uploads = in_bucket(ceph_rgw, bucket, upload_id)
        assert uploads == [] and len(objects) == 1 and objects[0].startswith(f"{PREFIX}masters/{upload_id}/")
    finally:
        on_a.close()
        on_b.close()
        if a.process is None:
            a.start()


def test_parts_twice_on_both_nodes_then_complete_and_cancel_race(
    nodes: list[ChunkdServer], ceph_rgw: CephRgw, bucket: str
) -> None:
    key = nodes[0].create_key("pat")
    clients = [httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {key}"}, timeout=120) for s in nodes]
    try:
        for round_ in range(3):
            _parts_then_race(clients[round_ % 2], clients[1 - round_ % 2], ceph_rgw, bucket)
    finally:
        for client in clients:
            client.close()


def _parts_then_race(first: httpx.Client, second: httpx.Client, ceph_rgw: CephRgw, bucket: str) -> None:
    """One upload: every part twice, once on each node, out of order and six at a time; then a
    complete on ``first`` and a cancel on ``second`` at the same moment."""
    part = MiB
    data = os.urandom(11 * part + 7)
    count = -(-len(data) // part)
    made = first.post("/v1/files", json={"filename": "r.bin", "sizeBytes": len(data), "partSize": part})
    assert made.status_code == 201, made.text
    file_id = made.json()["id"]

    def put(job: tuple[int, httpx.Client]) -> None:
        n, client = job
        response = client.put(f"/v1/files/{file_id}/parts/{n}", content=data[(n - 1) * part : n * part])
        assert response.status_code == 200, (n, response.text)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(put, [(n, c) for n in reversed(range(1, count + 1)) for c in (first, second)]))
    barrier = threading.Barrier(2)

    def complete() -> httpx.Response:
        barrier.wait()
        return first.post(f"/v1/files/{file_id}/complete", json={"md5": hashlib.md5(data).hexdigest()})

    def cancel() -> httpx.Response:
        barrier.wait()
        return second.post(f"/v1/files/{file_id}/cancel")

    with ThreadPoolExecutor(2) as pool:
        completing, cancelling = pool.submit(complete), pool.submit(cancel)
        done, gone = completing.result(timeout=120), cancelling.result(timeout=120)
    state = second.get(f"/v1/files/{file_id}").json()
    objects, uploads = in_bucket(ceph_rgw, bucket, file_id)
    assert uploads == []
    if done.status_code == 200:
        assert gone.status_code == 409, gone.text
        assert state["status"] == "COMPLETED"
        assert len(objects) == 1 and objects[0].startswith(f"{PREFIX}masters/{file_id}/")
        assert second.get(f"/v1/files/{file_id}/content").content == data
    else:
        assert (done.status_code, gone.status_code) == (409, 200), (done.text, gone.text)
        assert state["status"] == "CANCELLED" and objects == []
