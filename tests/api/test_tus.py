"""The tus 1.0 protocol at /files, rule by rule, through the in-process app."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import zlib
from collections.abc import AsyncIterator
from datetime import timedelta
from email.utils import parsedate_to_datetime

import httpx
import pytest

from chunkd.domain.upload import Status, Upload
from chunkd.frontends.tus.creation import ONE_WRITE_BODY
from chunkd.ports.blobs import StoreCapabilities
from chunkd.service.crc import crc64_b64, crc64_hex, crc64nvme
from tests.conftest import Api

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


def b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def h(api: Api, who: str = "alice", **extra: str) -> dict[str, str]:
    return {**TUS, **api.auth(who), **{k.replace("_", "-"): v for k, v in extra.items()}}


async def create(api: Api, length: int | None, who: str = "alice", **extra: str) -> str:
    headers = h(api, who, **extra)
    if length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(length)
    response = await api.client.post("/files", headers=headers)
    assert response.status_code == 201, response.text
    location = response.headers["location"]
    assert location.startswith("http://testserver/files/")
    return location.rsplit("/", 1)[1]


async def patch(api: Api, upload_id: str, offset: int, data: bytes, who: str = "alice", **extra: str):
    headers = {**h(api, who, **extra), **OCTETS, "Upload-Offset": str(offset)}
    return await api.client.patch(f"/files/{upload_id}", content=data, headers=headers)


async def head(api: Api, upload_id: str, who: str = "alice") -> httpx.Response:
    return await api.client.head(f"/files/{upload_id}", headers=h(api, who))


# ---- core -------------------------------------------------------------------------------------------
async def test_options_needs_no_auth_or_version(api: Api) -> None:
    for path in ("/files", "/files/", "/files/anything"):
        response = await api.client.options(path)
        assert response.status_code == 204
        assert response.headers["tus-resumable"] == "1.0.0"
        assert response.headers["tus-version"] == "1.0.0"
        assert set(response.headers["tus-extension"].split(",")) == {
            "creation",
            "creation-with-upload",
            "creation-defer-length",
            "expiration",
            "checksum",
            "termination",
            "concatenation",
            "concatenation-unfinished",
        }
        assert int(response.headers["tus-max-size"]) == api.runtime.settings.max_file_size
        assert response.headers["tus-checksum-algorithm"] == "md5,sha1,sha256,crc32"


@pytest.mark.parametrize("version", [None, "0.2.2", "2.0.0"])
async def test_missing_or_unsupported_version_is_412_with_tus_version(api: Api, version: str | None) -> None:
    upload_id = await create(api, 10)
    headers = {**api.auth(), "Upload-Length": "5"}
    if version:
        headers["Tus-Resumable"] = version
    requests = [
        api.client.post("/files", headers=headers),
        api.client.head(f"/files/{upload_id}", headers=headers),
        api.client.patch(f"/files/{upload_id}", content=b"x", headers={**headers, **OCTETS, "Upload-Offset": "0"}),
        api.client.delete(f"/files/{upload_id}", headers=headers),
    ]
    for response in await asyncio.gather(*requests):
        assert response.status_code == 412, response.text
        assert response.headers["tus-version"] == "1.0.0"
        assert response.headers["tus-resumable"] == "1.0.0"
    assert (await head(api, upload_id)).headers["upload-offset"] == "0"


async def test_every_request_needs_credentials(api: Api) -> None:
    upload_id = await create(api, 10)
    for method, path in [("POST", "/files"), ("HEAD", f"/files/{upload_id}"), ("PATCH", f"/files/{upload_id}")]:
        response = await api.client.request(method, path, headers={**TUS, **OCTETS, "Upload-Length": "1"})
        assert response.status_code == 401
        assert response.headers["tus-resumable"] == "1.0.0"
    bad = await api.client.post("/files", headers={**TUS, "X-API-Key": "nope", "Upload-Length": "1"})
    assert bad.status_code == 401
    reader = await api.client.post("/files", headers={**h(api, "reader"), "Upload-Length": "1"})
    assert reader.status_code == 403


async def test_other_owners_get_404_everywhere(api: Api) -> None:
    data = os.urandom(100)
    upload_id = await create(api, 100)
    assert (await head(api, upload_id, "bob")).status_code == 404
    assert (await patch(api, upload_id, 0, data, "bob")).status_code == 404
    assert (await api.client.delete(f"/files/{upload_id}", headers=h(api, "bob"))).status_code == 404
    assert (await patch(api, upload_id, 0, data)).status_code == 204
    assert (await api.client.get(f"/files/{upload_id}", headers=api.auth("bob"))).status_code == 404
    assert (await api.client.get(f"/files/{upload_id}", headers=api.auth())).content == data
    assert (await head(api, "A" * 22)).status_code == 404


async def test_upload_in_chunks_completes_the_engine_upload(api: Api) -> None:
    data = os.urandom(300_001)
    upload_id = await create(
        api, len(data), Upload_Metadata=f"filename {b64('report.pdf')},filetype {b64('application/pdf')}"
    )
    first = await head(api, upload_id)
    assert first.status_code == 200
    assert first.headers["upload-offset"] == "0" and first.headers["upload-length"] == str(len(data))
    assert first.headers["cache-control"] == "no-store"
    assert first.headers["tus-resumable"] == "1.0.0"
    offset = 0
    for size in (100_000, 100_000, 100_001):
        response = await patch(api, upload_id, offset, data[offset : offset + size])
        assert response.status_code == 204, response.text
        offset += size
        assert response.headers["upload-offset"] == str(offset)
        assert response.headers["tus-resumable"] == "1.0.0"
    assert "upload-expires" not in response.headers  # finished: nothing expires any more
    native = await api.client.get(f"/v1/files/{upload_id}", headers=api.auth())
    body = native.json()
    assert body["status"] == "COMPLETED" and body["md5"] == hashlib.md5(data).hexdigest()
    assert body["filename"] == "report.pdf" and body["mimeType"] == "application/pdf"
    # The three PATCHes grew one stored part (appends continue one blob), checked by its CRC-64/NVME;
    # no MD5 of its own: the whole file's is computed once, as the bytes arrive.
    assert [(p["sizeBytes"], p["etag"]) for p in body["parts"]] == [(len(data), f'"{crc64_hex(crc64nvme(data))}"')]
    assert body["crc64nvme"] == crc64_b64(crc64nvme(data))
    done = await head(api, upload_id)
    assert done.headers["upload-offset"] == str(len(data))
    # A repeated final PATCH (e.g. the client missed the answer) is answered, not refused.
    again = await patch(api, upload_id, len(data), b"")
    assert again.status_code == 204 and again.headers["upload-offset"] == str(len(data))
    # So is one with a body, as tusd answers it (204, nothing appended): the stored file is unchanged.
    extra = await patch(api, upload_id, len(data), b"more bytes")
    assert extra.status_code == 204 and extra.headers["upload-offset"] == str(len(data))
    assert extra.headers["upload-length"] == str(len(data))
    stored = await api.client.get(f"/files/{upload_id}", headers=api.auth())
    assert stored.content == data
    assert (await patch(api, upload_id, 0, b"x")).status_code == 409
    assert (await patch(api, upload_id, len(data) - 1, b"x")).status_code == 409


async def test_patch_rules(api: Api) -> None:
    upload_id = await create(api, 10)
    wrong_type = await api.client.patch(
        f"/files/{upload_id}", content=b"abc", headers={**h(api), "Upload-Offset": "0", "Content-Type": "text/plain"}
    )
    assert wrong_type.status_code == 415
    no_type = await api.client.patch(f"/files/{upload_id}", content=b"abc", headers={**h(api), "Upload-Offset": "0"})
    assert no_type.status_code == 415
    no_offset = await api.client.patch(f"/files/{upload_id}", content=b"abc", headers={**h(api), **OCTETS})
    assert no_offset.status_code == 400 and "Upload-Offset" in no_offset.text
    negative = await api.client.patch(
        f"/files/{upload_id}", content=b"abc", headers={**h(api), **OCTETS, "Upload-Offset": "-1"}
    )
    assert negative.status_code == 400 and "Upload-Offset" in negative.text
    assert (await patch(api, upload_id, 0, b"abc")).headers["upload-offset"] == "3"
    mismatch = await patch(api, upload_id, 1, b"defg")
    assert mismatch.status_code == 409 and mismatch.headers["tus-resumable"] == "1.0.0"
    assert (await head(api, upload_id)).headers["upload-offset"] == "3"  # unchanged
    too_long = await patch(api, upload_id, 3, b"0123456789")
    assert too_long.status_code == 413
    assert (await head(api, upload_id)).headers["upload-offset"] == "3"


async def test_body_past_length_without_content_length_is_413_and_kept_nothing(api: Api) -> None:
    upload_id = await create(api, 10)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"01234"
        yield b"56789abc"

    response = await api.client.patch(
        f"/files/{upload_id}", content=chunks(), headers={**h(api), **OCTETS, "Upload-Offset": "0"}
    )
    assert response.status_code == 413
    assert (await head(api, upload_id)).headers["upload-offset"] == "0"


# ---- creation ---------------------------------------------------------------------------------------
async def test_creation_rules(api: Api) -> None:
    neither = await api.client.post("/files", headers=h(api))
    assert neither.status_code == 400 and "Upload-Length" in neither.text
    both = await api.client.post("/files", headers=h(api, Upload_Length="5", Upload_Defer_Length="1"))
    assert both.status_code == 400
    assert (await api.client.post("/files", headers=h(api, Upload_Defer_Length="2"))).status_code == 400
    assert (await api.client.post("/files", headers=h(api, Upload_Length="x"))).status_code == 400
    too_big = await api.client.post("/files", headers=h(api, Upload_Length=str(api.runtime.settings.max_file_size + 1)))
    assert too_big.status_code == 413
    assert "Upload-Length" in too_big.text and "sizeBytes" not in too_big.text  # tus's own name for it
    empty = await api.client.post("/files", headers=h(api, Upload_Length="0"))
    assert empty.status_code == 201
    upload_id = empty.headers["location"].rsplit("/", 1)[1]
    assert (await head(api, upload_id)).headers["upload-offset"] == "0"
    got = await api.client.get(f"/files/{upload_id}", headers=api.auth())
    assert got.status_code == 200 and got.content == b""
    native = (await api.client.get(f"/v1/files/{upload_id}", headers=api.auth())).json()
    assert native["status"] == "COMPLETED" and native["md5"] == hashlib.md5(b"").hexdigest()


async def test_creation_with_upload(api: Api) -> None:
    data = os.urandom(5000)
    response = await api.client.post(
        "/files", content=data[:2000], headers={**h(api, Upload_Length=str(len(data))), **OCTETS}
    )
    assert response.status_code == 201
    assert response.headers["upload-offset"] == "2000"
    upload_id = response.headers["location"].rsplit("/", 1)[1]
    assert (await patch(api, upload_id, 2000, data[2000:])).status_code == 204
    whole = await api.client.post("/files", content=data, headers={**h(api, Upload_Length=str(len(data))), **OCTETS})
    assert whole.headers["upload-offset"] == str(len(data))
    whole_id = whole.headers["location"].rsplit("/", 1)[1]
    for uid in (upload_id, whole_id):
        assert (await api.client.get(f"/files/{uid}", headers=api.auth())).content == data
    # Without the tus content type the body is not upload data.
    ignored = await api.client.post("/files", content=b"zzz", headers=h(api, Upload_Length="3"))
    assert ignored.status_code == 201 and "upload-offset" not in ignored.headers


@pytest.mark.parametrize("length", [{"Upload-Length": "0"}, {"Upload-Length": "5"}, {"Upload-Defer-Length": "1"}])
async def test_creation_with_an_empty_upload_answers_its_offset(api: Api, length: dict[str, str]) -> None:
    """creation-with-upload: the server "MUST include the Upload-Offset header in the response"
    when the request is sent as application/offset+octet-stream, also when its body is empty (a
    0-byte file sent during creation), as tusd does."""
    response = await api.client.post("/files", content=b"", headers={**h(api), **length, **OCTETS})
    assert response.status_code == 201, response.text
    assert response.headers["upload-offset"] == "0"
    upload_id = response.headers["location"].rsplit("/", 1)[1]
    assert (await head(api, upload_id)).headers["upload-offset"] == "0"


async def test_creation_with_the_whole_upload_is_stored_then_completed(api: Api) -> None:
    """The new upload is stored while its bytes stream in; it is still created before it is
    completed, for subscribers and in the event log that webhooks are made from."""
    seen: list[tuple[str, str]] = []

    async def listen(event: str, upload: Upload) -> None:
        seen.append((event, upload.id))

    api.runtime.uploads.subscribe(listen)
    data = os.urandom(3000)
    response = await api.client.post("/files", content=data, headers={**h(api, Upload_Length="3000"), **OCTETS})
    assert response.status_code == 201 and response.headers["upload-offset"] == "3000"
    upload_id = response.headers["location"].rsplit("/", 1)[1]
    assert seen == [("created", upload_id), ("completed", upload_id)]
    stored = await api.runtime.repo.get(upload_id)
    assert stored is not None and stored.status is Status.COMPLETED and stored.bytes_received == 3000


@pytest.mark.parametrize("size", [3000, ONE_WRITE_BODY + 1000], ids=["stored-with-its-bytes", "stored-first"])
async def test_a_refused_creation_with_upload_leaves_no_upload(api: Api, size: int) -> None:
    """A creation answered with an error gives the client no Location, so nothing of it may stay:
    a short body's upload is never stored, a long body's is deleted again."""
    seen: list[str] = []

    async def listen(event: str, upload: Upload) -> None:
        seen.append(event)

    api.runtime.uploads.subscribe(listen)
    data = os.urandom(size)
    wrong = f"sha1 {b64(hashlib.sha1(b'other bytes').digest())}"
    refused = await api.client.post(
        "/files", content=data, headers={**h(api, Upload_Length=str(size), Upload_Checksum=wrong), **OCTETS}
    )
    assert refused.status_code == 460 and "location" not in refused.headers
    too_long = await api.client.post("/files", content=data, headers={**h(api, Upload_Length="10"), **OCTETS})
    assert too_long.status_code == 413 and "location" not in too_long.headers
    listed = await api.client.get("/v1/files", headers=api.auth())
    assert listed.status_code == 200 and listed.json()["data"] == []
    assert "completed" not in seen and seen.count("created") == seen.count("deleted")


async def test_defer_length(api: Api) -> None:
    data = os.urandom(4000)
    upload_id = await create(api, None)
    first = await head(api, upload_id)
    assert first.headers["upload-defer-length"] == "1" and "upload-length" not in first.headers
    assert (await patch(api, upload_id, 0, data[:1000])).status_code == 204
    assert (await patch(api, upload_id, 1000, data[1000:3000], Upload_Length="999")).status_code == 400
    last = await patch(api, upload_id, 1000, data[1000:], Upload_Length=str(len(data)))
    assert last.status_code == 204 and last.headers["upload-offset"] == str(len(data))
    done = await head(api, upload_id)
    assert done.headers["upload-length"] == str(len(data)) and "upload-defer-length" not in done.headers
    native = (await api.client.get(f"/v1/files/{upload_id}", headers=api.auth())).json()
    assert native["status"] == "COMPLETED" and native["md5"] == hashlib.md5(data).hexdigest()


async def test_a_header_sent_twice_is_read_whole_not_by_its_first_line(api: Api) -> None:
    """Two Upload-Length or Upload-Offset lines make one value ("5, 10"), which is no number: a
    400 naming the header. The first line used to win, while a proxy keeping the last would see
    another upload than chunkd."""
    base = [(k, v) for k, v in h(api).items()]
    twice = await api.client.post("/files", headers=[*base, ("Upload-Length", "5"), ("Upload-Length", "10")])
    assert twice.status_code == 400 and "Upload-Length" in twice.text
    upload_id = await create(api, 10)
    patch_headers = [*base, *OCTETS.items(), ("Upload-Offset", "0"), ("Upload-Offset", "3")]
    refused = await api.client.patch(f"/files/{upload_id}", content=b"abc", headers=patch_headers)
    assert refused.status_code == 400 and "Upload-Offset" in refused.text
    assert (await head(api, upload_id)).headers["upload-offset"] == "0"


async def test_a_body_less_patch_declares_a_deferred_length(api: Api) -> None:
    """The length may come on its own, in a PATCH without a body ("the Client MUST set the
    Upload-Length header in the next PATCH"): it is kept, and holds the PATCHes after it. It was
    answered 204 and dropped."""
    data = os.urandom(10)
    upload_id = await create(api, None)
    assert (await patch(api, upload_id, 0, data[:4])).status_code == 204
    declared = await patch(api, upload_id, 4, b"", Upload_Length="10")
    assert declared.status_code == 204 and declared.headers["upload-offset"] == "4"
    described = await head(api, upload_id)
    assert described.headers["upload-length"] == "10" and "upload-defer-length" not in described.headers
    assert (await patch(api, upload_id, 4, os.urandom(25))).status_code == 413
    assert (await patch(api, upload_id, 4, data[4:])).status_code == 204
    native = (await api.client.get(f"/v1/files/{upload_id}", headers=api.auth())).json()
    assert native["status"] == "COMPLETED" and native["md5"] == hashlib.md5(data).hexdigest()


async def test_length_can_be_declared_once(api: Api) -> None:
    upload_id = await create(api, None)
    assert (await patch(api, upload_id, 0, b"abc", Upload_Length="10")).status_code == 204
    assert (await patch(api, upload_id, 3, b"def", Upload_Length="11")).status_code == 400
    assert (await head(api, upload_id)).headers["upload-length"] == "10"


async def test_metadata_is_parsed_and_reencoded(api: Api) -> None:
    evil = "a\r\nX-Evil: 1"
    meta = f"filename {b64('../../etc/passwd')},is_confidential,note {b64(evil)}"
    upload_id = await create(api, 1, Upload_Metadata=meta)
    response = await head(api, upload_id)
    assert "x-evil" not in response.headers
    pairs = dict(
        item.split(" ") if " " in item else (item, None) for item in response.headers["upload-metadata"].split(",")
    )
    assert pairs["is_confidential"] is None
    assert base64.b64decode(pairs["note"]) == b"a\r\nX-Evil: 1"
    native = (await api.client.get(f"/v1/files/{upload_id}", headers=api.auth())).json()
    assert "/" not in native["filename"]
    # An empty value with its separating space kept (tus-js-client's encoding of an empty string).
    empty_value = await create(api, 1, Upload_Metadata=f"caption ,filename {b64('a.txt')}")
    assert (await head(api, empty_value)).headers["upload-metadata"] == f"caption,filename {b64('a.txt')}"
    name_only = await create(api, 1, Upload_Metadata=f"name {b64('photo.jpg')},type {b64('image/jpeg')}")
    native = (await api.client.get(f"/v1/files/{name_only}", headers=api.auth())).json()
    assert native["filename"] == "photo.jpg" and native["mimeType"] == "image/jpeg"
    # As tolerant as tusd where nothing is lost: empty items (RFC 9110 §5.6.1: a list's empty
    # elements are ignored) and values without their "=" padding (tusd drops those; read here).
    for lenient in [f",filename {b64('ab.txt')},,caption,", f"filename {b64('ab.txt').rstrip('=')}, caption"]:
        taken = await create(api, 1, Upload_Metadata=lenient)
        assert (await head(api, taken)).headers["upload-metadata"] == f"filename {b64('ab.txt')},caption", lenient
        assert (await api.client.get(f"/v1/files/{taken}", headers=api.auth())).json()["filename"] == "ab.txt"
    for bad in [
        f"filename {b64('a')},filename {b64('b')}",  # duplicate key
        "filename not*base64",
        "filename YWJjZ",  # no padding makes 5 base64 characters whole
        f"file name {b64('a')}",
    ]:
        response = await api.client.post("/files", headers=h(api, Upload_Length="1", Upload_Metadata=bad))
        assert response.status_code == 400, bad
        assert "Upload-Metadata" in response.text


@pytest.mark.parametrize(
    ("meta", "filename", "mime_type"),
    [
        ({"filetype": b"jpg"}, "upload", "application/octet-stream"),  # a file extension, not a media type
        ({"filetype": b"a/b c"}, "upload", "application/octet-stream"),
        ({"filename": b"\xff\xfe.txt", "filetype": b"\xff"}, "upload", "application/octet-stream"),  # not UTF-8
        ({"filename": b"..", "name": b"kept.txt"}, "kept.txt", "text/plain"),  # the next key that is usable
        ({"filename": b"a.txt", "filetype": b"text/plain"}, "a.txt", "text/plain"),
    ],
)
async def test_metadata_values_are_opaque_to_creation(
    api: Api, meta: dict[str, bytes], filename: str, mime_type: str
) -> None:
    """tus metadata "can contain arbitrary binary values" and no key has a meaning in the protocol:
    a value chunkd cannot use as the file's name or type leaves it unnamed or untyped, and the
    upload is created (as tusd does) with its metadata answered byte for byte, not refused (400)."""
    header = ",".join(f"{key} {b64(value)}" for key, value in meta.items())
    response = await api.client.post("/files", headers=h(api, Upload_Length="1", Upload_Metadata=header))
    assert response.status_code == 201, response.text
    upload_id = response.headers["location"].rsplit("/", 1)[1]
    assert (await head(api, upload_id)).headers["upload-metadata"] == header
    upload = await api.runtime.uploads.get("alice", upload_id)
    assert (upload.filename, upload.mime_type) == (filename, mime_type)


async def test_a_metadata_key_outside_ascii_is_taken_and_answered_as_sent(api: Api) -> None:
    """A key "SHOULD be ASCII" (a client's duty, not a MUST): tusd takes any key without spaces
    and commas, so a key sent as UTF-8 (``kéy``) is kept and answered byte for byte, not a 400."""
    sent = "k\u00e9y YQ==,caf\u00e9".encode()
    response = await api.client.post("/files", headers={**h(api, Upload_Length="1"), "Upload-Metadata": sent})
    assert response.status_code == 201, response.text
    upload_id = response.headers["location"].rsplit("/", 1)[1]
    described = await head(api, upload_id)
    assert dict(described.headers.raw)[b"upload-metadata"] == sent
    deleted = await api.client.post("/files", headers={**h(api, Upload_Length="1"), "Upload-Metadata": b"k\x7fy YQ=="})
    assert deleted.status_code == 400  # a control character (DEL) stays out


# ---- checksum -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [
        ("md5", lambda d: hashlib.md5(d).digest()),
        ("sha1", lambda d: hashlib.sha1(d).digest()),
        ("sha256", lambda d: hashlib.sha256(d).digest()),
        ("crc32", lambda d: zlib.crc32(d).to_bytes(4, "big")),
    ],
)
async def test_checksum(api: Api, algorithm: str, digest) -> None:
    data = os.urandom(200_000)
    upload_id = await create(api, len(data))
    good = f"{algorithm} {b64(digest(data[:100_000]))}"
    ok = await patch(api, upload_id, 0, data[:100_000], Upload_Checksum=good)
    assert ok.status_code == 204 and ok.headers["upload-offset"] == "100000"
    bad = f"{algorithm} {b64(digest(b'something else'))}"
    mismatch = await patch(api, upload_id, 100_000, data[100_000:], Upload_Checksum=bad)
    assert mismatch.status_code == 460
    assert (await head(api, upload_id)).headers["upload-offset"] == "100000"  # none of its bytes kept
    last = f"{algorithm} {b64(digest(data[100_000:]))}"
    assert (await patch(api, upload_id, 100_000, data[100_000:], Upload_Checksum=last)).status_code == 204
    native = (await api.client.get(f"/v1/files/{upload_id}", headers=api.auth())).json()
    assert native["md5"] == hashlib.md5(data).hexdigest()


async def test_checksum_header_errors(api: Api) -> None:
    upload_id = await create(api, 10)
    for value in ("sha512 " + b64(b"x" * 64), "md5", "md5 !!!"):
        response = await patch(api, upload_id, 0, b"abc", Upload_Checksum=value)
        assert response.status_code == 400, value
        assert "Upload-Checksum" in response.text
    # A well-formed digest of the wrong length for its algorithm can match no body: the checksum
    # extension's mismatch (460), none of the bytes kept; its 400 is for an unsupported algorithm.
    for value in ("md5 " + b64(b"short"), "crc32 " + b64(hashlib.sha1(b"abc").digest())):
        response = await patch(api, upload_id, 0, b"abc", Upload_Checksum=value)
        assert response.status_code == 460, value
        assert "Upload-Checksum" in response.text
    assert (await head(api, upload_id)).headers["upload-offset"] == "0"
    with_body = await api.client.post(
        "/files",
        content=b"hello",
        headers={**h(api, Upload_Length="5", Upload_Checksum=f"sha1 {b64(hashlib.sha1(b'nope').digest())}"), **OCTETS},
    )
    assert with_body.status_code == 460
    pending = await api.runtime.uploads.list_uploads("alice", status=Status.PENDING)
    assert [u.id for u in pending] == [upload_id]  # the refused creation left nothing behind


# ---- expiration ---------------------------------------------------------------------------------------
async def test_expiration(api: Api) -> None:
    upload_id = await create(api, 10)
    response = await head(api, upload_id)
    expires = parsedate_to_datetime(response.headers["upload-expires"])
    assert response.headers["upload-expires"].endswith(" GMT")
    upload = await api.runtime.uploads.get("alice", upload_id)
    assert abs((expires - upload.expires_at).total_seconds()) < 1
    patched = await patch(api, upload_id, 0, b"abc")
    assert parsedate_to_datetime(patched.headers["upload-expires"]) >= expires
    service = api.runtime.uploads
    real_clock = service.clock
    service.clock = lambda: real_clock() + timedelta(days=2)
    try:
        assert (await head(api, upload_id)).status_code == 410
        assert (await patch(api, upload_id, 3, b"def")).status_code == 410
        assert (await api.client.get(f"/files/{upload_id}", headers=api.auth())).status_code == 410  # not 409
        assert await service.expire_due() == 1
        assert (await head(api, upload_id)).status_code == 410
        assert (await api.client.get(f"/files/{upload_id}", headers=api.auth())).status_code == 410
    finally:
        service.clock = real_clock


# ---- termination --------------------------------------------------------------------------------------
async def test_termination(api: Api) -> None:
    upload_id = await create(api, 10)
    assert (await patch(api, upload_id, 0, b"abc")).status_code == 204
    response = await api.client.delete(f"/files/{upload_id}", headers=h(api))
    assert response.status_code == 204 and response.headers["tus-resumable"] == "1.0.0"
    assert (await head(api, upload_id)).status_code == 404
    assert (await patch(api, upload_id, 3, b"def")).status_code == 404
    assert (await api.client.delete(f"/files/{upload_id}", headers=h(api))).status_code == 404
    done = await create(api, 1)
    await patch(api, done, 0, b"x")
    no_delete_scope = await api.runtime.keys.create("alice", "files:create")
    forbidden = await api.client.delete(
        f"/files/{done}", headers={**TUS, "Authorization": f"Bearer {no_delete_scope[1]}"}
    )
    assert forbidden.status_code == 403
    assert (await api.client.delete(f"/files/{done}", headers=h(api))).status_code == 204
    assert (await api.client.get(f"/v1/files/{done}", headers=api.auth())).status_code == 404


# ---- concatenation ------------------------------------------------------------------------------------
async def test_concatenation_links_parts_and_computes_md5(api: Api) -> None:
    chunks = [os.urandom(n) for n in (70_000, 1, 0, 123_457)]
    ids = []
    for chunk in chunks:
        upload_id = await create(api, len(chunk), Upload_Concat="partial")
        if chunk:
            cut = min(10, len(chunk) - 1)
            assert (await patch(api, upload_id, 0, chunk[:cut])).status_code == 204
            assert (await patch(api, upload_id, cut, chunk[cut:])).status_code == 204
        assert (await head(api, upload_id)).headers["upload-concat"] == "partial"
        ids.append(upload_id)
    urls = " ".join([f"http://testserver/files/{ids[0]}", *(f"/files/{i}" for i in ids[1:])])
    final = await api.client.post(
        "/files", headers=h(api, Upload_Concat=f"final;{urls}", Upload_Metadata=f"filename {b64('all.bin')}")
    )
    assert final.status_code == 201, final.text
    final_id = final.headers["location"].rsplit("/", 1)[1]
    described = await head(api, final_id)
    data = b"".join(chunks)
    assert described.headers["upload-offset"] == described.headers["upload-length"] == str(len(data))
    assert described.headers["upload-concat"] == "final;" + " ".join(f"http://testserver/files/{i}" for i in ids)
    native = (await api.client.get(f"/v1/files/{final_id}", headers=api.auth())).json()
    assert native["status"] == "COMPLETED" and native["md5"] == hashlib.md5(data).hexdigest()
    assert native["filename"] == "all.bin"
    got = await api.client.get(f"/files/{final_id}", headers={**api.auth(), "Range": "bytes=69990-70010"})
    assert got.status_code == 206 and got.content == data[69_990:70_011]
    # No byte copied: the final's part files are hard links of the partials' part files.
    blobs = api.runtime.blobs
    final_upload = await api.runtime.uploads.get("alice", final_id)
    for part in final_upload.sorted_parts():
        assert (blobs.root / final_id[:2] / final_id / part.blob_ref).stat().st_nlink == 2
    assert (await patch(api, final_id, len(data), b"x")).status_code == 403
    # The partials can go; the final keeps its bytes.
    for upload_id in ids:
        assert (await api.client.delete(f"/files/{upload_id}", headers=h(api))).status_code == 204
    assert (await api.client.get(f"/files/{final_id}", headers=api.auth())).content == data


async def test_concatenation_rules(api: Api) -> None:
    partial = await create(api, 3, Upload_Concat="partial")
    unfinished = await create(api, 3, Upload_Concat="partial")
    plain = await create(api, 3)
    bobs = await create(api, 3, "bob", Upload_Concat="partial")
    for upload_id, who in ((partial, "alice"), (plain, "alice"), (bobs, "bob")):
        await patch(api, upload_id, 0, b"abc", who)

    async def final(value: str, **extra: str) -> httpx.Response:
        return await api.client.post("/files", headers=h(api, Upload_Concat=value, **extra))

    # An unfinished partial is welcome (concatenation-unfinished, tests/api/test_tus_concatenation.py).
    assert (await final(f"final;/files/{partial} /files/{unfinished}")).status_code == 201
    assert (await final(f"final;/files/{partial} /files/{plain}")).status_code == 400
    assert (await final(f"final;/files/{partial} /files/{bobs}")).status_code == 404
    assert (await final(f"final;/files/{partial}", Upload_Length="3")).status_code == 400
    assert (await final("final;")).status_code == 400
    assert (await final("final;/elsewhere/x")).status_code == 400
    assert (await final("whole")).status_code == 400
    made = await final(f"final;/files/{partial}")
    final_id = made.headers["location"].rsplit("/", 1)[1]
    assert (await final(f"final;/files/{final_id}")).status_code == 400  # a final is not a partial


async def test_concatenation_may_name_a_partial_more_than_once(api: Api) -> None:
    """tus concatenation: "The same partial upload MAY be present multiple times in the
    Upload-Concat header in one upload creation request or MAY be used in multiple upload
    creation requests"; its bytes appear once per mention. Also while it is unfinished."""
    partial = await create(api, 3, Upload_Concat="partial")
    await patch(api, partial, 0, b"abc")
    other = await create(api, 2, Upload_Concat="partial")
    twice = await api.client.post(
        "/files",
        headers=h(api, Upload_Concat=f"final;/files/{partial} http://testserver/files/{partial} /files/{other}"),
    )
    assert twice.status_code == 201, twice.text
    again = await api.client.post("/files", headers=h(api, Upload_Concat=f"final;/files/{partial} /files/{partial}"))
    assert again.status_code == 201, again.text
    first_id = twice.headers["location"].rsplit("/", 1)[1]
    second_id = again.headers["location"].rsplit("/", 1)[1]
    described = await head(api, first_id)
    assert described.headers["upload-length"] == "8" and "upload-offset" not in described.headers  # still waiting
    urls = (f"http://testserver/files/{i}" for i in (partial, partial, other))
    assert described.headers["upload-concat"] == "final;" + " ".join(urls)
    await patch(api, other, 0, b"de")  # finishes the first final
    for final_id, data in ((first_id, b"abcabcde"), (second_id, b"abcabc")):
        upload = await api.runtime.uploads.get("alice", final_id)
        assert upload.status is Status.COMPLETED and upload.md5 == hashlib.md5(data).hexdigest()
        assert (await api.client.get(f"/files/{final_id}", headers=api.auth())).content == data
        assert (await head(api, final_id)).headers["upload-offset"] == str(len(data))


async def test_concatenation_refuses_excessive_partials(api: Api) -> None:
    """More than 10,000 partials is a 400 that changes nothing."""
    partial = await create(api, 3, Upload_Concat="partial")
    await patch(api, partial, 0, b"abc")
    before = len(await api.runtime.uploads.list_uploads("alice"))
    excessive = " ".join(f"/files/x{i}" for i in range(10_001))
    response = await api.client.post("/files", headers=h(api, Upload_Concat=f"final;{excessive}"))
    assert response.status_code == 400 and "at most 10000" in response.text
    many = " ".join([f"/files/{partial}"] * 10_001)
    assert (await api.client.post("/files", headers=h(api, Upload_Concat=f"final;{many}"))).status_code == 400
    assert len(await api.runtime.uploads.list_uploads("alice")) == before


async def test_concatenation_copies_without_the_link_capability(api: Api) -> None:
    """A blob store without PartLinker: the service copies the parts through the store."""

    class NoLinks:
        def __init__(self, inner: object) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> object:
            if name == "link_part":
                raise AttributeError(name)
            return getattr(self._inner, name)

    service = api.runtime.uploads
    service.blobs = NoLinks(service.blobs)  # type: ignore[assignment]
    service.caps = StoreCapabilities.of(service.blobs)  # capabilities are composed once, from the store
    assert service.caps.linker is None
    data = os.urandom(50_000)
    a = await create(api, 20_000, Upload_Concat="partial")
    b = await create(api, 30_000, Upload_Concat="partial")
    await patch(api, a, 0, data[:20_000])
    await patch(api, b, 0, data[20_000:])
    made = await api.client.post("/files", headers=h(api, Upload_Concat=f"final;/files/{a} /files/{b}"))
    final_id = made.headers["location"].rsplit("/", 1)[1]
    upload = await service.get("alice", final_id)
    assert upload.md5 == hashlib.md5(data).hexdigest()
    root = api.runtime.blobs.root
    for part in upload.sorted_parts():
        assert (root / final_id[:2] / final_id / part.blob_ref).stat().st_nlink == 1
    assert (await api.client.get(f"/files/{final_id}", headers=api.auth())).content == data


# ---- method override, GET, stale writers --------------------------------------------------------------
async def test_method_override(api: Api) -> None:
    upload_id = await create(api, 6)
    response = await api.client.post(
        f"/files/{upload_id}",
        content=b"abcdef",
        headers={**h(api), **OCTETS, "Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"},
    )
    assert response.status_code == 204 and response.headers["upload-offset"] == "6"
    described = await api.client.post(f"/files/{upload_id}", headers={**h(api), "X-HTTP-Method-Override": "HEAD"})
    assert described.headers["upload-offset"] == "6"
    plain_post = await api.client.post(f"/files/{upload_id}", headers=h(api))
    assert plain_post.status_code == 405
    deleted = await api.client.post(f"/files/{upload_id}", headers={**h(api), "X-HTTP-Method-Override": "DELETE"})
    assert deleted.status_code == 204
    odd = await api.client.post("/files", headers={**h(api), "X-HTTP-Method-Override": "TRACE"})
    assert odd.status_code == 400
    for method, path in (("PUT", f"/files/{upload_id}"), ("GET", "/files"), ("PATCH", "/files")):
        response = await api.client.request(method, path, headers=h(api))
        assert response.status_code == 405 and response.headers["tus-resumable"] == "1.0.0"


async def test_get_downloads_only_finished_uploads(api: Api) -> None:
    data = os.urandom(1000)
    upload_id = await create(api, len(data), Upload_Metadata=f"filename {b64('x.bin')}")
    await patch(api, upload_id, 0, data[:10])
    assert (await api.client.get(f"/files/{upload_id}", headers=api.auth())).status_code == 409
    await patch(api, upload_id, 10, data[10:])
    got = await api.client.get(f"/files/{upload_id}", headers=api.auth())
    assert got.content == data and 'filename="x.bin"' in got.headers["content-disposition"]
    ranged = await api.client.get(f"/files/{upload_id}", headers={**api.auth(), "Range": "bytes=-10"})
    assert ranged.status_code == 206 and ranged.content == data[-10:]
    # A range past the end: 416 as tus answers errors (plain text), not the Files API's JSON.
    past = await api.client.get(f"/files/{upload_id}", headers={**api.auth(), "Range": "bytes=5000-"})
    assert past.status_code == 416 and past.headers["content-range"] == "bytes */1000"
    assert past.headers["content-type"].startswith("text/plain") and past.headers["tus-resumable"] == "1.0.0"
    assert past.text.startswith("range_not_satisfiable: ")
    native_upload = (
        await api.client.post("/v1/files", json={"filename": "n", "sizeBytes": 1}, headers=api.auth())
    ).json()
    assert (await head(api, native_upload["id"])).status_code == 404  # not a tus upload


async def test_a_new_patch_ends_a_stale_one(api: Api) -> None:
    """tusd v2's behaviour: the stale PATCH (its client vanished mid-body) is ended, keeping the
    bytes it had; the new PATCH at the resulting offset proceeds."""
    data = os.urandom(3 * 1024 * 1024)
    upload_id = await create(api, len(data))
    gate = asyncio.Event()
    streaming = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield data[:1_500_000]
        streaming.set()  # the server took the first bytes and asks for more: it is in the engine
        await gate.wait()  # the connection hangs: no more bytes, no close
        yield data[1_500_000:]

    old = asyncio.create_task(
        api.client.patch(f"/files/{upload_id}", content=stalled(), headers={**h(api), **OCTETS, "Upload-Offset": "0"})
    )
    upload = await api.runtime.uploads.get("alice", upload_id, with_parts=False)
    await streaming.wait()
    # A wrong offset does not disturb the writer.
    assert (await patch(api, upload_id, 5, b"zz")).status_code == 409
    assert not old.done()
    # Nor does a credential that may only read: its HEAD reads the offset recorded, and does not
    # end the writer (which would have committed 1,500,000 bytes first).
    _, reader = await api.runtime.keys.create("alice", "files:read")
    looked = await api.client.head(f"/files/{upload_id}", headers={**TUS, "Authorization": f"Bearer {reader}"})
    assert looked.status_code == 200 and looked.headers["upload-offset"] == "0"
    # The client resumes from the recorded offset (0): the stale request is ended first, it
    # commits what it has, and this PATCH then finds the offset moved on → 409; HEAD tells where.
    retry = await patch(api, upload_id, 0, data)
    assert retry.status_code == 409
    stale = await old
    assert stale.status_code == 400
    offset = int((await head(api, upload_id)).headers["upload-offset"])
    assert offset == 1_500_000
    assert (await patch(api, upload_id, offset, data[offset:])).status_code == 204
    upload = await api.runtime.uploads.get("alice", upload_id)
    assert upload.md5 == hashlib.md5(data).hexdigest()
    gate.set()


async def test_a_final_names_its_partials_by_their_public_urls(settings) -> None:
    """HEAD of a final upload carries ``Upload-Concat: final;<urls>``, its partials' URLs as the
    client knows them: absolute, under ``CHUNKD_PUBLIC_URL`` (a proxy's path prefix included),
    like the ``Location`` each partial was created with."""
    from chunkd.app import create_app

    settings.public_url = "https://uploads.example/chunkd"
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        _, key = await app.state.chunkd.keys.create("alice", "files:create,files:read")
        auth = {**TUS, "Authorization": f"Bearer {key}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            urls = []
            for _ in range(2):
                made = await client.post("/files", headers={**auth, "Upload-Length": "1", "Upload-Concat": "partial"})
                urls.append(made.headers["location"])
            assert all(url.startswith("https://uploads.example/chunkd/files/") for url in urls)
            final = await client.post("/files", headers={**auth, "Upload-Concat": "final;" + " ".join(urls)})
            described = await client.head(
                final.headers["location"].removeprefix("https://uploads.example/chunkd"), headers=auth
            )
            assert described.headers["upload-concat"] == "final;" + " ".join(urls)


async def test_custom_mount_path(tmp_path, settings) -> None:
    from chunkd.app import create_app

    settings.tus_path = "/api/tus"
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        _, key = await app.state.chunkd.keys.create("alice", "files:create,files:read")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            created = await client.post(
                "/api/tus", headers={**TUS, "Authorization": f"Bearer {key}", "Upload-Length": "1"}
            )
            assert created.status_code == 201
            assert created.headers["location"].startswith("http://testserver/api/tus/")
            assert (await client.options("/files")).status_code != 204


async def test_a_writer_in_another_process_gives_423(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process take-over cannot reach a writer elsewhere; the engine's lock answers 423."""
    from chunkd.frontends.tus import transfer

    monkeypatch.setattr(transfer, "TAKE_OVER_WAIT", 0.2)
    upload_id = await create(api, 10)
    async with api.runtime.locks.hold(upload_id, timeout=1):  # stands for another process's writer
        busy = await patch(api, upload_id, 0, b"abc")
    assert busy.status_code == 423 and busy.headers["retry-after"] == "1"
    assert busy.headers["tus-resumable"] == "1.0.0"
    assert (await patch(api, upload_id, 0, b"abc")).status_code == 204


async def test_a_creation_with_upload_waits_for_its_lock_as_an_append_does(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody else writes a new upload, yet its lock may take a moment: on PostgreSQL it needs one of
    CHUNKD_LOCK_CONNECTIONS, which busy appends may all hold. The creation's append tried once (a
    1 s wait for a connection) where every other append waits TAKE_OVER_WAIT: under load, 577 of
    1,429 tus creations were refused 423 "upload … is locked" while 10 PATCHes were. Here the new
    upload's lock is held elsewhere (standing for a node with no lock connection free) until the
    creation asks for it."""
    from chunkd.service import lifecycle

    monkeypatch.setattr(lifecycle, "new_upload_id", lambda: "crowdedlockAAAAAAAAAAA")
    service = api.runtime.uploads
    real_hold = service.locks.hold
    asked = asyncio.Event()

    def noting_hold(upload_id: str, *, timeout: float):  # type: ignore[no-untyped-def]
        asked.set()
        return real_hold(upload_id, timeout=timeout)

    async with real_hold("crowdedlockAAAAAAAAAAA", timeout=1):
        monkeypatch.setattr(service.locks, "hold", noting_hold)
        headers = {**h(api), **OCTETS, "Upload-Length": "3"}
        creation = asyncio.create_task(api.client.post("/files", content=b"abc", headers=headers))
        await asked.wait()
    created = await creation
    assert created.status_code == 201, created.text
    assert created.headers["upload-offset"] == "3"


async def test_the_patch_that_ends_an_upload_takes_one_lock_and_one_load(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As tusd does it: one lock and one load of the upload per PATCH, also the one that completes
    it (the completion is part of the same write)."""
    data = os.urandom(200_000)
    upload_id = await create(api, len(data))
    assert (await patch(api, upload_id, 0, data[:100_000])).status_code == 204
    service = api.runtime.uploads
    loads: list[str] = []
    locks: list[str] = []
    real_get, real_hold = service.repo.get, service.locks.hold

    def counting_get(upload_id: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        loads.append(upload_id)
        return real_get(upload_id, *args, **kwargs)  # type: ignore[arg-type]

    def counting_hold(upload_id: str, *, timeout: float):  # type: ignore[no-untyped-def]
        locks.append(upload_id)
        return real_hold(upload_id, timeout=timeout)

    monkeypatch.setattr(service.repo, "get", counting_get)
    monkeypatch.setattr(service.locks, "hold", counting_hold)
    last = await patch(api, upload_id, 100_000, data[100_000:])
    assert last.status_code == 204, last.text
    assert (loads, locks) == ([upload_id], [upload_id])
    monkeypatch.undo()
    done = (await api.client.get(f"/v1/files/{upload_id}", headers=api.auth())).json()
    assert done["status"] == "COMPLETED" and done["md5"] == hashlib.md5(data).hexdigest()


async def test_files_api_counts_the_stored_parts_of_a_tus_upload(api: Api) -> None:
    """Appended uploads have no part geometry: partCount is the parts stored, never 0 once bytes are in."""
    data = os.urandom(3000)
    upload_id = await create(api, len(data))
    for offset in (0, 1000, 2000):
        assert (await patch(api, upload_id, offset, data[offset : offset + 1000])).status_code == 204
    view = (await api.client.get(f"/v1/files/{upload_id}", headers=api.auth())).json()
    assert view["status"] == "COMPLETED"
    assert view["partCount"] == len(view["parts"]) >= 1
    listed = (await api.client.get("/v1/files", headers=api.auth())).json()["data"]
    assert [f["partCount"] for f in listed if f["id"] == upload_id] == [view["partCount"]]
