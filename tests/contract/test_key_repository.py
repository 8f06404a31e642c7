"""The key repository port's contract, run against every backend in ``conftest.REPOSITORY_BACKENDS``."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from chunkd.ports.keys import ApiKeyRecord
from chunkd.ports.links import UploadLinkRecord
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


async def test_revoking_a_key_revokes_the_links_made_with_it(metadata: MetadataStore) -> None:
    """In the same call (one transaction): the links bound to the key, and no other, get its
    ``revoked_at``; a link already revoked keeps its own time."""
    await metadata.keys.add_key(key("k1"))
    made = UploadLinkRecord("l1", "alice", "hash-l1", T0, T0 + timedelta(hours=1), key_id="k1")
    await metadata.links.add_link(made)
    await metadata.links.add_link(replace(made, id="l2", key_id="k2"))
    await metadata.links.add_link(replace(made, id="l3", key_id=None))
    await metadata.links.add_link(replace(made, id="l4"))
    assert await metadata.links.revoke_link("l4", "alice", T0)
    later = T0 + timedelta(minutes=5)
    assert await metadata.keys.revoke_key("k1", later) is True
    revoked = {i: (await metadata.links.get_link(i)) for i in ("l1", "l2", "l3", "l4")}
    assert {i: r.revoked_at if r else "missing" for i, r in revoked.items()} == {
        "l1": later,
        "l2": None,
        "l3": None,
        "l4": T0,
    }


async def test_a_cascading_revocation_takes_every_key_made_from_the_key(metadata: MetadataStore) -> None:
    """The keys a key made, theirs, and so on, with their links; not its maker, nor a sibling's
    line, nor a key already revoked (its own time kept)."""
    made_by = {"k2": "k1", "k3": "k2", "k4": "k3", "k5": "k0", "k6": "k2"}
    await metadata.keys.add_key(key("k0"))
    await metadata.keys.add_key(replace(key("k1"), created_by="k0"))
    for made, maker in made_by.items():
        await metadata.keys.add_key(replace(key(made), created_by=maker))
    assert (await metadata.keys.get_key("k3")) == replace(key("k3"), created_by="k2")  # round-trips
    earlier, later = T0 + timedelta(minutes=1), T0 + timedelta(minutes=5)
    assert await metadata.keys.revoke_key("k6", earlier) is True
    await metadata.links.add_link(UploadLinkRecord("l4", "alice", "hash-l4", T0, T0 + timedelta(hours=1), key_id="k4"))
    assert await metadata.keys.revoke_key("k1", later, cascade=True) is True
    revoked = {k.id: k.revoked_at for k in await metadata.keys.list_keys()}
    assert revoked == {"k0": None, "k1": later, "k2": later, "k3": later, "k4": later, "k5": None, "k6": earlier}
    link = await metadata.links.get_link("l4")
    assert link is not None and link.revoked_at == later
    # Without cascade, only the key itself.
    await metadata.keys.add_key(replace(key("k7"), created_by="k5"))
    assert await metadata.keys.revoke_key("k5", later) is True
    assert (await metadata.keys.get_key("k7")).revoked_at is None  # type: ignore[union-attr]
