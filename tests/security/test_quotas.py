"""Per-owner quotas and size limits: each refusal a 4xx naming the limit, before any byte is taken."""

from __future__ import annotations

import asyncio

import pytest

from chunkd.backends.blobs.local import LocalBlobStore
from chunkd.domain.upload import Upload
from tests.security.conftest import MakeApi
from tests.support.waiting import until


class HeldFinish:
    """No hooks, but the pre-finish of the uploads named waits until the test lets it go."""

    def __init__(self, held: list[str]) -> None:
        self.held = held
        self.arrived: list[str] = []
        self.release = asyncio.Event()

    async def pre_create(self, upload: Upload) -> None:
        return None

    async def pre_finish(self, upload: Upload) -> None:
        if upload.id in self.held:
            self.arrived.append(upload.id)
            await self.release.wait()

    async def pre_download(self, upload: Upload) -> None:
        return None


def _declaring_patch(auth: dict[str, str], length: int) -> dict[str, str]:
    """The headers of a tus PATCH at offset 0 that declares the upload's deferred ``length``."""
    return {
        **auth,
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": "0",
        "Upload-Length": str(length),
    }


async def _create(api, size: int, who: str = "alice"):  # type: ignore[no-untyped-def]
    return await api.client.post(
        "/v1/files", json={"filename": "q.bin", "sizeBytes": size, "partSize": 1000}, headers=api.auth(who)
    )


async def _deferred_tus_uploads(api, count: int) -> tuple[dict[str, str], list[str]]:  # type: ignore[no-untyped-def]
    """``count`` tus uploads of deferred length made by alice, and the headers that made them."""
    auth = {"Tus-Resumable": "1.0.0", **api.auth()}
    ids = []
    for _ in range(count):
        made = await api.client.post("/files", headers={**auth, "Upload-Defer-Length": "1"})
        ids.append(made.headers["location"].rsplit("/", 1)[1])
    return auth, ids


async def test_max_file_size(make_api: MakeApi) -> None:
    async with make_api(max_file_size=5000) as api:
        refused = await _create(api, 5001)
        assert refused.status_code == 413
        error = refused.json()["error"]
        assert error["limit"] == "max_file_size" and error["field"] == "sizeBytes" and error["maxSizeBytes"] == 5000
        assert (await _create(api, 5000)).status_code == 201


async def test_max_pending_uploads(make_api: MakeApi) -> None:
    async with make_api(max_pending_uploads=2) as api:
        first = (await _create(api, 10)).json()["id"]
        assert (await _create(api, 10)).status_code == 201
        refused = await _create(api, 10)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "quota_exceeded"
        assert refused.json()["error"]["limit"] == "max_pending_uploads"
        assert (await _create(api, 10, who="bob")).status_code == 201  # per owner
        await api.client.post(f"/v1/files/{first}/cancel", headers=api.auth())
        assert (await _create(api, 10)).status_code == 201  # room again


async def test_max_pending_and_stored_bytes(make_api: MakeApi) -> None:
    async with make_api(max_pending_bytes=3000, max_stored_bytes=4000) as api:
        pending = (await _create(api, 2000)).json()["id"]
        refused = await _create(api, 1001)
        assert refused.status_code == 403 and refused.json()["error"]["limit"] == "max_pending_bytes"
        await api.client.put(f"/v1/files/{pending}/parts/1", content=b"x" * 1000, headers=api.auth())
        await api.client.put(f"/v1/files/{pending}/parts/2", content=b"x" * 1000, headers=api.auth())
        assert (await api.client.post(f"/v1/files/{pending}/complete", headers=api.auth())).status_code == 200
        assert (await _create(api, 2000)).status_code == 201  # 2000 stored + 2000 pending = 4000
        stored = await _create(api, 1)
        assert stored.status_code == 403 and stored.json()["error"]["limit"] == "max_stored_bytes"
        assert "4000" in stored.json()["error"]["message"]


async def test_whole_put_longer_than_declared_is_refused_before_reading(make_api: MakeApi) -> None:
    async with make_api() as api:
        file_id = (await _create(api, 2000)).json()["id"]
        response = await api.client.put(f"/v1/files/{file_id}/content", content=b"x" * 5000, headers=api.auth())
        assert response.status_code == 400 and response.json()["error"]["field"] == "Content-Length"
        got = (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()
        assert got["bytesReceived"] == 0
        part = await api.client.put(f"/v1/files/{file_id}/parts/1", content=b"x" * 5000, headers=api.auth())
        assert part.status_code == 400 and part.json()["error"]["code"] == "part_size_mismatch"


async def test_deferred_length_uploads_count_against_byte_quotas(make_api: MakeApi) -> None:
    from chunkd.domain import errors as e
    from chunkd.domain.upload import Mode

    async def body(data: bytes):  # type: ignore[no-untyped-def]
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    async with make_api(max_pending_bytes=5000) as api:
        service = api.runtime.uploads
        upload = await service.create("alice", filename="t.bin", size_bytes=None, mode=Mode.APPEND, frontend="test")
        with pytest.raises(e.QuotaExceeded) as refused:
            await service.append("alice", upload.id, 0, body(b"x" * 8000))
        assert refused.value.details["limit"] == "max_pending_bytes"
        got = await service.get("alice", upload.id)
        assert got.bytes_received <= 5000  # what fitted is kept; reading stopped at the quota
        with pytest.raises(e.QuotaExceeded):
            await service.declare_size("alice", upload.id, 9000)
        await service.declare_size("alice", upload.id, 5000)


@pytest.mark.parametrize("limit", ["max_file_size", "max_stored_bytes"])
async def test_a_concatenation_whose_length_is_learnt_late_is_held_to_the_limits(make_api: MakeApi, limit: str) -> None:
    """A tus final made of a partial whose length was deferred has no length until the partial
    finishes. It is then held to the file size limit and the byte quotas as any declared length
    is: it used to be assembled whatever its size (a partial named three times made a final three
    times over the limit). Refused, it is cancelled with the reason, and nothing is stored for it."""
    tus = {"Tus-Resumable": "1.0.0"}
    async with make_api(**{limit: 2000}) as api:
        auth = {**tus, **api.auth()}
        created = await api.client.post(
            "/files", headers={**auth, "Upload-Defer-Length": "1", "Upload-Concat": "partial"}
        )
        partial = created.headers["location"].rsplit("/", 1)[1]
        concat = "final;" + " ".join([f"/files/{partial}"] * 3)
        waiting = await api.client.post("/files", headers={**auth, "Upload-Concat": concat})
        assert waiting.status_code == 201, waiting.text
        final_id = waiting.headers["location"].rsplit("/", 1)[1]
        patch = _declaring_patch(auth, 900)
        assert (await api.client.patch(f"/files/{partial}", content=b"x" * 900, headers=patch)).status_code == 204
        final = await api.runtime.uploads.get("alice", final_id)
        assert final.status.value == "CANCELLED" and not final.parts
        assert "refused" in final.metadata["concatenation"]["failed"]
        assert (await api.client.head(f"/files/{final_id}", headers=auth)).status_code == 410
        _, _, stored = await api.runtime.repo.usage("alice")
        assert stored == 900  # the partial alone


async def test_concatenations_learning_their_lengths_at_once_never_pass_a_byte_quota_together(
    make_api: MakeApi,
) -> None:
    """Two tus finals, each made of a partial of deferred length, learn their lengths when the
    partials finish. Each checked the quota alone and counted only once completed: with room for
    one, both were assembled when the second's check came while the first was still being
    assembled. Here the first is held in its pre-finish hook until the second has got as far, or
    been refused. The length is declared and saved in the owner's quota turn now, so the second
    sees the first's and is cancelled."""
    async with make_api(max_stored_bytes=1750) as api:  # the partials' 1,000 and room for one 500-byte final
        auth = {"Tus-Resumable": "1.0.0", **api.auth()}
        finals = []
        partials = []
        for _ in range(2):
            made = await api.client.post(
                "/files", headers={**auth, "Upload-Defer-Length": "1", "Upload-Concat": "partial"}
            )
            partial = made.headers["location"].rsplit("/", 1)[1]
            waiting = await api.client.post("/files", headers={**auth, "Upload-Concat": f"final;/files/{partial}"})
            assert waiting.status_code == 201, waiting.text
            partials.append(partial)
            finals.append(waiting.headers["location"].rsplit("/", 1)[1])
        held = HeldFinish(finals)
        api.runtime.uploads.hooks = held
        patch = _declaring_patch(auth, 500)
        first = asyncio.create_task(api.client.patch(f"/files/{partials[0]}", content=b"x" * 500, headers=patch))
        await until(lambda: len(held.arrived) == 1)
        second = asyncio.create_task(api.client.patch(f"/files/{partials[1]}", content=b"x" * 500, headers=patch))
        await until(lambda: second.done() or len(held.arrived) == 2)
        held.release.set()
        answers = await asyncio.gather(first, second)
        assert [r.status_code for r in answers] == [204, 204], [r.text for r in answers]
        states = [(await api.runtime.uploads.get("alice", f)).status.value for f in finals]
        assert states == ["COMPLETED", "CANCELLED"]
        _, _, stored = await api.runtime.repo.usage("alice")
        assert stored == 1500


async def test_a_concatenation_that_cannot_have_the_quota_turn_now_waits_instead_of_being_cancelled(
    make_api: MakeApi,
) -> None:
    """A final learning its length declares it in the owner's quota turn. When the turn could not be
    had in time (another of the owner's writes holding it), the final was cancelled for good, as if
    refused. It waits now, and a HEAD assembles it later."""
    async with make_api(max_stored_bytes=10_000, lock_timeout_seconds=1) as api:
        auth = {"Tus-Resumable": "1.0.0", **api.auth()}
        made = await api.client.post("/files", headers={**auth, "Upload-Defer-Length": "1", "Upload-Concat": "partial"})
        partial = made.headers["location"].rsplit("/", 1)[1]
        waiting = await api.client.post("/files", headers={**auth, "Upload-Concat": f"final;/files/{partial}"})
        final_id = waiting.headers["location"].rsplit("/", 1)[1]
        release, held = asyncio.Event(), asyncio.Event()
        holders: list[asyncio.Task[None]] = []

        async def hold_the_turn() -> None:
            async with api.runtime.uploads.quota_turn("alice"):
                held.set()
                await release.wait()

        class TurnTakenAtFinish(HeldFinish):
            """The partial's pre-finish has another write take the owner's turn, and keep it."""

            async def pre_finish(self, upload: Upload) -> None:
                if upload.id == partial:
                    holders.append(asyncio.create_task(hold_the_turn()))
                    await held.wait()

        api.runtime.uploads.hooks = TurnTakenAtFinish([])
        filled = await api.client.patch(f"/files/{partial}", content=b"x" * 300, headers=_declaring_patch(auth, 300))
        assert filled.status_code == 204, filled.text  # the partial is done; the final could not be assembled
        assert (await api.runtime.uploads.get("alice", final_id)).status.value == "PENDING"
        release.set()
        await holders[0]
        assert (await api.client.head(f"/files/{final_id}", headers=auth)).status_code == 200
        assert (await api.runtime.uploads.get("alice", final_id)).status.value == "COMPLETED"


async def test_a_patch_that_declares_and_fills_an_upload_finishes_it_outside_the_quota_turn(
    make_api: MakeApi,
) -> None:
    """A tus PATCH that declares a deferred length and fills the upload saves its bytes in the
    owner's quota turn. Its pre-finish hook (or virus scan of the whole file) ran in that turn too,
    so every other creation of the owner's waited for it, and got 423 after the lock timeout. The
    upload is finished once out of the turn now."""
    async with make_api(max_stored_bytes=10_000, lock_timeout_seconds=2) as api:
        auth = {"Tus-Resumable": "1.0.0", **api.auth()}
        made = await api.client.post("/files", headers={**auth, "Upload-Defer-Length": "1"})
        upload_id = made.headers["location"].rsplit("/", 1)[1]
        held = HeldFinish([upload_id])
        api.runtime.uploads.hooks = held
        patch = _declaring_patch(auth, 100)
        filling = asyncio.create_task(api.client.patch(f"/files/{upload_id}", content=b"x" * 100, headers=patch))
        await until(lambda: held.arrived)
        other = await _create(api, 100)
        assert other.status_code == 201, other.text
        held.release.set()
        assert (await filling).status_code == 204
        assert (await api.runtime.uploads.get("alice", upload_id)).status.value == "COMPLETED"
        _, held_bytes, stored = await api.runtime.repo.usage("alice")
        assert (held_bytes, stored) == (100, 100)


async def test_parallel_creations_never_pass_a_quota_together(make_api: MakeApi) -> None:
    """Each creation checks the owner's usage and then stores its row. Parallel ones each read the
    same usage and passed a quota only one of them fitted in: 20 at once against 3 pending
    uploads made 7. Now they take turns per owner, whatever the door."""
    import asyncio

    tus = {"Tus-Resumable": "1.0.0"}
    async with make_api(max_pending_uploads=3, max_pending_bytes=1000) as api:

        async def native() -> int:
            return (await _create(api, 100)).status_code

        async def tus_create() -> int:
            headers = {**tus, **api.auth(), "Upload-Length": "100", "Content-Type": "application/offset+octet-stream"}
            return (await api.client.post("/files", content=b"x" * 10, headers=headers)).status_code

        async def draft() -> int:
            headers = {**api.auth(), "Upload-Draft-Interop-Version": "8", "Upload-Complete": "?0"}
            return (await api.client.post("/files", content=b"x" * 10, headers=headers)).status_code

        statuses = await asyncio.gather(*[door() for door in (native, tus_create, draft) for _ in range(8)])
        assert sorted(set(statuses)) == [201, 403] and statuses.count(201) == 3, statuses
        pending, _, _ = await api.runtime.repo.usage("alice")
        assert pending == 3
    async with make_api(max_pending_bytes=1000) as api:  # the same database: bob has nothing yet
        statuses = await asyncio.gather(*[_create(api, 400, who="bob") for _ in range(20)])
        assert [r.status_code for r in statuses].count(201) == 2
        _, held, _ = await api.runtime.repo.usage("bob")
        assert held == 800


async def test_parts_of_an_upload_of_deferred_size_count_against_byte_quotas(make_api: MakeApi) -> None:
    """Numbered parts of an upload whose size is not declared yet (Fine Uploader chunks sent
    without qqtotalfilesize) count as they arrive, as deferred appends do: one such upload took
    eight parts of 1,000 bytes under a 5,000-byte quota, and the size declared after them (checked
    only for the bytes it added: none) let it complete."""
    from chunkd.domain import errors as e

    async def body(data: bytes):  # type: ignore[no-untyped-def]
        yield data

    async with make_api(max_pending_bytes=5000) as api:
        service = api.runtime.uploads
        upload = await service.create(
            "alice", filename="t.bin", size_bytes=None, part_size=1000, defer_size=True, strict_part_size=False
        )
        for number in range(1, 6):
            await service.put_part("alice", upload.id, number, body(b"x" * 1000))
        await service.put_part("alice", upload.id, 5, body(b"y" * 1000))  # a re-sent part takes no more room
        with pytest.raises(e.QuotaExceeded) as refused:
            await service.put_part("alice", upload.id, 6, body(b"x" * 1000))
        assert refused.value.details["limit"] == "max_pending_bytes"
        got = await service.get("alice", upload.id)
        assert (sorted(got.parts), got.bytes_received) == ([1, 2, 3, 4, 5], 5000)
        assert isinstance(service.blobs, LocalBlobStore)
        assert len(list((service.blobs.root / upload.id[:2] / upload.id).glob("*.part"))) == 5  # no blob left over
        _, held, _ = await api.runtime.repo.usage("alice")
        assert held == 5000


async def test_parallel_appends_to_deferred_uploads_never_pass_a_byte_quota_together(make_api: MakeApi) -> None:
    """Bytes of uploads whose length is deferred count as they arrive: each append read the room
    when its body began, so three in parallel (900 bytes each, 1,000 allowed) held 1,800. The room
    is read again, with the save, in the owner's quota turn: what no longer fits is refused."""
    import asyncio

    async with make_api(max_pending_bytes=1000) as api:
        auth, ids = await _deferred_tus_uploads(api, 3)
        patch = {**auth, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
        answers = await asyncio.gather(
            *[api.client.patch(f"/files/{i}", content=b"x" * 900, headers=patch) for i in ids]
        )
        assert sorted(r.status_code for r in answers) == [204, 403, 403], [r.text for r in answers]
        _, held, _ = await api.runtime.repo.usage("alice")
        assert held == 900


async def test_a_tus_creation_whose_body_passes_a_byte_quota_leaves_no_upload(make_api: MakeApi) -> None:
    """A creation with upload of deferred length whose bytes no longer fit (another upload took
    the room meanwhile) is refused with no Location: nothing is left behind for its client, who
    could never reach it, to be counted against its quotas."""
    tus = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
    async with make_api(max_pending_bytes=1000) as api:
        auth = {**tus, **api.auth()}
        taken = await api.client.post("/files", content=b"x" * 900, headers={**auth, "Upload-Defer-Length": "1"})
        assert taken.status_code == 201, taken.text
        refused = await api.client.post("/files", content=b"y" * 900, headers={**auth, "Upload-Defer-Length": "1"})
        assert refused.status_code == 403 and "location" not in refused.headers, refused.text
        pending, held, _ = await api.runtime.repo.usage("alice")
        assert (pending, held) == (1, 900)


async def test_parallel_declarations_of_deferred_lengths_never_pass_a_byte_quota_together(make_api: MakeApi) -> None:
    """A deferred length declared later counts against the byte quotas from then on. Each
    declaration read the owner's usage under its own upload's lock only, so declarations for
    several uploads (on one node or several) each saw the same room: three of 900 bytes, 1,000
    allowed, held 2,700. They take the owner's quota turn, as creations do."""
    import asyncio

    from chunkd.domain import errors as e
    from chunkd.domain.upload import Mode

    async with make_api(max_pending_bytes=1000) as api:
        service = api.runtime.uploads
        ids = [
            (await service.create("alice", filename="d.bin", size_bytes=None, mode=Mode.APPEND, frontend="test")).id
            for _ in range(3)
        ]
        results = await asyncio.gather(*[service.declare_size("alice", i, 900) for i in ids], return_exceptions=True)
        refused = [r for r in results if isinstance(r, e.QuotaExceeded)]
        assert len(refused) == 2, results
        _, held, _ = await api.runtime.repo.usage("alice")
        assert held == 900


async def test_parallel_patches_declaring_deferred_lengths_never_pass_a_byte_quota_together(make_api: MakeApi) -> None:
    """The same through tus PATCHes that declare their Upload-Length with their bytes: the room
    was read before the body, and three declarations of 900 bytes, 1,000 allowed, all saved."""
    import asyncio

    async with make_api(max_pending_bytes=1000) as api:
        auth, ids = await _deferred_tus_uploads(api, 3)
        patch = _declaring_patch(auth, 900)
        answers = await asyncio.gather(
            *[api.client.patch(f"/files/{i}", content=b"x" * 10, headers=patch) for i in ids]
        )
        assert sorted(r.status_code for r in answers) == [204, 403, 403], [r.text for r in answers]
        _, held, _ = await api.runtime.repo.usage("alice")
        assert held == 900


class FailingFinish(HeldFinish):
    """The pre-finish of the uploads named fails as a hook that is down does (fail closed), until
    the test lets it go: what a crash between the save of the bytes and the completion leaves too."""

    async def pre_finish(self, upload: Upload) -> None:
        if upload.id in self.held and not self.release.is_set():
            self.arrived.append(upload.id)
            from chunkd.domain import errors

            error = errors.Busy("the pre-finish hook is not available; try again later", field="hook")
            error.code = "hook_unavailable"
            raise error


@pytest.mark.parametrize("deferred", [True, False])
async def test_a_full_upload_left_unfinished_is_finished_by_the_head_a_client_resumes_with(
    make_api: MakeApi, deferred: bool
) -> None:
    """A PATCH that fills an upload saves its bytes, then finishes it (out of the owner's quota turn
    when it declared a deferred length: two writes). Left between the two (a crash, a hook down),
    the upload was PENDING at its full offset: a tus client resuming with HEAD read Upload-Offset
    equal to Upload-Length, took the upload for done (tus-js-client reports success and sends
    nothing more) and the file expired unfinished. The HEAD finishes it now."""
    async with make_api(max_stored_bytes=10_000) as api:
        auth = {"Tus-Resumable": "1.0.0", **api.auth()}
        length = {"Upload-Defer-Length": "1"} if deferred else {"Upload-Length": "100"}
        made = await api.client.post("/files", headers={**auth, **length})
        upload_id = made.headers["location"].rsplit("/", 1)[1]
        failing = FailingFinish([upload_id])
        api.runtime.uploads.hooks = failing
        patch = {**auth, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
        if deferred:
            patch["Upload-Length"] = "100"
        assert (await api.client.patch(f"/files/{upload_id}", content=b"x" * 100, headers=patch)).status_code == 423
        assert (await api.runtime.uploads.get("alice", upload_id)).bytes_received == 100  # saved, unfinished
        failing.release.set()  # the hook is back (or the server restarted)
        head = await api.client.head(f"/files/{upload_id}", headers=auth)
        assert head.status_code == 200 and head.headers["upload-offset"] == head.headers["upload-length"] == "100"
        assert (await api.runtime.uploads.get("alice", upload_id)).status.value == "COMPLETED"
