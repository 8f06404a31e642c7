"""PostgreSQL down or restarting (an operator's restart, a failover): every request that needs the
database is a 503 with Retry-After in its own dialect (a dependency down, not a bug), nothing is
recorded, and the uploads resume where they were once the database is back. And a connection lost
while a commit's answer was on its way: the part it recorded keeps its bytes."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from chunkd.app import create_app
from chunkd.backends.locks.postgres import PostgresAdvisoryLocks
from chunkd.domain.errors import StorageError
from chunkd.runtime import open_runtime
from tests.conftest import in_process_settings, settings_with
from tests.support.postgres import PostgresServer

MiB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}
APPEND = {**TUS, "Content-Type": "application/offset+octet-stream"}
DRAFT = {"Upload-Draft-Interop-Version": "8"}


@asynccontextmanager
async def app_client(data_dir: Path, database_url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app in this process on ``database_url`` and local storage, with alice's key; ``settings``
    change the test defaults."""
    app = create_app(settings_with(in_process_settings(data_dir, database_url), **settings))
    async with app.router.lifespan_context(app):
        _, key = await app.state.chunkd.keys.create("alice", "files:create,files:read,files:delete")
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers) as http:
            yield http


@pytest.fixture
async def client(tmp_path: Path, own_pg_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(tmp_path / "data", own_pg_url) as http:
        yield http


async def until_up(request: httpx.Request, http: httpx.AsyncClient) -> httpx.Response:
    """Send ``request`` until it is not a 503: the first requests after the restart may meet pooled
    connections the restart closed (a 503 too, never anything else); a few tries use them up."""
    for _ in range(50):
        response = await http.send(request)
        if response.status_code != 503:
            return response
    raise AssertionError(f"still 503 after the database came back: {response.text}")


async def test_a_database_outage_is_503_everywhere_and_uploads_resume(
    client: httpx.AsyncClient, own_pg: PostgresServer
) -> None:
    data = os.urandom(2 * MiB)
    native = (
        await client.post("/v1/files", json={"filename": "a.bin", "sizeBytes": len(data), "partSize": MiB})
    ).json()
    assert (await client.put(f"/v1/files/{native['id']}/parts/1", content=data[:MiB])).status_code == 200
    created = await client.post("/files", headers={**TUS, "Upload-Length": str(len(data))})
    tus_url = created.headers["location"]
    first = await client.patch(tus_url, content=data[:MiB], headers={**APPEND, "Upload-Offset": "0"})
    assert first.status_code == 204

    own_pg.pause()
    try:
        attempts = {
            "create": client.build_request("POST", "/v1/files", json={"filename": "b.bin", "sizeBytes": 1}),
            "get": client.build_request("GET", f"/v1/files/{native['id']}"),
            "part": client.build_request("PUT", f"/v1/files/{native['id']}/parts/2", content=data[MiB:]),
            "complete": client.build_request("POST", f"/v1/files/{native['id']}/complete"),
            "tus create": client.build_request("POST", "/files", headers={**TUS, "Upload-Length": "5"}),
            "tus head": client.build_request("HEAD", tus_url, headers=TUS),
            "tus patch": client.build_request(
                "PATCH", tus_url, content=data[MiB:], headers={**APPEND, "Upload-Offset": str(MiB)}
            ),
        }
        for name, request in attempts.items():
            response = await client.send(request)
            # Before the fix: 500 (the driver's ConnectionRefusedError or CannotConnectNowError).
            assert response.status_code == 503, (name, response.status_code, response.text)
            assert response.headers["retry-after"], name
            assert str(own_pg.port) not in response.text  # the driver's words name the host and port
    finally:
        own_pg.resume()

    # Nothing was recorded during the outage: both uploads resume from where they were.
    listed = (await until_up(client.build_request("GET", f"/v1/files/{native['id']}"), client)).json()
    assert [p["partNumber"] for p in listed["parts"]] == [1]
    put = await until_up(client.build_request("PUT", f"/v1/files/{native['id']}/parts/2", content=data[MiB:]), client)
    assert put.status_code == 200, put.text
    done = await until_up(client.build_request("POST", f"/v1/files/{native['id']}/complete"), client)
    assert done.status_code == 200 and done.json()["status"] == "COMPLETED", done.text
    assert (await client.get(f"/v1/files/{native['id']}")).json()["md5"] == hashlib.md5(data).hexdigest()
    assert (await client.get(f"/v1/files/{native['id']}/content")).content == data

    head = await until_up(client.build_request("HEAD", tus_url, headers=TUS), client)
    assert head.headers["upload-offset"] == str(MiB)
    rest = await client.patch(tus_url, content=data[MiB:], headers={**APPEND, "Upload-Offset": str(MiB)})
    assert rest.status_code == 204, rest.text
    tus_id = tus_url.rsplit("/", 1)[1]
    assert (await client.get(f"/v1/files/{tus_id}")).json()["md5"] == hashlib.md5(data).hexdigest()


async def test_a_hung_database_is_503_within_its_timeout_and_uploads_resume(
    tmp_path: Path, own_pg: PostgresServer, own_pg_url: str
) -> None:
    """PostgreSQL stops answering without closing anything (every process of it stopped: a stalled
    disk, a host that no longer schedules it). Each request that needs it is answered 503 once a
    statement has waited ``database_timeout_seconds``, instead of being held (with its upload's
    lock) until TCP gives up, which it never does on a socket the kernel still answers for. That
    includes a PATCH whose body arrived before its save could run on the lock's session. Nothing is
    recorded, and every upload resumes once the server answers again. Before, this test ran into
    the suite's timeout: the first request never came back."""
    data = os.urandom(2 * MiB)
    body_half_sent, freeze_done = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield data[MiB : MiB + MiB // 2]
        body_half_sent.set()
        await freeze_done.wait()
        yield data[MiB + MiB // 2 :]

    async with app_client(tmp_path / "data", own_pg_url, database_timeout_seconds=3) as client:
        native = (
            await client.post("/v1/files", json={"filename": "a.bin", "sizeBytes": len(data), "partSize": MiB})
        ).json()
        assert (await client.put(f"/v1/files/{native['id']}/parts/1", content=data[:MiB])).status_code == 200
        tus_url = (await client.post("/files", headers={**TUS, "Upload-Length": str(len(data))})).headers["location"]
        first = await client.patch(tus_url, content=data[:MiB], headers={**APPEND, "Upload-Offset": "0"})
        assert first.status_code == 204
        waiting_patch = asyncio.create_task(
            client.patch(tus_url, content=slow_body(), headers={**APPEND, "Upload-Offset": str(MiB)})
        )
        await body_half_sent.wait()  # the PATCH holds the upload's lock and streams its body
        own_pg.freeze()
        try:
            freeze_done.set()
            attempts = {
                "create": client.post("/v1/files", json={"filename": "b.bin", "sizeBytes": 1}),
                "get": client.get(f"/v1/files/{native['id']}"),
                "list": client.get("/v1/files"),  # SQLAlchemy's path, not the hot paths' asyncpg
                "part": client.put(f"/v1/files/{native['id']}/parts/2", content=data[MiB:]),
                "complete": client.post(f"/v1/files/{native['id']}/complete"),
                "tus create": client.post("/files", headers={**TUS, "Upload-Length": "5"}),
                "tus head": client.head(tus_url, headers=TUS),
            }
            answers = dict(zip(attempts, await asyncio.gather(*attempts.values()), strict=True))
            answers["waiting tus patch"] = await waiting_patch
        finally:
            own_pg.thaw()
        for name, response in answers.items():
            assert response.status_code == 503, (name, response.status_code, response.text)
            assert response.headers["retry-after"], name
            if name != "tus head":  # a HEAD has no body
                assert "did not answer in time" in response.text, (name, response.text)
                assert "database_unavailable" in response.text, (name, response.text)  # not the blob store's

        # Nothing was recorded while it hung: both uploads resume from where they were.
        listed = (await until_up(client.build_request("GET", f"/v1/files/{native['id']}"), client)).json()
        assert [p["partNumber"] for p in listed["parts"]] == [1]
        put = await until_up(
            client.build_request("PUT", f"/v1/files/{native['id']}/parts/2", content=data[MiB:]), client
        )
        assert put.status_code == 200, put.text
        done = await until_up(client.build_request("POST", f"/v1/files/{native['id']}/complete"), client)
        assert done.status_code == 200 and done.json()["status"] == "COMPLETED", done.text
        assert (await client.get(f"/v1/files/{native['id']}")).json()["md5"] == hashlib.md5(data).hexdigest()
        head = await until_up(client.build_request("HEAD", tus_url, headers=TUS), client)
        assert head.headers["upload-offset"] == str(MiB)
        rest = await until_up(
            client.build_request("PATCH", tus_url, content=data[MiB:], headers={**APPEND, "Upload-Offset": str(MiB)}),
            client,
        )
        assert rest.status_code == 204, rest.text
        tus_id = tus_url.rsplit("/", 1)[1]
        assert (await client.get(f"/v1/files/{tus_id}/content")).content == data


async def test_a_lock_that_needs_a_new_connection_from_a_hung_database_is_503(
    own_pg: PostgresServer, own_pg_url: str
) -> None:
    """No idle lock connection: taking a lock opens one, and the server does not answer that
    either. That is the database not answering (503), not every lock connection in use (409)."""
    locks = PostgresAdvisoryLocks(own_pg_url, idle_connections=0, timeout=2.0)
    try:
        async with locks.hold("held-upload", timeout=0):  # the pool's only connection is in use
            own_pg.freeze()
            try:
                with pytest.raises(StorageError, match="did not answer in time"):
                    async with locks.hold("other-upload", timeout=1.0):
                        pass
            finally:
                own_pg.thaw()
    finally:
        await locks.close()


async def test_shutdown_while_the_database_hangs_closes_everything(
    tmp_path: Path, own_pg: PostgresServer, own_pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing a connection waits for the server's goodbye. With the server frozen, the first pool's
    close failed at the statement timeout and its error ended the shutdown there, the other pools
    left open; now each pool that does not close in time has its connections dropped, and
    shutdown goes on."""
    settings = settings_with(in_process_settings(tmp_path / "data", own_pg_url), database_timeout_seconds=1)
    runtime = await open_runtime(settings)
    upload = await runtime.uploads.create("alice", filename="a.bin", size_bytes=3, part_size=3)
    async with runtime.locks.hold(upload.id, timeout=1):  # the lock pool has a connection
        pass
    own_pg.freeze()
    try:
        await runtime.close()
    finally:
        own_pg.thaw()
    dropped = [r.getMessage() for r in caplog.records if "did not close cleanly" in r.getMessage()]
    assert any("lock connection pool" in m for m in dropped), dropped
    assert any("upload repository" in m for m in dropped), dropped


@pytest.mark.timeout(60)  # the driver's own connect timeout is 60 s: a hang must not reach it
@pytest.mark.parametrize("hang", ["frozen", "table_locked"])
async def test_starting_against_a_hung_database_fails_within_its_timeout_saying_so(
    own_pg: PostgresServer, own_pg_url: str, hang: str
) -> None:
    """A node starting while PostgreSQL does not answer: every process of it stopped, or a
    session left holding a lock on the migrations' table (a stuck maintenance transaction).
    Migrations run without a statement timeout, and start-up used to ask whether one is pending on
    that untimed engine, so it waited for ever. Now the question is asked within the database
    timeout, and start-up fails with the engine's words, not the driver's."""
    from chunkd.backends.locks.postgres import asyncpg_dsn
    from chunkd.backends.repository.sqlalchemy import open_sql_metadata

    holder = await asyncpg.connect(asyncpg_dsn(own_pg_url))
    stuck = holder.transaction()
    try:
        if hang == "frozen":
            own_pg.freeze()
        else:
            await stuck.start()
            await holder.execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
        try:
            with pytest.raises(StorageError, match="did not answer in time"):
                await open_sql_metadata(own_pg_url, run_migrations=True, timeout=1)
        finally:
            own_pg.thaw()
            if hang == "table_locked":
                await stuck.rollback()
    finally:
        await holder.close()
    opened = await open_sql_metadata(own_pg_url, run_migrations=True, timeout=5)  # and it starts once answered
    await opened.close()


@pytest.fixture
def commit_answer_lost(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Arms (append True) a fault: the next transaction that commits is committed by the server,
    then its connection is reported lost, as when PostgreSQL's answer to COMMIT never arrives (the
    server restarted or the backend was terminated right after the commit)."""
    armed: list[bool] = []
    real_exit = asyncpg.transaction.Transaction.__aexit__

    async def exit_then_lose_the_answer(self: Any, extype: Any, ex: Any, tb: Any) -> Any:
        result = await real_exit(self, extype, ex, tb)
        if extype is None and armed:
            armed.clear()
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")
        return result

    monkeypatch.setattr(asyncpg.transaction.Transaction, "__aexit__", exit_then_lose_the_answer)
    return armed


@pytest.fixture
def commit_seen_late(monkeypatch: pytest.MonkeyPatch, commit_answer_lost: list[bool]) -> list[int]:
    """With ``commit_answer_lost``: while the test holds a part number here, a read of that part
    alone does not see the commit the fault answered, as when PostgreSQL died in the middle of it
    (an immediate shutdown, a crash): the commit is durable, and visible once recovery has run,
    but a backend still answering in the meantime reads the row as it was."""
    from chunkd.backends.repository.postgres.uploads import PostgresUploadRepository

    late: list[int] = []
    real_get = PostgresUploadRepository.get

    async def as_before_the_commit(self: Any, upload_id: str, *args: Any, **kwargs: Any) -> Any:
        found = await real_get(self, upload_id, *args, **kwargs)
        if found is not None and not commit_answer_lost and kwargs.get("part_numbers") == late:
            found.parts = {n: p for n, p in found.parts.items() if n not in late}
        return found

    monkeypatch.setattr(PostgresUploadRepository, "get", as_before_the_commit)
    return late


@pytest.mark.parametrize("seen", ["at_once", "after_recovery"])
@pytest.mark.parametrize("dialect", ["native", "tus"])
async def test_a_part_whose_commit_answer_was_lost_keeps_its_bytes(
    tmp_path: Path,
    pg_url: str,
    commit_answer_lost: list[bool],
    commit_seen_late: list[int],
    dialect: str,
    seen: str,
) -> None:
    """The request fails (its outcome unknown to the node: 409 or 503, the client resumes), but
    the part was recorded. Its bytes used to be freed as those of a part that was not: the server
    then reported the part as stored, and the upload could never complete. A read of the row
    right after the failure cannot tell either (``after_recovery``: the commit becomes visible
    only later); that read freed the bytes of a media chunk under an immediate PostgreSQL stop."""
    data = os.urandom(2 * MiB)
    if seen == "after_recovery":
        commit_seen_late.append(1)
    async with app_client(tmp_path / "data", pg_url) as client:
        if dialect == "native":
            made = await client.post("/v1/files", json={"filename": "a.bin", "sizeBytes": len(data), "partSize": MiB})
            file_id = made.json()["id"]
            commit_answer_lost.append(True)
            failed = await client.put(f"/v1/files/{file_id}/parts/1", content=data[:MiB])
            commit_seen_late.clear()  # recovered: the commit is visible
            assert failed.status_code in (409, 503), failed.text
            listed = (await client.get(f"/v1/files/{file_id}")).json()
            assert [p["partNumber"] for p in listed["parts"]] == [1]  # recorded after all
            assert (await client.put(f"/v1/files/{file_id}/parts/2", content=data[MiB:])).status_code == 200
            done = await client.post(f"/v1/files/{file_id}/complete")
        else:
            created = await client.post("/files", headers={**TUS, "Upload-Length": str(len(data))})
            url = created.headers["location"]
            file_id = url.rsplit("/", 1)[1]
            commit_answer_lost.append(True)
            failed = await client.patch(url, content=data[:MiB], headers={**APPEND, "Upload-Offset": "0"})
            commit_seen_late.clear()  # recovered: the commit is visible
            assert failed.status_code in (409, 423, 503), failed.text
            offset = int((await client.head(url, headers=TUS)).headers["upload-offset"])
            assert offset == MiB  # recorded after all: the client resumes after it
            done = await client.patch(url, content=data[offset:], headers={**APPEND, "Upload-Offset": str(offset)})
        assert done.status_code in (200, 204), done.text
        assert (await client.get(f"/v1/files/{file_id}")).json()["md5"] == hashlib.md5(data).hexdigest()
        assert (await client.get(f"/v1/files/{file_id}/content")).content == data


async def _end_lock_sessions(database_url: str) -> None:
    """What a PostgreSQL restart or an operator's pg_terminate_backend does to the database's lock
    sessions (waiting until each is gone)."""
    conn = await asyncpg.connect(database_url)
    try:
        ended = await conn.fetch(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'chunkd-locks'"
        )
    finally:
        await conn.close()
    assert ended and all(row[0] for row in ended)


@pytest.mark.parametrize("dialect", ["tus", "draft"])
async def test_a_lock_lost_under_a_waiting_patch_is_retried_not_taken_over(
    tmp_path: Path, pg_url: str, dialect: str
) -> None:
    """The session holding an upload's lock ends while a PATCH waits for its body. The PATCH must
    stop (another node may take the lock now), but nobody took the upload over and its client is
    still there: it is told to try again (423, or the draft's 503, with Retry-After) and resumes. It used to be told
    that a newer request had taken over (a 400, after which tus clients give up)."""
    data = os.urandom(MiB)
    if dialect == "tus":
        creation, head, append = {**TUS, "Upload-Length": str(len(data))}, TUS, APPEND
    else:
        creation, head = {**DRAFT, "Upload-Complete": "?0"}, DRAFT
        append = {**DRAFT, "Content-Type": "application/partial-upload", "Upload-Complete": "?1"}
    async with app_client(tmp_path / "data", pg_url) as client:
        created = await client.post("/files", headers=creation)
        assert created.status_code == 201, created.text
        url = created.headers["location"]
        reading, let_go = asyncio.Event(), asyncio.Event()

        async def late_body() -> AsyncIterator[bytes]:
            reading.set()  # the PATCH holds the upload's lock and waits for its first byte
            await let_go.wait()
            yield data

        patch = asyncio.create_task(client.patch(url, content=late_body(), headers={**append, "Upload-Offset": "0"}))
        await asyncio.wait_for(reading.wait(), 10)
        await _end_lock_sessions(pg_url)
        stopped = await asyncio.wait_for(patch, 10)
        let_go.set()
        # tus's 423; the draft's interop 8 says 503 (after a 5xx its client may resume, not after a 4xx).
        assert stopped.status_code == (423 if dialect == "tus" else 503), stopped.text
        assert stopped.headers["retry-after"] == "1"
        offset = int((await until_up(client.build_request("HEAD", url, headers=head), client)).headers["upload-offset"])
        assert offset == 0
        done = await client.patch(url, content=data, headers={**append, "Upload-Offset": "0"})
        assert done.status_code in (200, 201, 204), done.text
        file_id = url.rsplit("/", 1)[1]
        assert (await client.get(f"/v1/files/{file_id}")).json()["md5"] == hashlib.md5(data).hexdigest()


async def test_requests_while_the_database_is_down_are_not_failed_authentications(
    tmp_path: Path, own_pg: PostgresServer, own_pg_url: str
) -> None:
    """A key this node has not looked up yet (a key new to it, or one whose cache entry ran out)
    is checked in the database, which is down. That is not a failed authentication: counted as one,
    a client that kept retrying spent its address's failure budget, and was refused with 429 "too
    many failed authentications", blaming it, during the outage and for up to the budget's window
    after it."""
    async with app_client(tmp_path / "data", own_pg_url, auth_failure_limit="2/minute") as client:
        own_pg.pause()
        try:
            for _ in range(4):
                response = await client.get("/v1/files")
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "database_unavailable"
        finally:
            own_pg.resume()
        listed = await until_up(client.build_request("GET", "/v1/files"), client)
        assert listed.status_code == 200, listed.text
