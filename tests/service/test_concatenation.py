"""service.concatenate: a new completed upload made of other uploads' parts."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import AsyncIterator

import pytest

from chunkd.domain import errors as e
from chunkd.domain.metadata import CONCATENATION_SOURCE
from chunkd.domain.upload import Mode, Status
from tests.conftest import Api


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def finished(api: Api, owner: str, data: bytes, pieces: int = 1) -> str:
    service = api.runtime.uploads
    upload = await service.create(owner, filename="p", size_bytes=len(data), mode=Mode.APPEND, frontend="test")
    step = -(-len(data) // pieces) if data else 1
    for start in range(0, len(data), step):
        await service.append(owner, upload.id, start, body(data[start : start + step]))
    await service.complete(owner, upload.id)
    return upload.id


async def test_concatenate_links_and_hashes(api: Api) -> None:
    service = api.runtime.uploads
    chunks = [os.urandom(30_000), b"", os.urandom(7)]
    ids = [await finished(api, "alice", chunk, pieces=3) for chunk in chunks]
    final = await service.concatenate("alice", ids, filename="all.bin", frontend="test", metadata={"k": 1})
    data = b"".join(chunks)
    assert final.status is Status.COMPLETED and final.size_bytes == len(data)
    assert final.md5 == hashlib.md5(data).hexdigest()
    assert final.metadata == {"k": 1} and final.filename == "all.bin"
    got = await service.get("alice", final.id)
    # Appends grow one part per source (three appends each); each source part is linked, in order.
    assert [p.offset for p in got.sorted_parts()] == [0, 30_000]
    assert got.crc64 is not None
    assert b"".join([c async for c in service.read(got, 5, len(data))]) == data[5:]
    for source in ids:  # the sources are untouched
        assert (await service.get("alice", source)).status is Status.COMPLETED


async def test_concatenate_validates_its_sources(api: Api) -> None:
    service = api.runtime.uploads
    done = await finished(api, "alice", b"abc")
    pending = await service.create("alice", filename="p", size_bytes=3, mode=Mode.APPEND, frontend="test")
    bobs = await finished(api, "bob", b"abc")
    with pytest.raises(e.InvalidInput):
        await service.concatenate("alice", [], filename="x")
    with pytest.raises(e.InvalidState):
        await service.concatenate("alice", [done, pending.id], filename="x")
    with pytest.raises(e.NotFound):
        await service.concatenate("alice", [done, bobs], filename="x")
    assert [u.id for u in await service.list_uploads("alice")] == [pending.id, done]  # nothing half-made left


class _RefuseFinals:
    """Pre-finish hook refusing any upload that is a concatenation (its sources pass)."""

    async def pre_create(self, upload: object) -> None:
        return None

    async def pre_finish(self, upload: object) -> None:
        from chunkd.domain.upload import Upload

        assert isinstance(upload, Upload)
        if upload.filename == "all.bin":
            raise e.ContentRefused("not wanted", field="body")

    async def pre_download(self, upload: object) -> None:
        return None


async def test_a_refused_concatenation_leaves_nothing_or_ends_clearly(api: Api) -> None:
    """A pre-finish refusal of a concatenation of finished uploads is the caller's error and leaves
    no upload; one of a waiting concatenation cancels it with the reason (nothing hangs)."""
    service = api.runtime.uploads
    service.hooks = _RefuseFinals()
    done = await finished(api, "alice", b"abc")
    before = len(await service.list_uploads("alice"))
    with pytest.raises(e.ContentRefused):
        await service.concatenate("alice", [done], filename="all.bin")
    assert len(await service.list_uploads("alice")) == before

    running = await service.create(
        "alice",
        filename="p",
        size_bytes=3,
        mode=Mode.APPEND,
        frontend="test",
        metadata={CONCATENATION_SOURCE: True},
    )
    waiting = await service.concatenate("alice", [done, running.id], filename="all.bin", unfinished=True)
    assert waiting.status is Status.PENDING
    await service.append("alice", running.id, 0, body(b"def"), finish=True)  # ends the source: settles the final
    final = await service.get("alice", waiting.id)
    assert final.status is Status.CANCELLED and not final.parts
    assert "refused" in final.metadata["concatenation"]["failed"]


async def test_an_unfinished_source_must_be_one_made_for_it(api: Api) -> None:
    service = api.runtime.uploads
    done = await finished(api, "alice", b"abc")
    plain = await service.create("alice", filename="p", size_bytes=3, mode=Mode.APPEND, frontend="test")
    with pytest.raises(e.InvalidState):
        await service.concatenate("alice", [done, plain.id], filename="x", unfinished=True)
    assert (await service.get("alice", plain.id)).status is Status.PENDING


async def test_a_concatenation_removed_before_its_source_ended_is_no_failure(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A source ends (a tus DELETE of a partial) just as the concatenation waiting on it is removed
    (its own creation met that end and gave up): nothing is left to settle, and nothing is logged
    as a failure (it was a warning with a traceback, every time a client raced so)."""
    service = api.runtime.uploads
    source = await service.create(
        "alice", filename="p", size_bytes=3, mode=Mode.APPEND, frontend="test", metadata={CONCATENATION_SOURCE: True}
    )
    final = await service.concatenate("alice", [source.id], filename="x", unfinished=True)
    found = service._waiting_on

    async def found_then_removed(ended: object) -> list[str]:
        waiting = await found(ended)  # type: ignore[arg-type]
        for upload_id in waiting:
            await service.delete("alice", upload_id)
        return waiting

    monkeypatch.setattr(service, "_waiting_on", found_then_removed)
    with caplog.at_level(logging.WARNING, logger="chunkd"):
        await service.delete("alice", source.id)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    with pytest.raises(e.NotFound):
        await service.get("alice", final.id)
