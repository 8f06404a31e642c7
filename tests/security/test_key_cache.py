"""Verified keys are cached for at most a second: a revoked key stops working at once on the node
that revoked it, and on every other node sharing the database once its cache entry is a second old."""

from __future__ import annotations

from chunkd.auth.key_cache import CachedKeys
from chunkd.auth.keys import KeyService
from chunkd.domain.errors import Unauthenticated
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


async def test_revoked_key_through_the_api_fails_at_once(api: Api) -> None:
    admin_key = (await api.runtime.keys.create("alice", "files:read,keys:admin"))[1]
    _, victim = await api.runtime.keys.create("alice", "files:read")
    headers = {"Authorization": f"Bearer {victim}"}
    assert (await api.client.get("/v1/files", headers=headers)).status_code == 200
    key_id = victim.split("_")[1]
    revoked = await api.client.delete(f"/v1/keys/{key_id}", headers={"Authorization": f"Bearer {admin_key}"})
    assert revoked.status_code in (200, 204), revoked.text
    assert (await api.client.get("/v1/files", headers=headers)).status_code == 401
