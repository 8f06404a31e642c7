"""Verified keys are cached for at most a second: a revoked key stops working at once on the node
that revoked it, and on every other node sharing the database once its cache entry is a second old."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from chunkd.auth.key_cache import CachedKeys
from chunkd.auth.keys import KeyService
from chunkd.domain.errors import Unauthenticated
from chunkd.ports.keys import ApiKeyRecord, KeyRepository
from tests.conftest import Api


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_revocation_reaches_another_node_within_the_cache_lifetime(api: Api) -> None:
    repo = api.runtime.metadata.keys
    clock = Clock()
    node_a = KeyService(CachedKeys(repo, clock=clock))
    node_b = KeyService(CachedKeys(repo, clock=clock))
    _, token = await node_a.create("carol", "files:read")
    assert (await node_b.verify(token)).owner == "carol"  # node B caches it
    record_id = token.split("_")[1]
    await node_a.revoke(record_id)
    try:
        await node_a.verify(token)
        raise AssertionError("the revoking node must refuse the key at once")
    except Unauthenticated:
        pass
    clock.now += 0.5
    assert (await node_b.verify(token)).owner == "carol"  # still inside node B's one-second window
    clock.now += 0.5
    try:
        await node_b.verify(token)
        raise AssertionError("node B must refuse the key once its cache entry is a second old")
    except Unauthenticated:
        pass


async def test_unknown_ids_are_not_cached(api: Api) -> None:
    cache = CachedKeys(api.runtime.metadata.keys)
    for n in range(50):
        assert await cache.get_key(f"{n:016x}") is None
    assert not cache._entries


async def test_an_id_that_names_no_key_is_looked_up_once_a_lifetime(api: Api) -> None:
    """A client repeating a made-up (or deleted) key cost a database lookup per request."""
    repo = api.runtime.metadata.keys
    looked_up: list[str] = []

    class Counting:
        def __getattr__(self, name: str) -> object:
            return getattr(repo, name)

        async def get_key(self, key_id: str) -> ApiKeyRecord | None:
            looked_up.append(key_id)
            return await repo.get_key(key_id)

    clock = Clock()
    cache = CachedKeys(Counting(), clock=clock, max_entries=2)  # type: ignore[arg-type]
    for _ in range(3):
        assert await cache.get_key("00000000000000aa") is None
    assert looked_up == ["00000000000000aa"] and cache.holds("00000000000000aa")
    clock.now += 1.0
    assert not cache.holds("00000000000000aa")
    assert await cache.get_key("00000000000000aa") is None and len(looked_up) == 2
    # Bounded: the oldest made-up ids go first.
    for n in range(3):
        await cache.get_key(f"{n:016x}")
    assert len(cache._absent) == 2
    # A key made through this node is found at once.
    node = KeyService(cache)
    record, token = await node.create("carol", "files:read")
    assert (await node.verify(token)).owner == "carol" and cache.holds(record.id)


async def test_revoked_key_through_the_api_fails_at_once(api: Api) -> None:
    admin_key = (await api.runtime.keys.create("alice", "files:read,keys:admin"))[1]
    _, victim = await api.runtime.keys.create("alice", "files:read")
    headers = {"Authorization": f"Bearer {victim}"}
    assert (await api.client.get("/v1/files", headers=headers)).status_code == 200
    key_id = victim.split("_")[1]
    revoked = await api.client.delete(f"/v1/keys/{key_id}", headers={"Authorization": f"Bearer {admin_key}"})
    assert revoked.status_code in (200, 204), revoked.text
    assert (await api.client.get("/v1/files", headers=headers)).status_code == 401


async def settle() -> None:
    """Let every task that can run, run (no timer involved: nothing here sleeps)."""
    for _ in range(50):
        await asyncio.sleep(0)


class CountingKeys:
    """A key repository over a real one that counts lookups and can hold them until released."""

    def __init__(self, repo: KeyRepository) -> None:
        self.repo = repo
        self.lookups = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def get_key(self, key_id: str) -> ApiKeyRecord | None:
        self.lookups += 1
        await self.gate.wait()
        return await self.repo.get_key(key_id)

    async def revoke_key(self, key_id: str, now: datetime, *, cascade: bool = False) -> bool:
        return await self.repo.revoke_key(key_id, now, cascade=cascade)


async def test_requests_share_one_lookup_and_a_busy_key_is_refreshed_without_waiting(api: Api) -> None:
    _, token = await api.runtime.keys.create("dave", "files:read")
    key_id = token.split("_")[1]
    counting, clock = CountingKeys(api.runtime.metadata.keys), Clock()
    cache = CachedKeys(counting, clock=clock)  # type: ignore[arg-type]  # the two methods used here

    # Sixteen requests for a key nobody has looked up yet: one lookup, which they all wait for.
    counting.gate.clear()
    waiting = [asyncio.ensure_future(cache.get_key(key_id)) for _ in range(16)]
    await settle()
    assert counting.lookups == 1 and not any(w.done() for w in waiting)
    counting.gate.set()
    assert all(record is not None and record.owner == "dave" for record in await asyncio.gather(*waiting))

    # Half a lifetime later: answered from the entry at once while one refresh runs behind it.
    clock.now += 0.6
    counting.gate.clear()
    for _ in range(5):
        found = await cache.get_key(key_id)
        assert found is not None and found.owner == "dave"
    await settle()
    assert counting.lookups == 2
    # Revoked meanwhile: the refresh that began before must not bring the key back.
    await cache.revoke_key(key_id, datetime.now(UTC))
    counting.gate.set()
    await settle()
    found = await cache.get_key(key_id)
    assert found is not None and found.revoked_at is not None


async def test_an_entry_a_whole_lifetime_old_is_never_used(api: Api) -> None:
    _, token = await api.runtime.keys.create("erin", "files:read")
    key_id = token.split("_")[1]
    counting, clock = CountingKeys(api.runtime.metadata.keys), Clock()
    cache = CachedKeys(counting, clock=clock)  # type: ignore[arg-type]
    assert await cache.get_key(key_id) is not None
    # Another node revokes it; this node's entry (no request came to refresh it) runs out.
    await api.runtime.metadata.keys.revoke_key(key_id, datetime.now(UTC))
    clock.now += 1.0
    found = await cache.get_key(key_id)
    assert found is not None and found.revoked_at is not None and counting.lookups == 2


class LateAnswers:
    """A key repository whose lookups read at once but answer only when released (a database
    that is slow to answer, or a saturated event loop)."""

    def __init__(self, repo: KeyRepository) -> None:
        self.repo = repo
        self.gate = asyncio.Event()
        self.read = asyncio.Event()  # set once a lookup has read (its answer still held back)

    async def get_key(self, key_id: str) -> ApiKeyRecord | None:
        record = await self.repo.get_key(key_id)
        self.read.set()
        await self.gate.wait()
        return record


async def test_a_request_never_takes_the_answer_of_a_lookup_begun_a_lifetime_before(api: Api) -> None:
    """A request that found a lookup of its key under way waited for that lookup's answer however
    old the lookup was: with the answer late by more than a second, a key revoked on another node
    after the lookup read it was still accepted more than a second after its revocation."""
    _, token = await api.runtime.keys.create("frank", "files:read")
    key_id = token.split("_")[1]
    late, clock = LateAnswers(api.runtime.metadata.keys), Clock()
    cache = CachedKeys(late, clock=clock)  # type: ignore[arg-type]  # the one method used here
    first = asyncio.ensure_future(cache.get_key(key_id))  # reads the live key, answers late
    await late.read.wait()  # read before the revocation (a loop turn or two was not always enough)
    await api.runtime.metadata.keys.revoke_key(key_id, datetime.now(UTC))  # on another node
    clock.now += 1.5
    second = asyncio.ensure_future(cache.get_key(key_id))
    await settle()
    late.gate.set()
    old, new = await asyncio.gather(first, second)
    assert old is not None and old.revoked_at is None  # the first request began before the revocation
    assert new is not None and new.revoked_at is not None
    found = await cache.get_key(key_id)  # the late answer did not replace the newer one
    assert found is not None and found.revoked_at is not None
