"""The private-message upload API (seeds 000 and 001), in process: the seeds' own examples, Fine
Uploader's chunk and done requests, whole small files, downloads, deletes and the error cases."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Iterable

import httpx
import pytest

from chunkd.domain.upload import PART_SIZE_FROM_PART_1, Mode
from chunkd.frontends import held
from chunkd.frontends.pm.chunks import TOTAL_PARTS
from tests.conftest import Api
from tests.support.held import Held
from tests.support.waiting import until

BOUNDARY = "----qqBoundary7MA4YWxkTrZu0gW"
CHUNK = 2000  # Fine Uploader's 2,000,000 bytes, scaled down


def _text_part(name: str, value: str) -> bytes:
    return f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()


def form(
    fields: Iterable[tuple[str, str]],
    file: bytes | None,
    *,
    file_first: bool = False,
    after: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A multipart/form-data body with fields and the qqfile part in a chosen order (as the
    browser builds it: fields first, file last; ``after`` fields follow the file)."""
    parts: list[bytes] = [_text_part(name, value) for name, value in fields]
    if file is not None:
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="qqfile"; filename="blob"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        item = head + file + b"\r\n"
        parts.insert(0, item) if file_first else parts.append(item)
    parts.extend(_text_part(name, value) for name, value in after)
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def chunk_fields(data: bytes, index: int, file_uuid: str | None, name: str = "report.pdf") -> list[tuple[str, str]]:
    start = index * CHUNK
    size = len(data[start : start + CHUNK])
    fields = [
        ("qqpartindex", str(index)),
        ("qqpartbyteoffset", str(start)),
        ("qqchunksize", str(size)),
        ("qqtotalparts", str(-(-len(data) // CHUNK))),
        ("qqtotalfilesize", str(len(data))),
        ("qqfilename", name),
    ]
    if file_uuid is not None:
        fields.insert(0, ("qquuid", file_uuid))
    return fields


async def post_form(api: Api, body: bytes, path: str = "/api/v2/pm/upload/", who: str = "alice") -> httpx.Response:
    headers = {**api.auth(who), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return await api.client.post(path, content=body, headers=headers)


async def send_chunk(api: Api, data: bytes, index: int, file_uuid: str | None, **kw: str) -> httpx.Response:
    return await post_form(api, form(chunk_fields(data, index, file_uuid), data[index * CHUNK : (index + 1) * CHUNK]))


def assert_fine_uploader_error(response: httpx.Response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and isinstance(body["error"], str) and body["error"]
    assert body["preventRetry"] is True
    if field is not None:
        assert body["field"] == field and field in body["error"]
    return body


def assert_reset(response: httpx.Response, status: int) -> dict[str, object]:
    """Fine Uploader's "start this file over from chunk 0" (and forget its resume record); retries
    allowed, since chunk 0 makes the file anew. Before, a preventRetry left the browser resuming
    the dead qquuid at every later try for the 7 days Fine Uploader keeps its record."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["reset"] is True and "preventRetry" not in body
    assert body["field"] == "qquuid" and "qquuid" in body["error"]
    return body


async def finished(api: Api, file_uuid: str, filename: str, *, query: str = "done") -> bytes:
    """Send the done request for ``file_uuid`` (it must succeed) and download the file."""
    done = await api.client.post(
        f"/api/v2/pm/upload/?{query}", data={"qquuid": file_uuid, "qqfilename": filename}, headers=api.auth()
    )
    assert done.status_code == 200, done.text
    return (await api.client.get(done.json()["file_url"], headers=api.auth())).content


async def upload_chunks(api: Api, data: bytes, file_uuid: str, order: Iterable[int] | None = None) -> None:
    count = -(-len(data) // CHUNK)
    for index in order if order is not None else range(count):
        response = await send_chunk(api, data, index, file_uuid)
        assert response.status_code == 200, response.text
        assert response.json() == {"file_uuid": file_uuid, "success": True}


async def test_chunks_then_done_url_encoded(api: Api) -> None:
    data = os.urandom(5 * CHUNK - 123)
    file_uuid = str(uuid.uuid4())
    await upload_chunks(api, data, file_uuid, order=[0, 3, 1, 4, 2])
    body = f"qquuid={file_uuid}&qqfilename=compressed.tracemonkey-pldi-09.pdf&qqtotalparts=5"
    done = await api.client.post(
        "/api/v2/pm/upload/?done",
        content=body,
        headers={**api.auth(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200, done.text
    result = done.json()
    assert set(result) == {"file_url", "file_uuid", "success"}
    assert result["file_uuid"] == file_uuid and result["success"] is True
    assert isinstance(result["file_url"], str) and result["file_url"].endswith(f"/api/v2/pm/upload/{file_uuid}")
    # file_url downloads the file for its owner; for anyone else it does not exist.
    content = await api.client.get(result["file_url"], headers=api.auth())
    assert content.status_code == 200 and content.content == data
    assert "compressed.tracemonkey-pldi-09.pdf" in content.headers["content-disposition"]
    assert content.headers["content-type"] == "application/pdf"
    assert (await api.client.get(result["file_url"], headers=api.auth("bob"))).status_code == 404
    head = await api.client.head(result["file_url"], headers=api.auth())
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data)) and head.content == b""
    ranged = await api.client.get(result["file_url"], headers={**api.auth(), "Range": "bytes=10-19"})
    assert ranged.status_code == 206 and ranged.content == data[10:20]
    # A range past the end: 416 in Fine Uploader's error shape, not the Files API's.
    past = await api.client.get(result["file_url"], headers={**api.auth(), "Range": f"bytes={len(data)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"
    refused = past.json()
    assert refused["success"] is False and refused["code"] == "range_not_satisfiable" and refused["preventRetry"]
    # An ordinary engine upload: visible in the Files API, completed, with the whole-file MD5.
    upload = await api.runtime.uploads.find("alice", "pm", file_uuid)
    assert upload is not None
    native = (await api.client.get(f"/v1/files/{upload.id}", headers=api.auth())).json()
    assert native["status"] == "COMPLETED" and native["md5"] == hashlib.md5(data).hexdigest()
    assert native["filename"] == "compressed.tracemonkey-pldi-09.pdf" and native["partSize"] == CHUNK
    # Idempotent: the same done again answers the same.
    again = await api.client.post(
        "/api/v2/pm/upload/?done",
        content=body,
        headers={**api.auth(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert again.status_code == 200 and again.json() == result
    # A done naming the file otherwise is refused once it is complete, and changes nothing (it
    # renamed it each time, the download's name with it, even with a key that may only upload).
    renamed = await api.client.post(
        "/api/v2/pm/upload/?done", data={"qquuid": file_uuid, "qqfilename": "malware.exe"}, headers=api.auth()
    )
    assert assert_fine_uploader_error(renamed, 409, field="qqfilename")["preventRetry"] is True
    kept = (await api.client.get(f"/v1/files/{upload.id}", headers=api.auth())).json()
    assert kept["filename"] == "compressed.tracemonkey-pldi-09.pdf"


async def test_a_chunk_whose_upload_its_failed_creator_removed_is_asked_again(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks sent in parallel: the one that created the file fails (here refused for its size)
    and removes the upload while another chunk, which found it, still streams. That chunk gets the
    busy answer Fine Uploader retries (no preventRetry), not a 404 that ends the whole file, and
    sent again it makes the file anew."""
    data = os.urandom(3 * CHUNK)
    file_uuid = str(uuid.uuid4())
    service = api.runtime.uploads
    real_put = service.put_part
    removing = Held(monkeypatch, service, "delete")
    short = form(chunk_fields(data, 1, file_uuid), data[CHUNK : 2 * CHUNK - 1])  # a middle chunk one byte short
    creator = asyncio.create_task(post_form(api, short))
    await removing.reached.wait()  # refused: about to remove the upload it made
    storing = Held(monkeypatch, service, "put_part")
    other = asyncio.create_task(send_chunk(api, data, 0, file_uuid))  # finds that upload
    await storing.reached.wait()
    removing.gate.set()
    assert (await creator).status_code == 400
    storing.gate.set()
    answer = await other
    assert answer.status_code == 409 and answer.json()["code"] == "upload_busy", answer.text
    assert "preventRetry" not in answer.json()
    monkeypatch.setattr(service, "put_part", real_put)
    await upload_chunks(api, data, file_uuid)
    assert await finished(api, file_uuid, "anew.bin") == data


async def test_a_done_sent_again_while_the_first_finishes_is_answered_alike(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A done sent again (its answer lost) while the first is still at work: the file is named by
    the write that completes it, so the retry never finds it finished under its chunks' name and is
    answered as the first (it was a 409 for the very name it asked for, when it came between the
    first's completion and its renaming)."""
    data = os.urandom(2 * CHUNK)
    file_uuid = str(uuid.uuid4())
    await upload_chunks(api, data, file_uuid)  # the chunks' name: report.pdf
    renaming = Held(monkeypatch, api.runtime.uploads, "rename")
    body = {"qquuid": file_uuid, "qqfilename": "final.pdf"}
    first = asyncio.create_task(api.client.post("/api/v2/pm/upload/?done", data=body, headers=api.auth()))
    named = asyncio.create_task(renaming.reached.wait())
    await asyncio.wait({first, named}, return_when=asyncio.FIRST_COMPLETED)  # finished, or about to rename
    named.cancel()
    again = await api.client.post("/api/v2/pm/upload/?done", data=body, headers=api.auth())
    renaming.gate.set()
    assert (await first).status_code == 200
    assert again.status_code == 200, again.text
    info = (await api.client.get(f"/api/v2/pm/upload/{file_uuid}/info", headers=api.auth())).json()
    assert info["filename"] == "final.pdf"


async def test_two_dones_at_once_naming_the_file_otherwise_one_is_refused(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two dones for one file sent at once, naming it differently: both find it unfinished, but
    only the first to name it is told its name stands; the other is the 409 a later done naming
    it otherwise gets, and the file keeps the first name."""
    data = os.urandom(2 * CHUNK)
    file_uuid = str(uuid.uuid4())
    await upload_chunks(api, data, file_uuid)
    service = api.runtime.uploads
    real, arrived, gate = service.complete, [], asyncio.Event()

    async def held(*args: object, **kwargs: object) -> object:
        arrived.append(True)
        await gate.wait()
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service, "complete", held)

    def done(name: str) -> asyncio.Task[httpx.Response]:
        body = {"qquuid": file_uuid, "qqfilename": name}
        return asyncio.create_task(api.client.post("/api/v2/pm/upload/?done", data=body, headers=api.auth()))

    dones = [done("first.pdf"), done("second.pdf")]
    await until(lambda: len(arrived) == 2, what="both dones past their look at the file")
    gate.set()
    answers = [await d for d in dones]
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 409)
    assert_fine_uploader_error(refused, 409, "qqfilename")
    kept = "second.pdf" if answers[1].status_code == 200 else "first.pdf"
    info = (await api.client.get(f"/api/v2/pm/upload/{file_uuid}/info", headers=api.auth())).json()
    assert info["filename"] == kept


@pytest.mark.parametrize("path", ["/api/v2/pm/upload/?done/", "/api/v2/pm/upload?done", "/api/v2/pm/upload?done/"])
async def test_done_json_without_content_type_as_in_the_seed(api: Api, path: str) -> None:
    """The seed's fetch example: a JSON string body, no Content-Type (fetch sends text/plain)."""
    data = os.urandom(3 * CHUNK)
    file_uuid = str(uuid.uuid4())
    await upload_chunks(api, data, file_uuid)
    body = f'{{\n  "qquuid": "{file_uuid}",\n  "qqfilename": "string",\n  "qqtotalparts": 3\n}}'
    done = await api.client.post(path, content=body.encode(), headers={**api.auth(), "Content-Type": "text/plain"})
    assert done.status_code == 200, done.text
    assert done.json()["file_uuid"] == file_uuid
    with_md5 = await api.client.post(
        path,
        json={"qquuid": file_uuid, "qqfilename": "string", "qqmd5": hashlib.md5(data).hexdigest()},
        headers=api.auth(),
    )
    assert with_md5.status_code == 200, with_md5.text


async def test_first_chunk_without_qquuid_gets_one(api: Api) -> None:
    data = os.urandom(2 * CHUNK + 10)
    first = await send_chunk(api, data, 0, None)
    assert first.status_code == 200, first.text
    issued = first.json()["file_uuid"]
    assert uuid.UUID(issued).version == 4
    for index in (1, 2):
        response = await send_chunk(api, data, index, issued)
        assert response.json() == {"file_uuid": issued, "success": True}
    assert await finished(api, issued, "a.bin") == data


async def test_concurrent_chunks_of_a_new_file_make_one_upload(api: Api) -> None:
    data = os.urandom(6 * CHUNK)
    file_uuid = str(uuid.uuid4())
    responses = await asyncio.gather(*(send_chunk(api, data, i, file_uuid) for i in range(6)))
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    listed = (await api.client.get("/v1/files", headers=api.auth())).json()["data"]
    assert len(listed) == 1
    done = await api.client.post(
        "/api/v2/pm/upload/?done",
        data={"qquuid": file_uuid, "qqfilename": "x.bin", "qqmd5": hashlib.md5(data).hexdigest()},
        headers=api.auth(),
    )
    assert done.status_code == 200, done.text


async def test_whole_small_file_without_chunk_fields(api: Api) -> None:
    data = b"%PDF-1.4 a small file\n" * 10
    file_uuid = str(uuid.uuid4())
    fields = [("qquuid", file_uuid), ("qqfilename", "small.pdf"), ("qqtotalfilesize", str(len(data)))]
    response = await post_form(api, form(fields, data), path="/api/v2/pm/upload")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["file_uuid"] == file_uuid and body["success"] is True
    assert (await api.client.get(body["file_url"], headers=api.auth())).content == data
    info = await api.client.get(f"/api/v2/pm/upload/{file_uuid}/info", headers=api.auth())
    assert info.status_code == 200
    obj = info.json()
    assert {k: obj[k] for k in ("uuid", "filename", "filesize", "mimetype", "duration", "url", "thumbnail")} == {
        "uuid": file_uuid,
        "filename": "small.pdf",
        "filesize": len(data),
        "mimetype": "application/pdf",
        "duration": None,
        "url": body["file_url"],
        "thumbnail": None,
    }
    # The published document types it so (it was an untyped object).
    document = (await api.client.get("/openapi.json")).json()
    answer = document["paths"]["/api/v2/pm/upload/{file_uuid}/info"]["get"]["responses"]["200"]
    schema = document["components"]["schemas"][answer["content"]["application/json"]["schema"]["$ref"].split("/")[-1]]
    assert set(schema["required"]) == set(obj) and schema["properties"]["filesize"]["type"] == "integer"
    # Without qquuid or a declared size, the server names it and measures it.
    bare = await post_form(api, form([("qqfilename", "n.txt")], b"hello"))
    assert bare.status_code == 200, bare.text
    got = await api.client.get(bare.json()["file_url"], headers=api.auth())
    assert got.content == b"hello"


async def test_a_whole_file_sent_again_after_its_answer_was_lost(api: Api) -> None:
    """Fine Uploader sends a request again when its answer did not arrive (the node died right
    after it completed the file), with the same qquuid. The same bytes again are answered as the
    first request would have been, and the file is not stored twice; other bytes under that
    qquuid are still refused (409, preventRetry). The retry used to get that 409, and the client
    gave up on a file the server held."""
    data = os.urandom(3 * CHUNK)
    file_uuid = str(uuid.uuid4())
    fields = [("qquuid", file_uuid), ("qqfilename", "w.bin"), ("qqtotalfilesize", str(len(data)))]
    first = await post_form(api, form(fields, data))
    assert first.status_code == 200, first.text
    again = await post_form(api, form(fields, data))
    assert again.status_code == 200, again.text
    assert again.json()["success"] is True and again.json()["file_uuid"] == file_uuid
    assert (await api.client.get(again.json()["file_url"], headers=api.auth())).content == data
    upload = await api.runtime.uploads.find("alice", "pm", file_uuid)
    assert upload is not None and upload.bytes_received == len(data)
    for other in (os.urandom(len(data)), data + b"x", data[:-1]):
        assert_fine_uploader_error(await post_form(api, form(fields, other)), 409, field="qquuid")
    assert (await api.client.get(again.json()["file_url"], headers=api.auth())).content == data


async def test_done_for_a_file_sent_whole_counts_it_as_one_chunk(api: Api) -> None:
    """A done request (seed 000) for a file that was sent whole, in one request, is answered as
    for any finished file; its qqtotalparts must then be 1, as for a one-chunk file: a count that
    does not add up is a 400 naming qqtotalparts (it was taken, since such a file has no part
    count of its own)."""
    data = b"hello"
    file_uuid = str(uuid.uuid4())
    sent = await post_form(api, form([("qquuid", file_uuid), ("qqfilename", "s.txt")], data))
    assert sent.status_code == 200, sent.text

    async def done(**fields: str) -> httpx.Response:
        body = {"qquuid": file_uuid, "qqfilename": "s.txt", **fields}
        return await api.client.post("/api/v2/pm/upload/?done/", data=body, headers=api.auth())

    ok = await done(qqtotalparts="1", qqtotalfilesize=str(len(data)), qqmd5=hashlib.md5(data).hexdigest())
    assert ok.status_code == 200 and ok.json()["file_url"] == sent.json()["file_url"], ok.text
    wrong = assert_fine_uploader_error(await done(qqtotalparts="2"), 400, "qqtotalparts")
    assert wrong["error"] == "qqtotalparts 2 differs from the 1 chunk of this file"


@pytest.mark.parametrize("sent_name", [None, "blob.tmp"])
async def test_the_done_after_a_file_sent_whole_names_it(api: Api, sent_name: str | None) -> None:
    """Seed 001: after the upload "the client must call the Chunk Upload Done endpoint with the
    given qqfilename parameter to finalize the upload"; seed 000 makes qqfilename required there.
    For a file sent whole (completed by its one request, named by it or not) that done names it,
    as the done of a chunked file does. It was answered 200 and the name dropped."""
    data = b"%PDF-1.4 whole\n"
    fields = [("qqfilename", sent_name)] if sent_name else []
    sent = await post_form(api, form(fields, data))
    assert sent.status_code == 200, sent.text
    file_uuid = sent.json()["file_uuid"]

    async def done(name: str, **more: str) -> httpx.Response:
        body = {"qquuid": file_uuid, "qqfilename": name, "qqtotalparts": "1", **more}
        return await api.client.post("/api/v2/pm/upload/?done/", data=body, headers=api.auth())

    assert (await done("report.pdf")).status_code == 200
    info = (await api.client.get(f"/api/v2/pm/upload/{file_uuid}/info", headers=api.auth())).json()
    assert info["filename"] == "report.pdf" and info["mimetype"] == "application/pdf"
    download = await api.client.get(sent.json()["file_url"], headers=api.auth())
    assert "report.pdf" in download.headers["content-disposition"]
    # The same done again (its answer lost) is answered alike; one naming it otherwise is refused.
    assert (await done("report.pdf")).status_code == 200
    assert_fine_uploader_error(await done("other.pdf"), 409, field="qqfilename")
    assert_fine_uploader_error(await done("report.pdf", qqfiletype="text/plain"), 409, field="qqfiletype")
    info = (await api.client.get(f"/api/v2/pm/upload/{file_uuid}/info", headers=api.auth())).json()
    assert info["filename"] == "report.pdf"


async def test_fields_after_the_file(api: Api) -> None:
    # A whole file whose name comes after the bytes: fine.
    late_name = form([("qqfilename", "late.txt")], b"late bytes", file_first=True)
    response = await post_form(api, late_name)
    assert response.status_code == 200, response.text
    # Chunk fields after bytes that were not held (longer than pm_max_held_chunk_bytes; see
    # test_fields_after_the_file_in_the_seed_table_order) or after fields that placed them: the
    # bytes could not be placed; a clear 400 and nothing kept.
    api.runtime.settings.pm_max_held_chunk_bytes = CHUNK // 2
    data = os.urandom(2 * CHUNK)
    late_chunk = form(chunk_fields(data, 0, None), data[:CHUNK], file_first=True)
    assert_fine_uploader_error(await post_form(api, late_chunk), 400, "qqpartindex")
    # The client's own qquuid after bytes that were not held: they went to a server-named file.
    late_uuid = form([("qquuid", str(uuid.uuid4()))], os.urandom(CHUNK), file_first=True)
    assert_fine_uploader_error(await post_form(api, late_uuid), 400, "qquuid")
    late_chunk_uuid = form(chunk_fields(data, 0, None), data[:CHUNK], after=[("qquuid", str(uuid.uuid4()))])
    assert_fine_uploader_error(await post_form(api, late_chunk_uuid), 400, "qquuid")
    listed = (await api.client.get("/v1/files", headers=api.auth())).json()["data"]
    assert [f["filename"] for f in listed] == ["late.txt"]


async def test_seed_upload_examples_without_a_file(api: Api) -> None:
    """The seed's examples send only fields (JSON without Content-Type; curl url-encoded): there is no
    chunk in them, so the answer names qqfile."""
    json_body = '{\n  "qqpartindex": 0,\n  "qqtotalparts": 5,\n  "qqfile": "blob"\n}'
    response = await api.client.post(
        "/api/v2/pm/upload/", content=json_body.encode(), headers={**api.auth(), "Content-Type": "text/plain"}
    )
    assert_fine_uploader_error(response, 400, "qqfile")
    response = await api.client.post(
        "/api/v2/pm/upload/",
        content=b"qqpartindex=0&qqtotalparts=5",
        headers={**api.auth(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_fine_uploader_error(response, 400, "qqfile")
    assert_fine_uploader_error(await post_form(api, form(chunk_fields(b"x" * 10, 0, None), None)), 400, "qqfile")


async def test_done_errors_leave_the_upload_resumable(api: Api) -> None:
    data = os.urandom(4 * CHUNK)
    file_uuid = str(uuid.uuid4())
    await upload_chunks(api, data, file_uuid, order=[0, 1, 3])

    async def done(**fields: str) -> httpx.Response:
        return await api.client.post("/api/v2/pm/upload/?done", data=fields, headers=api.auth())

    body = assert_fine_uploader_error(await done(qquuid=file_uuid, qqfilename="f.bin"), 409)
    # Fine Uploader's numbering: chunk indexes from 0 (the engine's part 4 is qqpartindex 3).
    assert body["code"] == "missing_parts" and body["missingParts"] == [2]
    assert "2" in body["error"] and "3" not in body["error"]
    await upload_chunks(api, data, file_uuid, order=[2])
    wrong = assert_fine_uploader_error(await done(qquuid=file_uuid, qqfilename="f.bin", qqmd5="0" * 32), 400, "qqmd5")
    assert wrong["code"] == "checksum_mismatch"
    assert_fine_uploader_error(await done(qquuid=file_uuid, qqfilename="f.bin", qqmd5="nothex"), 400, "qqmd5")
    assert_fine_uploader_error(
        await done(qquuid=file_uuid, qqfilename="f.bin", qqtotalfilesize=str(len(data) + 1)), 400, "qqtotalfilesize"
    )
    assert_fine_uploader_error(await done(qquuid=file_uuid, qqfilename="f.bin", qqtotalparts="7"), 400, "qqtotalparts")
    assert_fine_uploader_error(await done(qqfilename="f.bin"), 400, "qquuid")
    assert_fine_uploader_error(await done(qquuid=file_uuid), 400, "qqfilename")
    assert_fine_uploader_error(await done(qquuid=str(uuid.uuid4()), qqfilename="f.bin"), 404, "qquuid")
    # Refused before the file is completed: it was completed first, then refused by the rename,
    # and the corrected done was a 409 (a finished file is not renamed).
    assert_fine_uploader_error(
        await done(qquuid=file_uuid, qqfilename="g.bin", qqfiletype="no type"), 400, "qqfiletype"
    )
    upload = await api.runtime.uploads.find("alice", "pm", file_uuid)
    assert upload is not None and upload.status.value == "PENDING"
    # A done request sent as multipart/form-data (curl -F) works too.
    fields = [("qquuid", file_uuid), ("qqfilename", "f.bin"), ("qqmd5", hashlib.md5(data).hexdigest())]
    ok = await post_form(api, form(fields, None), path="/api/v2/pm/upload/?done")
    assert ok.status_code == 200, ok.text


async def test_chunk_errors(api: Api) -> None:
    data = os.urandom(3 * CHUNK)
    file_uuid = str(uuid.uuid4())
    await upload_chunks(api, data, file_uuid, order=[0])

    async def chunk(fields: list[tuple[str, str]], payload: bytes) -> httpx.Response:
        return await post_form(api, form(fields, payload))

    good = chunk_fields(data, 1, file_uuid)
    piece = data[CHUNK : 2 * CHUNK]
    later_without_uuid = [(k, v) for k, v in good if k != "qquuid"]
    assert_fine_uploader_error(await chunk(later_without_uuid, piece), 400, "qquuid")
    wrong_offset = [(k, "5" if k == "qqpartbyteoffset" else v) for k, v in good]
    assert_fine_uploader_error(await chunk(wrong_offset, piece), 400, "qqpartbyteoffset")
    out_of_range = [(k, "9" if k == "qqpartindex" else v) for k, v in good if k != "qqpartbyteoffset"]
    assert_fine_uploader_error(await chunk(out_of_range, piece), 400, "qqpartindex")
    assert_fine_uploader_error(await chunk([(k, "x" if k == "qqpartindex" else v) for k, v in good], piece), 400)
    short = await chunk(good, piece[:-1])
    assert_fine_uploader_error(short, 400, "qqfile")
    tiny = {"qqchunksize": "1", "qqtotalfilesize": "20000"}  # 20,000 parts: over the engine's 10,000
    tiny_chunks = [(k, tiny.get(k, v)) for k, v in chunk_fields(data, 0, str(uuid.uuid4()))]
    assert_fine_uploader_error(await chunk(tiny_chunks, data[:1]), 400, "qqchunksize")
    huge = [(k, str(10**16) if k == "qqtotalfilesize" else v) for k, v in chunk_fields(data, 0, str(uuid.uuid4()))]
    assert_fine_uploader_error(await chunk(huge, data[:CHUNK]), 413, "qqtotalfilesize")
    wrong_total = [(k, "999999" if k == "qqtotalfilesize" else v) for k, v in good]
    assert_fine_uploader_error(await chunk(wrong_total, piece), 400, "qqtotalfilesize")
    bad_uuid = [(k, "../../etc" if k == "qquuid" else v) for k, v in good]
    assert_fine_uploader_error(await chunk(bad_uuid, piece), 400, "qquuid")
    truncated = form(good, piece)[:-200]
    assert_fine_uploader_error(await post_form(api, truncated), 400)
    # Seed 001 marks qqtotalparts required (true) beside qqpartindex: a chunk without it, the first
    # of a file or a later one, is a 400 naming it. (It used to be taken, the count left unknown.)
    without_total = [(k, v) for k, v in good if k != "qqtotalparts"]
    assert_fine_uploader_error(await chunk(without_total, piece), 400, "qqtotalparts")
    first_without_total = [(k, v) for k, v in chunk_fields(data, 0, None) if k != "qqtotalparts"]
    assert_fine_uploader_error(await chunk(first_without_total, data[:CHUNK]), 400, "qqtotalparts")
    # None of those stored a byte: the upload still has exactly chunk 0.
    upload = await api.runtime.uploads.find("alice", "pm", file_uuid)
    assert upload is not None and upload.parts_received == 1 and upload.bytes_received == CHUNK


async def test_auth_and_owner_scoping(api: Api) -> None:
    data = os.urandom(CHUNK)
    response = await api.client.post(
        "/api/v2/pm/upload/",
        content=form(chunk_fields(data, 0, None), data),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert_fine_uploader_error(response, 401)
    assert_fine_uploader_error(await post_form(api, form(chunk_fields(data, 0, None), data), who="reader"), 403)
    file_uuid = str(uuid.uuid4())
    await upload_chunks(api, data, file_uuid)
    # bob cannot see, finish, download or delete alice's file, even knowing its uuid
    done = await api.client.post(
        "/api/v2/pm/upload/?done", data={"qquuid": file_uuid, "qqfilename": "a"}, headers=api.auth("bob")
    )
    assert_fine_uploader_error(done, 404)
    assert_fine_uploader_error(await api.client.delete(f"/api/v2/pm/upload/{file_uuid}", headers=api.auth("bob")), 404)
    # bob may use the same uuid for a file of his own
    await send_chunk(api, data, 0, file_uuid)
    bob = await post_form(api, form(chunk_fields(data, 0, file_uuid), data), who="bob")
    assert bob.status_code == 200, bob.text


async def test_delete_cancels_pending_and_removes_completed(api: Api) -> None:
    data = os.urandom(2 * CHUNK)
    pending = str(uuid.uuid4())
    await upload_chunks(api, data, pending, order=[0])
    gone = await api.client.delete(f"/api/v2/pm/upload/{pending}", headers=api.auth())
    assert gone.status_code == 200 and gone.json() == {"file_uuid": pending, "success": True}
    upload = await api.runtime.uploads.find("alice", "pm", pending)
    assert upload is not None and upload.status.value == "CANCELLED"
    assert_reset(await send_chunk(api, data, 1, pending), 409)

    done_uuid = str(uuid.uuid4())
    await upload_chunks(api, data, done_uuid)
    await api.client.post("/api/v2/pm/upload/?done", data={"qquuid": done_uuid, "qqfilename": "d"}, headers=api.auth())
    # removing a finished file needs files:delete
    _, creator = await api.runtime.keys.create("alice", "files:create")
    denied = await api.client.delete(f"/api/v2/pm/upload/{done_uuid}", headers={"Authorization": f"Bearer {creator}"})
    assert_fine_uploader_error(denied, 403)
    deleted = await api.client.delete(f"/api/v2/pm/upload/{done_uuid}", headers=api.auth())
    assert deleted.status_code == 200
    assert_fine_uploader_error(await api.client.get(f"/api/v2/pm/upload/{done_uuid}", headers=api.auth()), 404)
    assert (await api.runtime.uploads.find("alice", "pm", done_uuid)) is None


async def test_a_file_that_left_pending_is_named_by_its_qquuid(api: Api) -> None:
    """A Fine Uploader client only ever knows the qquuid (seeds 000/001: "the file uuid"); a chunk,
    a done request or a download of a file that is no longer (or not yet) in the state it needs
    names the file by it and the field as qquuid. The engine's own words named an id the client
    never saw ("upload <engine id> is COMPLETED")."""
    data = os.urandom(2 * CHUNK)
    done_uuid = str(uuid.uuid4())
    await upload_chunks(api, data, done_uuid, order=[0])
    upload = await api.runtime.uploads.find("alice", "pm", done_uuid)
    assert upload is not None
    early = await api.client.get(f"/api/v2/pm/upload/{done_uuid}", headers=api.auth())
    body = assert_fine_uploader_error(early, 409, field="qquuid")
    assert body["error"] == f"the file with qquuid {done_uuid} is PENDING; only COMPLETED files can be downloaded"
    await upload_chunks(api, data, done_uuid, order=[1])
    await finished(api, done_uuid, "a.bin")
    late = assert_fine_uploader_error(await send_chunk(api, data, 1, done_uuid), 409, field="qquuid")
    assert late["error"] == f"the file with qquuid {done_uuid} is COMPLETED" and late["code"] == "invalid_state"
    assert upload.id not in late["error"]

    cancelled = str(uuid.uuid4())
    await upload_chunks(api, data, cancelled, order=[0, 1])
    assert (await api.client.delete(f"/api/v2/pm/upload/{cancelled}", headers=api.auth())).status_code == 200
    for response in (
        await send_chunk(api, data, 1, cancelled),
        await api.client.post(
            "/api/v2/pm/upload/?done", data={"qquuid": cancelled, "qqfilename": "c"}, headers=api.auth()
        ),
    ):
        body = assert_reset(response, 409)
        assert body["error"] == f"the file with qquuid {cancelled} is CANCELLED"


def seed_chunk_fields(index: int, total: int, file_uuid: str | None) -> list[tuple[str, str]]:
    """What the seed requires of a chunk, and nothing it marks optional bar the chunk size (which
    says where the bytes go): no qqtotalfilesize, no qqpartbyteoffset, no qqfilename."""
    fields = [("qqpartindex", str(index)), ("qqtotalparts", str(total)), ("qqchunksize", str(CHUNK))]
    if index > 0:
        assert file_uuid is not None
        fields.insert(0, ("qquuid", file_uuid))
    return fields


async def test_seed_literal_client_without_qqtotalfilesize(api: Api) -> None:
    """qqtotalfilesize is optional in the seed: the size is learnt from the last chunk."""
    data = os.urandom(3 * CHUNK + 321)
    first = await post_form(api, form(seed_chunk_fields(0, 4, None), data[:CHUNK]))
    assert first.status_code == 200, first.text
    file_uuid = first.json()["file_uuid"]
    for index in (1, 2, 3):
        piece = data[index * CHUNK : (index + 1) * CHUNK]
        response = await post_form(api, form(seed_chunk_fields(index, 4, file_uuid), piece))
        assert response.json() == {"file_uuid": file_uuid, "success": True}, response.text
    upload = await api.runtime.uploads.find("alice", "pm", file_uuid)
    assert upload is not None and upload.size_bytes == len(data)
    done = await api.client.post(
        "/api/v2/pm/upload/?done/",
        data={"qquuid": file_uuid, "qqfilename": "seed.bin", "qqtotalparts": "4"},
        headers=api.auth(),
    )
    assert done.status_code == 200, done.text
    got = await api.client.get(done.json()["file_url"], headers=api.auth())
    assert got.content == data


async def test_seed_literal_client_with_qqtotalfilesize_and_the_chunk_size_on_every_chunk(api: Api) -> None:
    """The same client telling the size: its last chunk's qqchunksize is the chunk size all chunks
    share (the seed's "the size of the chunk"), not its own. Accepted as it is without
    qqtotalfilesize; with it, the last chunk was refused (qqchunksize must be 321), so the file
    could never be finished. Its bytes are still checked, and any other qqchunksize refused."""
    data = os.urandom(3 * CHUNK + 321)
    size = [("qqtotalfilesize", str(len(data)))]
    first = await post_form(api, form(seed_chunk_fields(0, 4, None) + size, data[:CHUNK]))
    assert first.status_code == 200, first.text
    file_uuid = first.json()["file_uuid"]
    for index in (1, 2):
        piece = data[index * CHUNK : (index + 1) * CHUNK]
        assert (await post_form(api, form(seed_chunk_fields(index, 4, file_uuid) + size, piece))).status_code == 200
    last = seed_chunk_fields(3, 4, file_uuid) + size
    short = await post_form(api, form(last, data[3 * CHUNK : -1]))
    assert_fine_uploader_error(short, 400, "qqfile")
    wrong = [(name, "999" if name == "qqchunksize" else value) for name, value in last]
    assert_fine_uploader_error(await post_form(api, form(wrong, data[3 * CHUNK :])), 400, "qqchunksize")
    response = await post_form(api, form(last, data[3 * CHUNK :]))
    assert response.json() == {"file_uuid": file_uuid, "success": True}, response.text
    done = await api.client.post(
        "/api/v2/pm/upload/?done/",
        data={"qquuid": file_uuid, "qqfilename": "seed.bin", "qqmd5": hashlib.md5(data).hexdigest()},
        headers=api.auth(),
    )
    assert done.status_code == 200, done.text
    # A file of one chunk, smaller than the chunk size, sent so.
    small = os.urandom(321)
    one = [*seed_chunk_fields(0, 1, None), ("qqtotalfilesize", str(len(small)))]
    whole = await post_form(api, form(one, small))
    assert whole.status_code == 200, whole.text
    got = await api.client.post(
        "/api/v2/pm/upload/?done/", data={"qquuid": whole.json()["file_uuid"], "qqfilename": "s"}, headers=api.auth()
    )
    assert got.status_code == 200, got.text
    assert (await api.client.get(got.json()["file_url"], headers=api.auth())).content == small


async def test_without_qqtotalfilesize_out_of_order_and_errors(api: Api) -> None:
    data = os.urandom(3 * CHUNK + 5)
    file_uuid = str(uuid.uuid4())

    async def send(index: int, payload: bytes, total: int = 4, size_field: bool = True) -> httpx.Response:
        # As Fine Uploader sends them (bar qqtotalfilesize): qqchunksize is this chunk's own size.
        fields = [
            ("qquuid", file_uuid),
            ("qqpartindex", str(index)),
            ("qqtotalparts", str(total)),
            ("qqpartbyteoffset", str(index * CHUNK)),
        ]
        if size_field:
            fields.append(("qqchunksize", str(len(payload))))
        return await post_form(api, form(fields, payload))

    # While the size is unknown, a short chunk that is not the last is refused, in chunk terms.
    short = assert_fine_uploader_error(await send(1, data[CHUNK : 2 * CHUNK - 1], size_field=False), 400, "qqfile")
    assert "chunk 1" in short["error"]
    # The last chunk (sent first): it fixes the size at once.
    assert (await send(3, data[3 * CHUNK :])).status_code == 200
    upload = await api.runtime.uploads.find("alice", "pm", file_uuid)
    assert upload is not None and upload.size_bytes == len(data) and upload.parts_received == 1
    assert_fine_uploader_error(await send(4, data[:CHUNK]), 400, "qqpartindex")
    assert_fine_uploader_error(await send(1, data[CHUNK : 2 * CHUNK], total=5), 400, "qqtotalparts")
    # done before every chunk: the missing ones by qqpartindex.
    early = await api.client.post(
        "/api/v2/pm/upload/?done", data={"qquuid": file_uuid, "qqfilename": "f"}, headers=api.auth()
    )
    assert assert_fine_uploader_error(early, 409)["missingParts"] == [0, 1, 2]
    for index in (0, 1, 2):
        assert (await send(index, data[index * CHUNK : (index + 1) * CHUNK])).status_code == 200
    done = await api.client.post(
        "/api/v2/pm/upload/?done",
        data={"qquuid": file_uuid, "qqfilename": "f.bin", "qqmd5": hashlib.md5(data).hexdigest()},
        headers=api.auth(),
    )
    assert done.status_code == 200, done.text


async def test_size_learnt_at_done(api: Api) -> None:
    """No chunk tells the size (no qqtotalfilesize) and the last has not arrived: done's
    qqtotalfilesize declares it, and done then lists the chunk still missing. (Every chunk carries
    qqtotalparts, which seed 001 requires; a chunk without it is a 400, see test_chunk_errors.)"""
    data = os.urandom(2 * CHUNK)
    file_uuid = str(uuid.uuid4())
    fields = [("qquuid", file_uuid), ("qqpartindex", "0"), ("qqtotalparts", "2"), ("qqchunksize", str(CHUNK))]
    response = await post_form(api, form(fields, data[:CHUNK]))
    assert response.status_code == 200, response.text
    missing = await api.client.post(
        "/api/v2/pm/upload/?done", data={"qquuid": file_uuid, "qqfilename": "f"}, headers=api.auth()
    )
    assert assert_fine_uploader_error(missing, 409)["missingParts"] == [1]
    told = await api.client.post(
        "/api/v2/pm/upload/?done",
        data={"qquuid": file_uuid, "qqfilename": "f", "qqtotalfilesize": str(len(data))},
        headers=api.auth(),
    )
    assert assert_fine_uploader_error(told, 409)["missingParts"] == [1]
    upload = await api.runtime.uploads.find("alice", "pm", file_uuid)
    assert upload is not None and upload.size_bytes == len(data)  # declared by done
    fields = [("qquuid", file_uuid), ("qqpartindex", "1"), ("qqtotalparts", "2"), ("qqchunksize", str(CHUNK))]
    response = await post_form(api, form(fields, data[CHUNK:]))
    assert response.status_code == 200, response.text
    done = await api.client.post(
        "/api/v2/pm/upload/?done",
        data={"qquuid": file_uuid, "qqfilename": "f", "qqtotalparts": "2"},
        headers=api.auth(),
    )
    assert done.status_code == 200, done.text
    assert (await api.client.get(done.json()["file_url"], headers=api.auth())).content == data


async def test_a_size_at_done_that_the_chunks_contradict_is_refused_and_not_kept(api: Api) -> None:
    """A done's qqtotalfilesize of more (or fewer) chunks than the chunks' qqtotalparts is a 400
    that declares nothing: it was declared, answered 409 (chunks 1 to 4 missing), and from then on
    the real last chunk and every done were refused against it."""
    data = os.urandom(2 * CHUNK)
    file_uuid = str(uuid.uuid4())
    fields = [("qquuid", file_uuid), ("qqpartindex", "0"), ("qqtotalparts", "2"), ("qqchunksize", str(CHUNK))]
    assert (await post_form(api, form(fields, data[:CHUNK]))).status_code == 200
    for wrong in (5 * CHUNK, CHUNK):
        refused = await api.client.post(
            "/api/v2/pm/upload/?done",
            data={"qquuid": file_uuid, "qqfilename": "f", "qqtotalfilesize": str(wrong)},
            headers=api.auth(),
        )
        assert_fine_uploader_error(refused, 400, "qqtotalfilesize")
    upload = await api.runtime.uploads.find("alice", "pm", file_uuid)
    assert upload is not None and upload.size_bytes is None
    fields = [("qquuid", file_uuid), ("qqpartindex", "1"), ("qqtotalparts", "2"), ("qqchunksize", str(CHUNK))]
    response = await post_form(api, form(fields, data[CHUNK:]))
    assert response.status_code == 200, response.text
    assert await finished(api, file_uuid, "f") == data


async def test_out_of_range_chunk_index_is_zero_based(api: Api) -> None:
    data = os.urandom(2 * CHUNK)
    file_uuid = str(uuid.uuid4())
    await upload_chunks(api, data, file_uuid, order=[0])
    fields = [
        (k, "2" if k == "qqpartindex" else v) for k, v in chunk_fields(data, 1, file_uuid) if k != "qqpartbyteoffset"
    ]
    body = assert_fine_uploader_error(await post_form(api, form(fields, data[:CHUNK])), 400, "qqpartindex")
    assert "between 0 and 1" in body["error"]


async def test_a_later_chunk_starting_an_upload_at_a_byte_offset_too_small_names_it(api: Api) -> None:
    """Chunk 1 of a new file at offset 0 (no qqchunksize): the offset is what is wrong, and the
    refusal says so (it named qqchunksize, which was not sent)."""
    data = os.urandom(2 * CHUNK)
    fields = [
        (k, "0" if k == "qqpartbyteoffset" else v)
        for k, v in chunk_fields(data, 1, str(uuid.uuid4()))
        if k != "qqchunksize"
    ]
    body = assert_fine_uploader_error(await post_form(api, form(fields, data[CHUNK:])), 400, "qqpartbyteoffset")
    assert "too small" in body["error"]


async def test_seed_example_chunks_without_qqchunksize(api: Api) -> None:
    """Seed 001 marks qqchunksize (and qqpartbyteoffset, qqtotalfilesize) optional; its example body
    is only ``qqpartindex``, ``qqtotalparts`` and ``qqfile``, and chunks go "in series". Chunk 0
    is then the measure of the chunk size."""
    data = os.urandom(3 * CHUNK + 77)
    first = await post_form(api, form([("qqpartindex", "0"), ("qqtotalparts", "4")], data[:CHUNK]))
    assert first.status_code == 200, first.text
    file_uuid = first.json()["file_uuid"]
    assert first.json() == {"file_uuid": file_uuid, "success": True}
    upload = await api.runtime.uploads.find("alice", "pm", file_uuid)
    assert upload is not None and upload.part_size == CHUNK and upload.size_bytes is None
    # Chunk 0 again (a retry) is the same chunk; a later chunk of another size is refused, in chunk terms.
    again = await post_form(
        api, form([("qqpartindex", "0"), ("qqtotalparts", "4"), ("qquuid", file_uuid)], data[:CHUNK])
    )
    assert again.status_code == 200, again.text
    fields = [("qquuid", file_uuid), ("qqpartindex", "1"), ("qqtotalparts", "4")]
    assert_fine_uploader_error(await post_form(api, form(fields, data[CHUNK : 2 * CHUNK - 1])), 400, "qqfile")
    for index in (1, 2, 3):
        fields = [("qquuid", file_uuid), ("qqpartindex", str(index)), ("qqtotalparts", "4")]
        response = await post_form(api, form(fields, data[index * CHUNK : (index + 1) * CHUNK]))
        assert response.json() == {"file_uuid": file_uuid, "success": True}, response.text
    body = f'{{\n  "qquuid": "{file_uuid}",\n  "qqfilename": "seed.bin",\n  "qqtotalparts": 4\n}}'
    done = await api.client.post("/api/v2/pm/upload/?done/", content=body.encode(), headers=api.auth())
    assert done.status_code == 200, done.text
    assert (await api.client.get(done.json()["file_url"], headers=api.auth())).content == data
    native = (await api.client.get(f"/v1/files/{upload.id}", headers=api.auth())).json()
    assert native["md5"] == hashlib.md5(data).hexdigest() and native["partSize"] == CHUNK


async def test_without_qqchunksize_one_chunk_or_a_declared_size(api: Api) -> None:
    # An empty chunk 0 measures nothing: refused in chunk terms, as any empty chunk.
    empty = await post_form(api, form([("qqpartindex", "0"), ("qqtotalparts", "2")], b""))
    assert "chunk 0 must be 1 to" in assert_fine_uploader_error(empty, 400, "qqfile")["error"]
    # One chunk of one: the whole file.
    data = os.urandom(CHUNK + 5)
    one = await post_form(api, form([("qqpartindex", "0"), ("qqtotalparts", "1")], data))
    assert one.status_code == 200, one.text
    file_uuid = one.json()["file_uuid"]
    assert await finished(api, file_uuid, "one.bin") == data
    # With qqtotalfilesize: the size is declared once chunk 0 has measured the chunk size.
    data = os.urandom(2 * CHUNK + 9)
    fields = [("qqpartindex", "0"), ("qqtotalparts", "3"), ("qqtotalfilesize", str(len(data)))]
    first = await post_form(api, form(fields, data[:CHUNK]))
    assert first.status_code == 200, first.text
    file_uuid = first.json()["file_uuid"]
    upload = await api.runtime.uploads.find("alice", "pm", file_uuid)
    assert upload is not None and upload.size_bytes == len(data) and upload.part_count == 3
    for index in (1, 2):
        fields = [("qquuid", file_uuid), ("qqpartindex", str(index)), ("qqtotalparts", "3")]
        response = await post_form(api, form(fields, data[index * CHUNK : (index + 1) * CHUNK]))
        assert response.status_code == 200, response.text
    assert await finished(api, file_uuid, "three.bin") == data


@pytest.mark.parametrize(
    "extra",
    [[], [("qqtotalfilesize", "0")], [("qqtotalfilesize", "0"), ("qqchunksize", "0"), ("qqpartbyteoffset", "0")]],
    ids=["bare", "sized", "as-computed"],
)
async def test_an_empty_file_as_chunk_0_of_1(api: Api, extra: list[tuple[str, str]]) -> None:
    """A client that always chunks sends an empty file as chunk 0 of 1 (with the sizes it computed:
    0). A chunk must hold a byte, but that one is the whole file: stored as an empty file."""
    file_uuid = str(uuid.uuid4())
    fields = [("qquuid", file_uuid), ("qqpartindex", "0"), ("qqtotalparts", "1"), ("qqfilename", "empty.txt"), *extra]
    first = await post_form(api, form(fields, b""))
    assert first.status_code == 200, first.text
    assert first.json()["file_uuid"] == file_uuid and first.json()["success"] is True
    again = await post_form(api, form(fields, b""))  # a retry after a lost answer
    assert again.status_code == 200, again.text
    assert await finished(api, file_uuid, "empty.txt") == b""
    upload = await api.runtime.uploads.find("alice", "pm", file_uuid)
    assert upload is not None and upload.size_bytes == 0 and upload.md5 == hashlib.md5(b"").hexdigest()
    # A declared size or chunk size the empty body contradicts is still refused, naming it.
    for name in ("qqtotalfilesize", "qqchunksize"):
        wrong = [("qqpartindex", "0"), ("qqtotalparts", "1"), (name, "5")]
        assert_fine_uploader_error(await post_form(api, form(wrong, b"")), 400)


async def test_later_chunk_before_chunk_0_measured_the_size(api: Api) -> None:
    """Without a chunk size, chunk 0 must come first: a later chunk before it cannot be placed."""
    data = os.urandom(2 * CHUNK)
    file_uuid = str(uuid.uuid4())
    early = [("qquuid", file_uuid), ("qqpartindex", "1"), ("qqtotalparts", "2")]
    body = assert_fine_uploader_error(await post_form(api, form(early, data[CHUNK:])), 400, "qqchunksize")
    assert "chunk 0" in body["error"]
    assert await api.runtime.uploads.find("alice", "pm", file_uuid) is None
    # While chunk 0 is still arriving (its upload exists, its part size provisional), a later chunk
    # is asked to wait and retry: 409 upload_busy, retries left on, nothing stored.
    measuring = await api.runtime.uploads.create(
        "alice",
        filename="m.bin",
        size_bytes=None,
        part_size=api.runtime.uploads.config.max_part_size,
        mode=Mode.PARTS,
        frontend="pm",
        client_ref=file_uuid,
        defer_size=True,
        metadata={PART_SIZE_FROM_PART_1: True, TOTAL_PARTS: 2},
        strict_part_size=False,
    )
    busy = await post_form(api, form(early, data[CHUNK:]))
    assert busy.status_code == 409, busy.text
    assert busy.json()["code"] == "upload_busy" and "preventRetry" not in busy.json()
    assert busy.headers["retry-after"] == "1"
    assert (await api.runtime.uploads.get("alice", measuring.id)).parts_received == 0
    first = await post_form(
        api, form([("qquuid", file_uuid), ("qqpartindex", "0"), ("qqtotalparts", "2")], data[:CHUNK])
    )
    assert first.status_code == 200, first.text
    assert (await post_form(api, form(early, data[CHUNK:]))).status_code == 200
    assert await finished(api, file_uuid, "m.bin") == data


async def test_done_body_errors_name_the_body(api: Api) -> None:
    """A done request carries no qqfile: a body that is not JSON, or too long, is named as the body."""
    file_uuid = str(uuid.uuid4())
    # The seed's first example body, as printed (a comma missing).
    broken = f'{{\n  "qquuid": "{file_uuid}",\n  "qqfilename": "string"\n  "qqtotalparts": 5\n}}'
    response = await api.client.post("/api/v2/pm/upload/?done/", content=broken.encode(), headers=api.auth())
    body = assert_fine_uploader_error(response, 400, "body")
    assert "qqfile" not in body["error"]
    huge = await api.client.post(
        "/api/v2/pm/upload/?done",
        content=b"qquuid=" + b"a" * 70_000,
        headers={**api.auth(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_fine_uploader_error(huge, 413, "body")


async def test_delete_as_a_post_with_method_override(api: Api) -> None:
    """Fine Uploader's ``deleteFile.method: "POST"``: a POST to the endpoint itself with
    ``_method=DELETE&qquuid=…`` url-encoded, instead of ``DELETE {endpoint}/{uuid}``."""
    data = os.urandom(2 * CHUNK)
    pending = str(uuid.uuid4())
    await upload_chunks(api, data, pending, order=[0])
    url_encoded = {**api.auth(), "Content-Type": "application/x-www-form-urlencoded"}
    gone = await api.client.post("/api/v2/pm/upload", content=f"_method=DELETE&qquuid={pending}", headers=url_encoded)
    assert gone.status_code == 200, gone.text
    assert gone.json() == {"file_uuid": pending, "success": True}
    upload = await api.runtime.uploads.find("alice", "pm", pending)
    assert upload is not None and upload.status.value == "CANCELLED"
    done_uuid = str(uuid.uuid4())
    await upload_chunks(api, data, done_uuid)
    await api.client.post("/api/v2/pm/upload/?done", data={"qquuid": done_uuid, "qqfilename": "d"}, headers=api.auth())
    # bob cannot; a key with files:delete alone can (as with DELETE); the uuid is required.
    other = await api.client.post(
        "/api/v2/pm/upload/", content=f"_method=DELETE&qquuid={done_uuid}", headers={**url_encoded, **api.auth("bob")}
    )
    assert_fine_uploader_error(other, 404, "qquuid")
    assert_fine_uploader_error(
        await api.client.post("/api/v2/pm/upload/", content="_method=DELETE", headers=url_encoded), 400, "qquuid"
    )
    _, deleter = await api.runtime.keys.create("alice", "files:delete")
    deleted = await api.client.post(
        f"/api/v2/pm/upload/?_method=DELETE&qquuid={done_uuid}", headers={"Authorization": f"Bearer {deleter}"}
    )
    assert deleted.status_code == 200, deleted.text
    assert (await api.runtime.uploads.find("alice", "pm", done_uuid)) is None
    # _method=DELETE never lets a chunk in without files:create.
    chunk = form(chunk_fields(data, 0, None), data[:CHUNK])
    sneaky = await post_form(api, chunk, path="/api/v2/pm/upload/?_method=DELETE", who="reader")
    assert_fine_uploader_error(sneaky, 403)
    reader = {"Authorization": f"Bearer {api.keys['reader']}", "Content-Type": "application/x-www-form-urlencoded"}
    no_scope = await api.client.post("/api/v2/pm/upload/", content=f"qquuid={done_uuid}", headers=reader)
    assert_fine_uploader_error(no_scope, 403)


async def test_fields_after_the_file_in_the_seed_table_order(api: Api) -> None:
    """A client that builds its form in the seed's table order sends qqfile first, then qquuid,
    qqpartindex, qqtotalparts…: a file part with nothing before it is held (up to
    pm_max_held_chunk_bytes) until the fields after it say where it goes."""
    data = os.urandom(2 * CHUNK + 11)
    first = await post_form(api, form([], data[:CHUNK], after=[("qqpartindex", "0"), ("qqtotalparts", "3")]))
    assert first.status_code == 200, first.text
    file_uuid = first.json()["file_uuid"]
    for index in (1, 2):
        after = [("qquuid", file_uuid), ("qqpartindex", str(index)), ("qqtotalparts", "3")]
        response = await post_form(api, form([], data[index * CHUNK : (index + 1) * CHUNK], after=after))
        assert response.json() == {"file_uuid": file_uuid, "success": True}, response.text
    assert await finished(api, file_uuid, "t.bin", query="done/") == data
    # A whole file named after its bytes, with its own qquuid: also fine now.
    own = str(uuid.uuid4())
    whole = await post_form(api, form([], b"late bytes", after=[("qquuid", own), ("qqfilename", "w.txt")]))
    assert whole.status_code == 200 and whole.json()["file_uuid"] == own, whole.text
    assert (await api.client.get(whole.json()["file_url"], headers=api.auth())).content == b"late bytes"


async def test_held_file_parts_share_one_bound(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """What file-first forms hold in memory counts against one total for the process: past it a
    form is answered 429 (retry later), and a held part's bytes are counted off again however its
    request ends."""
    data = os.urandom(CHUNK)
    after = [("qqpartindex", "0"), ("qqtotalparts", "1")]
    ok = await post_form(api, form([], data, after=after))
    assert ok.status_code == 200, ok.text
    assert held.held_now() == 0
    bad = await post_form(api, form([], data, after=[*after, ("qqmd5", "not-an-md5")]))
    assert bad.status_code == 400 and held.held_now() == 0
    monkeypatch.setattr(held, "_held_now", held.HELD_TOTAL_BYTES - 100)  # others hold the rest
    busy = await post_form(api, form([], data, after=after))
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1", busy.text
    assert busy.json()["success"] is False and "qqfile" in busy.json()["error"]
    assert "preventRetry" not in busy.json() or busy.json()["preventRetry"] is False
    assert held.held_now() == held.HELD_TOTAL_BYTES - 100
    # Fields before the file: nothing is held, whatever the others hold.
    placed = await post_form(api, form(chunk_fields(data, 0, None), data))
    assert placed.status_code == 200, placed.text
