"""The access-log middleware in process: it wraps everything (a 500 and a 429 are logged and counted
by route template), and the batching log writer keeps every line in order."""

from __future__ import annotations

import io
import json
import logging
import os
import select
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message

from chunkd.app import create_app
from chunkd.observability.access import log as access_log
from chunkd.observability.logwriter import BatchingHandler
from chunkd.settings import Settings


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def captured() -> Iterator[Lines]:
    handler = Lines()
    level = access_log.level
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        access_log.removeHandler(handler)
        access_log.setLevel(level)


@asynccontextmanager
async def running(tmp_path: Path, **changes: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = Settings(
        data_dir=tmp_path / "data", bootstrap_admin_key=False, fsync=False, **{"log_format": "json", **changes}
    )
    app = create_app(settings)

    @app.get("/boom", include_in_schema=False)
    async def boom() -> None:
        raise RuntimeError("a bug")

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client


async def test_a_500_is_logged_counted_and_carries_the_request_id(tmp_path: Path, captured: Lines) -> None:
    async with running(tmp_path) as (app, client):
        response = await client.get("/boom", headers={"X-Request-Id": "incident-1"})
        assert response.status_code == 500
        assert response.headers["x-request-id"] == "incident-1"
        # In the Files API's shape (the app-wide fallback), naming the id to quote.
        error = response.json()["error"]
        assert error["code"] == "internal_error" and error["requestId"] == "incident-1"
        assert "incident-1" in error["message"]
        record = json.loads(captured.lines[-1])
        assert (record["route"], record["status"], record["request_id"]) == ("/boom", 500, "incident-1")
        text = app.state.metrics.render(pending=None).decode()
        assert 'chunkd_http_requests_total{method="GET",route="/boom",status="500"} 1.0' in text


async def test_a_429_is_counted_under_its_route_template(tmp_path: Path, captured: Lines) -> None:
    async with running(tmp_path, rate_limits="read=1/minute") as (app, client):
        file_path = "/v1/files/" + "B" * 22
        assert (await client.get(file_path)).status_code == 401
        assert (await client.get(file_path)).status_code == 429  # answered before routing
        statuses = [(r["route"], r["status"]) for r in map(json.loads, captured.lines)]
        assert statuses[-2:] == [("/v1/files/{file_id}", 401), ("/v1/files/{file_id}", 429)]
        assert "B" * 22 not in app.state.metrics.render(pending=None).decode()


async def test_request_ids_that_are_not_sane_are_replaced(tmp_path: Path, captured: Lines) -> None:
    async with running(tmp_path) as (_, client):
        for bad in ("x" * 129, "a b", 'quote"', "line\\nbreak", ""):
            response = await client.get("/healthz", headers={"X-Request-Id": bad})
            generated = response.headers["x-request-id"]
            assert generated != bad and len(generated) == 32
        assert all(json.loads(line)["request_id"] != "a b" for line in captured.lines)


def test_batching_handler_keeps_order_and_flushes_on_close() -> None:
    stream = io.StringIO()
    handler = BatchingHandler(stream, interval=3600)  # only close() writes here
    logger = logging.getLogger("chunkd.test-batching")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for number in range(1000):
            logger.warning("line %d", number)
        assert stream.getvalue() == ""  # nothing written on the caller's thread
        handler.close()
        assert stream.getvalue().splitlines() == [f"line {n}" for n in range(1000)]
    finally:
        logger.removeHandler(handler)


def test_batching_handler_writes_again_after_being_closed() -> None:
    """``logging.config.dictConfig`` (uvicorn calls it at start, after the app is made) closes every
    existing handler but leaves it on its logger: lines after that must still be written."""
    stream = io.StringIO()
    handler = BatchingHandler(stream, interval=0.01)
    handler.write("before")
    handler.close()
    assert stream.getvalue() == "before\n"
    handler.write("after")
    deadline = time.monotonic() + 30
    while stream.getvalue() != "before\nafter\n" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.getvalue() == "before\nafter\n"
    handler.close()


class _Writes(io.StringIO):
    """A stream that records what each flush let out (one system call on a real pipe)."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[str] = []
        self._mark = 0

    def flush(self) -> None:
        value = self.getvalue()
        if len(value) > self._mark:
            self.flushed.append(value[self._mark :])
            self._mark = len(value)


def test_batching_handler_writes_whole_lines_of_at_most_pipe_buf_bytes() -> None:
    """Workers share one stdout: a write of up to PIPE_BUF bytes to a pipe is never interleaved with
    another process's, so each write holds whole lines and at most PIPE_BUF bytes (a longer line alone)."""
    stream = _Writes()
    handler = BatchingHandler(stream, interval=3600)
    lines = [f"line {n} " + "é" * (n % 7) * 40 for n in range(300)] + ["x" * (2 * select.PIPE_BUF), "last"]
    for line in lines:
        handler.write(line)
    handler.close()
    assert stream.getvalue().splitlines() == lines
    assert len(stream.flushed) > 1
    for piece in stream.flushed:
        assert piece.endswith("\n")
        assert len(piece.encode()) <= select.PIPE_BUF or piece.count("\n") == 1


def test_batching_handler_writes_in_a_forked_child() -> None:
    """A forked worker has none of its parent's threads: its lines must still be written."""
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as stream:
        handler = BatchingHandler(stream, interval=0.01)
        handler.write("parent")
        pid = os.fork()
        if pid == 0:  # the child: log, wait for the writer thread (never closed here), exit
            handler.write("child")
            deadline = time.monotonic() + 30
            while handler._lines and time.monotonic() < deadline:
                time.sleep(0.01)
            # The writer takes the lines under its lock and writes them before letting go: once the
            # queue is empty, the lock says when the write is done (exiting sooner lost the line once).
            with handler._write_lock:
                pass
            os._exit(0 if not handler._lines else 1)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        handler.close()
    with os.fdopen(read_end) as output:
        assert sorted(output.read().splitlines()) == ["child", "parent"]


async def test_a_path_id_ending_in_a_newline_is_not_logged(tmp_path: Path, captured: Lines) -> None:
    """``$`` matches before a trailing newline: ``/v1/files/abc%0A`` put "abc\\n" into a logfmt
    line (ending it early). Such an id is logged as ``-``, like any id that is not one."""
    async with running(tmp_path, log_format="text") as (_, client):
        response = await client.get("/v1/files/abc%0A")
        assert response.status_code == 401
        line = captured.lines[-1]
        assert "\n" not in line and line.endswith("upload_id=-"), line


async def test_a_client_gone_before_the_answer_is_a_499_whatever_the_route_answered(
    tmp_path: Path, captured: Lines
) -> None:
    """A JSON body cut by the client's disconnect is, to FastAPI's body reader, a body that does
    not parse: the route answers 400 to nobody. The line and the counter said 400 (a client error
    that never happened); the client went away first, so it is 499, as for an upload body."""
    async with running(tmp_path) as (app, client):
        _, key = await app.state.chunkd.keys.create("alice", "files:create")
        auth = {"Authorization": f"Bearer {key}"}
        assert (await client.post("/v1/files", json={"filename": "a", "sizeBytes": 1}, headers=auth)).status_code == 201
        headers = {"host": "testserver", "authorization": auth["Authorization"], "content-type": "application/json"}
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/files",
            "raw_path": b"/v1/files",
            "query_string": b"",
            "root_path": "",
            "headers": [(name.encode(), value.encode()) for name, value in {**headers, "content-length": "40"}.items()],
            "client": ("127.0.0.1", 40000),
            "server": ("testserver", 80),
        }
        messages: list[Message] = [{"type": "http.request", "body": b'{"filename": "a', "more_body": True}]
        answered: list[Message] = []

        async def receive() -> Message:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            answered.append(message)

        await app(scope, receive, send)
        assert answered and answered[0]["type"] == "http.response.start"  # sent, and dropped by the server
        record = json.loads(captured.lines[-1])
        assert (record["route"], record["status"], record["bytes_in"]) == ("/v1/files", 499, 15)
        text = app.state.metrics.render(pending=None).decode()
        assert 'chunkd_http_requests_total{method="POST",route="/v1/files",status="499"} 1.0' in text
        assert 'route="/v1/files",status="400"' not in text


async def test_the_line_names_the_key_used_never_its_secret(tmp_path: Path, captured: Lines) -> None:
    """An owner with several keys (a CI job's, a person's, Prometheus's): the line says which one
    made the request (its id, as ``chunkd keys list`` shows it), so one can be revoked on evidence."""
    async with running(tmp_path) as (app, client):
        record, key = await app.state.chunkd.keys.create("alice", "files:read")
        assert (await client.get("/v1/files", headers={"Authorization": f"Bearer {key}"})).status_code == 200
        line = json.loads(captured.lines[-1])
        assert (line["owner"], line["key_id"]) == ("alice", record.id)
        assert key.rsplit("_", 1)[-1] not in captured.lines[-1]
        assert (await client.get("/v1/files")).status_code == 401
        assert json.loads(captured.lines[-1])["key_id"] is None
    async with running(tmp_path / "text", log_format="text") as (app, client):
        record, key = await app.state.chunkd.keys.create("alice", "files:read")
        assert (await client.get("/v1/files", headers={"Authorization": f"Bearer {key}"})).status_code == 200
        assert f" owner=alice key_id={record.id} upload_id=-" in captured.lines[-1]
