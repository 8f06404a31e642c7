"""``kill -9`` at each step of a tus PATCH, a native part PUT (new and replacing), a complete and a
tus concatenation (tests/support/crash.py), then a restart on the same data dir: the session is
consistent (nothing recorded beyond the durable bytes, nothing acknowledged lost, a part wholly
one copy), the client resumes from what the server reports and ends with the right file."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.crash import KillPoint, armed_server
from tests.support.files import MiB, part_etag, seeded_bytes
from tests.support.pm_forms import chunk_head, form_tail
from tests.support.postgres import PostgresServer
from tests.support.s3 import CephRgw
from tests.support.server import ChunkdServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LOCAL = "chunkd.backends.blobs.local:"
WRITER = LOCAL + "_LocalWriter."
SAVE = "chunkd.backends.repository.sqlite.uploads:SqliteUploadRepository.save"
CREATE = "chunkd.backends.repository.sqlite.uploads:SqliteUploadRepository.create"
TUS = {"Tus-Resumable": "1.0.0"}
PATCHING = {**TUS, "Content-Type": "application/offset+octet-stream"}

# The steps of a request that writes bytes: mid-body (bytes written, not durable), durable but not
# recorded, recorded but not answered.
BYTE_STEPS = [
    KillPoint(WRITER + "_write_locked"),
    KillPoint(WRITER + "_commit_locked"),
    KillPoint(SAVE, "before"),
    KillPoint(SAVE),
]


class Killed:
    """A server that dies at a kill point once armed, and the client that watches it."""

    def __init__(self, tmp_path: Path, point: KillPoint, env: dict[str, str] | None = None) -> None:
        self.server, self.armed = armed_server(tmp_path / "data", point, {"CHUNKD_FSYNC": "true", **(env or {})})
        self.server.start()
        self.key = self.server.create_key("alice")
        self.http = httpx.Client(base_url=self.server.url, headers=self.auth, timeout=60)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def dies(self, method: str, url: str, **kwargs: object) -> None:
        """Send the request the kill point cuts short, then start the server again, unarmed."""
        self.armed.touch()
        with pytest.raises(httpx.TransportError):
            self.http.request(method, url, **kwargs)  # type: ignore[arg-type]
        assert self.server.process is not None and self.server.process.wait(timeout=30) == -9
        self.server.kill()
        del self.server.env["CHUNKD_TEST_KILL_AT"]
        self.server.start()

    def gc(self) -> None:
        """``chunkd gc`` beside the restarted server, run in this process (the command's own code and
        the server's environment): a ``chunkd`` process costs a second of CPU importing the app, in
        each of these tests. It runs as a process of its own in tests/e2e/test_expiry.py."""
        from typer.testing import CliRunner

        from chunkd.cli import app

        env = {k: v for k, v in self.server.env.items() if k.startswith("CHUNKD_")}
        swept = CliRunner().invoke(app, ["gc", "--data-dir", str(self.server.data_dir), "--grace", "0"], env=env)
        assert swept.exit_code == 0, (swept.output, swept.exception)

    def close(self) -> None:
        self.http.close()
        self.server.kill()


@pytest.fixture
def killed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Killed]:
    run = Killed(tmp_path, request.param)
    try:
        yield run
    finally:
        run.close()


def on_disk(server: ChunkdServer, upload_id: str) -> int:
    return sum(f.stat().st_size for f in (server.data_dir / "blobs" / upload_id[:2] / upload_id).glob("*"))


@pytest.mark.parametrize("killed", BYTE_STEPS, ids=lambda p: p.id, indirect=True)
def test_a_tus_patch_killed_at_each_step_resumes(killed: Killed) -> None:
    data = seeded_bytes(1, 3 * MiB)
    made = killed.http.post("/files", content=data[:MiB], headers={**PATCHING, "Upload-Length": str(len(data))})
    assert made.status_code == 201, made.text
    url = "/files/" + made.headers["location"].rsplit("/", 1)[1]
    upload_id = url.rsplit("/", 1)[1]
    killed.dies("PATCH", url, content=data[MiB : 2 * MiB], headers={**PATCHING, "Upload-Offset": str(MiB)})

    offset = int(killed.http.head(url, headers=TUS).headers["upload-offset"])
    assert offset in (MiB, 2 * MiB)  # the acknowledged MiB, and the killed one only if it was recorded
    assert on_disk(killed.server, upload_id) >= offset
    rest = killed.http.patch(url, content=data[offset:], headers={**PATCHING, "Upload-Offset": str(offset)})
    assert rest.status_code == 204, rest.text
    killed.gc()
    assert killed.http.get(url).content == data
    state = killed.http.get(f"/v1/files/{upload_id}").json()
    assert (state["status"], state["md5"]) == ("COMPLETED", hashlib.md5(data).hexdigest())


@pytest.mark.parametrize("killed", BYTE_STEPS, ids=lambda p: p.id, indirect=True)
@pytest.mark.parametrize("replacing", [False, True], ids=["new-part", "replacing"])
def test_a_native_part_killed_at_each_step_resumes(killed: Killed, replacing: bool) -> None:
    old, data = seeded_bytes(2, 3 * MiB), seeded_bytes(3, 3 * MiB)
    made = killed.http.post("/v1/files", json={"filename": "a.bin", "sizeBytes": len(data), "partSize": MiB})
    file_id = made.json()["id"]
    assert killed.http.put(f"/v1/files/{file_id}/parts/1", content=data[:MiB]).status_code == 200
    if replacing:
        assert killed.http.put(f"/v1/files/{file_id}/parts/2", content=old[MiB : 2 * MiB]).status_code == 200
    killed.dies("PUT", f"/v1/files/{file_id}/parts/2", content=data[MiB : 2 * MiB])

    parts = {p["partNumber"]: p for p in killed.http.get(f"/v1/files/{file_id}").json()["parts"]}
    assert parts[1]["etag"] == part_etag(data[:MiB])  # acknowledged: intact
    copies = {part_etag(data[MiB : 2 * MiB])} | ({part_etag(old[MiB : 2 * MiB])} if replacing else set())
    assert set(parts) <= {1, 2} and (2 not in parts or parts[2]["etag"] in copies)
    assert replacing <= (2 in parts)  # a replacement never loses the part it replaces
    for number in (2, 3):
        if parts.get(number, {}).get("etag") != part_etag(data[(number - 1) * MiB : number * MiB]):
            sent = killed.http.put(
                f"/v1/files/{file_id}/parts/{number}", content=data[(number - 1) * MiB : number * MiB]
            )
            assert sent.status_code == 200, sent.text
    done = killed.http.post(f"/v1/files/{file_id}/complete", json={"md5": hashlib.md5(data).hexdigest()})
    assert done.status_code == 200, done.text
    killed.gc()
    assert killed.http.get(f"/v1/files/{file_id}/content").content == data


@pytest.mark.parametrize(
    "killed",
    [KillPoint(LOCAL + "LocalBlobStore.complete"), KillPoint(SAVE, "before"), KillPoint(SAVE)],
    ids=lambda p: p.id,
    indirect=True,
)
def test_a_complete_killed_at_each_step_is_retried_to_the_same_answer(killed: Killed) -> None:
    data = seeded_bytes(4, 2 * MiB + 5)
    made = killed.http.post("/v1/files", json={"filename": "a.bin", "sizeBytes": len(data), "partSize": MiB})
    file_id = made.json()["id"]
    for number in (1, 2, 3):
        piece = data[(number - 1) * MiB : number * MiB]
        assert killed.http.put(f"/v1/files/{file_id}/parts/{number}", content=piece).status_code == 200
    md5 = hashlib.md5(data).hexdigest()
    killed.dies("POST", f"/v1/files/{file_id}/complete", json={"md5": md5})

    assert killed.http.get(f"/v1/files/{file_id}").json()["status"] in ("PENDING", "COMPLETED")
    answers = [killed.http.post(f"/v1/files/{file_id}/complete", json={"md5": md5}) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    assert answers[0].json() == answers[1].json() and answers[0].json()["status"] == "COMPLETED"
    assert killed.http.get(f"/v1/files/{file_id}").json()["md5"] == md5
    killed.gc()
    assert killed.http.get(f"/v1/files/{file_id}/content").content == data


@pytest.mark.parametrize(
    "killed",
    [
        KillPoint(CREATE, "after", 1),  # the final's row
        KillPoint(LOCAL + "LocalBlobStore.link_part", "after", 1),
        KillPoint(LOCAL + "LocalBlobStore.link_part", "after", 2),
        KillPoint(SAVE, "before"),
        KillPoint(SAVE),
    ],
    ids=lambda p: p.id,
    indirect=True,
)
def test_a_concatenation_killed_at_each_step_is_made_again(killed: Killed) -> None:
    pieces = [seeded_bytes(5, MiB + 3), seeded_bytes(6, 2 * MiB)]
    partials = []
    for piece in pieces:
        made = killed.http.post(
            "/files", content=piece, headers={**PATCHING, "Upload-Length": str(len(piece)), "Upload-Concat": "partial"}
        )
        assert made.status_code == 201, made.text
        partials.append("/files/" + made.headers["location"].rsplit("/", 1)[1])
    final = {**TUS, "Upload-Concat": "final;" + " ".join(partials)}
    killed.dies("POST", "/files", headers=final)

    for partial, piece in zip(partials, pieces, strict=True):  # the sources are untouched
        assert killed.http.get(partial).content == piece
    made = killed.http.post("/files", headers=final)
    assert made.status_code == 201, made.text
    url = "/files/" + made.headers["location"].rsplit("/", 1)[1]
    killed.gc()
    assert killed.http.get(url).content == b"".join(pieces)
    # A final the killed request stored (its answer lost, as any creation's may be) is whole once
    # settled: completed already, or waiting, and completed when looked at (its sources are).
    listed = killed.http.get("/v1/files").json()["data"]
    left = [u["id"] for u in listed if u["id"] not in {p.rsplit("/", 1)[1] for p in partials} | {url.rsplit("/", 1)[1]}]
    assert len(left) <= 1, left
    for upload_id in left:
        assert killed.http.head(f"/files/{upload_id}", headers=TUS).headers["upload-offset"] == str(
            len(b"".join(pieces))
        )
        assert killed.http.get(f"/files/{upload_id}").content == b"".join(pieces)


@pytest.mark.parametrize("killed", [KillPoint(SAVE, "after", 1)], ids=lambda p: p.id, indirect=True)
def test_a_whole_put_killed_while_it_records_its_replacements_replaces_all_or_none(killed: Killed) -> None:
    """A whole-file PUT over parts the upload holds replaces them only once its whole body has
    arrived; killed while it records them, the upload holds the old parts or the new ones, never
    some of each (a complete without an MD5 would make a file nobody sent)."""
    old, new = seeded_bytes(7, 3 * MiB), seeded_bytes(8, 3 * MiB)
    made = killed.http.post("/v1/files", json={"filename": "a.bin", "sizeBytes": len(old), "partSize": MiB})
    file_id = made.json()["id"]
    for number in (1, 2, 3):
        piece = old[(number - 1) * MiB : number * MiB]
        assert killed.http.put(f"/v1/files/{file_id}/parts/{number}", content=piece).status_code == 200
    killed.dies("PUT", f"/v1/files/{file_id}/content", content=new)

    etags = [p["etag"] for p in killed.http.get(f"/v1/files/{file_id}").json()["parts"]]
    assert etags in [[part_etag(d[n * MiB : (n + 1) * MiB]) for n in range(3)] for d in (old, new)], etags
    done = killed.http.post(f"/v1/files/{file_id}/complete", json={})
    assert done.status_code == 200, done.text
    assert killed.http.get(f"/v1/files/{file_id}/content").content in (old, new)


PG_SAVE = "chunkd.backends.repository.postgres.uploads:PostgresUploadRepository.save"


@pytest.fixture
def remote(
    request: pytest.FixtureRequest, tmp_path: Path, pg_server: PostgresServer, ceph_rgw: CephRgw
) -> Iterator[Killed]:
    """As ``killed``, on PostgreSQL and S3 (Ceph RGW)."""
    env = {"CHUNKD_DATABASE_URL": pg_server.url(pg_server.create_database()), **ceph_rgw.env(ceph_rgw.new_bucket())}
    run = Killed(tmp_path, request.param, env)
    try:
        yield run
    finally:
        run.close()


@pytest.mark.parametrize(
    "remote",
    [KillPoint(PG_SAVE, "before"), KillPoint(PG_SAVE), KillPoint("chunkd.backends.blobs.s3:S3BlobStore.complete")],
    ids=lambda p: p.id,
    indirect=True,
)
def test_on_postgres_and_s3_a_part_and_a_complete_killed_at_each_step_resume(remote: Killed) -> None:
    """A part's request killed (its row saved or not), then the complete killed (S3's object
    made and the row not, or the row saved and the answer not sent): the part is sent again, the
    complete retried, and both give the one file."""
    data = seeded_bytes(9, 2 * MiB + 9)
    made = remote.http.post("/v1/files", json={"filename": "a.bin", "sizeBytes": len(data), "partSize": MiB})
    file_id = made.json()["id"]
    assert remote.http.put(f"/v1/files/{file_id}/parts/1", content=data[:MiB]).status_code == 200
    assert remote.http.put(f"/v1/files/{file_id}/parts/3", content=data[2 * MiB :]).status_code == 200
    md5 = hashlib.md5(data).hexdigest()
    if "complete" in remote.server.env["CHUNKD_TEST_KILL_AT"]:
        assert remote.http.put(f"/v1/files/{file_id}/parts/2", content=data[MiB : 2 * MiB]).status_code == 200
        remote.dies("POST", f"/v1/files/{file_id}/complete", json={"md5": md5})
    else:
        remote.dies("PUT", f"/v1/files/{file_id}/parts/2", content=data[MiB : 2 * MiB])
        parts = {p["partNumber"]: p["etag"] for p in remote.http.get(f"/v1/files/{file_id}").json()["parts"]}
        piece = data[MiB : 2 * MiB]
        assert parts.keys() in ({1, 3}, {1, 2, 3})
        assert parts.get(2) in (None, part_etag(piece), f'"{hashlib.md5(piece).hexdigest()}"')  # S3: parts' MD5
        if 2 not in parts:
            assert remote.http.put(f"/v1/files/{file_id}/parts/2", content=data[MiB : 2 * MiB]).status_code == 200
    answers = [remote.http.post(f"/v1/files/{file_id}/complete", json={"md5": md5}) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    assert answers[0].json() == answers[1].json()
    remote.gc()
    assert remote.http.get(f"/v1/files/{file_id}").json()["md5"] == md5
    assert remote.http.get(f"/v1/files/{file_id}/content").content == data


@pytest.mark.parametrize(
    "remote", [KillPoint(PG_SAVE, "before"), KillPoint(PG_SAVE)], ids=lambda p: p.id, indirect=True
)
def test_on_postgres_and_s3_a_tus_patch_killed_at_each_step_resumes(remote: Killed) -> None:
    data = seeded_bytes(10, 3 * MiB)
    made = remote.http.post("/files", content=data[:MiB], headers={**PATCHING, "Upload-Length": str(len(data))})
    assert made.status_code == 201, made.text
    url = "/files/" + made.headers["location"].rsplit("/", 1)[1]
    remote.dies("PATCH", url, content=data[MiB : 2 * MiB], headers={**PATCHING, "Upload-Offset": str(MiB)})
    offset = int(remote.http.head(url, headers=TUS).headers["upload-offset"])
    assert offset in (MiB, 2 * MiB)
    rest = remote.http.patch(url, content=data[offset:], headers={**PATCHING, "Upload-Offset": str(offset)})
    assert rest.status_code == 204, rest.text
    remote.gc()
    assert remote.http.get(url).content == data


PM = "/api/v2/pm/upload/"
BOUNDARY = "----qqBoundaryKill"


def pm_chunk(data: bytes, file_uuid: str, index: int) -> tuple[bytes, dict[str, str]]:
    """Fine Uploader's request for chunk ``index`` (1 MiB chunks): its body and Content-Type."""
    piece = data[index * MiB : (index + 1) * MiB]
    head = chunk_head(
        BOUNDARY,
        file_uuid,
        index=index,
        chunk_size=MiB,
        this_size=len(piece),
        total_parts=-(-len(data) // MiB),
        total_size=len(data),
    )
    return head + piece + form_tail(BOUNDARY), {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


@pytest.mark.parametrize(
    "killed",
    [KillPoint(CREATE), KillPoint(SAVE, "before"), KillPoint(SAVE), KillPoint(WRITER + "_write_locked")],
    ids=lambda p: p.id,
    indirect=True,
)
def test_a_fine_uploader_chunk_killed_at_each_step_is_sent_again(killed: Killed) -> None:
    """The chunk the kill cut off is sent again, as Fine Uploader retries it (chunk 0 too, which
    made the upload: the retry finds it by its qquuid, or makes it), and the file is whole."""
    data = seeded_bytes(11, 3 * MiB - 77)
    file_uuid = "6c1b2b9e-8d0c-4a43-9a55-1d3f2a5e0c11"
    first = 0 if "create" in killed.server.env["CHUNKD_TEST_KILL_AT"] else 1
    for index in range(first):
        body, headers = pm_chunk(data, file_uuid, index)
        assert killed.http.post(PM, content=body, headers=headers).status_code == 200
    body, headers = pm_chunk(data, file_uuid, first)
    killed.dies("POST", PM, content=body, headers=headers)
    for index in range(first, 3):
        body, headers = pm_chunk(data, file_uuid, index)
        sent = killed.http.post(PM, content=body, headers=headers)
        assert sent.status_code == 200 and sent.json()["success"] is True, sent.text
    done = killed.http.post(f"{PM}?done", data={"qquuid": file_uuid, "qqfilename": "a.bin"})
    assert done.status_code == 200, done.text
    killed.gc()
    assert killed.http.get(done.json()["file_url"]).content == data


@pytest.mark.parametrize("killed", [KillPoint(SAVE, "before"), KillPoint(SAVE)], ids=lambda p: p.id, indirect=True)
def test_an_ietf_draft_append_killed_at_each_step_resumes_from_the_offset_retrieved(killed: Killed) -> None:
    data = seeded_bytes(12, 3 * MiB)
    draft = {"Upload-Draft-Interop-Version": "8"}
    append = {**draft, "Content-Type": "application/partial-upload"}
    made = killed.http.post("/files", content=data[:MiB], headers={**draft, "Upload-Complete": "?0"})
    assert made.status_code == 201, made.text
    url = "/files/" + made.headers["location"].rsplit("/", 1)[1]
    killed.dies(
        "PATCH",
        url,
        content=data[MiB : 2 * MiB],
        headers={**append, "Upload-Offset": str(MiB), "Upload-Complete": "?0"},
    )
    offset = int(killed.http.head(url, headers=draft).headers["upload-offset"])
    assert offset in (MiB, 2 * MiB)
    rest = killed.http.patch(
        url, content=data[offset:], headers={**append, "Upload-Offset": str(offset), "Upload-Complete": "?1"}
    )
    assert rest.status_code in (200, 204), rest.text
    killed.gc()
    state = killed.http.get(f"/v1/files/{url.rsplit('/', 1)[1]}").json()
    assert (state["status"], state["md5"]) == ("COMPLETED", hashlib.md5(data).hexdigest())


@pytest.mark.parametrize(
    "killed", [KillPoint("chunkd.service.lifecycle:Lifecycle.complete")], ids=lambda p: p.id, indirect=True
)
def test_a_fine_uploader_done_killed_after_completing_is_retried_to_the_same_answer(killed: Killed) -> None:
    """A done completes the file, then names it: killed in between (complete, not named yet), the
    done sent again is the same request, not a rename of a finished file (it was a 409, and the file
    stayed under its chunks' name for good)."""
    data = seeded_bytes(13, 2 * MiB)
    file_uuid = "0d6c5a0e-3f0b-4b8e-9c1a-7a4f7d2e9b10"
    for index in range(2):  # the seed's example chunk: no qqfilename, no qqfiletype
        fields = {"qquuid": file_uuid, "qqpartindex": str(index), "qqtotalparts": "2", "qqchunksize": str(MiB)}
        fields |= {"qqpartbyteoffset": str(index * MiB)}
        sent = killed.http.post(PM, data=fields, files={"qqfile": ("blob", data[index * MiB : (index + 1) * MiB])})
        assert sent.status_code == 200, sent.text
    done = {"qquuid": file_uuid, "qqfilename": "report.pdf", "qqfiletype": "application/pdf", "qqtotalparts": "2"}
    killed.dies("POST", f"{PM}?done", data=done)

    again = killed.http.post(f"{PM}?done", data=done)
    assert again.status_code == 200, again.text
    info = killed.http.get(f"{PM}{file_uuid}/info").json()
    assert (info["filename"], info["mimetype"], info["status"]) == ("report.pdf", "application/pdf", "COMPLETED")
    assert killed.http.get(again.json()["file_url"]).content == data


@pytest.mark.parametrize("killed", [KillPoint(SAVE)], ids=lambda p: p.id, indirect=True)
def test_an_ietf_draft_append_reaching_the_length_killed_before_it_completes_is_completed_by_the_head(
    killed: Killed,
) -> None:
    """Up to interop 6 an append that reaches ``Upload-Length`` completes the upload, and
    tus-js-client (interop 5 and 6) sends every append with ``Upload-Complete: ?0`` and stops once
    the offset it retrieves is the length. Killed between the append's write and the completion,
    the upload was left full and unfinished (``?0``) until it expired: the HEAD finishes it."""
    data = seeded_bytes(14, 2 * MiB)
    draft = {"Upload-Draft-Interop-Version": "6"}
    made = killed.http.post(
        "/files", content=data[:MiB], headers={**draft, "Upload-Complete": "?0", "Upload-Length": str(len(data))}
    )
    assert made.status_code == 201, made.text
    url = "/files/" + made.headers["location"].rsplit("/", 1)[1]
    append = {**draft, "Content-Type": "application/partial-upload", "Upload-Complete": "?0"}
    killed.dies("PATCH", url, content=data[MiB:], headers={**append, "Upload-Offset": str(MiB)})

    head = killed.http.head(url, headers=draft)
    assert head.status_code == 204, head.text
    assert (head.headers["upload-offset"], head.headers["upload-complete"]) == (str(len(data)), "?1")
    state = killed.http.get(f"/v1/files/{url.rsplit('/', 1)[1]}").json()
    assert (state["status"], state["md5"]) == ("COMPLETED", hashlib.md5(data).hexdigest())
    assert killed.http.get(url).content == data
