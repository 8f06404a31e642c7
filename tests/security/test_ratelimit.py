"""Rate limits: headers on every response, 429 with a Retry-After that is right (waiting it out
lets the next request through), budgets per owner and category, bad credentials counted by
address, the bytes category, and one budget shared by two server processes through Redis."""

from __future__ import annotations

import asyncio
import base64
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from chunkd.auth import ratelimit
from tests.security.conftest import MakeApi
from tests.support.server import ChunkdServer

WINDOW = 10


async def test_burst_gets_429_with_correct_retry_after(make_api: MakeApi) -> None:
    # A 10-second window: the burst below must fit in it even on a loaded machine (with 2 seconds,
    # a slow burst saw its first request leave the window before the fifth).
    async with make_api(rate_limits=f"read=4/{WINDOW} second;write=100/minute") as api:
        seen = []
        for _ in range(4):
            response = await api.client.get("/v1/files", headers=api.auth("alice"))
            assert response.status_code == 200
            assert response.headers["RateLimit-Limit"] == "4"
            assert 0 <= int(response.headers["RateLimit-Reset"]) <= WINDOW
            seen.append(int(response.headers["RateLimit-Remaining"]))
        assert seen == [3, 2, 1, 0]
        refused = await api.client.get("/v1/files", headers=api.auth("alice"))
        assert refused.status_code == 429
        retry = int(refused.headers["Retry-After"])
        assert 1 <= retry <= WINDOW
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert refused.json()["error"]["code"] == "rate_limited" and refused.json()["error"]["category"] == "read"
        # Another owner and another category have their own budgets.
        assert (await api.client.get("/v1/files", headers=api.auth("bob"))).status_code == 200
        created = await api.client.post("/v1/files", json={"filename": "a", "sizeBytes": 1}, headers=api.auth())
        assert created.status_code == 201 and created.headers["RateLimit-Limit"] == "100"
        # All of an owner's keys share the owner's budget.
        assert (await api.client.get("/v1/files", headers=api.auth("reader"))).status_code == 429
        await asyncio.sleep(retry + 0.05)
        assert (await api.client.get("/v1/files", headers=api.auth("alice"))).status_code == 200


async def test_bad_credentials_are_limited_by_address(make_api: MakeApi) -> None:
    async with make_api(rate_limits="read=3/minute;write=3/minute") as api:
        statuses = []
        for i in range(5):
            bad = {"Authorization": f"Bearer ck_{i:016x}_" + "A" * 43}
            statuses.append((await api.client.get("/v1/files", headers=bad)).status_code)
        assert statuses == [401, 401, 401, 429, 429]
        assert (await api.client.get("/v1/files")).status_code == 429  # same address, no credentials
        assert (await api.client.get("/v1/files", headers=api.auth())).status_code == 200
        assert (await api.client.get("/healthz")).status_code == 200  # health checks are exempt


async def test_forwarded_clients_are_counted_apart_and_cannot_choose_their_address(make_api: MakeApi) -> None:
    """Behind a trusted proxy (the in-process client's address is 127.0.0.1) each client has its
    own budget, also when the proxies are given as a network; and a client cannot pick its address
    by sending an ``X-Forwarded-For`` line before the one its proxy adds (HAProxy adds a line of its
    own): only the first line was read, so every request could name a new address."""
    for trusted in ("127.0.0.0/8", "10.0.0.0/8, ::1/128, 127.0.0.1/32"):
        async with make_api(rate_limits="read=2/minute", trusted_proxies=trusted) as api:
            apart = [
                (await api.client.get("/v1/files", headers={"X-Forwarded-For": f"203.0.113.{i}"})).status_code
                for i in range(4)
            ]
            assert apart == [401, 401, 401, 401], (trusted, apart)  # four clients, one request each
            again = [
                (await api.client.get("/v1/files", headers={"X-Forwarded-For": "203.0.113.0"})).status_code
                for _ in range(2)
            ]
            assert again == [401, 429], (trusted, again)  # the first client's third request
    async with make_api(rate_limits="read=2/minute", trusted_proxies="127.0.0.1") as api:
        statuses = []
        for i in range(4):
            chosen = ("X-Forwarded-For", f"198.51.100.{i}")  # what the client sent
            added = ("X-Forwarded-For", "203.0.113.7")  # the line the proxy added: the real client
            statuses.append((await api.client.get("/v1/files", headers=[chosen, added])).status_code)
        assert statuses == [401, 401, 429, 429]


async def test_part_uploads_have_their_own_budget(make_api: MakeApi) -> None:
    # A fast client sends many parts a minute: they count as "upload", not against "write".
    async with make_api(rate_limits="read=100/minute;write=3/minute;upload=4/minute") as api:
        created = await api.client.post(
            "/v1/files", json={"filename": "a", "sizeBytes": 5000, "partSize": 1000}, headers=api.auth()
        )
        file_id = created.json()["id"]
        statuses = []
        for number in range(1, 6):
            part = await api.client.put(f"/v1/files/{file_id}/parts/{number}", content=b"x" * 1000, headers=api.auth())
            statuses.append(part.status_code)
        assert statuses == [200, 200, 200, 200, 429]
        assert part.json()["error"]["category"] == "upload"
        # The write budget was not touched by the parts (1 of 3 used by the create)...
        cancel = await api.client.post(f"/v1/files/{file_id}/cancel", headers=api.auth())
        assert cancel.status_code == 200 and cancel.headers["RateLimit-Remaining"] == "1"
        # ...and a body-less or JSON write is never an upload.
        empty = await api.client.post("/v1/files", json={"filename": "b", "sizeBytes": 1}, headers=api.auth())
        assert empty.status_code == 201 and empty.headers["RateLimit-Remaining"] == "0"


async def test_without_an_upload_budget_parts_count_as_writes(make_api: MakeApi) -> None:
    async with make_api(rate_limits="read=100/minute;write=2/minute") as api:
        created = await api.client.post(
            "/v1/files", json={"filename": "a", "sizeBytes": 2000, "partSize": 1000}, headers=api.auth()
        )
        file_id = created.json()["id"]
        first = await api.client.put(f"/v1/files/{file_id}/parts/1", content=b"x" * 1000, headers=api.auth())
        assert first.status_code == 200 and first.headers["RateLimit-Remaining"] == "0"
        second = await api.client.put(f"/v1/files/{file_id}/parts/2", content=b"x" * 1000, headers=api.auth())
        assert second.status_code == 429 and second.json()["error"]["category"] == "write"


@pytest.mark.parametrize("counts", ["write=100/minute", "write=100/minute;upload=100/minute"])
async def test_bytes_category(make_api: MakeApi, counts: str) -> None:
    async with make_api(rate_limits=f"read=100/minute;{counts};bytes=1500/minute") as api:
        file_id = (
            await api.client.post(
                "/v1/files", json={"filename": "a", "sizeBytes": 4000, "partSize": 1000}, headers=api.auth()
            )
        ).json()["id"]
        first = await api.client.put(f"/v1/files/{file_id}/parts/1", content=b"x" * 1000, headers=api.auth())
        assert first.status_code == 200
        second = await api.client.put(f"/v1/files/{file_id}/parts/2", content=b"x" * 1000, headers=api.auth())
        assert second.status_code == 429 and second.json()["error"]["category"] == "bytes"
        assert int(second.headers["Retry-After"]) >= 1
        whole = await api.client.put(f"/v1/files/{file_id}/content", content=b"x" * 4000, headers=api.auth())
        assert whole.status_code == 413 and whole.json()["error"]["limit"] == "rate_limits.bytes"


async def test_limits_setting_is_validated() -> None:
    from chunkd.auth.ratelimit import parse_rate_limits

    assert [str(i) for i in parse_rate_limits("read=20/second,1200/minute;write=600/minute")["read"]] == [
        "20 per 1 second",
        "1200 per 1 minute",
    ]
    for bad in ("reads=1/minute", "read=lots", "read"):
        with pytest.raises(ValueError):
            parse_rate_limits(bad)


async def test_redis_down_fails_open(make_api: MakeApi) -> None:
    async with make_api(rate_limits="read=1/minute", redis_url="redis://127.0.0.1:1/0") as api:
        for _ in range(3):
            response = await api.client.get("/v1/files", headers=api.auth())
            assert response.status_code == 200
            assert "RateLimit-Limit" not in response.headers


async def test_a_hung_redis_fails_open_without_holding_requests(
    make_api: MakeApi, redis_server: tuple[str, subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis stops answering but keeps its socket open (stopped, as a paused VM or a stuck host
    is): requests are still answered, allowed as when it is down, instead of each waiting on a
    counter that never comes; once it answers again, requests are counted again. Before, the
    first such request never came back (the suite's timeout ended the test)."""
    monkeypatch.setattr(ratelimit, "STORE_RETRY_AFTER", 0.2)
    url, process = redis_server
    async with make_api(rate_limits="read=100/minute;bytes=1000000/minute", redis_url=url) as api:
        counted = await api.client.get("/v1/files", headers=api.auth())
        assert counted.status_code == 200 and counted.headers["RateLimit-Limit"] == "100"
        made = await api.client.post("/v1/files", json={"filename": "a.bin", "sizeBytes": 10}, headers=api.auth())
        process.send_signal(signal.SIGSTOP)
        try:
            for _ in range(5):
                response = await api.client.get("/v1/files", headers=api.auth())
                assert response.status_code == 200
                assert "RateLimit-Limit" not in response.headers
            # A body's bytes are checked against their budget before it is read (``would_refuse``).
            part = await api.client.put(f"/v1/files/{made.json()['id']}/parts/1", content=b"x" * 10, headers=api.auth())
            assert part.status_code == 200, part.text
        finally:
            process.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 30  # bounds a failure only
        while "RateLimit-Limit" not in (response := await api.client.get("/v1/files", headers=api.auth())).headers:
            assert time.monotonic() < deadline, "requests were not counted again once Redis answered"
            await asyncio.sleep(0.05)
        assert response.status_code == 200


def _admin_key(server: ChunkdServer) -> str:
    """The bootstrap admin key the first start writes (quicker than a `chunkd keys create` process)."""
    return (server.data_dir / "bootstrap-admin-key").read_text().strip()


@pytest.mark.e2e
def test_two_servers_share_one_budget_in_redis(tmp_path: Path, redis_url: str) -> None:
    env = {
        "CHUNKD_REDIS_URL": redis_url,
        "CHUNKD_RATE_LIMITS": "read=6/minute;write=100/minute",
        "CHUNKD_BOOTSTRAP_ADMIN_KEY": "true",
    }
    first = ChunkdServer(tmp_path / "shared-data", env=env)
    first.start()
    second = ChunkdServer(tmp_path / "shared-data", env={**env, "CHUNKD_BOOTSTRAP_ADMIN_KEY": "false"})
    try:
        second.start()
        admin = {"Authorization": f"Bearer {_admin_key(first)}"}
        made = httpx.post(f"{first.url}/v1/keys", json={"scopes": "files:read"}, headers=admin, timeout=10)
        assert made.status_code == 201, made.text
        headers = {"X-API-Key": made.json()["key"]}  # the same owner: one budget for all its keys
        started = time.monotonic()
        statuses = []
        for i in range(8):
            server = first if i % 2 == 0 else second
            statuses.append(httpx.get(f"{server.url}/v1/files", headers=headers, timeout=10).status_code)
        assert statuses == [200] * 6 + [429, 429]  # the keys API call above was a write, not a read
        refused = httpx.get(f"{second.url}/v1/files", headers=headers, timeout=10)
        assert refused.status_code == 429 and refused.headers["RateLimit-Remaining"] == "0"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60 - int(time.monotonic() - started) + 1
    finally:
        second.kill()
        first.kill()


async def test_upload_links_have_a_budget_apart_from_their_owner(make_api: MakeApi) -> None:
    """A partner's requests through an upload link spent the owner's budget (a partner could stop
    the owner's uploads), and the owner's the partner's. The owner's links share one budget of
    their own: more links do not make more budget."""

    async def create(auth: dict[str, str]) -> int:
        made = await api.client.post("/v1/files", json={"filename": "a", "sizeBytes": 1}, headers=auth)
        return made.status_code

    async with make_api(rate_limits="read=100/minute;write=3/minute") as api:
        links = []
        for _ in range(2):  # two of alice's three writes
            made = await api.client.post("/v1/upload-links", json={}, headers=api.auth("admin"))
            links.append({"Authorization": "Bearer " + made.json()["url"].split("#link=", 1)[1]})
        assert [await create(links[0]) for _ in range(2)] == [201, 201]
        assert [await create(links[1]) for _ in range(2)] == [201, 429]  # one budget for both links
        assert [await create(api.auth()) for _ in range(2)] == [201, 429]  # alice's last write is hers
        bob = await api.client.post("/v1/upload-links", json={}, headers=api.auth("bobadmin"))
        assert await create({"Authorization": "Bearer " + bob.json()["url"].split("#link=", 1)[1]}) == 201


async def test_made_up_keys_cost_one_lookup_each_then_none(make_api: MakeApi) -> None:
    """A flood of made-up API keys cost two database lookups each (the rate limiter's and the
    route's), every one of them. Now each costs one, and past the address's failure budget none
    at all; an access token from that address still works (a made-up one fails on its signature,
    before any lookup)."""
    async with make_api(auth_failure_limit="3/minute") as api:
        inner = api.runtime.keys.repo.repo  # type: ignore[attr-defined]
        looked_up: list[str] = []
        get_key = inner.get_key

        async def counting(key_id: str) -> object:
            looked_up.append(key_id)
            return await get_key(key_id)

        inner.get_key = counting
        issued = await api.client.post("/v1/auth/token", headers=api.auth("alice"))
        token = {"Authorization": f"Bearer {issued.json()['accessToken']}"}
        looked_up.clear()

        made_up = [{"X-API-Key": f"ck_{i:016x}_" + "A" * 43} for i in range(5)]
        for n, headers in enumerate(made_up[:3]):
            assert (await api.client.get("/v1/files", headers=headers)).status_code == 401
            assert looked_up == [f"{i:016x}" for i in range(n + 1)]  # one lookup each, not two
        for headers in made_up[3:]:
            refused = await api.client.get("/v1/files", headers=headers)
            assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1, refused.text
            assert refused.json()["error"]["category"] == "auth_failures"
        assert len(looked_up) == 3, looked_up
        assert (await api.client.get("/v1/files", headers=token)).status_code == 200
        basic = {"Authorization": "Basic " + base64.b64encode(f"{9:016x}:secret".encode()).decode()}
        assert (await api.client.get("/v1/files", headers=basic)).status_code == 429
        assert len(looked_up) <= 4, looked_up  # at most alice's key, re-read for the token
