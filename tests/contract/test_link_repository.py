"""The upload-link repository port's contract, run against every backend in
``conftest.REPOSITORY_BACKENDS``."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from chunkd.ports.links import UploadLinkRecord
from chunkd.ports.metadata import MetadataStore

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def link(link_id: str, owner: str = "alice", **fields: object) -> UploadLinkRecord:
    made = UploadLinkRecord(link_id, owner, "hash-" + link_id, T0, T0 + timedelta(hours=1))
    return replace(made, **fields)  # type: ignore[arg-type]


async def test_round_trip_scoping_and_listing(metadata: MetadataStore) -> None:
    links = metadata.links
    full = link("l1", max_bytes=10, max_files=2, allowed_mime_types=("image/*", "text/plain"), note="für dich")
    await links.add_link(full)
    await links.add_link(link("l2", created_at=T0 + timedelta(seconds=1)))
    await links.add_link(link("l3", "bob"))
    assert await links.get_link("l1") == full
    assert await links.get_link("l1", "alice") == full
    assert await links.get_link("l1", "bob") is None  # another owner's is missing
    assert [r.id for r in await links.list_links("alice", 10)] == ["l2", "l1"]  # newest first
    assert [r.id for r in await links.list_links("alice", 1)] == ["l2"]


async def test_revoke_only_the_owners_link_once(metadata: MetadataStore) -> None:
    links = metadata.links
    await links.add_link(link("l1"))
    assert await links.revoke_link("l1", "bob", T0) is False
    assert await links.revoke_link("l1", "alice", T0) is True
    assert await links.revoke_link("l1", "alice", T0 + timedelta(seconds=5)) is True  # still revoked, kept
    found = await links.get_link("l1")
    assert found is not None and found.revoked_at == T0


async def test_reserve_holds_the_limits_and_release_undoes(metadata: MetadataStore) -> None:
    links = metadata.links
    await links.add_link(link("l1", max_files=2, max_bytes=100))
    now = T0 + timedelta(minutes=1)
    assert await links.reserve("l1", 60, now) is True
    assert await links.reserve("l1", 50, now) is False  # past max_bytes
    assert await links.reserve("l1", 40, now) is True
    assert await links.reserve("l1", 0, now) is False  # past max_files
    await links.release("l1", 40)
    found = await links.get_link("l1")
    assert found is not None and (found.files_uploaded, found.bytes_uploaded) == (1, 60)
    assert await links.reserve("l1", 1, T0 + timedelta(hours=2)) is False  # expired
    await links.revoke_link("l1", "alice", now)
    assert await links.reserve("l1", 1, now) is False  # revoked


async def test_concurrent_reservations_never_pass_the_limit(metadata: MetadataStore) -> None:
    links = metadata.links
    await links.add_link(link("l1", max_files=3))
    granted = await asyncio.gather(*(links.reserve("l1", 1, T0) for _ in range(10)))
    assert granted.count(True) == 3
