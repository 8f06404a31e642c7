"""The media repository port's contract, run against every backend in ``conftest.REPOSITORY_BACKENDS``."""

from __future__ import annotations

from datetime import UTC, datetime

from chunkd.domain.events import Event, EventType
from chunkd.domain.media import MediaType
from chunkd.ports.metadata import MetadataStore
from chunkd.ports.webhooks import Endpoint
from tests.support.uploads import make_upload

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


async def test_add_is_once_per_upload_with_its_event(metadata: MetadataStore) -> None:
    upload = make_upload(10, 10, owner="alice")
    await metadata.uploads.create(upload)
    await metadata.webhooks.add_endpoint(Endpoint("we_1", "alice", "https://x.test/", "s", None, T0, None, None))
    event = Event.for_upload(EventType.MEDIA_PUBLISHED, upload, T0)
    fields = {"upload_id": upload.id, "owner": "alice", "width": 3, "height": 4, "order": 0, "added_at": T0}
    record = await metadata.media.add(type=MediaType.IMAGE, mime_type="image/png", event=event, **fields)
    assert (record.upload_id, record.type, record.width, record.height, record.mime_type) == (
        upload.id,
        MediaType.IMAGE,
        3,
        4,
        "image/png",
    )
    again = await metadata.media.add(
        type=MediaType.DOC, event=Event.for_upload(EventType.MEDIA_PUBLISHED, upload, T0), **fields
    )
    assert again == record  # the first one wins; no second event
    assert (await metadata.webhooks.dispatch(T0, 10)).events == 1
    claimed = await metadata.webhooks.claim(T0, T0, 10)
    assert [c.payload["data"]["media"]["id"] for c in claimed] == [record.id]


async def test_get_is_scoped_and_ids_are_never_reused(metadata: MetadataStore) -> None:
    media = metadata.media
    first_upload, second_upload = make_upload(10, 10, owner="alice"), make_upload(10, 10, owner="alice")
    for upload in (first_upload, second_upload):
        await metadata.uploads.create(upload)
    first = await media.add(
        upload_id=first_upload.id, owner="alice", type=MediaType.DOC, width=None, height=None, order=0, added_at=T0
    )
    assert await media.get(first.id, "alice") == first
    assert await media.get(first.id, None) == first
    assert await media.get(first.id, "bob") is None
    assert await media.by_upload(first_upload.id) == first
    await media.delete(first.id)
    assert await media.get(first.id, None) is None and await media.by_upload(first_upload.id) is None
    second = await media.add(
        upload_id=second_upload.id, owner="alice", type=MediaType.DOC, width=None, height=None, order=0, added_at=T0
    )
    assert second.id > first.id
