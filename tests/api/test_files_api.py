"""The native Files API through httpx's ASGI transport."""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import timedelta

import httpx

from chunkd.domain import errors as e
from chunkd.frontends.native.errors import render_error as native_render
from chunkd.service.crc import crc64_hex, crc64nvme
from tests.conftest import Api


async def create(api: Api, data: bytes, part_size: int, who: str = "alice", **extra: object) -> dict:
    body = {"filename": "video.mp4", "sizeBytes": len(data), "partSize": part_size, **extra}
    response = await api.client.post("/v1/files", json=body, headers=api.auth(who))
    assert response.status_code == 201, response.text
    return response.json()


async def put_part(api: Api, file_id: str, number: int, data: bytes, **headers: str):
    return await api.client.put(f"/v1/files/{file_id}/parts/{number}", content=data, headers={**api.auth(), **headers})


async def test_lifecycle_out_of_order_parts(api: Api) -> None:
    data = os.urandom(10 * 1024 + 17)
    created = await create(api, data, 1024)
    assert created["status"] == "PENDING"
    assert created["partCount"] == 11
    assert created["expiresAt"] and created["completedAt"] is None
    assert created["mimeType"] == "video/mp4"
    file_id = created["id"]
    order = [5, 1, 11, 2, 3, 4, 10, 9, 8, 6, 7]
    for n in order:
        chunk = data[(n - 1) * 1024 : n * 1024]
        response = await put_part(api, file_id, n, chunk)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "partNumber": n,
            "sizeBytes": len(chunk),
            # Without Content-MD5 a part's ETag is its CRC-64/NVME (one MD5 pass per byte: the file's).
            "etag": f'"{crc64_hex(crc64nvme(chunk))}"',
        }
    got = (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()
    assert got["bytesReceived"] == len(data)
    assert [p["partNumber"] for p in got["parts"]] == list(range(1, 12))
    await api.runtime.uploads.finish_hash_runs()  # parts answered while the hash run catches up
    upload = await api.runtime.repo.get(file_id)
    assert upload is not None and upload.hash_offset == len(data)  # hash carried forward before complete
    md5 = hashlib.md5(data).hexdigest()
    done = await api.client.post(f"/v1/files/{file_id}/complete", json={"md5": md5}, headers=api.auth())
    assert done.status_code == 200, done.text
    body = done.json()
    assert set(body) == {"id", "completedAt", "createdAt", "expiresAt", "filename", "mimeType", "sizeBytes", "status"}
    assert body["status"] == "COMPLETED" and body["expiresAt"] is None and body["sizeBytes"] == len(data)
    again = await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())
    assert again.status_code == 200 and again.json() == body
    content = await api.client.get(f"/v1/files/{file_id}/content", headers=api.auth())
    assert content.status_code == 200 and content.content == data
    assert content.headers["etag"] == f'"{md5}"'
    assert content.headers["content-disposition"].startswith("attachment;")
    ranged = await api.client.get(f"/v1/files/{file_id}/content", headers={**api.auth(), "Range": "bytes=1000-3000"})
    assert ranged.status_code == 206 and ranged.content == data[1000:3001]
    assert ranged.headers["content-range"] == f"bytes 1000-3000/{len(data)}"


async def test_a_range_of_more_digits_than_int_reads_is_answered_not_a_500(api: Api) -> None:
    """RFC 9110 bounds no range position: 5,000 digits (int() refuses past 4,300) was a 500."""
    data = os.urandom(3000)
    file_id = (await create(api, data, 3000))["id"]
    await put_part(api, file_id, 1, data)
    assert (await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())).status_code == 200
    url = f"/v1/files/{file_id}/content"
    past = await api.client.get(url, headers={**api.auth(), "Range": "bytes=" + "9" * 5000 + "-"})
    assert past.status_code == 416 and past.headers["content-range"] == "bytes */3000"
    suffix = await api.client.get(url, headers={**api.auth(), "Range": "bytes=-" + "9" * 5000})
    assert suffix.status_code == 206 and suffix.content == data
    tail = await api.client.get(url, headers={**api.auth(), "Range": "bytes=2990-" + "9" * 5000})
    assert tail.status_code == 206 and tail.content == data[2990:]


async def test_downloads_honour_conditional_requests(api: Api) -> None:
    """RFC 9110 §13: If-Match (strong, 412), If-None-Match (weak comparison, ``*``, lists: 304),
    If-Unmodified-Since / If-Modified-Since against Last-Modified (the completion time), If-Range
    by ETag or by that date; and of an empty file a suffix range is the whole (empty) file. If-Match
    was ignored, If-None-Match matched one exact strong tag only, and there was no Last-Modified."""
    from email.utils import format_datetime, parsedate_to_datetime

    data = os.urandom(3000)
    file_id = (await create(api, data, 3000))["id"]
    await put_part(api, file_id, 1, data)
    assert (await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())).status_code == 200
    url = f"/v1/files/{file_id}/content"

    async def get(method: str = "GET", **headers: str) -> httpx.Response:
        return await api.client.request(method, url, headers={**api.auth(), **headers})

    plain = await get()
    etag, modified = plain.headers["etag"], plain.headers["last-modified"]
    later = format_datetime(parsedate_to_datetime(modified) + timedelta(hours=1), usegmt=True)
    earlier = format_datetime(parsedate_to_datetime(modified) - timedelta(hours=1), usegmt=True)
    assert (await get(**{"If-Match": '"nope"'})).status_code == 412
    assert (await get(**{"If-Match": '"nope"', "Range": "bytes=0-1"})).status_code == 412
    assert (await get(**{"If-Match": f'"x", {etag}'})).status_code == 200
    assert (await get(**{"If-Match": "*"})).status_code == 200
    assert (await get(**{"If-Match": f"W/{etag}"})).status_code == 412  # strong comparison
    for value in (etag, f"W/{etag}", "*", f'"x", {etag}', f'{etag}, "x"'):
        for method in ("GET", "HEAD"):
            answer = await get(method, **{"If-None-Match": value})
            assert answer.status_code == 304 and answer.content == b"", (value, method)
            assert answer.headers["etag"] == etag and "content-disposition" not in answer.headers
    assert (await get(**{"If-None-Match": '"x"'})).status_code == 200
    assert (await get(**{"If-Unmodified-Since": earlier})).status_code == 412
    assert (await get(**{"If-Unmodified-Since": later})).status_code == 200
    assert (await get(**{"If-Modified-Since": later})).status_code == 304
    assert (await get(**{"If-Modified-Since": modified})).status_code == 304
    assert (await get(**{"If-Modified-Since": earlier})).status_code == 200
    assert (await get(**{"If-Modified-Since": "yesterday"})).status_code == 200  # not a date: ignored
    # If-None-Match wins over If-Modified-Since.
    assert (await get(**{"If-None-Match": '"x"', "If-Modified-Since": later})).status_code == 200
    for value, partial in ((etag, True), (modified, True), ('"x"', False), (earlier, False)):
        ranged = await get(**{"Range": "bytes=0-9", "If-Range": value})
        assert ranged.status_code == (206 if partial else 200), value
        assert ranged.content == (data[:10] if partial else data)
    empty = (await create(api, b"", 1))["id"]
    assert (await api.client.post(f"/v1/files/{empty}/complete", headers=api.auth())).status_code == 200
    suffix = await api.client.get(f"/v1/files/{empty}/content", headers={**api.auth(), "Range": "bytes=-1"})
    assert suffix.status_code == 200 and suffix.content == b""
    start = await api.client.get(f"/v1/files/{empty}/content", headers={**api.auth(), "Range": "bytes=0-"})
    assert start.status_code == 416


async def test_resent_part_with_different_bytes_rewinds_hash(api: Api) -> None:
    data = bytearray(os.urandom(4096))
    file_id = (await create(api, bytes(data), 1024))["id"]
    for n in range(1, 5):
        await put_part(api, file_id, n, bytes(data[(n - 1) * 1024 : n * 1024]))
    other = os.urandom(1024)
    assert (await put_part(api, file_id, 2, other)).status_code == 200
    data[1024:2048] = other
    done = await api.client.post(
        f"/v1/files/{file_id}/complete", json={"md5": hashlib.md5(data).hexdigest()}, headers=api.auth()
    )
    assert done.status_code == 200, done.text


async def test_missing_parts_and_wrong_md5_leave_upload_pending(api: Api) -> None:
    data = os.urandom(3000)
    file_id = (await create(api, data, 1000))["id"]
    await put_part(api, file_id, 1, data[:1000])
    missing = await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())
    assert missing.status_code == 409
    assert missing.json()["error"]["code"] == "missing_parts"
    assert missing.json()["error"]["missingParts"] == [2, 3]
    await put_part(api, file_id, 2, data[1000:2000])
    await put_part(api, file_id, 3, data[2000:])
    wrong = await api.client.post(f"/v1/files/{file_id}/complete", json={"md5": "0" * 32}, headers=api.auth())
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "checksum_mismatch"
    got = (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()
    assert got["status"] == "PENDING"
    ok = await api.client.post(f"/v1/files/{file_id}/complete", json={}, headers=api.auth())
    assert ok.status_code == 200 and ok.json()["status"] == "COMPLETED"


async def test_a_part_etag_is_described_as_what_it_is(api: Api) -> None:
    """Without Content-MD5 a part's etag is its CRC-64/NVME, not its MD5: the published document
    said "The part's MD5", and a client comparing it with the part's MD5 saw every part differ."""
    data = os.urandom(100)
    file_id = (await create(api, data, 1024))["id"]
    etag = (await put_part(api, file_id, 1, data)).json()["etag"]
    assert etag == f'"{crc64_hex(crc64nvme(data))}"' and etag != f'"{hashlib.md5(data).hexdigest()}"'
    schemas = (await api.client.get("/openapi.json")).json()["components"]["schemas"]
    described = schemas["PartObject"]["properties"]["etag"]["description"]
    assert "CRC-64/NVME" in described and "Content-MD5" in described


async def test_part_validation(api: Api) -> None:
    data = os.urandom(2500)
    file_id = (await create(api, data, 1000))["id"]
    short = await put_part(api, file_id, 1, data[:999])
    assert short.status_code == 400 and short.json()["error"]["code"] == "part_size_mismatch"
    out = await put_part(api, file_id, 4, data[:10])
    assert out.status_code == 400 and out.json()["error"]["code"] == "part_out_of_range"
    bad_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    mismatch = await put_part(api, file_id, 1, data[:1000], **{"Content-MD5": bad_md5})
    assert mismatch.status_code == 400 and mismatch.json()["error"]["code"] == "checksum_mismatch"
    good_md5 = base64.b64encode(hashlib.md5(data[:1000]).digest()).decode()
    assert (await put_part(api, file_id, 1, data[:1000], **{"Content-MD5": good_md5})).status_code == 200
    got = (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()
    assert got["bytesReceived"] == 1000


async def test_whole_body_put_to_signed_upload_url(api: Api) -> None:
    data = os.urandom(5000)
    created = await create(api, data, 1024, md5=hashlib.md5(data).hexdigest())
    url = created["uploadUrl"]
    put = await api.client.put(url, content=data, headers=created["uploadHeaders"])
    assert put.status_code == 200, put.text
    assert put.json()["bytesReceived"] == 5000 and len(put.json()["parts"]) == 5
    tampered = url.replace("signature=", "signature=x")
    assert (await api.client.put(tampered, content=data)).status_code == 403
    done = await api.client.post(f"/v1/files/{created['id']}/complete", headers=api.auth())
    assert done.status_code == 200


async def test_cancel_and_state_conflicts(api: Api) -> None:
    file_id = (await create(api, b"x" * 10, 1024))["id"]
    cancelled = await api.client.post(f"/v1/files/{file_id}/cancel", headers=api.auth())
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    assert (await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())).status_code == 409
    assert (await put_part(api, file_id, 1, b"x" * 10)).status_code == 409
    # A cancel sent again (its answer lost) is answered as the first; a completed upload's is a 409.
    again = await api.client.post(f"/v1/files/{file_id}/cancel", headers=api.auth())
    assert again.status_code == 200 and again.json() == cancelled.json()
    done_id = (await create(api, b"y" * 10, 1024))["id"]
    assert (await put_part(api, done_id, 1, b"y" * 10)).status_code == 200
    assert (await api.client.post(f"/v1/files/{done_id}/complete", headers=api.auth())).status_code == 200
    refused = await api.client.post(f"/v1/files/{done_id}/cancel", headers=api.auth())
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "invalid_state"


async def test_state_conflicts_tell_the_sdk_not_to_retry(api: Api) -> None:
    """Seed 004's client is a Stainless-generated SDK, which retries every 409 twice (backing off)
    unless the answer says ``X-Should-Retry: false``: missing parts, a cancelled, completed or
    expired upload answer the same again, so they say so. A busy upload (409 too) does not."""
    data = os.urandom(2000)
    file_id = (await create(api, data, 1000))["id"]
    await put_part(api, file_id, 1, data[:1000])
    missing = await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())
    assert missing.status_code == 409 and missing.headers["x-should-retry"] == "false"
    cancelled_id = (await create(api, b"x" * 10, 1024))["id"]
    assert (await api.client.post(f"/v1/files/{cancelled_id}/cancel", headers=api.auth())).status_code == 200
    after_cancel = await api.client.post(f"/v1/files/{cancelled_id}/complete", headers=api.auth())
    assert after_cancel.status_code == 409 and after_cancel.headers["x-should-retry"] == "false"
    await put_part(api, file_id, 2, data[1000:])
    assert (await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())).status_code == 200
    cancel_completed = await api.client.post(f"/v1/files/{file_id}/cancel", headers=api.auth())
    assert cancel_completed.status_code == 409 and cancel_completed.headers["x-should-retry"] == "false"
    pending_id = (await create(api, b"y" * 10, 1024))["id"]
    service = api.runtime.uploads
    real_clock = service.clock
    service.clock = lambda: real_clock() + timedelta(days=2)
    try:
        expired = await api.client.post(f"/v1/files/{pending_id}/complete", headers=api.auth())
    finally:
        service.clock = real_clock
    assert expired.status_code == 409 and expired.headers["x-should-retry"] == "false"
    busy = native_render(e.Busy("another request is writing this upload"))
    assert busy is not None and busy.status_code == 409 and "x-should-retry" not in busy.headers
    # Other errors are left to the SDK's own rules (it retries no other 4xx).
    assert "x-should-retry" not in (await api.client.post("/v1/files/nope/complete", headers=api.auth())).headers


async def test_an_upload_past_its_expiry_reads_as_expired_before_the_reaper_runs(api: Api) -> None:
    """GET answers what complete and every write already answer (upload_expired): EXPIRED, with
    no expiry left and no fresh uploadUrl, whether or not the reaper has recorded it yet."""
    file_id = (await create(api, b"x" * 10, 1024))["id"]
    assert (await put_part(api, file_id, 1, b"x" * 10)).status_code == 200
    service = api.runtime.uploads
    real_clock = service.clock
    service.clock = lambda: real_clock() + timedelta(days=2)
    try:
        done = await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())
        assert done.status_code == 409 and done.json()["error"]["code"] == "upload_expired"
        for reaped in (False, True):
            shown = (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()
            assert shown["status"] == "EXPIRED" and shown["expiresAt"] is None and shown["parts"] == [], (reaped, shown)
            assert "uploadUrl" not in shown or shown["uploadUrl"] is None
            listed = (await api.client.get("/v1/files", headers=api.auth())).json()["data"]
            assert [f["status"] for f in listed if f["id"] == file_id] == ["EXPIRED"]
            assert await service.expire_due() == (0 if reaped else 1)
    finally:
        service.clock = real_clock


async def test_owner_isolation_and_scopes(api: Api) -> None:
    file_id = (await create(api, b"x" * 10, 1024))["id"]
    assert (await api.client.get(f"/v1/files/{file_id}", headers=api.auth("bob"))).status_code == 404
    assert (await api.client.get(f"/v1/files/{file_id}")).status_code == 401
    denied = await api.client.post("/v1/files", json={"filename": "a", "sizeBytes": 1}, headers=api.auth("reader"))
    assert denied.status_code == 403 and "files:create" in denied.json()["error"]["message"]
    listing = (await api.client.get("/v1/files", headers=api.auth("bob"))).json()
    assert listing["data"] == []


async def test_list_pagination(api: Api) -> None:
    ids = [(await create(api, b"x", 1024))["id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get("/v1/files", params=params, headers=api.auth())).json()
        seen += [f["id"] for f in page["data"]]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))


async def test_bad_input_is_400_naming_field(api: Api) -> None:
    response = await api.client.post("/v1/files", json={"filename": "a", "sizeBytes": -1}, headers=api.auth())
    assert response.status_code == 400 and response.json()["error"]["field"] == "sizeBytes"
    response = await api.client.post(
        "/v1/files", json={"filename": "a", "sizeBytes": 10, "md5": "zz"}, headers=api.auth()
    )
    assert response.status_code == 400 and response.json()["error"]["field"] == "md5"


async def test_path_errors_name_the_documented_id(api: Api) -> None:
    """Seed 004 documents ``POST /v1/files/{id}/complete`` with the parameter ``id``; an id the
    route refuses before looking it up (past 64 characters) is named ``id``, as the document names
    it, not by the handler's ``file_id``."""
    response = await api.client.post(f"/v1/files/{'a' * 65}/complete", headers=api.auth())
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and error["field"] == "id"
    assert error["message"].startswith("id: ") and "file_id" not in error["message"]
    created = await create(api, b"abc", 1024)
    for bad in ("0", "10001", "x"):
        response = await api.client.put(f"/v1/files/{created['id']}/parts/{bad}", content=b"a", headers=api.auth())
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["field"] == "partNumber" and "part_number" not in error["message"], error


async def test_complete_body_sent_without_a_json_content_type_names_it(api: Api) -> None:
    """Seed 004's body ``{md5}`` is JSON; sent as ``curl -d '{"md5": …}'`` does (url-encoded
    Content-Type), it is refused naming Content-Type and saying so, where FastAPI's own words were
    "body: Input should be a valid dictionary or object" for a body that is one."""
    data = b"abc"
    created = await create(api, data, 3)
    await put_part(api, created["id"], 1, data)
    body = f'{{"md5": "{hashlib.md5(data).hexdigest()}"}}'
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):
        response = await api.client.post(
            f"/v1/files/{created['id']}/complete",
            content=body,
            headers={**api.auth(), "Content-Type": content_type},
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["field"] == "Content-Type" and "application/json" in error["message"]
    ok = await api.client.post(
        f"/v1/files/{created['id']}/complete",
        content=body,
        headers={**api.auth(), "Content-Type": "application/json"},
    )
    assert ok.status_code == 200 and ok.json()["status"] == "COMPLETED", ok.text


async def test_a_purpose_given_at_creation_is_kept_and_shown(api: Api) -> None:
    """The Lightfield files API the Files API follows creates a file from ``{filename, mimeType,
    sizeBytes, purpose?}``: a client that sends ``purpose`` must be able to create its file."""
    created = await create(api, b"abc", 1024, purpose="attachment", mimeType="application/pdf")
    assert created["purpose"] == "attachment"
    shown = await api.client.get(f"/v1/files/{created['id']}", headers=api.auth())
    assert shown.json()["purpose"] == "attachment"
    assert (await create(api, b"abc", 1024))["purpose"] is None
    for bad in ("", "x" * 101, 5):
        refused = await api.client.post(
            "/v1/files", json={"filename": "a", "sizeBytes": 3, "purpose": bad}, headers=api.auth()
        )
        assert refused.status_code == 400 and refused.json()["error"]["field"] == "purpose", refused.text


async def test_an_idempotency_key_sent_again_with_another_purpose_is_refused(api: Api) -> None:
    body = {"filename": "a.pdf", "sizeBytes": 3, "purpose": "attachment"}
    headers = {**api.auth(), "Idempotency-Key": "purpose-key-1"}
    first = await api.client.post("/v1/files", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await api.client.post("/v1/files", json=body, headers=headers)
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    other = await api.client.post("/v1/files", json={**body, "purpose": "avatar"}, headers=headers)
    assert other.status_code == 400, other.text
