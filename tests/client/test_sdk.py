"""The SDK through the real app: uploads in parallel parts with Content-MD5, resume from the state
file or an explicit id (only missing parts sent), pagination, typed errors, retries, downloads that
resume with Range and verify the MD5."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chunkd.client import (
    AsyncClient,
    AuthenticationError,
    ChecksumMismatch,
    Conflict,
    File,
    IntegrityError,
    NotFound,
    PermissionDenied,
    RetryNotice,
    ServerError,
)
from chunkd.client._core import Tracker
from chunkd.client.source import Source
from chunkd.client.state import LocalFile, UploadState
from chunkd.domain.errors import Busy as DomainBusy
from chunkd.domain.upload import Upload
from tests.client.conftest import FAST_RETRIES, Sdk

PART = 1000


async def test_upload_sends_parts_in_parallel_with_content_md5_and_completes_with_the_file_md5(sdk: Sdk) -> None:
    data = os.urandom(10 * PART + 17)
    seen_progress: list[tuple[int, int]] = []
    async with sdk.client() as client:
        file = await client.upload(
            io.BytesIO(data),
            filename="clip.mp4",
            part_size=PART,
            parallel=3,
            on_progress=lambda done, total: seen_progress.append((done, total)),
        )
    assert isinstance(file, File)
    assert (file.status, file.filename, file.size_bytes) == ("COMPLETED", "clip.mp4", len(data))
    assert file.md5 == hashlib.md5(data).hexdigest() and file.mime_type == "video/mp4"
    assert file.part_count == 11 and file.parts is not None and len(file.parts) == 11
    assert sorted(sdk.recorder.parts_sent(file.id)) == list(range(1, 12))
    for method, path, headers in sdk.recorder.seen:
        if method == "PUT":
            number = int(path.rsplit("/", 1)[1])
            part = data[(number - 1) * PART : number * PART]
            assert headers["content-md5"] == base64.b64encode(hashlib.md5(part).digest()).decode()
            assert headers["content-length"] == str(len(part))
    assert seen_progress[-1] == (len(data), len(data))
    assert max(done for done, _ in seen_progress) == len(data)


async def test_a_credential_that_may_upload_but_not_read_gets_its_completed_file(sdk: Sdk, tmp_path: Path) -> None:
    """files:create alone is all an upload needs (an upload link's token has no more): after the
    complete, the client's read of the full view is refused, and the upload used to be reported
    as failed, though the server had completed it and checked its MD5."""
    data = os.urandom(3 * PART + 5)
    _, writer = await sdk.runtime.keys.create("alice", "files:create")
    async with sdk.client(key=writer) as client:
        file = await client.upload(io.BytesIO(data), filename="w.bin", part_size=PART)
    assert file.status == "COMPLETED" and file.md5 == hashlib.md5(data).hexdigest()
    assert file.size_bytes == len(data)
    async with sdk.client() as reader:
        assert (await reader.get(file.id)).md5 == hashlib.md5(data).hexdigest()
    path = tmp_path / "w.bin"  # a path is remembered; uploaded again, it cannot be looked up: a new upload
    path.write_bytes(data)
    async with sdk.client(key=writer) as client:
        first = await client.upload(path, part_size=PART)
        again = await client.upload(path, part_size=PART)
    assert first.status == again.status == "COMPLETED"


async def test_a_path_uploaded_again_resumes_its_upload_and_sends_only_missing_parts(sdk: Sdk, tmp_path: Path) -> None:
    path = tmp_path / "movie.bin"
    data = os.urandom(6 * PART + 3)
    path.write_bytes(data)
    state = UploadState(sdk.state_dir)
    async with sdk.client() as client:
        # What a run killed after two parts leaves behind: the upload, two parts, the state entry.
        started = await client.create("movie.bin", len(data), part_size=PART)
        state.put(client.url, client.key, LocalFile.of(path), started.id)
        for number in (2, 5):
            await client._put_part(started, number, Source(path), Tracker(0, None))
        sdk.recorder.seen.clear()

        file = await client.upload(path, parallel=2)
    assert file.id == started.id and file.status == "COMPLETED"
    assert file.md5 == hashlib.md5(data).hexdigest()
    assert sorted(sdk.recorder.parts_sent(file.id)) == [1, 3, 4, 6, 7]
    assert state.get(client.url, client.key, LocalFile.of(path)) is None  # forgotten once completed
    assert stat.S_IMODE(state.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.directory.stat().st_mode) == 0o700
    assert client.key is not None and client.key.split("_", 2)[2] not in state.path.read_text()  # never the secret


async def test_a_remembered_upload_that_was_cancelled_or_deleted_starts_over(sdk: Sdk, tmp_path: Path) -> None:
    path = tmp_path / "again.bin"
    path.write_bytes(os.urandom(3 * PART))
    state = UploadState(sdk.state_dir)
    async with sdk.client() as client:
        for end in ("cancel", "delete"):
            old = await client.create("again.bin", 3 * PART, part_size=PART)
            state.put(client.url, client.key, LocalFile.of(path), old.id)
            await (client.cancel(old.id) if end == "cancel" else client.delete(old.id))
            file = await client.upload(path, part_size=PART)
            assert file.id != old.id and file.status == "COMPLETED"


async def test_a_remembered_upload_past_its_expiry_starts_over(sdk: Sdk, tmp_path: Path) -> None:
    path = tmp_path / "idle.bin"
    data = os.urandom(3 * PART)
    path.write_bytes(data)
    state = UploadState(sdk.state_dir)
    async with sdk.client() as client:
        old = await client.create("idle.bin", len(data), part_size=PART)
        await client._put_part(old, 1, Source(path), Tracker(0, None))
        state.put(client.url, client.key, LocalFile.of(path), old.id)
        later = datetime.now(UTC) + timedelta(days=30)  # idle far past CHUNKD_UPLOAD_TTL_SECONDS
        sdk.runtime.uploads.clock = lambda: later
        file = await client.upload(path)
    assert file.id != old.id and file.status == "COMPLETED" and file.md5 == hashlib.md5(data).hexdigest()
    assert state.get(client.url, client.key, LocalFile.of(path)) is None


async def test_a_changed_file_is_a_new_upload_and_its_old_one_is_cancelled(sdk: Sdk, tmp_path: Path) -> None:
    """The upload of the file as it was is cancelled: nothing resumes it any more, and it stayed
    PENDING, counted against pending quotas, until it expired."""
    path, other = tmp_path / "edited.bin", tmp_path / "other.bin"
    path.write_bytes(os.urandom(3 * PART))
    other.write_bytes(os.urandom(3 * PART))
    state = UploadState(sdk.state_dir)
    async with sdk.client() as client:
        old = await client.create("edited.bin", 3 * PART, part_size=PART)
        state.put(client.url, client.key, LocalFile.of(path), old.id)
        unrelated = await client.create("other.bin", 3 * PART, part_size=PART)
        state.put(client.url, client.key, LocalFile.of(other), unrelated.id)
        os.utime(path, ns=(0, 1_000_000_000))  # same size, another mtime
        file = await client.upload(path, part_size=PART)
        assert file.id != old.id and file.status == "COMPLETED"
        assert (await client.get(old.id)).status == "CANCELLED"
        assert (await client.get(unrelated.id)).status == "PENDING"  # another path's: kept, and resumable
        assert state.get(client.url, client.key, LocalFile.of(other)) == unrelated.id


async def test_a_file_edited_in_place_with_its_size_and_mtime_kept_is_sent_again(sdk: Sdk, tmp_path: Path) -> None:
    # Its remembered upload holds parts of the old content: resuming onto them failed at complete
    # with checksum_mismatch at every run, and the upload stayed stuck.
    path = tmp_path / "kept.bin"
    before, after = os.urandom(3 * PART), os.urandom(3 * PART)
    path.write_bytes(before)
    stamp = path.stat()
    state = UploadState(sdk.state_dir)
    async with sdk.client() as client:
        old = await client.create("kept.bin", len(before), part_size=PART)
        for number in (1, 2):
            await client._put_part(old, number, Source(path), Tracker(0, None))
        state.put(client.url, client.key, LocalFile.of(path), old.id)
        path.write_bytes(after)
        os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        sdk.recorder.seen.clear()
        file = await client.upload(path)
    assert (file.id, file.status, file.md5) == (old.id, "COMPLETED", hashlib.md5(after).hexdigest())
    assert sorted(sdk.recorder.parts_sent(file.id)) == [1, 2, 3, 3]
    assert state.get(client.url, client.key, LocalFile.of(path)) is None


async def test_a_path_whose_name_is_not_utf8_uploads_and_resumes(sdk: Sdk, tmp_path: Path) -> None:
    """A name made on a Latin-1 system ('café' as b'caf\\xe9'): Python holds it with a surrogate,
    which neither the state file's key nor the create's JSON could encode; every upload failed."""
    path = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.bin")
    data = os.urandom(3 * PART)
    Path(path).write_bytes(data)
    state = UploadState(sdk.state_dir)
    async with sdk.client() as client:
        started = await client.create("café.bin", len(data), part_size=PART)
        state.put(client.url, client.key, LocalFile.of(path), started.id)
        await client._put_part(started, 2, Source(path), Tracker(0, None))
        sdk.recorder.seen.clear()
        resumed = await client.upload(path)
        fresh = await client.upload(path, part_size=PART)
    assert (resumed.id, resumed.status, resumed.md5) == (started.id, "COMPLETED", hashlib.md5(data).hexdigest())
    assert sorted(sdk.recorder.parts_sent(started.id)) == [1, 3]
    assert (fresh.filename, fresh.status, fresh.md5) == ("caf\ufffd.bin", "COMPLETED", resumed.md5)


async def test_a_remembered_upload_completed_with_other_bytes_is_not_taken_for_the_file(
    sdk: Sdk, tmp_path: Path
) -> None:
    """A run stopped between *complete* and forgetting its entry leaves a COMPLETED upload behind; the
    file edited since with its size and mtime kept was reported uploaded, as that upload's id and MD5."""
    path = tmp_path / "done.bin"
    before, after = os.urandom(3 * PART), os.urandom(3 * PART)
    path.write_bytes(after)
    state = UploadState(sdk.state_dir)
    async with sdk.client() as client:
        old = await client.create("done.bin", len(before), part_size=PART)
        await client.resume(old.id, io.BytesIO(before))
        state.put(client.url, client.key, LocalFile.of(path), old.id)
        file = await client.upload(path)
        assert (file.status, file.md5) == ("COMPLETED", hashlib.md5(after).hexdigest()) and file.id != old.id
        state.put(client.url, client.key, LocalFile.of(path), file.id)  # the same bytes: taken as they are
        sdk.recorder.seen.clear()
        assert (await client.upload(path)).id == file.id and not sdk.recorder.parts_sent(file.id)


async def test_resume_by_id_sends_only_what_the_server_lacks(sdk: Sdk) -> None:
    data = os.urandom(4 * PART + 1)
    async with sdk.client() as client:
        started = await client.create("x.bin", len(data), part_size=PART)
        await client._put_part(started, 1, Source(io.BytesIO(data)), Tracker(0, None))
        sdk.recorder.seen.clear()
        file = await client.resume(started.id, io.BytesIO(data))
        assert file.status == "COMPLETED" and file.md5 == hashlib.md5(data).hexdigest()
        assert sorted(sdk.recorder.parts_sent(file.id)) == [2, 3, 4, 5]
        with pytest.raises(Conflict) as raised:
            await client.resume(started.id, io.BytesIO(data))
        assert raised.value.code == "invalid_state"


async def test_list_follows_next_cursor(sdk: Sdk) -> None:
    async with sdk.client(remember=False) as client:
        ids = [(await client.upload(io.BytesIO(b"%d" % i), filename=f"{i}.txt")).id for i in range(5)]
        listed = [f.id async for f in client.list(page_size=2)]
        assert listed == ids[::-1]
        page = await client.list_page(limit=2)
        assert len(page.files) == 2 and page.next_cursor
        pending = await client.create("p.bin", 10)
        assert [f.id async for f in client.list(status="PENDING")] == [pending.id]


async def test_errors_are_typed_and_carry_the_api_code(sdk: Sdk) -> None:
    async with sdk.client() as client:
        with pytest.raises(NotFound) as missing:
            await client.get("AAAAAAAAAAAAAAAAAAAAAA")
        assert (missing.value.status, missing.value.code) == (404, "not_found")

        file = await client.create("c.bin", 3)
        await client._put_part(file, 1, Source(io.BytesIO(b"abc")), Tracker(0, None))
        with pytest.raises(ChecksumMismatch) as mismatch:
            await client.complete(file.id, "0" * 32)
        assert (mismatch.value.code, mismatch.value.field, mismatch.value.status) == ("checksum_mismatch", "md5", 400)

    async with sdk.client(key="ck_0123456789abcdef_" + "x" * 43) as stranger:
        with pytest.raises(AuthenticationError) as refused:
            await stranger.get(file.id)
        assert refused.value.code == "unauthenticated"
    async with sdk.client("reader") as reader:
        with pytest.raises(PermissionDenied) as denied:
            await reader.upload(io.BytesIO(b"x"))
        assert denied.value.code == "missing_scope"


async def test_5xx_and_429_are_retried_honouring_retry_after(sdk: Sdk) -> None:
    data = os.urandom(3 * PART)
    sdk.recorder.failures, sdk.recorder.fail_when = [503, 429, 502], "/parts/2"
    notices: list[RetryNotice] = []
    async with sdk.client(remember=False) as client:
        client.on_retry = notices.append
        file = await client.upload(io.BytesIO(data), part_size=PART, parallel=1)
    assert file.md5 == hashlib.md5(data).hexdigest()
    assert [(n.method, n.attempt, n.reason) for n in notices] == [
        ("PUT", 1, "HTTP 503 unavailable"),
        ("PUT", 2, "HTTP 429 unavailable"),
        ("PUT", 3, "HTTP 502 unavailable"),
    ]
    assert notices[0].url.endswith(f"/v1/files/{file.id}/parts/2")
    assert sorted(sdk.recorder.parts_sent(file.id)) == [1, 2, 2, 2, 2, 3]

    sdk.recorder.failures, sdk.recorder.fail_when = [503] * 4, "GET /v1/files/"
    async with sdk.client(remember=False) as client:
        with pytest.raises(ServerError) as failed:
            await client.get(file.id)
    assert failed.value.status == 503 and failed.value.code == "unavailable"


async def test_download_resumes_from_a_partial_file_and_verifies_the_md5(sdk: Sdk, tmp_path: Path) -> None:
    data = os.urandom(5 * PART + 11)
    async with sdk.client(remember=False) as client:
        file = await client.upload(io.BytesIO(data), filename="report.pdf", part_size=PART)
        target = await client.download(file.id, tmp_path)
        assert target == tmp_path / "report.pdf" and target.read_bytes() == data

        partial = tmp_path / f".copy.pdf.{file.id}.part"
        partial.write_bytes(data[:2000])
        sdk.recorder.seen.clear()
        copy = await client.download(file.id, tmp_path / "copy.pdf")
        assert copy.read_bytes() == data and not partial.exists()
        ranges = [h.get("range") for m, p, h in sdk.recorder.seen if p.endswith("/content")]
        assert ranges == ["bytes=2000-"]

        partial.write_bytes(b"not the file")  # a partial that does not belong: caught by the MD5
        with pytest.raises(IntegrityError):
            await client.download(file.id, tmp_path / "copy.pdf")
        assert not partial.exists()
        assert (await client.download(file.id, tmp_path / "copy.pdf")).read_bytes() == data


async def test_a_file_whose_name_is_near_the_limit_downloads(sdk: Sdk, tmp_path: Path) -> None:
    """The server keeps names of up to 255 bytes; the hidden ``.NAME.ID.part`` beside the target
    added 29 to them, and a name of more than 226 bytes could not be downloaded at all (ENAMETOOLONG)."""
    name = "é" * 120 + ".bin"  # 244 bytes
    data = os.urandom(3 * PART)
    async with sdk.client(remember=False) as client:
        file = await client.upload(io.BytesIO(data), filename=name, part_size=PART)
        assert file.filename == name
        partial = tmp_path / f".{'é' * 113}.{file.id}.part"  # 255 bytes, cut on a character
        partial.write_bytes(data[:1234])
        sdk.recorder.seen.clear()
        target = await client.download(file.id, tmp_path)
        assert target == tmp_path / name and target.read_bytes() == data and not partial.exists()
        ranges = [h.get("range") for m, p, h in sdk.recorder.seen if p.endswith("/content")]
        assert ranges == ["bytes=1234-"]  # the partial kept there is found again, and continued


async def test_a_name_from_the_upload_never_replaces_a_file(sdk: Sdk, tmp_path: Path) -> None:
    """The filename is the uploader's choice (a partner's, through a link): downloaded into a
    directory, it never replaces a file there; a path the caller gives does."""
    async with sdk.client(remember=False) as client:
        file = await client.upload(io.BytesIO(b"export EVIL=1\n"), filename=".bashrc")
        home = tmp_path / "home"
        home.mkdir()
        mine = home / ".bashrc"
        mine.write_bytes(b"my shell settings\n")
        with pytest.raises(FileExistsError):
            await client.download(file.id, home)
        assert mine.read_bytes() == b"my shell settings\n"
        assert [p.name for p in home.iterdir()] == [".bashrc"]  # nothing fetched, no partial left
        assert (await client.download(file.id, mine)).read_bytes() == b"export EVIL=1\n"


async def test_a_create_whose_answer_was_lost_makes_one_upload(sdk: Sdk) -> None:
    """The server made the upload but its answer was lost (a proxy's 502): the retried create carries
    the same Idempotency-Key and gets that upload, so no second one waits to expire."""
    sdk.recorder.losses, sdk.recorder.lose_when = 1, "POST /v1/files"
    async with sdk.client(remember=False) as client:
        file = await client.upload(io.BytesIO(b"once"), filename="once.txt")
        listed = [f async for f in client.list()]
    assert [f.id for f in listed] == [file.id] and file.status == "COMPLETED"
    keys = [h.get("idempotency-key") for m, p, h in sdk.recorder.seen if (m, p) == ("POST", "/v1/files")]
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0]


async def test_a_delete_whose_answer_was_lost_is_done(sdk: Sdk) -> None:
    """The server deleted the file but its answer was lost (a proxy's 502): the retry's 404 was
    reported as a failure (``chunkd rm`` exit 1, 'not_found') of a delete that had been done."""
    async with sdk.client(remember=False) as client:
        file = await client.upload(io.BytesIO(b"x"), filename="d.txt")
        sdk.recorder.losses, sdk.recorder.lose_when = 1, "DELETE /v1/files"
        await client.delete(file.id)
        with pytest.raises(NotFound):
            await client.get(file.id)
        with pytest.raises(NotFound):  # a 404 at the first try is still one
            await client.delete(file.id)


async def test_pending_files_do_not_download(sdk: Sdk, tmp_path: Path) -> None:
    async with sdk.client() as client:
        file = await client.create("later.bin", 10)
        with pytest.raises(Conflict):
            await client.download(file.id, tmp_path)


async def test_a_part_that_keeps_failing_raises_its_typed_error_and_a_directory_is_refused(
    sdk: Sdk, tmp_path: Path
) -> None:
    sdk.recorder.failures, sdk.recorder.fail_when = [503] * 4, "/parts/2"
    async with sdk.client(remember=False) as client:
        with pytest.raises(ServerError) as failed:
            await client.upload(io.BytesIO(os.urandom(3 * PART)), part_size=PART)
        assert failed.value.status == 503
        before = [f.id async for f in client.list()]
        with pytest.raises(IsADirectoryError):
            await client.upload(tmp_path)
        assert [f.id async for f in client.list()] == before  # nothing created for it


class HookAwayOnce:
    """A pre-finish hook that is unreachable for its first call (the server answers 409
    hook_unavailable with Retry-After, as with CHUNKD_HOOK_FAILURE=reject), then lets it through."""

    def __init__(self) -> None:
        self.calls = 0

    async def pre_create(self, upload: Upload) -> None:
        return None

    async def pre_finish(self, upload: Upload) -> None:
        self.calls += 1
        if self.calls == 1:
            error = DomainBusy("the pre-finish hook is not available; try again later", field="hook")
            error.code = "hook_unavailable"
            raise error

    async def pre_download(self, upload: Upload) -> None:
        return None


async def test_a_hook_briefly_unavailable_is_retried_as_the_server_asks(sdk: Sdk) -> None:
    data = os.urandom(2 * PART)
    hook = HookAwayOnce()
    sdk.runtime.uploads.hooks = hook
    notices: list[RetryNotice] = []
    async with sdk.client(remember=False) as client:
        client.on_retry = notices.append
        file = await client.upload(io.BytesIO(data), part_size=PART)
    assert file.status == "COMPLETED" and file.md5 == hashlib.md5(data).hexdigest()
    assert hook.calls == 2
    assert [(n.method, n.reason) for n in notices] == [("POST", "HTTP 409 hook_unavailable")]


async def test_a_state_dir_that_cannot_be_written_costs_only_the_resuming(
    sdk: Sdk, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A read-only home, or a state path under a file: the upload goes on, with one warning.
    (tmp_path / "not-a-dir").write_text("")
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(2 * PART))
    async with AsyncClient(
        "http://testserver",
        sdk.keys["alice"],
        retry=FAST_RETRIES,
        transport=sdk.recorder,
        state_dir=tmp_path / "not-a-dir" / "chunkd",
    ) as client:
        file = await client.upload(source, part_size=PART)
    assert file.status == "COMPLETED" and file.md5 == hashlib.md5(source.read_bytes()).hexdigest()
    warnings = [r for r in caplog.records if r.name == "chunkd.client" and r.levelname == "WARNING"]
    assert len(warnings) == 1 and "an interrupted one will start over" in warnings[0].getMessage()


async def test_another_server_at_the_url_is_an_error_not_a_success() -> None:
    """A wrong CHUNKD_URL that reaches some other web server answering 200 with a page: a delete
    was reported as done, and a call whose answer must be JSON ended in a JSONDecodeError or a
    KeyError instead of the client's own error."""
    import httpx

    from chunkd.client import ClientError

    def page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, html="<html>welcome</html>")

    async with AsyncClient("http://elsewhere", "ck_x_y", transport=httpx.MockTransport(page)) as client:
        for call in (client.delete("someid"), client.get("someid"), client.list_page()):
            with pytest.raises(ClientError, match="not as a chunkd server does"):
                await call


async def test_a_fresh_access_token_of_the_same_key_resumes_what_an_earlier_one_began(sdk: Sdk, tmp_path: Path) -> None:
    path = tmp_path / "long.bin"
    data = os.urandom(4 * PART + 5)
    path.write_bytes(data)

    async def token() -> str:
        async with sdk.client() as by_key:
            answer = await by_key._http.post("/v1/auth/token")
        assert answer.status_code == 200, answer.text
        return str(answer.json()["accessToken"])

    first, later = await token(), await token()
    assert first != later
    async with sdk.client(key=first) as client:
        # What a run with the first token left when it expired: the upload, one part, the entry.
        started = await client.create("long.bin", len(data), part_size=PART)
        UploadState(sdk.state_dir).put(client.url, first, LocalFile.of(path), started.id)
        await client._put_part(started, 3, Source(path), Tracker(0, None))
    sdk.recorder.seen.clear()
    async with sdk.client(key=later) as client:
        file = await client.upload(path, parallel=2)
    assert file.id == started.id and file.md5 == hashlib.md5(data).hexdigest()
    assert sorted(sdk.recorder.parts_sent(file.id)) == [1, 2, 4, 5]


async def test_usage_counts_the_owners_pending_and_stored_bytes(sdk: Sdk, tmp_path: Path) -> None:
    async with sdk.client() as client:
        before = await client.usage()
        assert (before.pending_uploads, before.pending_bytes, before.stored_bytes) == (0, 0, 0)
        assert before.max_stored_bytes is None
        source = tmp_path / "u.bin"
        source.write_bytes(b"u" * 5000)
        await client.upload(source)
        await client.create("later.bin", 700)
        after = await client.usage()
        assert (after.pending_uploads, after.pending_bytes, after.stored_bytes) == (1, 700, 5000)
