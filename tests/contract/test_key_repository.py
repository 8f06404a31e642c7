"""The key repository port's contract, run against every backend in ``conftest.REPOSITORY_BACKENDS``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chunkd.ports.keys import ApiKeyRecord
from chunkd.ports.metadata import MetadataStore

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def key(key_id: str, owner: str = "alice", *, created: datetime = T0, name: str | None = None) -> ApiKeyRecord:
    return ApiKeyRecord(key_id, owner, frozenset({"files:read", "files:write"}), "hash-" + key_id, created, name=name)


async def test_add_get_list_count(metadata: MetadataStore) -> None:
    keys = metadata.keys
    assert await keys.count_keys() == 0
    first, second = key("k1", name="ci"), key("k2", created=T0 + timedelta(seconds=1))
    await keys.add_key(second)
    await keys.add_key(first)
    await keys.add_key(key("k3", "bob"))
    assert await keys.get_key("k1") == first  # scopes, times (microseconds, UTC) and name round-trip
    assert await keys.get_key("missing") is None
    assert [k.id for k in await keys.list_keys("alice")] == ["k1", "k2"]  # oldest first
    assert {k.id for k in await keys.list_keys()} == {"k1", "k2", "k3"}
    assert await keys.count_keys() == 3


async def test_revoke_sets_revoked_at_once(metadata: MetadataStore) -> None:
    keys = metadata.keys
    await keys.add_key(key("k1"))
    later = T0 + timedelta(minutes=5)
    assert await keys.revoke_key("k1", later) is True
    assert await keys.revoke_key("k1", later + timedelta(minutes=1)) is False  # already revoked
    assert await keys.revoke_key("missing", later) is False
    found = await keys.get_key("k1")
    assert found is not None and found.revoked_at == later
