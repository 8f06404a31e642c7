"""Dependencies down and back while uploads are in flight, in distributed mode: two ``chunkd serve``
nodes on a PostgreSQL server and a Ceph RADOS Gateway of this module's own (they are stopped in the
middle; the session's are shared). During the outage every request that needs the dependency is a
503 in its dialect saying which one is down, and /readyz says not ready; once it is back the same
processes serve again, /readyz says ready, and every interrupted upload resumes and completes with
the right MD5."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from chunkd.app import create_app
from chunkd.settings import Settings
from tests.support.cluster import start_cluster
from tests.support.media_files import chunked_upload, make_png
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.s3 import CephRgw
from tests.support.server import ChunkdServer, free_port
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import WebhookReceiver, webhook_env

pytestmark = [pytest.mark.e2e]

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest part but the last
TUS = {"Tus-Resumable": "1.0.0"}
APPEND = {**TUS, "Content-Type": "application/offset+octet-stream"}
MEDIA_COMPLETE = "/api/v2/media/upload/complete/"


@pytest.fixture
def own_rgw(tmp_path: Path, ceph_rgw: CephRgw) -> Iterator[CephRgw]:
    """A gateway of this test's own (``ceph_rgw`` first: it installs Ceph, or skips)."""
    gateway = CephRgw(tmp_path / "rgw").start()
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def nodes(tmp_path: Path, own_pg: PostgresServer, own_rgw: CephRgw) -> Iterator[list[ChunkdServer]]:
    servers = start_cluster(
        tmp_path / "nodes", own_pg.url(own_pg.create_database()), own_rgw.env(own_rgw.new_bucket()), nodes=2
    )
    try:
        yield servers
    finally:
        for server in servers:
            server.kill()


class HeldBody:
    """A request body that sends its first half, then waits for ``release()`` (the test stops a
    dependency meanwhile) before it sends the rest."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.half_sent = threading.Event()
        self.released = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        half = len(self.data) // 2
        yield self.data[:half]
        self.half_sent.set()
        self.released.wait(120)
        yield self.data[half:]


def ready(server: ChunkdServer) -> httpx.Response:
    return httpx.get(f"{server.url}/readyz", timeout=30)


def is_ready(server: ChunkdServer) -> bool:
    return ready(server).status_code == 200


def first_parts(on_a: httpx.Client, on_b: httpx.Client, data: bytes) -> tuple[str, str]:
    """A native upload of ``data`` on node a and a tus upload on node b, each holding its first
    ``PART`` bytes: (the native upload's id, the tus upload's path)."""
    created = on_a.post("/v1/files", json={"filename": "n.bin", "sizeBytes": len(data), "partSize": PART})
    native = created.json()["id"]
    assert on_a.put(f"/v1/files/{native}/parts/1", content=data[:PART]).status_code == 200
    tus_path = httpx.URL(on_b.post("/files", headers={**TUS, "Upload-Length": str(len(data))}).headers["location"]).path
    assert on_b.patch(tus_path, content=data[:PART], headers={**APPEND, "Upload-Offset": "0"}).status_code == 204
    return native, tus_path


def test_an_object_store_outage_is_503_on_every_node_and_every_upload_resumes(
    nodes: list[ChunkdServer], own_rgw: CephRgw
) -> None:
    a, b = nodes
    key = a.create_key("alice")
    auth = {"Authorization": f"Bearer {key}"}
    data = os.urandom(3 * PART)
    md5 = hashlib.md5(data).hexdigest()
    with (
        httpx.Client(base_url=a.url, headers=auth, timeout=120) as on_a,
        httpx.Client(base_url=b.url, headers=auth, timeout=120) as on_b,
        ThreadPoolExecutor(2) as pool,
    ):
        native, tus_path = first_parts(on_a, on_b, data)
        doomed = on_a.post("/v1/files", json={"filename": "d.bin", "sizeBytes": len(data), "partSize": PART})
        doomed_id = doomed.json()["id"]
        assert on_a.put(f"/v1/files/{doomed_id}/parts/1", content=data[:PART]).status_code == 200

        # A part and a PATCH in the middle of their bodies when the gateway stops.
        part_body, patch_body = HeldBody(data[PART : 2 * PART]), HeldBody(data[PART:])
        in_flight: dict[str, Future[httpx.Response]] = {
            "part": pool.submit(on_b.put, f"/v1/files/{native}/parts/2", content=part_body),
            "tus patch": pool.submit(
                on_a.patch, tus_path, content=patch_body, headers={**APPEND, "Upload-Offset": str(PART)}
            ),
        }
        assert part_body.half_sent.wait(60) and patch_body.half_sent.wait(60)
        own_rgw.stop_gateway()
        try:
            part_body.released.set()
            patch_body.released.set()
            answers = {name: future.result(timeout=120) for name, future in in_flight.items()}
            answers["part on a"] = on_a.put(f"/v1/files/{native}/parts/3", content=data[2 * PART :])
            answers["tus patch on b"] = on_b.patch(
                tus_path, content=data[PART:], headers={**APPEND, "Upload-Offset": str(PART)}
            )
            for name, response in answers.items():
                assert response.status_code == 503, (name, response.status_code, response.text)
                assert response.headers["retry-after"], name
                assert "storage_unavailable" in response.text, (name, response.text)
                # Which dependency, and what is wrong with it (not "StorageError (details in the log)").
                assert "object store" in response.text and "could not be reached" in response.text, (
                    name,
                    response.text,
                )
            for server in nodes:
                for _ in range(3):  # a load balancer's probes
                    answer = ready(server)
                    assert answer.status_code == 503 and answer.json()["failing"] == ["storage"], answer.text
            # A delete needs only the database: done, its bytes left for the sweep, said without a traceback.
            assert on_a.delete(f"/v1/files/{doomed_id}").status_code == 204
            assert on_b.get(f"/v1/files/{doomed_id}").status_code == 404
            # Nothing was recorded past the durable bytes.
            assert on_b.head(tus_path, headers=TUS).headers["upload-offset"] == str(PART)
            assert [p["partNumber"] for p in on_a.get(f"/v1/files/{native}").json()["parts"]] == [1]
        finally:
            own_rgw.start_gateway()

        for server in nodes:  # the same processes, without a restart
            wait_for(partial(is_ready, server), what=f"{server.url} ready again")
        assert on_a.put(f"/v1/files/{native}/parts/2", content=data[PART : 2 * PART]).status_code == 200
        assert on_b.put(f"/v1/files/{native}/parts/3", content=data[2 * PART :]).status_code == 200
        done = on_b.post(f"/v1/files/{native}/complete")
        assert done.status_code == 200, done.text
        offset = on_a.head(tus_path, headers=TUS).headers["upload-offset"]
        rest = on_a.patch(tus_path, content=data[int(offset) :], headers={**APPEND, "Upload-Offset": offset})
        assert rest.status_code == 204, rest.text
        for file_id in (native, tus_path.rsplit("/", 1)[1]):
            assert on_a.get(f"/v1/files/{file_id}").json()["md5"] == md5
            assert hashlib.md5(on_b.get(f"/v1/files/{file_id}/content").content).hexdigest() == md5
    for server in nodes:
        said = server.log.read_text()
        assert "Traceback" not in said
        # The outage and its end, each said once per node, not once per request or probe.
        for line in (
            "object store fault",
            "object store answering again",
            "readiness: storage failed",
            "storage ok again",
        ):
            assert said.count(line) == 1, (line, said)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", free_port()).start()
    try:
        yield server
    finally:
        server.stop()


def counted(server: ChunkdServer, auth: dict[str, str]) -> bool:
    """Whether a request to ``server`` is counted in the shared store now (it says its budget)."""
    return "ratelimit-limit" in httpx.get(f"{server.url}/v1/files", headers=auth, timeout=30).headers


def test_a_redis_outage_lets_uploads_through_uncounted_and_counting_resumes(
    tmp_path: Path, pg_server: PostgresServer, ceph_rgw: CephRgw, redis: RedisServer
) -> None:
    """Redis holds the rate limits' shared counters: while it is away requests are let through
    uncounted (an outage of it must not take uploads down), every upload in flight goes on, and
    once it is back the same processes count again. Said in the log once each way, without a
    traceback."""
    env = {
        **ceph_rgw.env(ceph_rgw.new_bucket()),
        "CHUNKD_REDIS_URL": redis.url,
        "CHUNKD_RATE_LIMITS": "read=1000/minute;write=1000/minute",
    }
    nodes = start_cluster(tmp_path / "nodes", pg_server.url(pg_server.create_database()), env, nodes=2)
    try:
        a, b = nodes
        auth = {"Authorization": f"Bearer {a.create_key('alice')}"}
        data = os.urandom(2 * PART)
        with (
            httpx.Client(base_url=a.url, headers=auth, timeout=120) as on_a,
            httpx.Client(base_url=b.url, headers=auth, timeout=120) as on_b,
            ThreadPoolExecutor(2) as pool,
        ):
            assert counted(a, auth) and counted(b, auth)
            created = on_a.post("/v1/files", json={"filename": "n.bin", "sizeBytes": len(data), "partSize": PART})
            native = created.json()["id"]
            tus_path = httpx.URL(
                on_b.post("/files", headers={**TUS, "Upload-Length": str(len(data))}).headers["location"]
            ).path
            part_body, patch_body = HeldBody(data[:PART]), HeldBody(data)
            part = pool.submit(on_b.put, f"/v1/files/{native}/parts/1", content=part_body)
            patch = pool.submit(on_a.patch, tus_path, content=patch_body, headers={**APPEND, "Upload-Offset": "0"})
            assert part_body.half_sent.wait(60) and patch_body.half_sent.wait(60)
            redis.stop()
            part_body.released.set()
            patch_body.released.set()
            assert part.result(timeout=120).status_code == 200
            assert patch.result(timeout=120).status_code == 204
            for server in nodes:
                for _ in range(3):
                    assert not counted(server, auth)
                assert ready(server).status_code == 200  # Redis is not needed to serve
            assert on_b.put(f"/v1/files/{native}/parts/2", content=data[PART:]).status_code == 200
            redis.start()
            for server in nodes:  # the same processes count again (after their pause from asking it)
                wait_for(partial(counted, server, auth), what=f"{server.url} counting again")
            done = on_a.post(f"/v1/files/{native}/complete")
            assert done.status_code == 200, done.text
            md5 = hashlib.md5(data).hexdigest()
            for file_id in (native, tus_path.rsplit("/", 1)[1]):
                assert on_b.get(f"/v1/files/{file_id}").json()["md5"] == md5
    finally:
        for server in nodes:
            server.kill()
    for server in nodes:
        said = server.log.read_text()
        assert "Traceback" not in said
        assert said.count("rate-limit store unavailable") == 1, said
        assert said.count("rate-limit store answering again") == 1, said


SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


@pytest.mark.parametrize("outage", ["restart", "terminate"])
def test_a_database_restart_or_its_sessions_ended_and_every_node_serves_again(
    tmp_path: Path, own_pg: PostgresServer, ceph_rgw: CephRgw, outage: str
) -> None:
    """PostgreSQL restarted (``pg_ctl stop -m fast``, then started) or every session of it ended
    (``pg_terminate_backend``) while a part and a tus PATCH are mid-body. During a restart every
    request that needs the database is a 503 naming it and /readyz says so; afterwards the same
    processes serve again (their pools and lock sessions recover, nothing stays locked), every
    upload resumes and completes with its MD5, and the webhook outbox delivers the events of both
    nodes (its workers went on)."""
    receiver = WebhookReceiver(tmp_path / "receiver", free_port())
    receiver.set_secret("/operator", SECRET)
    receiver.start()
    env = {**ceph_rgw.env(ceph_rgw.new_bucket()), **webhook_env(receiver, SECRET)}
    try:
        nodes = start_cluster(tmp_path / "nodes", own_pg.url(own_pg.create_database()), env, nodes=2)
    except BaseException:
        receiver.stop()
        raise
    try:
        a, b = nodes
        auth = {"Authorization": f"Bearer {a.create_key('alice')}"}
        data = os.urandom(3 * PART)
        md5 = hashlib.md5(data).hexdigest()
        with (
            httpx.Client(base_url=a.url, headers=auth, timeout=120) as on_a,
            httpx.Client(base_url=b.url, headers=auth, timeout=120) as on_b,
            ThreadPoolExecutor(2) as pool,
        ):
            native, tus_path = first_parts(on_a, on_b, data)
            part_body, patch_body = HeldBody(data[PART : 2 * PART]), HeldBody(data[PART:])
            part = pool.submit(on_b.put, f"/v1/files/{native}/parts/2", content=part_body)
            patch = pool.submit(
                on_a.patch, tus_path, content=patch_body, headers={**APPEND, "Upload-Offset": str(PART)}
            )
            assert part_body.half_sent.wait(60) and patch_body.half_sent.wait(60)
            # Half its body sent is not the PATCH begun: on a loaded machine the server may start it
            # only after the outage, and then answer 503 before it ever held the lock (seen once).
            wait_for(
                lambda: own_pg.value("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted") >= 1,
                what="the PATCH to hold its upload's lock",
            )
            if outage == "restart":
                own_pg.pause()
            else:
                own_pg.admin(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )
            try:
                part_body.released.set()
                patch_body.released.set()
                # The part was spooled before its lock and save: saved once the database answers,
                # else refused. The PATCH held the upload's lock from its start: that session is
                # gone, so it stops, telling its client to resume (tus's 423), never a 500 or a 400.
                stopped = part.result(timeout=120)
                assert stopped.status_code in ((503,) if outage == "restart" else (200, 503)), stopped.text
                # Sessions ended (the database up): the PATCH learns it lost its lock (423), or its
                # save meets its own pooled connection ended first (503, database unavailable),
                # whichever comes first on a loaded machine (CI saw both). Either tells the client
                # to resume; nothing past the acknowledged offset is recorded (checked below).
                answer = patch.result(timeout=120)
                assert answer.status_code in ((423,) if outage == "restart" else (423, 503)), answer.text
                if outage == "restart":
                    for server in nodes:
                        with httpx.Client(base_url=server.url, headers=auth, timeout=60) as http:
                            for name, response in {
                                "create": http.post("/v1/files", json={"filename": "x.bin", "sizeBytes": 1}),
                                "part": http.put(f"/v1/files/{native}/parts/3", content=data[2 * PART :]),
                                "tus create": http.post("/files", headers={**TUS, "Upload-Length": "1"}),
                                "tus patch": http.patch(
                                    tus_path, content=data[PART:], headers={**APPEND, "Upload-Offset": str(PART)}
                                ),
                            }.items():
                                assert response.status_code == 503, (name, response.status_code, response.text)
                                assert "database_unavailable" in response.text, (name, response.text)
                        for _ in range(3):
                            answer = ready(server)
                            assert answer.status_code == 503 and answer.json()["failing"] == ["database"]
            finally:
                if outage == "restart":
                    own_pg.resume()

            for server in nodes:
                wait_for(partial(is_ready, server), what=f"{server.url} ready again")

            # The same processes, without a restart; the first requests may meet a pooled
            # connection the outage closed (503, nothing else).
            def put(http: httpx.Client, number: int) -> bool:
                response = http.put(
                    f"/v1/files/{native}/parts/{number}", content=data[(number - 1) * PART : number * PART]
                )
                assert response.status_code in (200, 503), response.text
                return response.status_code == 200

            wait_for(partial(put, on_a, 2), what="part 2 stored")
            wait_for(partial(put, on_b, 3), what="part 3 stored")
            assert on_b.post(f"/v1/files/{native}/complete").status_code == 200
            offset = on_a.head(tus_path, headers=TUS).headers["upload-offset"]
            assert offset == str(PART)  # nothing recorded past the acknowledged bytes
            rest = on_a.patch(tus_path, content=data[PART:], headers={**APPEND, "Upload-Offset": offset})
            assert rest.status_code == 204, rest.text
            ids = {native, tus_path.rsplit("/", 1)[1]}
            for file_id in ids:
                assert on_b.get(f"/v1/files/{file_id}").json()["md5"] == md5
            expected = {(file_id, "upload.completed") for file_id in ids}

            def delivered(messages: list[dict[str, Any]]) -> bool:
                return expected <= {(m["payload"]["data"]["id"], m["payload"]["type"]) for m in messages}

            receiver.wait_for(delivered, path="/operator", timeout=60)
    finally:
        for server in nodes:
            server.kill()
        receiver.stop()
    for server in nodes:
        said = server.log.read_text()
        assert "Traceback" not in said
        if outage == "restart":  # the outage and its end, once each per node
            assert said.count("readiness: database failed") == 1, said
            assert said.count("readiness: database ok again") == 1, said
        # Writers that could not LISTEN for release requests during the outage: said once.
        assert said.count("could not LISTEN") <= 1, said


async def test_media_completions_during_an_object_store_outage_are_503_and_inspection_goes_on(
    tmp_path: Path, own_rgw: CephRgw
) -> None:
    """A media file (the seed's chunked API) completed while the object store is away: its bytes
    cannot be read for inspection, so each completion is a 503 in the media API's shape, no
    inspection worker or queue place stays taken, and once the store is back the same app
    inspects and completes it."""
    settings = Settings(
        data_dir=tmp_path / "data",
        bootstrap_admin_key=False,
        fsync=False,
        reaper_interval_seconds=3600,
        orphan_sweep_interval_seconds=0,
        storage="s3",
        s3_endpoint=own_rgw.endpoint,
        s3_bucket=own_rgw.new_bucket(),
        s3_access_key=own_rgw.access_key,
        s3_secret_key=own_rgw.secret_key,
        s3_attempts=1,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        keys = app.state.chunkd.keys
        auth = {"Authorization": f"Bearer {(await keys.create('alice', 'files:create,files:read'))[1]}"}
        metrics = {"Authorization": f"Bearer {(await keys.create('monitoring', 'metrics:read'))[1]}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            png = make_png(500, 300)
            upload_id = await chunked_upload(client, png, "photo.png", auth)
            form = {"upload_id": upload_id, "md5": hashlib.md5(png).hexdigest()}
            own_rgw.stop_gateway()
            try:
                for _ in range(3):
                    refused = await client.post(MEDIA_COMPLETE, data=form, headers=auth)
                    assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
                    assert refused.json()["code"] == "storage_unavailable", refused.text
                scraped = (await client.get("/metrics", headers=metrics)).text
                for gauge in ("chunkd_media_inspections_waiting", "chunkd_media_inspections_running"):
                    assert f"{gauge} 0.0" in scraped, scraped
            finally:
                own_rgw.start_gateway()
            done = await client.post(MEDIA_COMPLETE, data=form, headers=auth)
            assert done.status_code == 201, done.text
            image = await client.get(done.json()["image"], headers=auth)
            assert image.status_code == 200 and image.content == png
