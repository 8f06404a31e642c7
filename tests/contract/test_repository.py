"""The repository port's contract, run against every backend in ``conftest.REPOSITORY_BACKENDS``."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from chunkd.domain import errors as e
from chunkd.domain.checksum import ResumableMD5
from chunkd.domain.events import Event, EventType
from chunkd.domain.names import new_upload_id
from chunkd.domain.upload import Mode, Part, Status, Upload
from chunkd.ports.metadata import MetadataStore
from chunkd.ports.repository import UploadRepository
from chunkd.ports.webhooks import Endpoint
from tests.support.uploads import make_upload

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def make(
    owner: str = "alice",
    *,
    created: datetime = T0,
    status: Status = Status.PENDING,
    size: int | None = 10_000,
    expires: datetime | None = None,
    client_ref: str | None = None,
    frontend: str = "native",
    upload_id: str | None = None,
) -> Upload:
    return make_upload(
        size,
        1000,
        status=status,
        upload_id=upload_id,
        owner=owner,
        filename="ünï code.bin",
        created=created,
        expires_at=expires if expires is not None else (created + timedelta(hours=1)),
        frontend=frontend,
        client_ref=client_ref,
        hash_state=ResumableMD5().state(),
        metadata={"k": "v", "n": [1, 2]},
    )


def part(number: int, *, md5: str = "a" * 32, ref: str | None = None, state: bytes | None = None) -> Part:
    return Part(number, (number - 1) * 1000, 1000, md5, ref or f"{number}.ref", T0, state)


async def with_parts(repo: UploadRepository, upload: Upload, numbers: list[int]) -> Upload:
    await repo.create(upload)
    upload.bytes_received = 1000 * len(numbers)
    upload.parts_received = len(numbers)
    await repo.save(upload, [part(n) for n in numbers])
    return upload


async def test_create_and_get_round_trip(repo: UploadRepository) -> None:
    upload = make(client_ref="c1", frontend="tus")
    upload.declared_md5 = "b" * 32
    await repo.create(upload)
    got = await repo.get(upload.id)
    assert got is not None
    fields = [
        *("id", "owner", "filename", "mime_type", "size_bytes", "part_size", "mode", "status"),
        *("created_at", "updated_at", "expires_at", "frontend", "client_ref", "declared_md5", "completed_at"),
        *("md5", "bytes_received", "parts_received", "hash_offset", "hash_state", "metadata"),
    ]
    for name in fields:
        assert getattr(got, name) == getattr(upload, name), name
    assert got.created_at.tzinfo is not None and got.created_at.utcoffset() == timedelta(0)
    assert got.parts == {}


async def test_create_with_its_first_part_stores_both_in_one_write(metadata: MetadataStore) -> None:
    repo = metadata.uploads
    await metadata.webhooks.add_endpoint(Endpoint("we_1", "alice", "https://x.test/", None, None, T0, None, None))
    upload = make()
    created = Event.for_upload(EventType.UPLOAD_CREATED, upload, T0)
    upload.bytes_received, upload.parts_received = 1000, 1
    await repo.create(upload, [created], parts=[part(1, ref="1.first")])
    got = await repo.get(upload.id)
    assert got is not None and (got.bytes_received, got.parts_received) == (1000, 1)
    assert list(got.parts) == [1] and got.parts[1].blob_ref == "1.first"
    # Refused as a whole: neither the upload, its part nor its event is written.
    refused = make(upload_id=upload.id)
    with pytest.raises(e.Conflict):
        await repo.create(refused, [Event.for_upload(EventType.UPLOAD_CREATED, refused, T0)], parts=[part(2)])
    again = await repo.get(upload.id)
    assert again is not None and list(again.parts) == [1]
    assert (await metadata.webhooks.dispatch(T0, 10)).events == 1


async def test_get_is_scoped_by_owner(repo: UploadRepository) -> None:
    upload = make("alice")
    await repo.create(upload)
    assert await repo.get(upload.id, "bob") is None
    assert await repo.get(upload.id, "alice") is not None
    assert await repo.get(new_upload_id()) is None


async def test_get_loads_only_the_parts_asked_for(repo: UploadRepository) -> None:
    upload = await with_parts(repo, make(), [1, 2, 4, 5, 7])

    async def numbers(**kwargs: object) -> list[int]:
        got = await repo.get(upload.id, **kwargs)  # type: ignore[arg-type]
        assert got is not None
        return sorted(got.parts)

    assert await numbers() == [1, 2, 4, 5, 7]
    assert await numbers(parts_from=None) == []
    assert await numbers(parts_from=4) == [4, 5, 7]
    assert await numbers(parts_from=6, part_numbers=[1, 3]) == [1, 7]
    assert await numbers(parts_from=None, part_numbers=[2, 5, 9]) == [2, 5]
    seen: list[str] = []

    def from_row(row: Upload) -> int:
        seen.append(row.id)
        return 5

    assert await numbers(parts_from=from_row, part_numbers=[1]) == [1, 5, 7]
    assert seen == [upload.id]
    got = await repo.get(upload.id, parts_from=None)
    assert got is not None and (got.bytes_received, got.parts_received) == (5000, 5)


async def test_get_loads_many_parts_as_it_loads_a_few(repo: UploadRepository) -> None:
    """An upload with more parts than a backend reads in one go on its fast path (SQLite reads up to
    32 part rows on the event loop, more on a reader thread) loads the same way."""
    upload = make(size=100_000)
    upload = await with_parts(repo, upload, list(range(1, 41)))
    for kwargs, expected in [
        ({}, list(range(1, 41))),
        ({"parts_from": 39}, [39, 40]),
        ({"parts_from": 5, "part_numbers": [1]}, [1, *range(5, 41)]),
        ({"parts_from": None, "part_numbers": list(range(1, 45))}, list(range(1, 41))),
    ]:
        got = await repo.get(upload.id, **kwargs)  # type: ignore[arg-type]
        assert got is not None and sorted(got.parts) == expected, kwargs
        assert got.parts[expected[-1]].blob_ref == f"{expected[-1]}.ref"


async def test_save_replaces_and_removes_parts_atomically_with_the_upload(repo: UploadRepository) -> None:
    upload = await with_parts(repo, make(), [1, 2, 3])
    state = os.urandom(92)
    upload.hash_offset = 2000
    upload.hash_state = state
    upload.filename = "renamed.bin"
    await repo.save(upload, [part(2, md5="c" * 32, ref="2.new", state=state), part(4)], removed_parts=[3])
    got = await repo.get(upload.id)
    assert got is not None
    assert sorted(got.parts) == [1, 2, 4]
    assert (got.parts[2].md5, got.parts[2].blob_ref, got.parts[2].hash_state) == ("c" * 32, "2.new", state)
    assert got.parts[1].hash_state is None
    assert (got.hash_offset, got.hash_state, got.filename) == (2000, state, "renamed.bin")
    await repo.save(got)  # no parts given: parts untouched
    again = await repo.get(upload.id)
    assert again is not None and sorted(again.parts) == [1, 2, 4]


async def test_status_changes_persist(repo: UploadRepository) -> None:
    upload = await with_parts(repo, make(), [1])
    upload.mark_completed(T0 + timedelta(minutes=1), "d" * 32)
    await repo.save(upload)
    got = await repo.get(upload.id)
    assert got is not None
    assert (got.status, got.md5, got.expires_at) == (Status.COMPLETED, "d" * 32, None)
    assert got.completed_at == T0 + timedelta(minutes=1)


async def test_client_ref_is_unique_per_owner_and_frontend(repo: UploadRepository) -> None:
    first = make("alice", client_ref="qq-1", frontend="fine")
    await repo.create(first)
    with pytest.raises(e.Conflict) as caught:
        await repo.create(make("alice", client_ref="qq-1", frontend="fine"))
    assert caught.value.field == "client_ref"
    await repo.create(make("bob", client_ref="qq-1", frontend="fine"))
    await repo.create(make("alice", client_ref="qq-1", frontend="other"))
    await repo.create(make("alice"))  # many uploads without a client ref
    await repo.create(make("alice"))
    found = await repo.find_by_client_ref("alice", "fine", "qq-1")
    assert found is not None and found.id == first.id
    # Found on every chunk, so without its part rows (the counters are on the upload itself).
    first.bytes_received, first.parts_received = 1000, 1
    await repo.save(first, [part(1)])
    found = await repo.find_by_client_ref("alice", "fine", "qq-1")
    assert found is not None and found.parts == {} and (found.bytes_received, found.parts_received) == (1000, 1)
    assert await repo.find_by_client_ref("alice", "fine", "qq-2") is None
    assert await repo.find_by_client_ref("carol", "fine", "qq-1") is None


async def test_duplicate_id_is_refused(repo: UploadRepository) -> None:
    upload = make()
    await repo.create(upload)
    with pytest.raises(e.Conflict):
        await repo.create(make(upload_id=upload.id))


async def test_touch_only_moves_expiry_forward_and_only_while_pending(repo: UploadRepository) -> None:
    upload = make(expires=T0 + timedelta(hours=1))
    await repo.create(upload)

    async def expires() -> datetime | None:
        got = await repo.get(upload.id)
        assert got is not None
        return got.expires_at

    await repo.touch(upload.id, T0 + timedelta(minutes=30))
    assert await expires() == T0 + timedelta(hours=1)
    await repo.touch(upload.id, T0 + timedelta(hours=2))
    assert await expires() == T0 + timedelta(hours=2)
    upload.mark_cancelled(T0)
    await repo.save(upload)
    await repo.touch(upload.id, T0 + timedelta(hours=5))
    assert await expires() is None
    await repo.touch(new_upload_id(), T0)  # unknown id: nothing happens


async def test_list_is_newest_first_with_stable_pagination(repo: UploadRepository) -> None:
    ids_by_time: list[tuple[datetime, str]] = []
    for i in range(7):
        created = T0 + timedelta(seconds=i // 2)  # pairs share a timestamp: the id breaks ties
        upload = make("alice", created=created)
        await repo.create(upload)
        ids_by_time.append((created, upload.id))
    await repo.create(make("bob", created=T0 + timedelta(days=1)))
    expected = [i for _, i in sorted(ids_by_time, reverse=True)]
    pages: list[str] = []
    before = None
    while True:
        page = await repo.list_uploads("alice", status=None, limit=3, before=before)
        pages.extend(u.id for u in page)
        if len(page) < 3:
            break
        before = (page[-1].created_at, page[-1].id)
    assert pages == expected
    assert all(u.parts == {} for u in await repo.list_uploads("alice", status=None, limit=10, before=None))


async def test_list_filters_by_status(repo: UploadRepository) -> None:
    done = make(created=T0)
    done.status, done.expires_at = Status.COMPLETED, None
    await repo.create(done)
    pending = make(created=T0 + timedelta(seconds=1))
    await repo.create(pending)
    assert [u.id for u in await repo.list_uploads("alice", status=Status.COMPLETED, limit=10, before=None)] == [done.id]
    assert [u.id for u in await repo.list_uploads("alice", status=Status.PENDING, limit=10, before=None)] == [
        pending.id
    ]
    assert await repo.list_uploads("alice", status=Status.EXPIRED, limit=10, before=None) == []


async def test_list_expirable_and_conditional_expire(repo: UploadRepository) -> None:
    now = T0 + timedelta(hours=10)
    due_late = make(expires=now - timedelta(minutes=1))
    due_early = make(expires=now - timedelta(hours=1))
    due_early.bytes_received, due_early.parts_received = 2000, 2
    exactly = make(expires=now)
    not_yet = make(expires=now + timedelta(seconds=1))
    completed = make(expires=now - timedelta(hours=2))
    completed.status = Status.COMPLETED
    for upload in (due_late, due_early, exactly, not_yet, completed):
        await repo.create(upload)
    await repo.save(due_early, [part(1), part(2)])
    await repo.save(not_yet, [part(1)])
    assert await repo.list_expirable(now, 10) == [due_early.id, due_late.id, exactly.id]
    assert await repo.list_expirable(now, 1) == [due_early.id]
    assert await repo.expire(not_yet.id, now) is False
    assert await repo.expire(completed.id, now) is False
    # Touched after it was listed (a part arrived): no longer due, so not expired.
    await repo.touch(due_late.id, now + timedelta(hours=1))
    assert await repo.expire(due_late.id, now) is False
    assert await repo.expire(due_early.id, now) is True
    assert await repo.expire(due_early.id, now) is False  # only once
    got = await repo.get(due_early.id)
    assert got is not None and (got.status, got.expires_at, got.updated_at) == (Status.EXPIRED, None, now)
    assert got.parts == {}  # forgotten with the status change, atomically
    kept = await repo.get(not_yet.id)
    assert kept is not None and sorted(kept.parts) == [1]
    assert await repo.list_expirable(now, 10) == [exactly.id]
    still = await repo.get(completed.id)
    assert still is not None and still.status is Status.COMPLETED


async def test_usage(repo: UploadRepository) -> None:
    assert await repo.usage("alice") == (0, 0, 0)
    await repo.create(make(size=100))
    await repo.create(make(size=250))
    unsized = make(size=None)
    unsized.mode, unsized.bytes_received = Mode.APPEND, 40
    await repo.create(unsized)
    done = make(size=1000)
    done.status = Status.COMPLETED
    await repo.create(done)
    cancelled = make(size=5000)
    cancelled.status = Status.CANCELLED
    await repo.create(cancelled)
    await repo.create(make("bob", size=7))
    assert await repo.usage("alice") == (3, 390, 1000)
    assert await repo.usage("bob") == (1, 7, 0)


async def test_delete_upload_forgets_it_and_its_parts(repo: UploadRepository) -> None:
    a = await with_parts(repo, make(), [1, 2])
    b = await with_parts(repo, make(), [1])
    await repo.delete_upload(b.id)
    assert await repo.get(b.id) is None
    assert await repo.all_ids() == {a.id}
    assert b.id not in await repo.live_blobs()
    got = await repo.get(a.id)
    assert got is not None and set(got.parts) == {1, 2}
    await repo.delete_upload(b.id)  # again: no error


async def test_live_blobs_lists_what_gc_must_keep(repo: UploadRepository) -> None:
    pending = await with_parts(repo, make(), [1, 2])
    empty = make()
    await repo.create(empty)
    cancelled = await with_parts(repo, make(), [1])
    cancelled.mark_cancelled(T0)
    await repo.save(cancelled)
    assert await repo.live_blobs() == {pending.id: {"1.ref", "2.ref"}, empty.id: set()}


async def test_completed_ids_are_the_completed_uploads(repo: UploadRepository) -> None:
    done = make(status=Status.COMPLETED)
    await repo.create(done)
    await repo.create(make())
    assert await repo.completed_ids() == {done.id}


async def test_count_pending_counts_every_owner(repo: UploadRepository) -> None:
    assert await repo.count_pending() == 0
    await repo.create(make("alice"))
    await repo.create(make("bob"))
    await repo.create(make("bob", status=Status.COMPLETED))
    assert await repo.count_pending() == 2
    await repo.ping()  # answers while the database does


async def test_newest_write_is_the_latest_update_of_any_upload(repo: UploadRepository) -> None:
    assert await repo.newest_write() is None
    first, second = make("alice"), make("bob")
    await repo.create(first)
    await repo.create(second)
    second.updated_at = T0 + timedelta(hours=2)
    await repo.save(second)
    assert await repo.newest_write() == T0 + timedelta(hours=2)
    first.updated_at = T0 + timedelta(hours=3, microseconds=7)
    await repo.save(first)
    assert await repo.newest_write() == T0 + timedelta(hours=3, microseconds=7)


async def test_events_are_written_with_the_change_they_report(metadata: MetadataStore) -> None:
    repo = metadata.uploads
    await metadata.webhooks.add_endpoint(Endpoint("we_1", "alice", "https://x.test/", None, None, T0, None, None))
    upload = make()
    await repo.create(upload, [Event.for_upload(EventType.UPLOAD_CREATED, upload, T0)])
    taken = make(client_ref="same")
    await repo.create(taken)
    with pytest.raises(e.Conflict):  # a failed change writes no event either
        await repo.create(make(client_ref="same"), [Event.for_upload(EventType.UPLOAD_CREATED, taken, T0)])
    upload.mark_cancelled(T0)
    await repo.save(upload, events=[Event.for_upload(EventType.UPLOAD_CANCELLED, upload, T0)])
    await repo.delete_upload(upload.id, [Event.for_upload(EventType.UPLOAD_DELETED, upload, T0)])
    assert (await metadata.webhooks.dispatch(T0, 10)).events == 3
    claimed = await metadata.webhooks.claim(T0, T0, 10)
    assert sorted(c.payload["type"] for c in claimed) == ["upload.cancelled", "upload.created", "upload.deleted"]
