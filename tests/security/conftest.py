"""Fixtures of the security suite: an in-process app built with chosen settings, keys with chosen
scopes, and a real redis-server on a free port."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from chunkd.app import create_app
from chunkd.auth.principal import ALL_SCOPES
from chunkd.settings import Settings
from tests.conftest import Api
from tests.support.server import free_port

FULL = "files:create,files:read,files:delete"
MakeApi = Callable[..., AbstractAsyncContextManager[Api]]


@pytest.fixture
def make_api(settings: Settings) -> MakeApi:
    """``async with make_api(rate_limits="read=3/minute") as api``: an app with settings changed,
    keys for alice, bob (files:*), reader (files:read), admin (alice, every scope)."""

    @asynccontextmanager
    async def build(keys: dict[str, tuple[str, str]] | None = None, **overrides: Any) -> AsyncIterator[Api]:
        app = create_app(settings.model_copy(update=overrides))
        async with app.router.lifespan_context(app):
            runtime = app.state.chunkd
            wanted = keys or {
                "alice": ("alice", FULL),
                "bob": ("bob", FULL),
                "reader": ("alice", "files:read"),
                "admin": ("alice", ",".join(sorted(ALL_SCOPES))),
                "bobadmin": ("bob", ",".join(sorted(ALL_SCOPES))),
            }
            made = {}
            for name, (owner, scopes) in wanted.items():
                _, made[name] = await runtime.keys.create(owner, scopes)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield Api(client, runtime, made)

    return build


@pytest.fixture
def redis_url(redis_server: tuple[str, subprocess.Popen[bytes]]) -> str:
    return redis_server[0]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private redis-server (the Debian package; scripts/services/redis.sh installs it): its URL
    and its process."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run scripts/services/redis.sh")
    port = free_port()
    workdir = tmp_path / "redis"
    workdir.mkdir()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        import socket

        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        process.send_signal(signal.SIGCONT)  # if a test stopped it
        process.terminate()
        process.wait(timeout=10)
