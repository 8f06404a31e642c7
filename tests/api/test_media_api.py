"""The media API (seed 002 and the chunk endpoint before it) through the in-process app: the
django-chunked-upload client flow with a real PNG and a real PDF, the seed's curl and JavaScript
requests replayed, every documented field checked, and the error cases."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import re
from datetime import datetime, timedelta
from typing import Any

import pytest

from chunkd.auth.signing import Grant
from chunkd.frontends import held
from tests.conftest import Api
from tests.support.files import seeded_bytes
from tests.support.media_files import CHUNK, bomb_png, chunked_upload, make_pdf, make_png
from tests.support.openapi import answer_schema

CHUNK_PATH = "/api/v2/media/upload/chunk/"
COMPLETE_PATH = "/api/v2/media/upload/complete/"
MEDIA_FIELDS = {
    "id",
    "added_at",
    "type",
    "title",
    "description",
    "url",
    "image",
    "image_width",
    "image_height",
    "order",
    "embed",
}


def assert_media(body: dict[str, Any], *, type: str, width: int, height: int) -> None:
    """Every field of the seed's Media schema, with its type."""
    assert set(body) == MEDIA_FIELDS
    assert isinstance(body["id"], int) and not isinstance(body["id"], bool) and body["id"] > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", body["added_at"])
    datetime.fromisoformat(body["added_at"].replace("Z", "+00:00"))
    assert body["type"] == type
    assert body["title"] is None and body["description"] is None and body["url"] is None and body["embed"] is None
    assert isinstance(body["image"], str)
    assert re.fullmatch(
        rf"http://testserver/api/v2/media/{body['id']}/file/\?upload=[\w-]+&expires=\d+&key_id=[0-9a-f]{{16}}&signature=[\w-]+",
        body["image"],
    )
    assert body["image_width"] == width and body["image_height"] == height
    assert isinstance(body["order"], int) and body["order"] == 0


async def file_status(api: Api, upload_id: str, who: str = "alice") -> dict[str, Any]:
    response = await api.client.get(f"/v1/files/{upload_id}", headers=api.auth(who))
    assert response.status_code == 200, response.text
    return response.json()


def chunk_headers(api: Api, start: int, end: int, total: int, who: str = "alice") -> dict[str, str]:
    return {**api.auth(who), "Content-Range": f"bytes {start}-{end}/{total}"}


async def test_png_flow_with_seed_curl_request(api: Api) -> None:
    png = make_png(500, 300)
    assert len(png) > 2 * CHUNK  # several chunks
    upload_id = await chunked_upload(api.client, png, "photo.png", api.auth())
    pending = await file_status(api, upload_id)
    assert pending["status"] == "PENDING" and pending["bytesReceived"] == len(png)
    # The seed's curl example: url-encoded upload_id and md5, no type (image from the extension).
    response = await api.client.post(
        COMPLETE_PATH,
        content=f"upload_id={upload_id}&md5={hashlib.md5(png).hexdigest()}",
        headers={
            **api.auth(),
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        },
    )
    assert response.status_code == 201, response.text
    media = response.json()
    assert_media(media, type="image", width=500, height=300)
    # The file behind the media is an ordinary engine upload.
    done = await file_status(api, upload_id)
    assert done["status"] == "COMPLETED" and done["md5"] == hashlib.md5(png).hexdigest()
    download = await api.client.get(media["image"], headers=api.auth())
    assert download.status_code == 200 and download.content == png
    assert download.headers["content-type"] == "image/png"
    for path in (f"/api/v2/media/{media['id']}/", f"/api/v2/media/{media['id']}"):
        got = await api.client.get(path, headers=api.auth())
        assert got.status_code == 200 and got.json() == media
    # Completing again answers the same Media (a retried request must not make a second one).
    again = await api.client.post(
        COMPLETE_PATH, data={"upload_id": upload_id, "md5": hashlib.md5(png).hexdigest()}, headers=api.auth()
    )
    assert again.status_code == 201 and again.json() == media


async def test_seed_javascript_request_json_text_under_urlencoded_type(api: Api) -> None:
    """The seed's fetch() example sends a JSON string labelled x-www-form-urlencoded, with Bearer auth."""
    png = make_png(64, 48)
    upload_id = await chunked_upload(api.client, png, "inline.png", api.auth())
    input_body = json.dumps({"type": "eimage", "upload_id": upload_id, "md5": hashlib.md5(png).hexdigest()}, indent=2)
    response = await api.client.post(
        COMPLETE_PATH,
        content=input_body,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json", **api.auth()},
    )
    assert response.status_code == 201, response.text
    assert_media(response.json(), type="eimage", width=64, height=48)


async def test_pdf_flow_json_body_without_trailing_slashes(api: Api) -> None:
    pdf = make_pdf(padding=300_000, width=595, height=842)  # A4, spans two chunks
    assert len(pdf) > CHUNK
    upload_id = await chunked_upload(
        api.client, pdf, "report.pdf", api.auth(), field="document", path=CHUNK_PATH.rstrip("/")
    )
    response = await api.client.post(
        COMPLETE_PATH.rstrip("/"),
        json={"upload_id": upload_id, "md5": hashlib.md5(pdf).hexdigest()},
        headers=api.auth(),
    )
    assert response.status_code == 201, response.text
    media = response.json()
    assert_media(media, type="doc", width=595, height=842)  # a document's size is its first page's, in points
    download = await api.client.get(media["image"].replace("/file/?", "/file?"))
    assert download.status_code == 200 and download.content == pdf


async def test_media_get_delete_owner_scoped(api: Api) -> None:
    png = make_png(10, 10)
    upload_id = await chunked_upload(api.client, png, "a.png", api.auth())
    media = (
        await api.client.post(
            COMPLETE_PATH, data={"upload_id": upload_id, "md5": hashlib.md5(png).hexdigest()}, headers=api.auth()
        )
    ).json()
    path = f"/api/v2/media/{media['id']}/"
    for method in ("GET", "DELETE"):
        other = await api.client.request(method, path, headers=api.auth("bob"))
        assert other.status_code == 404 and "detail" in other.json()
    file_path = f"/api/v2/media/{media['id']}/file/"
    assert (await api.client.get(file_path, headers=api.auth("bob"))).status_code == 404
    assert (await api.client.get(file_path, headers=api.auth())).content == png
    assert (await api.client.get(file_path)).status_code == 401
    # The image URL carries its own signature: it works with no credentials (an <img src>) …
    assert (await api.client.get(media["image"])).content == png
    # A range past its end, on the signed URL: 416 in the media API's (DRF's) shape.
    past = await api.client.get(media["image"], headers={"Range": f"bytes={len(png)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(png)}"
    refused = {"detail": f"the file has {len(png)} bytes", "code": "range_not_satisfiable", "field": "Range"}
    assert past.json() == refused
    # … but not once changed, moved to another media, or expired.
    tampered = await api.client.get(media["image"].replace("signature=", "signature=x"))
    assert tampered.status_code == 403 and tampered.json()["detail"]
    moved = media["image"].replace(f"/media/{media['id']}/", f"/media/{media['id'] + 1}/")
    assert (await api.client.get(moved)).status_code == 403
    old = api.runtime.signer.sign(Grant("GET", file_path, upload_id, "alice"), -1)
    expired = await api.client.get(
        f"{file_path}?upload={upload_id}&expires={old['expires']}&signature={old['signature']}"
    )
    assert expired.status_code == 403 and "expired" in expired.json()["detail"]
    assert (await api.client.get(path)).status_code == 401
    assert (await api.client.delete(path, headers=api.auth("reader"))).status_code == 403
    deleted = await api.client.delete(path, headers=api.auth())
    assert deleted.status_code == 204
    assert (await api.client.get(path, headers=api.auth())).status_code == 404
    assert (await api.client.get(f"/v1/files/{upload_id}", headers=api.auth())).status_code == 404
    assert (await api.client.delete(path.rstrip("/"), headers=api.auth())).status_code == 404
    for bad in ("not-a-number", "0", "-1", str(2**31), str(2**70)):  # never reaches the int4 column
        for method in ("GET", "DELETE"):
            missing = await api.client.request(method, f"/api/v2/media/{bad}/", headers=api.auth())
            # As any missing media: not_found, naming the documented path parameter (not the handler's).
            assert missing.status_code == 404, (bad, missing.text)
            assert missing.json() == {"detail": f"no media with id {bad!r}", "code": "not_found", "field": "id"}


async def test_openapi_types_the_media_and_chunk_answers(api: Api) -> None:
    """Seed 002's Media (every field, with its type) and the chunk answer are typed in the
    published document; they were untyped objects, so a generated client handed back bare dicts."""
    document = (await api.client.get("/openapi.json")).json()

    for media in (
        answer_schema(document, "post", COMPLETE_PATH, "201"),
        answer_schema(document, "get", "/api/v2/media/{media_id}/", "200"),
    ):
        assert set(media["required"]) == MEDIA_FIELDS
        fields = media["properties"]
        assert fields["id"]["type"] == "integer" and fields["order"]["type"] == "integer"
        assert fields["added_at"] == {"type": "string", "format": "date-time", "title": "Added At"}
        assert fields["type"]["enum"] == ["image", "doc", "eimage"] and {"type": "string"} in fields["image"]["anyOf"]
        # image too: null for a credential without files:read (tests/security/test_media_urls.py).
        for name in ("title", "description", "url", "embed", "image"):
            assert {"type": "null"} in fields[name]["anyOf"]
        assert {"type": "integer"} in fields["image_width"]["anyOf"]
    chunk = answer_schema(document, "post", CHUNK_PATH, "201")
    assert set(chunk["required"]) == {"upload_id", "offset", "expires"}
    assert chunk["properties"]["offset"]["type"] == "integer"
    assert chunk["properties"]["expires"]["format"] == "date-time"


async def test_media_ids_are_increasing_integers(api: Api) -> None:
    ids = []
    for who in ("alice", "bob", "alice"):
        png = make_png(8, 8)
        upload_id = await chunked_upload(api.client, png, "a.png", api.auth(who))
        response = await api.client.post(
            COMPLETE_PATH, data={"upload_id": upload_id, "md5": hashlib.md5(png).hexdigest()}, headers=api.auth(who)
        )
        ids.append(response.json()["id"])
    assert ids == sorted(ids) and len(set(ids)) == 3


async def test_offset_mismatch_is_400_with_expected_offset_and_stores_nothing(api: Api) -> None:
    data = make_png(500, 300)
    total = len(data)
    first = await api.client.post(
        CHUNK_PATH,
        files={"image": ("p.png", data[:CHUNK])},
        headers=chunk_headers(api, 0, CHUNK - 1, total),
    )
    assert first.status_code == 201
    upload_id = first.json()["upload_id"]
    expires = first.json()["expires"]
    assert datetime.fromisoformat(expires.replace("Z", "+00:00")) > datetime.fromisoformat("2020-01-01T00:00:00+00:00")
    for start in (0, CHUNK + 10):  # a repeat of the first chunk, and a gap
        wrong = await api.client.post(
            CHUNK_PATH,
            data={"upload_id": upload_id},
            files={"image": ("p.png", data[start : start + 100])},
            headers=chunk_headers(api, start, start + 99, total),
        )
        assert wrong.status_code == 400, wrong.text
        assert wrong.json()["offset"] == CHUNK and wrong.json()["code"] == "offset_mismatch"
        # The start at fault comes in the Content-Range header (the API has no "offset" request field).
        assert wrong.json()["field"] == "Content-Range"
        assert (
            wrong.json()["detail"]
            == f"Content-Range must start at byte {CHUNK} (the offset received so far), not {start}"
        )
    assert (await file_status(api, upload_id))["bytesReceived"] == CHUNK
    # A chunk whose bytes do not match its Content-Range length: refused, nothing kept.
    short = await api.client.post(
        CHUNK_PATH,
        data={"upload_id": upload_id},
        files={"image": ("p.png", data[CHUNK : CHUNK + 50])},
        headers=chunk_headers(api, CHUNK, CHUNK + 99, total),
    )
    assert short.status_code == 400 and short.json()["field"] == "body"
    long = await api.client.post(
        CHUNK_PATH,
        data={"upload_id": upload_id},
        files={"image": ("p.png", data[CHUNK : CHUNK + 150])},
        headers=chunk_headers(api, CHUNK, CHUNK + 99, total),
    )
    assert long.status_code == 400
    assert (await file_status(api, upload_id))["bytesReceived"] == CHUNK
    # A different total than the first chunk's.
    other_total = await api.client.post(
        CHUNK_PATH,
        data={"upload_id": upload_id},
        files={"image": ("p.png", data[CHUNK : CHUNK + 100])},
        headers=chunk_headers(api, CHUNK, CHUNK + 99, total + 1),
    )
    assert other_total.status_code == 400 and other_total.json()["field"] == "Content-Range"
    # The right next chunk is still accepted.
    right = await api.client.post(
        CHUNK_PATH,
        data={"upload_id": upload_id},
        files={"image": ("p.png", data[CHUNK : 2 * CHUNK])},
        headers=chunk_headers(api, CHUNK, 2 * CHUNK - 1, total),
    )
    assert right.status_code == 201 and right.json()["offset"] == 2 * CHUNK


async def test_first_chunk_not_at_zero_creates_nothing(api: Api) -> None:
    response = await api.client.post(
        CHUNK_PATH, files={"image": ("p.png", b"x" * 10)}, headers=chunk_headers(api, 10, 19, 100)
    )
    assert response.status_code == 400 and response.json()["offset"] == 0
    assert (await api.client.get("/v1/files", headers=api.auth())).json()["data"] == []


async def test_chunk_request_validation(api: Api) -> None:
    # Without Content-Range a chunk is a whole file; a later chunk of a started upload needs it.
    started = await api.client.post(CHUNK_PATH, files={"image": ("p.png", b"x")}, headers=chunk_headers(api, 0, 0, 2))
    no_range = await api.client.post(
        CHUNK_PATH,
        data={"upload_id": started.json()["upload_id"]},
        files={"image": ("p.png", b"y")},
        headers=api.auth(),
    )
    assert no_range.status_code == 400 and no_range.json()["field"] == "Content-Range"
    bad_range = await api.client.post(CHUNK_PATH, files={"image": ("p.png", b"x")}, headers=chunk_headers(api, 5, 2, 9))
    assert bad_range.status_code == 400 and bad_range.json()["field"] == "Content-Range"
    no_file = await api.client.post(
        CHUNK_PATH, data={"a": "b"}, files={"other": ("x", b"x")}, headers=chunk_headers(api, 0, 0, 1)
    )
    assert no_file.status_code == 400
    not_multipart = await api.client.post(CHUNK_PATH, content=b"x", headers=chunk_headers(api, 0, 0, 1))
    assert not_multipart.status_code == 400 and not_multipart.json()["field"] == "Content-Type"
    unknown = await api.client.post(
        CHUNK_PATH,
        data={"upload_id": "A" * 22},
        files={"image": ("p.png", b"x")},
        headers=chunk_headers(api, 0, 0, 1),
    )
    assert unknown.status_code == 404
    unauthenticated = await api.client.post(
        CHUNK_PATH, files={"image": ("p.png", b"x")}, headers={"Content-Range": "bytes 0-0/1"}
    )
    assert unauthenticated.status_code == 401 and "detail" in unauthenticated.json()
    reader = await api.client.post(
        CHUNK_PATH, files={"image": ("p.png", b"x")}, headers=chunk_headers(api, 0, 0, 1, "reader")
    )
    assert reader.status_code == 403


async def test_another_owners_upload_id_is_404(api: Api) -> None:
    png = make_png(8, 8)
    upload_id = await chunked_upload(api.client, png, "a.png", api.auth())
    response = await api.client.post(
        COMPLETE_PATH, data={"upload_id": upload_id, "md5": hashlib.md5(png).hexdigest()}, headers=api.auth("bob")
    )
    assert response.status_code == 404
    # An upload of another API (a native /v1/files upload) is not a media upload either.
    native = await api.client.post("/v1/files", json={"filename": "a.png", "sizeBytes": 1}, headers=api.auth())
    response = await api.client.post(
        COMPLETE_PATH, data={"upload_id": native.json()["id"], "md5": "0" * 32}, headers=api.auth()
    )
    assert response.status_code == 404


async def test_unknown_or_foreign_upload_id_is_named_upload_id(api: Api) -> None:
    """Seed 002 names the field ``upload_id``; a client that sends a wrong one (unknown, another
    owner's) must be told so in those words, on the chunk and on complete alike, as it already was
    for an id of another API. The engine's own answer named a field ``id`` the API does not have."""
    png = make_png(8, 8)
    upload_id = await chunked_upload(api.client, png, "a.png", api.auth())
    for who, wrong in (("alice", "no-such-upload"), ("bob", upload_id)):
        response = await api.client.post(
            COMPLETE_PATH, data={"upload_id": wrong, "md5": hashlib.md5(png).hexdigest()}, headers=api.auth(who)
        )
        assert response.status_code == 404
        assert response.json() == {
            "detail": f"no media upload with id {wrong!r}",
            "code": "not_found",
            "field": "upload_id",
        }
        response = await api.client.post(
            CHUNK_PATH,
            data={"upload_id": wrong},
            files={"image": ("a.png", b"x")},
            headers=chunk_headers(api, 1, 1, 2, who),
        )
        assert response.status_code == 404
        assert response.json()["field"] == "upload_id"
        assert response.json()["detail"] == f"no media upload with id {wrong!r}"


async def test_size_limits_are_413_at_the_first_chunk(api: Api) -> None:
    too_big_chunk = await api.client.post(
        CHUNK_PATH, files={"image": ("p.png", b"x" * (CHUNK + 1))}, headers=chunk_headers(api, 0, CHUNK, 10 * CHUNK)
    )
    assert too_big_chunk.status_code == 413 and too_big_chunk.json()["field"] == "Content-Range"
    image_total = 5 * 1024 * 1024 + 1
    too_big_image = await api.client.post(
        CHUNK_PATH, files={"image": ("p.png", b"x" * 100)}, headers=chunk_headers(api, 0, 99, image_total)
    )
    assert too_big_image.status_code == 413 and "5242880" in too_big_image.json()["detail"]
    # The same total is fine for a document (50 MiB).
    document = await api.client.post(
        CHUNK_PATH, files={"document": ("d.pdf", b"x" * 100)}, headers=chunk_headers(api, 0, 99, image_total)
    )
    assert document.status_code == 201, document.text
    too_big_doc = await api.client.post(
        CHUNK_PATH, files={"document": ("d.pdf", b"x" * 100)}, headers=chunk_headers(api, 0, 99, 50 * 1024 * 1024 + 1)
    )
    assert too_big_doc.status_code == 413
    listed = (await api.client.get("/v1/files", headers=api.auth())).json()["data"]
    assert [f["id"] for f in listed] == [document.json()["upload_id"]]


async def test_declared_type_checks_its_own_size_limit(api: Api) -> None:
    media = api.runtime.media
    media.limits = dataclasses.replace(media.limits, image_bytes=300_000)
    pdf = make_pdf(padding=310_000)
    upload_id = await chunked_upload(api.client, pdf, "scan.pdf", api.auth(), field="document")
    response = await api.client.post(
        COMPLETE_PATH,
        data={"upload_id": upload_id, "md5": hashlib.md5(pdf).hexdigest(), "type": "image"},
        headers=api.auth(),
    )
    assert response.status_code == 413
    assert (await file_status(api, upload_id))["status"] == "PENDING"


async def complete(api: Api, upload_id: str, md5: str, **extra: str) -> Any:
    return await api.client.post(COMPLETE_PATH, data={"upload_id": upload_id, "md5": md5, **extra}, headers=api.auth())


async def test_complete_validation_leaves_upload_pending(api: Api) -> None:
    png = make_png(20, 10)
    md5 = hashlib.md5(png).hexdigest()
    upload_id = await chunked_upload(api.client, png, "x.png", api.auth())
    missing_md5 = await api.client.post(COMPLETE_PATH, data={"upload_id": upload_id}, headers=api.auth())
    assert missing_md5.status_code == 400 and missing_md5.json()["field"] == "md5"
    missing_id = await api.client.post(COMPLETE_PATH, data={"md5": md5}, headers=api.auth())
    assert missing_id.status_code == 400 and missing_id.json()["field"] == "upload_id"
    bad_md5 = await complete(api, upload_id, "xyz")
    assert bad_md5.status_code == 400 and bad_md5.json()["field"] == "md5"
    wrong_md5 = await complete(api, upload_id, "0" * 32)
    assert wrong_md5.status_code == 400 and wrong_md5.json()["code"] == "checksum_mismatch"
    unknown_type = await complete(api, upload_id, md5, type="video")
    assert unknown_type.status_code == 400 and unknown_type.json()["field"] == "type"
    case = await complete(api, upload_id, md5, type="Image")
    assert case.status_code == 400
    mismatch = await complete(api, upload_id, md5, type="doc")
    assert mismatch.status_code == 400 and "PDF" in mismatch.json()["detail"]
    bad_json = await api.client.post(
        COMPLETE_PATH, content=b"{not json", headers={**api.auth(), "Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert (await file_status(api, upload_id))["status"] == "PENDING"
    ok = await complete(api, upload_id, md5.upper())
    assert ok.status_code == 201 and ok.json()["type"] == "image"


async def test_a_repeated_complete_asking_another_type_is_refused(api: Api) -> None:
    """A complete sent again answers the Media the first one made, but only as what it asks for:
    asked for another type, it was answered 201 with the first type, as if created so."""
    png = make_png(16, 8)
    md5 = hashlib.md5(png).hexdigest()
    upload_id = await chunked_upload(api.client, png, "x.png", api.auth())
    first = await complete(api, upload_id, md5)  # the default: image, from the extension
    assert first.status_code == 201 and first.json()["type"] == "image"
    for other in ("eimage", "doc"):
        refused = await complete(api, upload_id, md5, type=other)
        assert refused.status_code == 400, refused.text
        assert refused.json()["field"] == "type" and other in refused.json()["detail"]
    # The same request again, with or without the type it made, is answered as the first.
    for same in ({}, {"type": "image"}):
        again = await complete(api, upload_id, md5, **same)
        assert again.status_code == 201 and again.json() == first.json()
    got = await api.client.get(f"/api/v2/media/{first.json()['id']}/", headers=api.auth())
    assert got.json()["type"] == "image"


async def test_incomplete_upload_cannot_complete(api: Api) -> None:
    png = make_png(500, 300)
    first = await api.client.post(
        CHUNK_PATH, files={"image": ("p.png", png[:CHUNK])}, headers=chunk_headers(api, 0, CHUNK - 1, len(png))
    )
    upload_id = first.json()["upload_id"]
    response = await complete(api, upload_id, hashlib.md5(png).hexdigest())
    assert response.status_code == 400 and response.json()["code"] == "size_mismatch"
    # Named as this API's field (the complete call's upload_id), not the Files API's sizeBytes.
    assert response.json()["field"] == "upload_id"
    assert f"received {CHUNK} of {len(png)} bytes" in response.json()["detail"]
    assert (await file_status(api, upload_id))["status"] == "PENDING"


@pytest.mark.parametrize(
    ("name", "content", "type", "message"),
    [
        ("cut.png", make_png(50, 50)[:-300], None, "damaged"),
        # Fixed bytes, not os.urandom: one draw in 65,536 begins with "BM", BMP's signature, and is
        # then a damaged BMP ("the image is damaged"), not "not an image".
        ("fake.png", seeded_bytes(417, 1000), None, "not an image"),
        ("fake.pdf", b"%PDF-1.7\n" + os.urandom(1000), None, "PDF cannot be read"),
        ("fake.pdf", make_png(10, 10), None, "not a PDF"),
        ("doc.pdf", make_pdf(), "image", "not an image"),
        ("bomb.png", bomb_png(), None, "pixels"),
        ("page.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', None, "not an image"),
        # A MediaBox past the media record's 32-bit width: its insert failed (500, and again on
        # every retry, the upload left COMPLETED without media).
        ("wide.pdf", make_pdf(width=1e30), None, "larger than any page"),
        ("wider-than-int32.pdf", make_pdf(width=3e9), None, "larger than any page"),
    ],
    ids=[
        "truncated-png",
        "random-bytes",
        "broken-pdf",
        "png-as-pdf",
        "pdf-as-image",
        "bomb",
        "svg",
        "huge-page",
        "page-past-int32",
    ],
)
async def test_content_must_match_type(api: Api, name: str, content: bytes, type: str | None, message: str) -> None:
    field = "document" if name.endswith(".pdf") else "image"
    upload_id = await chunked_upload(api.client, content, name, api.auth(), field=field)
    extra = {"type": type} if type else {}
    response = await complete(api, upload_id, hashlib.md5(content).hexdigest(), **extra)
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]
    assert (await file_status(api, upload_id))["status"] == "PENDING"


async def test_type_defaults_from_extension_then_field(api: Api) -> None:
    pdf = make_pdf()
    # A PDF sent as "blob" in the document field: no extension, so the field decides.
    upload_id = await chunked_upload(api.client, pdf, "blob", api.auth(), field="document")
    response = await complete(api, upload_id, hashlib.md5(pdf).hexdigest())
    assert response.status_code == 201 and response.json()["type"] == "doc"
    download = await api.client.get(response.json()["image"])
    assert download.content == pdf and download.headers["content-type"] == "application/pdf"


async def test_upload_id_after_the_file_part(api: Api) -> None:
    """django-chunked-upload reads the form in any order: a later chunk may name its upload_id
    after the file part (a FormData built file first, ``curl -F image=@… -F upload_id=…``). The
    chunk (at most one chunk long) is then held until the form's end names the upload. A first
    chunk followed by an upload_id is refused, and nothing of it kept."""
    first = await api.client.post(
        CHUNK_PATH, files={"image": ("p.png", b"x" * 100)}, headers=chunk_headers(api, 0, 99, 300)
    )
    upload_id = first.json()["upload_id"]

    def file_first(data: bytes, upload: str | None) -> bytes:
        # httpx puts data fields first; build a body with the file part before upload_id by hand.
        late_field = b""
        if upload is not None:
            late_field = b'--B\r\nContent-Disposition: form-data; name="upload_id"\r\n\r\n' + upload.encode() + b"\r\n"
        return (
            b'--B\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n\r\n'
            + data
            + b"\r\n"
            + late_field
            + b"--B--\r\n"
        )

    def headers(start: int, end: int) -> dict[str, str]:
        return {**chunk_headers(api, start, end, 300), "Content-Type": "multipart/form-data; boundary=B"}

    late = await api.client.post(CHUNK_PATH, content=file_first(b"y" * 100, upload_id), headers=headers(100, 199))
    assert late.status_code == 201, late.text
    assert late.json()["upload_id"] == upload_id and late.json()["offset"] == 200
    # Longer than its Content-Range, at a wrong offset, or naming no upload at all: refused, nothing kept.
    long = await api.client.post(CHUNK_PATH, content=file_first(b"z" * 101, upload_id), headers=headers(200, 299))
    assert long.status_code == 400, long.text
    wrong = await api.client.post(CHUNK_PATH, content=file_first(b"z" * 100, upload_id), headers=headers(100, 199))
    assert wrong.status_code == 400 and wrong.json()["offset"] == 200
    nameless = await api.client.post(CHUNK_PATH, content=file_first(b"z" * 100, None), headers=headers(200, 299))
    assert nameless.status_code == 400 and nameless.json()["offset"] == 0  # read as a new upload's first chunk
    listed = (await api.client.get("/v1/files", headers=api.auth())).json()["data"]
    assert [f["id"] for f in listed] == [upload_id] and listed[0]["bytesReceived"] == 200
    body = file_first(b"y" * 100, upload_id)
    at_zero = await api.client.post(
        CHUNK_PATH,
        content=body,
        headers={**chunk_headers(api, 0, 99, 300), "Content-Type": "multipart/form-data; boundary=B"},
    )
    assert at_zero.status_code == 400 and at_zero.json()["field"] == "upload_id"
    listed = (await api.client.get("/v1/files", headers=api.auth())).json()["data"]
    assert [f["id"] for f in listed] == [upload_id]  # the new upload made for it is gone again


async def test_chunks_held_for_their_upload_id_share_one_bound(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk held in memory until a later upload_id names its upload counts against the process's
    budget (shared with the pm dialect's held forms): past it the chunk is a retryable 429 naming
    upload_id, nothing of it is kept, and its bytes are counted off again however it ends."""
    first = await api.client.post(
        CHUNK_PATH, files={"image": ("p.png", b"x" * 100)}, headers=chunk_headers(api, 0, 99, 300)
    )
    upload_id = first.json()["upload_id"]
    body = (
        b'--B\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n\r\n'
        + b"y" * 100
        + b'\r\n--B\r\nContent-Disposition: form-data; name="upload_id"\r\n\r\n'
        + upload_id.encode()
        + b"\r\n--B--\r\n"
    )
    headers = {**chunk_headers(api, 100, 199, 300), "Content-Type": "multipart/form-data; boundary=B"}
    monkeypatch.setattr(held, "_held_now", held.HELD_TOTAL_BYTES - 50)  # other requests hold the rest
    busy = await api.client.post(CHUNK_PATH, content=body, headers=headers)
    assert busy.status_code == 429, busy.text
    assert busy.json()["code"] == "rate_limited" and busy.json()["field"] == "upload_id"
    assert busy.headers["retry-after"] == "1"
    assert held.held_now() == held.HELD_TOTAL_BYTES - 50
    listed = (await api.client.get("/v1/files", headers=api.auth())).json()["data"]
    assert listed[0]["bytesReceived"] == 100
    # Room again: the same chunk is held, stored, and its bytes counted off.
    monkeypatch.setattr(held, "_held_now", 0)
    late = await api.client.post(CHUNK_PATH, content=body, headers=headers)
    assert late.status_code == 201 and late.json()["offset"] == 200, late.text
    assert held.held_now() == 0


async def test_expired_upload_is_410(api: Api) -> None:
    first = await api.client.post(
        CHUNK_PATH, files={"image": ("p.png", b"x" * 100)}, headers=chunk_headers(api, 0, 99, 200)
    )
    upload_id = first.json()["upload_id"]
    service = api.runtime.uploads
    later = service.clock() + timedelta(days=2)
    service.clock = lambda: later
    response = await api.client.post(
        CHUNK_PATH,
        data={"upload_id": upload_id},
        files={"image": ("p.png", b"x" * 100)},
        headers=chunk_headers(api, 100, 199, 200),
    )
    assert response.status_code == 410 and response.json()["code"] == "upload_expired"


async def test_a_second_file_part_is_refused_and_nothing_kept(api: Api) -> None:
    first = await api.client.post(
        CHUNK_PATH, files={"image": ("p.png", b"x" * 100)}, headers=chunk_headers(api, 0, 99, 300)
    )
    upload_id = first.json()["upload_id"]
    body = (
        b'--B\r\nContent-Disposition: form-data; name="upload_id"\r\n\r\n'
        + upload_id.encode()
        + b'\r\n--B\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n\r\n'
        + b"y" * 100
        + b'\r\n--B\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n\r\n'
        + b"z" * 100
        + b"\r\n--B--\r\n"
    )
    second = await api.client.post(
        CHUNK_PATH,
        content=body,
        headers={**chunk_headers(api, 100, 199, 300), "Content-Type": "multipart/form-data; boundary=B"},
    )
    assert second.status_code == 400, second.text
    assert "one file part" in second.text
    status = (await api.client.get(f"/v1/files/{upload_id}", headers=api.auth())).json()
    assert status["bytesReceived"] == 100  # the refused request kept nothing


async def test_small_file_without_content_range_is_the_whole_file(api: Api) -> None:
    """jQuery File Upload sends no Content-Range for a file smaller than one chunk (the media API's
    protocol comes from django-chunked-upload, which takes such a chunk as the whole file)."""
    png = make_png(20, 10)
    assert len(png) < CHUNK
    response = await api.client.post(CHUNK_PATH, files={"image": ("small.png", png, "image/png")}, headers=api.auth())
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"upload_id", "offset", "expires"} and body["offset"] == len(png)
    pending = await file_status(api, body["upload_id"])
    assert pending["status"] == "PENDING" and pending["sizeBytes"] == len(png)
    done = await api.client.post(
        COMPLETE_PATH, data={"upload_id": body["upload_id"], "md5": hashlib.md5(png).hexdigest()}, headers=api.auth()
    )
    assert done.status_code == 201, done.text
    assert_media(done.json(), type="image", width=20, height=10)
    assert (await api.client.get(done.json()["image"])).content == png


async def test_whole_file_without_content_range_waits_for_its_lock_as_a_chunk_does(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new upload's lock may take a moment (on PostgreSQL, a free one of CHUNKD_LOCK_CONNECTIONS):
    the whole file's append tried once where a chunk's waits TAKE_OVER_WAIT, and was refused 409
    upload_busy. Here the new upload's lock is held elsewhere until the request asks for it."""
    from chunkd.service import lifecycle

    monkeypatch.setattr(lifecycle, "new_upload_id", lambda: "crowdedlockBBBBBBBBBBB")
    service = api.runtime.uploads
    real_hold = service.locks.hold
    asked = asyncio.Event()

    def noting_hold(upload_id: str, *, timeout: float):  # type: ignore[no-untyped-def]
        if upload_id == "crowdedlockBBBBBBBBBBB":
            asked.set()
        return real_hold(upload_id, timeout=timeout)

    png = make_png(20, 10)
    async with real_hold("crowdedlockBBBBBBBBBBB", timeout=1):
        monkeypatch.setattr(service.locks, "hold", noting_hold)
        files = {"image": ("small.png", png, "image/png")}
        sending = asyncio.create_task(api.client.post(CHUNK_PATH, files=files, headers=api.auth()))
        await asked.wait()
    response = await sending
    assert response.status_code == 201, response.text
    assert response.json()["offset"] == len(png)


async def test_whole_file_without_content_range_is_at_most_one_chunk(api: Api) -> None:
    big = os.urandom(CHUNK + 1)
    response = await api.client.post(CHUNK_PATH, files={"image": ("big.png", big)}, headers=api.auth())
    assert response.status_code == 413, response.text
    assert response.json()["field"] == "image"
    assert (await api.client.get("/v1/files", headers=api.auth())).json()["data"] == []


@pytest.mark.parametrize(("name", "make", "type"), [("scan.pdf", make_pdf, "doc"), ("photo.png", make_png, "image")])
async def test_django_chunked_upload_default_field_file(api: Api, name: str, make: Any, type: str) -> None:
    """django-chunked-upload's view takes the chunk in a field named ``file``: accepted too, the
    type then coming from the extension (else the content's check as an image)."""
    data = make()
    upload_id = await chunked_upload(api.client, data, name, api.auth(), field="file")
    response = await complete(api, upload_id, hashlib.md5(data).hexdigest())
    assert response.status_code == 201, response.text
    assert response.json()["type"] == type
    # A file of at most one chunk, sent whole (no Content-Range), in the same field.
    whole = await api.client.post(CHUNK_PATH, files={"file": (name, data[:CHUNK])}, headers=api.auth())
    assert whole.status_code == 201, whole.text
    assert whole.json()["offset"] == len(data[:CHUNK])
