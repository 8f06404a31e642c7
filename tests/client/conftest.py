"""The SDK against the real app in-process (httpx's ASGI transport), on SQLite and PostgreSQL (the
``settings`` fixture), with a transport wrapper that records requests and can inject failures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from chunkd.app import create_app
from chunkd.client import AsyncClient, RetryPolicy
from chunkd.runtime import Runtime
from chunkd.settings import Settings

FAST_RETRIES = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, max_retry_after=0.05)


@dataclass
class Recorder(httpx.AsyncBaseTransport):
    """Forwards to the app; records (method, path, headers) of each request; answers the next
    request matching ``fail_when`` with each status in ``failures`` first (a flaky network/proxy), and
    loses the answers of ``losses`` requests matching ``lose_when`` after the app handled them."""

    inner: httpx.AsyncBaseTransport
    seen: list[tuple[str, str, httpx.Headers]] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    fail_when: str = ""
    # Requests matching ``lose_when`` reach the app, but their answers are lost (a proxy's 502).
    losses: int = 0
    lose_when: str = ""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path, request.headers))
        if self.failures and self.fail_when in f"{request.method} {request.url.path}":
            status = self.failures.pop(0)
            await request.aread()
            body = b'{"error": {"code": "unavailable", "message": "try again"}}'
            return httpx.Response(status, headers={"Retry-After": "0"}, content=body)
        answer = await self.inner.handle_async_request(request)
        if self.losses and self.lose_when in f"{request.method} {request.url.path}":
            self.losses -= 1
            await answer.aread()
            return httpx.Response(502, headers={"Retry-After": "0"}, content=b"bad gateway")
        return answer

    def parts_sent(self, file_id: str) -> list[int]:
        prefix = f"/v1/files/{file_id}/parts/"
        return [int(p[len(prefix) :]) for m, p, _ in self.seen if m == "PUT" and p.startswith(prefix)]


@dataclass
class Sdk:
    recorder: Recorder
    keys: dict[str, str]
    state_dir: Path
    runtime: Runtime

    def client(self, who: str = "alice", *, key: str | None = None, remember: bool = True) -> AsyncClient:
        return AsyncClient(
            "http://testserver",
            key or self.keys[who],
            retry=FAST_RETRIES,
            transport=self.recorder,
            remember_uploads=remember,
            state_dir=self.state_dir,
        )


@pytest.fixture
async def sdk(settings: Settings, tmp_path: Path) -> AsyncIterator[Sdk]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        keys = {}
        for owner, scopes in {"alice": "files:create,files:read,files:delete", "reader": "files:read"}.items():
            _, keys[owner] = await app.state.chunkd.keys.create(owner, scopes)
        yield Sdk(Recorder(httpx.ASGITransport(app=app)), keys, tmp_path / "state", app.state.chunkd)
