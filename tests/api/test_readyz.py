"""GET /readyz: 200 when the database and the storage answer, 503 naming the part that does not;
unauthenticated and never rate limited. /healthz stays liveness only."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from chunkd.app import create_app
from chunkd.settings import Settings
from tests.conftest import Api
from tests.support.postgres import PostgresServer, find_pg_bin
from tests.support.s3 import CephRgw
from tests.support.server import free_port
from tests.support.volumes import tmpfs


@asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def base_settings(tmp_path: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "bootstrap_admin_key": False,
        "fsync": False,
        "reaper_interval_seconds": 3600,
        "readyz_timeout_seconds": 5,
        **changes,
    }
    return Settings(**values)


async def test_ready_then_storage_missing_then_ready_again(api: Api) -> None:
    ok = await api.client.get("/readyz")
    assert ok.status_code == 200
    assert ok.json() == {"status": "ok", "failing": [], "checks": {"database": "ok", "storage": "ok"}}

    root = api.runtime.settings.data_dir / "blobs"
    moved = root.with_name("blobs-unmounted")
    root.rename(moved)  # as if its volume were unmounted
    try:
        down = await api.client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["failing"] == ["storage"]
        assert down.json()["checks"] == {"database": "ok", "storage": "the blob directory is missing"}
        assert (await api.client.get("/healthz")).status_code == 200  # liveness does not look at storage
    finally:
        moved.rename(root)
    assert (await api.client.get("/readyz")).status_code == 200


async def test_an_outage_is_logged_when_it_starts_and_when_it_ends_not_at_every_probe(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Probes come every few seconds for as long as an outage lasts: each failing one wrote a
    warning (an hour's outage, a thousand lines per node and check), and nothing said when it was
    over. Now one warning when a check starts failing, and one line when it is ok again."""
    caplog.set_level(logging.INFO, logger="chunkd.readiness")
    # No orphan sweep (not even the one at start): it marks the store, making the blob directory again
    # while it is moved away, and the move back found it there.
    async with client_for(base_settings(tmp_path, orphan_sweep_interval_seconds=0)) as client:
        root = tmp_path / "data" / "blobs"
        moved = root.with_name("blobs-unmounted")
        root.rename(moved)
        for _ in range(3):
            assert (await client.get("/readyz")).status_code == 503
        moved.rename(root)
        for _ in range(2):
            assert (await client.get("/readyz")).status_code == 200
    said = [r.getMessage() for r in caplog.records if r.name == "chunkd.readiness" and r.levelno >= logging.INFO]
    assert said == ["readiness: storage: the blob directory is missing", "readiness: storage ok again"]


async def test_a_file_where_the_blob_directory_should_be_is_not_ready(api: Api) -> None:
    root = api.runtime.settings.data_dir / "blobs"
    shutil.rmtree(root)
    root.write_bytes(b"")  # a file where the directory should be
    down = await api.client.get("/readyz")
    assert down.status_code == 503 and down.json()["checks"]["storage"] == "the blob directory is missing"


async def test_readyz_needs_no_credentials_and_is_not_rate_limited(tmp_path: Path) -> None:
    async with client_for(base_settings(tmp_path, rate_limits="read=2/minute")) as client:
        for _ in range(6):
            assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/v1/files")).status_code == 401
        assert (await client.get("/v1/files")).status_code == 401
        assert (await client.get("/v1/files")).status_code == 429  # the budget is real, /readyz is exempt


async def test_database_down_is_named(tmp_path: Path) -> None:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (scripts/services/postgres.sh installs it)")
    server = PostgresServer(bin_dir).start()
    try:
        settings = base_settings(tmp_path, database_url=server.url(), readyz_timeout_seconds=3)
        async with client_for(settings) as client:
            assert (await client.get("/readyz")).status_code == 200
            server.stop()
            down = await client.get("/readyz")
            assert down.status_code == 503
            body = down.json()
            assert body["failing"] == ["database"] and body["checks"]["storage"] == "ok"
            assert body["checks"]["database"].startswith(("unavailable (", "no answer within"))
            assert str(server.port) not in down.text  # no host, port or path for an anonymous caller
    finally:
        server.stop()


async def test_s3_endpoint_down_is_named(tmp_path: Path) -> None:
    settings = base_settings(
        tmp_path,
        storage="s3",
        s3_endpoint=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        s3_bucket="chunkd",
        s3_access_key="key",
        s3_secret_key="secret",
    )
    async with client_for(settings) as client:
        down = await client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["failing"] == ["storage"] and down.json()["checks"]["database"] == "ok"


async def test_s3_bucket_reachable_is_ready(tmp_path: Path, ceph_rgw: CephRgw, s3_bucket: str) -> None:
    settings = base_settings(
        tmp_path,
        storage="s3",
        s3_endpoint=ceph_rgw.endpoint,
        s3_bucket=s3_bucket,
        s3_access_key=ceph_rgw.access_key,
        s3_secret_key=ceph_rgw.secret_key,
    )
    async with client_for(settings) as client:
        assert (await client.get("/readyz")).json()["checks"]["storage"] == "ok"
    missing = settings.model_copy(update={"s3_bucket": f"{s3_bucket}-missing"})
    async with client_for(missing) as client:
        down = await client.get("/readyz")
        assert down.status_code == 503 and down.json()["failing"] == ["storage"]


def test_local_storage_checks_free_space_and_writability(tmp_path: Path) -> None:
    from chunkd.readiness import local_storage_problem

    assert local_storage_problem(tmp_path) is None
    assert local_storage_problem(tmp_path / "absent") == "the blob directory is missing"
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert local_storage_problem(locked) == "the blob directory is not writable"


async def test_a_volume_under_its_free_space_reserve_is_not_ready(tmp_path: Path) -> None:
    """Under CHUNKD_MIN_FREE_BYTES free, every upload gets 507 storage_full: /readyz said "ok" until
    the volume was entirely full, and a load balancer kept sending uploads to the node."""
    free = shutil.disk_usage(tmp_path).free
    async with client_for(base_settings(tmp_path, min_free_bytes=free * 4 + 2**40)) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["failing"] == ["storage"] and "reserve" in ready.json()["checks"]["storage"]
    async with client_for(base_settings(tmp_path, min_free_bytes=1)) as client:
        assert (await client.get("/readyz")).status_code == 200


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 8 MiB (needs root)."""
    with tmpfs(tmp_path, "8M") as volume:
        yield volume


async def test_a_full_sqlite_volume_is_not_ready(tmp_path: Path, small_volume: Path) -> None:
    """The database answers reads (SELECT 1) while its full volume refuses every write with 507:
    not ready, saying so, as a full blob volume is; it said ok."""
    async with client_for(base_settings(tmp_path, database_url=f"sqlite:///{small_volume / 'chunkd.db'}")) as client:
        assert (await client.get("/readyz")).status_code == 200
        filler = small_volume / "filler"
        with open(filler, "wb", buffering=0) as out:
            for size in (65536, 4096, 1):
                with contextlib.suppress(OSError):
                    while True:
                        out.write(b"\0" * size)
        full = await client.get("/readyz")
        assert full.status_code == 503 and full.json()["failing"] == ["database"], full.text
        assert full.json()["checks"]["database"].startswith("no space left on the metadata database's")
        filler.unlink()
        assert (await client.get("/readyz")).status_code == 200
