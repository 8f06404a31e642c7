"""Shared fixtures: settings on a temporary data dir, an in-process app (httpx ASGI transport),
API keys for two owners."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from chunkd.app import create_app
from chunkd.runtime import Runtime
from chunkd.settings import Settings
from tests.support import s3 as s3_support
from tests.support.clamd import Clamd, clamd_binary
from tests.support.postgres import PostgresServer, own_postgres, session_server
from tests.support.s3 import CephRgw
from tests.support.server import ChunkdServer
from tests.support.shared import is_worker, shared_dir, stop_all
from tests.support.sqlite import copy_sqlite, migrated_sqlite
from tests.support.tools import missing


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole session (started on first use)."""
    for server in session_server():
        if server is None:
            missing("PostgreSQL is not installed (scripts/services/postgres.sh installs it)")
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Every metadata test runs on SQLite (None: the default file) and on an empty PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    name = server.acquire_database()
    yield server.url(name)
    server.release_database(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once per session (per xdist worker); tests start from a copy."""
    return migrated_sqlite(tmp_path_factory.mktemp("sqlite-template") / "chunkd.db")


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, db_url: str | None) -> Settings:
    """An in-process app's settings: its own data dir, and its database already migrated (a copy
    of the session's SQLite template, or a PostgreSQL clone); the app's own migrate at start-up
    then finds nothing to do."""
    if db_url is None:
        copy_sqlite(request.getfixturevalue("sqlite_template"), tmp_path / "data")
    return in_process_settings(tmp_path / "data", db_url)


def in_process_settings(data_dir: Path, database_url: str | None) -> Settings:
    """The settings of an app run in the test's process: no bootstrap key, no fsync, parts of any
    size, no reaper and no orphan sweep during the test (not even the sweep at start, which would
    run beside the test's first requests), a short lock wait."""
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        bootstrap_admin_key=False,
        fsync=False,
        min_part_size=1,
        reaper_interval_seconds=3600,
        orphan_sweep_interval_seconds=0,
        lock_timeout_seconds=5,
    )


def settings_with(settings: Settings, **changes: Any) -> Settings:
    """``settings`` with ``changes``, validated like any settings (``model_copy(update=...)`` would
    keep a plain string where a secret belongs). A module's own ``settings`` fixture uses it."""
    return Settings(**{**settings.model_dump(), **changes})


@dataclass
class Api:
    client: httpx.AsyncClient
    runtime: Runtime
    keys: dict[str, str]

    def auth(self, who: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.chunkd
        keys = {}
        for owner, scopes in {
            "alice": "files:create,files:read,files:delete",
            "bob": "files:create,files:read,files:delete",
            "reader": "files:read",
        }.items():
            _, keys[owner] = await runtime.keys.create(owner, scopes)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client, runtime, keys)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[ChunkdServer]:
    """A real ``chunkd serve`` subprocess on a free port and a fresh data dir."""
    with ChunkdServer(tmp_path / "live-data", env={"CHUNKD_FSYNC": "true"}) as server:
        yield server


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, for a test that stops or freezes it (the session's is
    shared); skipped where PostgreSQL is not installed."""
    with own_postgres() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A fresh migrated database on the session's PostgreSQL."""
    return pg_server.url(pg_server.migrated_database())


@pytest.fixture
def own_pg_url(own_pg: PostgresServer) -> str:
    """A migrated database on this test's own PostgreSQL (``own_pg``)."""
    return own_pg.url(own_pg.migrated_database())


@pytest.fixture(scope="session")
def ceph_rgw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephRgw]:
    """One Ceph RADOS Gateway (real S3) per test run, shared by the xdist workers (each test uses
    its own bucket). Outside CI, tests that need it are skipped when its Debian packages cannot be
    installed; in CI (CI=true) that is an error."""
    with shared_dir("ceph-rgw", request, tmp_path_factory) as place:
        if not s3_support.in_ci() and (why := s3_support.can_install()) is not None:
            pytest.skip(f"Ceph RGW is not available here: {why}")
        gateway = CephRgw(place.path).start()  # finds the gateway another worker started, if any
        place.on_run_end(gateway.stop_command())
    try:
        yield gateway
    finally:
        if place.owned:
            gateway.stop()


@pytest.fixture
def s3_bucket(ceph_rgw: CephRgw) -> str:
    """A fresh, empty bucket on the session's gateway."""
    return ceph_rgw.new_bucket()


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    """One clamd (EICAR-only signature database) per session; skipped when ClamAV is not installed
    (scripts/services/clamav.sh installs it), an error in CI."""
    if clamd_binary() is None:
        missing("clamd is not installed (scripts/services/clamav.sh installs it)")
    daemon = Clamd(tmp_path_factory.mktemp("clamd")).start()
    try:
        yield daemon
    finally:
        daemon.stop()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The xdist controller stops the services its workers shared, once they have all finished."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None and not is_worker(session.config) and session.config.pluginmanager.has_plugin("dsession"):
        stop_all(factory.getbasetemp())


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist (``--dist loadgroup``), keep a module's tests on one worker when they share a
    module- or class-scoped fixture (a server started with special settings, a generated client):
    it is then set up once, not once per worker. Other tests spread test by test."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        scopes = {d.scope for defs in info.name2fixturedefs.values() for d in defs}
        if scopes & {"module", "class", "package"}:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
