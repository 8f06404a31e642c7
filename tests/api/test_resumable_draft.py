"""The IETF draft "Resumable Uploads for HTTP" at /files, one test per requirement chunkd
implements, for every interop version (3 to 8), through the in-process app. (The 104 informational
responses need a real server: tests/e2e/test_resumable_draft_e2e.py.)"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator

import http_sf
import httpx
import pytest

from chunkd.domain.upload import Upload
from chunkd.settings import Settings
from tests.conftest import Api

VERSIONS = [3, 4, 5, 6, 7, 8]
PROBLEMS = "https://iana.org/assignments/http-problem-types#"


@pytest.fixture
def db_url() -> None:
    """The draft is translation only: SQLite is enough (the engine is tested on both)."""
    return None


def complete_field(v: int) -> str:
    return "upload-incomplete" if v == 3 else "upload-complete"


def completion(v: int, complete: bool) -> dict[str, str]:
    """The request's completion field in version ``v``."""
    if v == 3:
        return {"Upload-Incomplete": "?0" if complete else "?1"}
    return {"Upload-Complete": "?1" if complete else "?0"}


def is_complete(v: int, response: httpx.Response) -> bool:
    value = response.headers[complete_field(v)]
    assert value in ("?0", "?1")
    return (value == "?1") != (v == 3)


def hd(api: Api, v: int, who: str = "alice", **extra: str) -> dict[str, str]:
    return {"Upload-Draft-Interop-Version": str(v), **api.auth(who), **extra}


def incomplete_status(v: int) -> int:
    """An append that leaves the upload incomplete: 201 up to version 6 (drafts -01 to -05 say
    MUST), 204 since (any 2xx)."""
    return 201 if v <= 6 else 204


def append_type(v: int) -> dict[str, str]:
    return {"Content-Type": "application/partial-upload"} if v >= 6 else {}


async def create(api: Api, v: int, data: bytes = b"", *, complete: bool = False, **extra: str) -> httpx.Response:
    return await api.client.post("/files", content=data, headers={**hd(api, v, **extra), **completion(v, complete)})


def upload_path(response: httpx.Response) -> str:
    return "/files/" + response.headers["location"].rsplit("/", 1)[1]


async def append(
    api: Api,
    v: int,
    path: str,
    offset: int,
    data: bytes | AsyncIterator[bytes],
    *,
    complete: bool = False,
    **extra: str,
) -> httpx.Response:
    headers = {**hd(api, v, **extra), **append_type(v), **completion(v, complete), "Upload-Offset": str(offset)}
    return await api.client.patch(path, content=data, headers=headers)


async def head(api: Api, v: int, path: str, **extra: str) -> httpx.Response:
    return await api.client.head(path, headers=hd(api, v, **extra))


def problem(response: httpx.Response) -> dict[str, object]:
    assert response.headers["content-type"] == "application/problem+json"
    body = json.loads(response.content)
    assert isinstance(body, dict)
    return body


def limits(response: httpx.Response) -> dict[str, int]:
    parsed = http_sf.parse(response.headers["upload-limit"].encode(), tltype="dictionary")
    assert isinstance(parsed, dict)
    return {key: value[0] for key, value in parsed.items()}


pytestmark = pytest.mark.parametrize("v", VERSIONS)


# ---- upload creation ------------------------------------------------------------------------------------
async def test_creation_without_the_completion_field_is_400_naming_it(api: Api, v: int) -> None:
    response = await api.client.post("/files", content=b"abc", headers=hd(api, v))
    assert response.status_code == 400
    assert problem(response)["field"] == ("Upload-Incomplete" if v == 3 else "Upload-Complete")


async def test_creation_with_the_whole_representation_completes(api: Api, v: int) -> None:
    data = os.urandom(70_000)
    response = await create(api, v, data, complete=True, **{"Content-Disposition": 'inline; filename="a b.bin"'})
    assert response.status_code == 201, response.text
    assert is_complete(v, response)
    assert response.headers["upload-offset"] == str(len(data))
    body = response.json()
    assert body["md5"] == hashlib.md5(data).hexdigest()
    assert body["filename"] == "a b.bin"
    digests = http_sf.parse(response.headers["repr-digest"].encode(), tltype="dictionary")
    assert isinstance(digests, dict) and digests["md5"][0] == hashlib.md5(data).digest()
    upload = await api.runtime.uploads.get("alice", body["id"])
    assert upload.status.value == "COMPLETED"
    download = await api.client.get(upload_path(response), headers=api.auth())
    assert download.content == data


def _metadata(**pairs: bytes) -> str:
    return ",".join(f"{key} {base64.b64encode(value).decode()}" for key, value in pairs.items())


@pytest.mark.parametrize(
    ("sent", "filename", "mime_type"),
    [
        ({"Content-Disposition": 'inline; filename=".."', "Content-Type": "jpg"}, "upload", "application/octet-stream"),
        ({"Upload-Metadata": _metadata(filename=b"\xff.txt", filetype=b"\xff")}, "upload", "application/octet-stream"),
        (  # the next value offered that is usable
            {
                "Content-Disposition": 'inline; filename=".."',
                "Content-Type": "text",
                "Upload-Metadata": _metadata(name=b"kept.txt", filetype=b"a/b c"),
            },
            "kept.txt",
            "text/plain",
        ),
        ({"Content-Disposition": 'inline; filename="a.bin"', "Content-Type": "image/png"}, "a.bin", "image/png"),
        # tus's body type (a client mixing tus into its draft requests) says nothing of the file either
        (
            {"Content-Disposition": 'inline; filename="a.png"', "Content-Type": "application/offset+octet-stream"},
            "a.png",
            "image/png",
        ),
        # curl --data-binary's default type: a draft body is never a form
        (
            {"Content-Disposition": 'inline; filename="a.png"', "Content-Type": "application/x-www-form-urlencoded"},
            "a.png",
            "image/png",
        ),
        ({"Content-Type": "application/x-www-form-urlencoded"}, "upload", "application/octet-stream"),
    ],
)
async def test_a_name_or_type_that_cannot_be_used_leaves_the_file_unnamed_or_untyped(
    api: Api, v: int, sent: dict[str, str], filename: str, mime_type: str
) -> None:
    """The draft gives neither Content-Disposition nor Content-Type a meaning for the upload (they
    "can affect" how a server acts on it): one chunkd cannot use is passed over, as in a tus
    creation, and the upload is created rather than refused (400)."""
    response = await create(api, v, b"abc", complete=True, **sent)
    assert response.status_code == 201, response.text
    native = (await api.client.get(f"/v1/files/{response.json()['id']}", headers=api.auth())).json()
    assert (native["filename"], native["mimeType"]) == (filename, mime_type)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_creation_with_any_method_that_carries_content(api: Api, v: int, method: str) -> None:
    response = await api.client.request(
        method, "/files", content=b"hello", headers={**hd(api, v), **completion(v, True)}
    )
    assert response.status_code == 201, response.text
    assert response.json()["sizeBytes"] == 5


async def test_incomplete_creation_answers_location_limits_and_offset(api: Api, v: int) -> None:
    response = await create(api, v, b"12345", complete=False, **{"Upload-Length": "10"})
    assert response.status_code == 201
    assert response.headers["location"].startswith("http://testserver/files/")
    assert not is_complete(v, response)
    assert response.headers["upload-offset"] == "5"
    assert limits(response)["max-size"] == api.runtime.settings.max_file_size
    assert limits(response)["min-size"] == 0


async def test_reaching_the_length_completes_only_up_to_interop_6(api: Api, v: int) -> None:
    """From 7 only the client completes an upload. Up to 6 reaching Upload-Length does, as in tusd:
    tus-js-client's draft modes (5, 6) send a stream's every slice with ?0 and report success at
    the length, which left the upload unfinished. Its empty ?1, if a client sends one, is answered
    with the final response."""
    response = await create(api, v, b"12345", complete=False, **{"Upload-Length": "5"})
    assert is_complete(v, response) == (v <= 6)
    path = upload_path(response)
    state = await head(api, v, path)
    assert is_complete(v, state) == (v <= 6) and state.headers["upload-offset"] == "5"
    done = await append(api, v, path, 5, b"", complete=True)
    assert done.status_code == 200 and is_complete(v, done)
    assert done.json()["md5"] == hashlib.md5(b"12345").hexdigest()
    # By appends: the one that reaches the length completes it.
    path = upload_path(await create(api, v, b"ab", **{"Upload-Length": "4"}))
    last = await append(api, v, path, 2, b"cd")
    assert last.status_code == (200 if v <= 6 else 204) and is_complete(v, last) == (v <= 6)


async def test_empty_creation_then_appends(api: Api, v: int) -> None:
    data = os.urandom(50_000)
    response = await create(api, v)
    path = upload_path(response)
    assert response.headers["upload-offset"] == "0"
    first = await append(api, v, path, 0, data[:20_000])
    assert first.status_code == incomplete_status(v) and not is_complete(v, first)
    assert first.headers["upload-offset"] == "20000"
    last = await append(api, v, path, 20_000, data[20_000:], complete=True)
    assert last.status_code == 200 and is_complete(v, last)
    assert last.json()["md5"] == hashlib.md5(data).hexdigest()


async def test_a_completing_request_records_the_length_from_content_length(api: Api, v: int) -> None:
    response = await create(api, v, b"abc", complete=False)
    path = upload_path(response)
    assert "upload-length" not in (await head(api, v, path)).headers
    done = await append(api, v, path, 3, b"def", complete=True)
    assert done.headers["upload-length"] == "6"


# ---- offset retrieval -------------------------------------------------------------------------------------
async def test_offset_retrieval_headers(api: Api, v: int) -> None:
    path = upload_path(await create(api, v, b"abcd", **{"Upload-Length": "100"}))
    response = await head(api, v, path)
    assert response.status_code == 204
    assert response.headers["upload-offset"] == "4"
    assert not is_complete(v, response)
    assert response.headers["upload-length"] == "100"
    assert response.headers["cache-control"] == "no-store"
    found = limits(response)
    lifetime = "max-age" if v >= 7 else "expires"
    assert 0 < found[lifetime] <= api.runtime.settings.upload_ttl_seconds


async def test_offset_retrieval_of_a_completed_upload(api: Api, v: int) -> None:
    path = upload_path(await create(api, v, b"abcd", complete=True))
    response = await head(api, v, path)
    assert response.status_code == 204
    assert is_complete(v, response)
    assert response.headers["upload-offset"] == "4"


async def test_head_and_delete_with_state_fields(api: Api, v: int) -> None:
    """Versions 3-6 reject a HEAD or DELETE carrying Upload-Offset or the completion field (and,
    in version 6, a HEAD carrying Upload-Length); later versions dropped the rule."""
    path = upload_path(await create(api, v, b"ab", **{"Upload-Length": "10"}))
    with_offset = await head(api, v, path, **{"Upload-Offset": "2"})
    with_completion = await head(api, v, path, **completion(v, False))
    with_length = await head(api, v, path, **{"Upload-Length": "10"})
    assert with_length.status_code == (400 if v == 6 else 204)
    delete_with_offset = await api.client.delete(path, headers={**hd(api, v), "Upload-Offset": "2"})
    if v <= 6:
        assert with_offset.status_code == with_completion.status_code == 400
        assert delete_with_offset.status_code == 400
        assert problem(delete_with_offset)["field"] == "Upload-Offset"
        deleted = await api.client.delete(path, headers={**hd(api, v), **completion(v, False)})
        assert deleted.status_code == 400
        assert problem(deleted)["field"] == complete_field(v).title()
        assert (await head(api, v, path)).status_code == 204  # not cancelled
    else:
        assert with_offset.status_code == with_completion.status_code == 204
        assert delete_with_offset.status_code == 204


async def test_another_owners_upload_is_404(api: Api, v: int) -> None:
    path = upload_path(await create(api, v, b"ab"))
    assert (await head(api, v, path, Authorization=f"Bearer {api.keys['bob']}")).status_code == 404
    assert (await append(api, v, path, 2, b"x", Authorization=f"Bearer {api.keys['bob']}")).status_code == 404


# ---- append -------------------------------------------------------------------------------------------------
async def test_mismatching_offset_is_409_with_the_right_offset(api: Api, v: int) -> None:
    path = upload_path(await create(api, v, b"abc"))
    response = await append(api, v, path, 7, b"zz")
    assert response.status_code == 409
    assert response.headers["upload-offset"] == "3"
    assert not is_complete(v, response)
    body = problem(response)
    assert body["expected-offset"] == 3 and body["provided-offset"] == 7
    # The draft's problem types exist from version 6; before, the type is about:blank.
    assert body["type"] == (PROBLEMS + "mismatching-upload-offset" if v >= 6 else "about:blank")
    assert (await head(api, v, path)).headers["upload-offset"] == "3"


async def test_append_media_type(api: Api, v: int) -> None:
    """From version 6 an append must be application/partial-upload."""
    path = upload_path(await create(api, v, b"abc"))
    headers = {**hd(api, v), **completion(v, False), "Upload-Offset": "3", "Content-Type": "text/plain"}
    response = await api.client.patch(path, content=b"de", headers=headers)
    if v >= 6:
        assert response.status_code == 415
        if v == 6:  # drafts -04/-05: the offset on every answer for an active upload, failures too
            assert response.headers["upload-offset"] == "3"
        assert (await head(api, v, path)).headers["upload-offset"] == "3"
    else:
        assert response.status_code == 201


async def test_append_needs_offset_and_completion(api: Api, v: int) -> None:
    path = upload_path(await create(api, v, b"abc"))
    headers = {**hd(api, v), **append_type(v), **completion(v, False)}
    assert (await api.client.patch(path, content=b"d", headers=headers)).status_code == 400
    malformed = {**hd(api, v), **append_type(v), "Upload-Offset": "3", complete_field(v): "true"}
    assert (await api.client.patch(path, content=b"d", headers=malformed)).status_code == 400
    assert (await head(api, v, path)).headers["upload-offset"] == "3"
    headers = {**hd(api, v), **append_type(v), "Upload-Offset": "3"}
    response = await api.client.patch(path, content=b"d", headers=headers)
    if v >= 7:  # draft -06: "The request MUST include the Upload-Complete header field."
        assert response.status_code == 400
        assert (await head(api, v, path)).headers["upload-offset"] == "3"
    elif v == 3:  # draft -01: complete on a request "with the Upload-Incomplete header being omitted"
        assert response.status_code == 200 and is_complete(v, response)
        assert response.json()["md5"] == hashlib.md5(b"abcd").hexdigest()
    else:  # drafts -02 to -05: only Upload-Complete: ?1 completes (their append example has none)
        assert response.status_code == 201 and not is_complete(v, response)
        assert response.headers["upload-offset"] == "4"
        assert not is_complete(v, await head(api, v, path))


async def test_a_field_sent_on_several_lines_is_read_whole(api: Api, v: int) -> None:
    """RFC 9651 §4.2: the lines of a structured field are joined before parsing. Two values of an
    Item make no Item, so the field is ignored (here: missing, a 400), not read as its first line."""
    path = upload_path(await create(api, v, b"abc"))
    base = [(k, val) for k, val in {**hd(api, v), **append_type(v), **completion(v, False)}.items()]
    twice = [*base, ("Upload-Offset", "3"), ("Upload-Offset", "0")]
    assert (await api.client.patch(path, content=b"d", headers=twice)).status_code == 400
    ends = [(k, val) for k, val in {**hd(api, v), **append_type(v), "Upload-Offset": "3"}.items()]
    both = [*ends, *completion(v, True).items(), *completion(v, False).items()]
    assert (await api.client.patch(path, content=b"d", headers=both)).status_code == 400
    after = await head(api, v, path)
    assert after.headers["upload-offset"] == "3" and not is_complete(v, after)
    lengths = [(k, val) for k, val in hd(api, v).items()] + [("Upload-Length", "5"), ("Upload-Length", "10")]
    created = await api.client.post("/files", content=b"ab", headers=[*lengths, *completion(v, False).items()])
    assert created.status_code == 201
    assert "upload-length" not in (await head(api, v, upload_path(created))).headers
    versions = [
        *api.auth("alice").items(),
        ("Upload-Draft-Interop-Version", str(v)),
        ("Upload-Draft-Interop-Version", "3"),
    ]
    refused = await api.client.post("/files", content=b"ab", headers=[*versions, *completion(v, True).items()])
    assert refused.status_code == 400
    assert problem(refused)["field"] == "Upload-Draft-Interop-Version"


async def test_appending_to_a_completed_upload(api: Api, v: int) -> None:
    """Refused, nothing changed. Bytes appended are an inconsistent length in version 8 (drafts
    -10, -11: "MUST treat this as an inconsistent length failure"), a ``completed-upload`` before.
    Up to version 6 the completion field of the refusal says the upload is complete (drafts -01
    to -05: whether "the corresponding upload is considered complete"); from 7, that this request
    did not complete it."""
    path = upload_path(await create(api, v, b"abc", complete=True))
    response = await append(api, v, path, 3, b"more")
    assert response.status_code == 400
    kind = "inconsistent-upload-length" if v >= 8 else "completed-upload"
    assert problem(response)["type"] == (PROBLEMS + kind if v >= 6 else "about:blank")
    assert is_complete(v, response) == (v <= 6)
    # A client that lost the final response may ask again: version 8 replays it; 7 rejects it, as
    # the drafts before say; up to 6 it is replayed too (see the test above: chunkd completes an
    # upload at its length there, and the client's empty completing request may follow).
    again = await append(api, v, path, 3, b"", complete=True)
    if v >= 8 or v <= 6:
        assert again.status_code == 200 and is_complete(v, again)
        assert again.json()["md5"] == hashlib.md5(b"abc").hexdigest()
    else:
        assert again.status_code == 400
        assert problem(again)["type"] == (PROBLEMS + "completed-upload" if v >= 6 else "about:blank")
        assert is_complete(v, again) == (v <= 6)
    # An empty append that does not complete: a completed-upload in 6 and 7; -12 (interop 8, as
    # -11, which only allowed the type) removed it.
    empty = await append(api, v, path, 3, b"")
    assert empty.status_code == 400
    assert problem(empty)["type"] == (PROBLEMS + "completed-upload" if 6 <= v <= 7 else "about:blank")
    assert (await head(api, v, path)).headers["upload-offset"] == "3"


async def test_inconsistent_lengths_are_400(api: Api, v: int) -> None:
    response = await create(api, v, b"abc", complete=True, **{"Upload-Length": "10"})
    assert response.status_code == 400
    assert problem(response)["type"] == (PROBLEMS + "inconsistent-upload-length" if v >= 7 else "about:blank")
    path = upload_path(await create(api, v, b"abc", **{"Upload-Length": "10"}))
    later = await append(api, v, path, 3, b"d", **{"Upload-Length": "11"})
    assert later.status_code == 400
    assert (await head(api, v, path)).headers["upload-offset"] == "3"


async def test_the_offset_never_passes_the_length(api: Api, v: int) -> None:
    """A body past the recorded length is refused with none of it kept: 400 from version 6 (413
    before); from version 7 (draft -08) the upload is then unusable."""
    path = upload_path(await create(api, v, b"abc", **{"Upload-Length": "5"}))
    response = await append(api, v, path, 3, b"defgh")
    assert response.status_code == (400 if v >= 6 else 413)
    assert not is_complete(v, response)
    after = await head(api, v, path)
    if v >= 7:
        assert after.status_code == 404
        assert (await append(api, v, path, 3, b"de")).status_code == 404
    else:
        assert after.headers["upload-offset"] == "3"


async def test_a_chunked_body_past_the_length(api: Api, v: int) -> None:
    """The length is enforced on the bytes, not on Content-Length (absent from a chunked body)."""
    path = upload_path(await create(api, v, b"abc", **{"Upload-Length": "5"}))

    async def chunked() -> AsyncIterator[bytes]:
        yield b"de"
        yield b"fgh"

    response = await append(api, v, path, 3, chunked())
    assert response.status_code == (400 if v >= 6 else 413)
    after = await head(api, v, path)
    assert after.status_code == (404 if v >= 7 else 204)


async def test_a_creation_body_past_its_length(api: Api, v: int) -> None:
    response = await create(api, v, b"abcdef", **{"Upload-Length": "5"})
    assert response.status_code == (400 if v >= 6 else 413)
    assert not is_complete(v, response)


async def test_content_digest_is_verified_before_the_append_is_kept(api: Api, v: int) -> None:
    path = upload_path(await create(api, v, b"abc"))
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    response = await append(api, v, path, 3, b"def", **{"Content-Digest": f"sha-256=:{wrong}:"})
    assert response.status_code == 400 and problem(response)["field"] == "Content-Digest"
    assert (await head(api, v, path)).headers["upload-offset"] == "3"
    right = base64.b64encode(hashlib.sha256(b"def").digest()).decode()
    response = await append(api, v, path, 3, b"def", **{"Content-Digest": f"sha-256=:{right}:"})
    assert response.status_code == incomplete_status(v)
    assert response.headers["upload-offset"] == "6"


async def test_a_length_sent_with_a_refused_append_is_not_kept(api: Api, v: int) -> None:
    """An append that declares Upload-Length and is refused (its Content-Digest) fixes no length:
    it was declared before the body was checked, and the retry with another length was refused as
    inconsistent."""
    path = upload_path(await create(api, v))
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    digest = {"Content-Digest": f"sha-256=:{wrong}:", "Upload-Length": "10"}
    response = await append(api, v, path, 0, b"abc", **digest)
    assert response.status_code == 400 and problem(response)["field"] == "Content-Digest"
    assert "upload-length" not in (await head(api, v, path)).headers
    response = await append(api, v, path, 0, b"abc", **{"Upload-Length": "7"})
    assert response.status_code == incomplete_status(v), response.text
    assert (await head(api, v, path)).headers["upload-length"] == "7"


def b64digest(algorithm: str, data: bytes) -> str:
    return base64.b64encode(hashlib.new(algorithm, data).digest()).decode()


@pytest.mark.parametrize("algorithm", ["md5", "sha256", "sha512"])
async def test_repr_digest_declared_at_creation_is_checked_on_completion(api: Api, v: int, algorithm: str) -> None:
    """Every algorithm chunkd knows is checked (md5 from the engine's own hash, sha-256/sha-512 by
    one read of the stored bytes); on a mismatch "the server SHOULD consider the upload failed":
    it is cancelled, since neither the declared digest nor the bytes can change any more."""
    name = algorithm.replace("sha", "sha-")
    data = os.urandom(70_000)
    path = upload_path(await create(api, v, data[:40_000], **{"Repr-Digest": f"{name}=:{b64digest(algorithm, data)}:"}))
    done = await append(api, v, path, 40_000, data[40_000:], complete=True)
    assert done.status_code == 200 and is_complete(v, done), done.text
    wrong = b64digest(algorithm, b"nope")
    path = upload_path(await create(api, v, b"abc", **{"Repr-Digest": f"{name}=:{wrong}:, unixsum=:AAAA:"}))
    # The completing request's own (right) Content-Digest does not take the blame.
    empty = {"Content-Digest": f"sha-256=:{b64digest('sha256', b'')}:"}
    refused = await append(api, v, path, 3, b"", complete=True, **empty)
    assert refused.status_code == 400 and problem(refused)["field"] == "Repr-Digest", refused.text
    assert "cancelled" in problem(refused)["detail"] and not is_complete(v, refused)
    assert (await head(api, v, path)).status_code == 404
    upload = await api.runtime.uploads.get("alice", path.rsplit("/", 1)[1])
    assert upload.status.value == "CANCELLED"


async def test_a_repr_digest_md5_of_the_wrong_length_is_refused_before_anything_is_stored(api: Api, v: int) -> None:
    """It could never match: the upload it declared could never be completed (it used to be made,
    with the body stored, and answered 400 only when completing)."""
    for digest in ("AAAA", "zz", base64.b64encode(hashlib.sha256(b"abc").digest()).decode()):
        response = await create(api, v, b"abc", complete=True, **{"Repr-Digest": f"md5=:{digest}:"})
        assert response.status_code == 400, response.text
        problem = response.json()
        assert problem["field"] == "Repr-Digest" and "16-byte" in problem["detail"], problem
        assert "location" not in response.headers
    assert await api.runtime.uploads.list_uploads("alice") == []


# ---- fields on every response --------------------------------------------------------------------------------
async def test_a_failed_append_to_an_active_upload_carries_its_offset(api: Api, v: int) -> None:
    """Versions 3-6: "the server MUST send the Upload-Offset header field in the response if it
    considers the upload active, either when the response is a success or when the response is
    a failure" (chunkd does it in every version)."""
    path = upload_path(await create(api, v, b"abc", **{"Upload-Length": "10"}))
    inconsistent = await append(api, v, path, 3, b"d", **{"Upload-Length": "11"})
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    corrupt = await append(api, v, path, 3, b"d", **{"Content-Digest": f"sha-256=:{wrong}:"})
    for response in (inconsistent, corrupt):
        assert response.status_code == 400
        assert response.headers["upload-offset"] == "3"


async def test_a_failed_creation_or_append_says_the_upload_is_not_complete(api: Api, v: int) -> None:
    """From version 7: "If the request didn't complete the upload, any response, successful or
    not, MUST include the Upload-Complete header field with a false value" (chunkd: every version)."""
    path = upload_path(await create(api, v, b"abc"))
    failures = [
        await append(api, v, path, 9, b"d", complete=True),  # 409
        await append(api, v, path, 3, b"", complete=True, **{"Upload-Length": "7"}),  # 400 inconsistent
        await create(api, v, b"abc", complete=True, **{"Upload-Length": "4"}),  # 400 inconsistent
        await create(api, v, b"abc", complete=True, **{"Content-Digest": "sha-256=:AAAA:"}),  # 400 digest
    ]
    for response in failures:
        assert response.status_code in (400, 409), response.text
        assert not is_complete(v, response)


async def test_limits_other_than_the_lifetime_never_change(api: Api, v: int) -> None:
    """The draft: "Except for the max-age limit, the existence of a limit or its value MUST NOT change
    throughout the lifetime of the upload resource."
    """
    lifetime = "max-age" if v >= 7 else "expires"
    created = await create(api, v, b"abc")
    path = upload_path(created)
    appended = await append(api, v, path, 3, b"def")
    state = await head(api, v, path)
    seen = [limits(r) for r in (created, appended, state)]
    for found in seen:
        assert found.pop(lifetime) > 0
    assert seen[0] == seen[1] == seen[2]
    options = await api.client.options("/files", headers={"Upload-Draft-Interop-Version": str(v)})
    announced = limits(options)
    announced.pop(lifetime, None)
    assert announced == seen[0]  # OPTIONS is not less restrictive than the upload's limits


async def test_malformed_state_fields_are_ignored(api: Api, v: int) -> None:
    """ "Other values MUST cause the entire header field to be ignored": an Upload-Length that is
    not a non-negative Integer is as if absent; an append without a valid Upload-Offset or
    completion field lacks a required field."""
    path = upload_path(await create(api, v, b"abc", **{"Upload-Length": "-5"}))
    assert "upload-length" not in (await head(api, v, path)).headers
    path = upload_path(await create(api, v, b"abc", **{"Upload-Length": "5.0"}))
    assert "upload-length" not in (await head(api, v, path)).headers
    base = {**hd(api, v), **append_type(v)}
    no_offset = await api.client.patch(
        path, content=b"d", headers={**base, **completion(v, False), "Upload-Offset": "?1"}
    )
    assert no_offset.status_code == 400 and problem(no_offset)["field"] == "Upload-Offset"
    field = complete_field(v).title()
    no_completion = await api.client.patch(path, content=b"d", headers={**base, "Upload-Offset": "3", field: "1"})
    assert no_completion.status_code == 400 and problem(no_completion)["field"] == field
    assert (await head(api, v, path)).headers["upload-offset"] == "3"


async def test_a_creation_request_starts_at_offset_zero(api: Api, v: int) -> None:
    """The creation request "MUST NOT include the Upload-Offset header field" (drafts -01 to -05)."""
    response = await create(api, v, b"abc", **{"Upload-Offset": "5"})
    assert response.status_code == 400
    assert problem(response)["field"] == "Upload-Offset"


async def test_get_on_an_upload_is_offset_retrieval(api: Api, v: int) -> None:
    """Editor's copy: "A successful response to a HEAD or GET request against an upload resource
    MUST include" the offset, completeness, length and limits; once complete, GET downloads."""
    path = upload_path(await create(api, v, b"abc", **{"Upload-Length": "6"}))
    state = await api.client.get(path, headers=hd(api, v))
    assert state.status_code == 204
    assert state.headers["upload-offset"] == "3" and state.headers["upload-length"] == "6"
    assert not is_complete(v, state) and "max-size" in limits(state)
    assert state.headers["cache-control"] == "no-store"
    await append(api, v, path, 3, b"def", complete=True)
    done = await api.client.get(path, headers=hd(api, v))
    assert done.status_code == 200 and done.content == b"abcdef"
    # -12: the state fields on every successful GET, a finished upload's download included.
    assert done.headers["upload-offset"] == "6" and done.headers["upload-length"] == "6"
    assert is_complete(v, done) and "max-size" in limits(done)
    assert done.headers["cache-control"] == "no-store"


async def test_an_upload_another_node_writes_is_busy_with_retry_after(
    api: Api, v: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """423 (tus's) until 7; from 8 a 503: from -09 a client does not resume after a 4xx whose
    semantics do not invite it, and may after a 5xx."""
    from chunkd.frontends.tus import draft

    monkeypatch.setattr(draft, "TAKE_OVER_WAIT", 0.2)
    path = upload_path(await create(api, v, b"abc"))
    async with api.runtime.locks.hold(path.rsplit("/", 1)[1], timeout=1):  # a writer on another node
        busy = await append(api, v, path, 3, b"def")
    assert busy.status_code == (503 if v >= 8 else 423)
    assert busy.headers["retry-after"] == "1"
    assert problem(busy)["code"] == "upload_busy"
    assert (await append(api, v, path, 3, b"def")).status_code in (201, 204)


async def test_deleting_an_upload_that_is_gone_is_404(api: Api, v: int) -> None:
    """Drafts -01 to -05: "If the server does not consider the upload resource to be active, it
    MUST respond with a 404 (Not Found) status code."
    """
    path = upload_path(await create(api, v, b"abc"))
    assert (await api.client.delete(path, headers=hd(api, v))).status_code == 204
    assert (await api.client.delete(path, headers=hd(api, v))).status_code == 404
    assert (await append(api, v, path, 3, b"d")).status_code == 404


# ---- representation digests --------------------------------------------------------------------------------------
async def test_completion_carries_the_kept_digests_and_the_wanted_ones(api: Api, v: int) -> None:
    """Repr-Digest on the completing response: the md5 and CRC-64/NVME the engine keeps, plus the
    sha-256 that Want-Repr-Digest asked for on the creation request (the upload completes in a
    later append)."""
    from awscrt.checksums import crc64nvme  # type: ignore[import-untyped]

    data = os.urandom(200_000)
    path = upload_path(await create(api, v, data[:70_000], **{"Want-Repr-Digest": "sha-256=5, unixsum=9"}))
    done = await append(api, v, path, 70_000, data[70_000:], complete=True)
    assert done.status_code == 200
    digests = http_sf.parse(done.headers["repr-digest"].encode(), tltype="dictionary")
    assert isinstance(digests, dict)
    assert digests["md5"][0] == hashlib.md5(data).digest()
    assert digests["crc64nvme"][0] == int(crc64nvme(data)).to_bytes(8, "big")
    assert digests["sha-256"][0] == hashlib.sha256(data).digest()
    assert "unixsum" not in digests
    # Downloads carry the same kept digests.
    download = await api.client.get(path, headers=api.auth())
    assert download.headers["repr-digest"] == f"md5=:{base64.b64encode(hashlib.md5(data).digest()).decode()}:, " + (
        f"crc64nvme=:{base64.b64encode(int(crc64nvme(data)).to_bytes(8, 'big')).decode()}:"
    )


async def test_a_completion_whose_file_is_deleted_before_its_wanted_digest_is_read_still_succeeds(
    api: Api, v: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sha-256 a client wants is read after the upload's lock is let go: a delete in between
    leaves the completion done (its answer, with the kept md5), not a 503 saying storage is down."""
    data = os.urandom(50_000)
    path = upload_path(await create(api, v, data[:20_000], **{"Want-Repr-Digest": "sha-256=5"}))
    service = api.runtime.uploads
    real_read = service.blobs.read

    async def read_after_a_delete(upload: Upload, start: int, end: int) -> AsyncIterator[bytes]:
        await service.delete("alice", upload.id)
        async for chunk in real_read(upload, start, end):
            yield chunk

    monkeypatch.setattr(service.blobs, "read", read_after_a_delete)
    done = await append(api, v, path, 20_000, data[20_000:], complete=True)
    assert done.status_code == 200, done.text
    assert done.json()["md5"] == hashlib.md5(data).hexdigest()
    digests = http_sf.parse(done.headers["repr-digest"].encode(), tltype="dictionary")
    assert isinstance(digests, dict) and digests["md5"][0] == hashlib.md5(data).digest() and "sha-256" not in digests
    assert (await head(api, v, path)).status_code == 404  # deleted indeed


# ---- cancellation ---------------------------------------------------------------------------------------------
async def test_cancellation(api: Api, v: int) -> None:
    path = upload_path(await create(api, v, b"abc"))
    response = await api.client.delete(path, headers=hd(api, v))
    assert response.status_code == 204
    assert (await head(api, v, path)).status_code == 404


# ---- limits and versions ----------------------------------------------------------------------------------------
async def test_options_announces_limits(api: Api, v: int) -> None:
    response = await api.client.options("/files", headers={"Upload-Draft-Interop-Version": str(v)})
    assert response.status_code == 204
    assert limits(response)["min-size"] == 0


async def test_options_names_the_patch_media_types(api: Api, v: int) -> None:
    """Drafts -10 and -11 (interop 8): an OPTIONS on a resource that creates uploads MUST carry
    ``Accept-Patch`` with ``application/partial-upload`` (RFC 5789); tus PATCHes take
    ``application/offset+octet-stream``. Sent whatever the request's version (it costs nothing)."""
    for path, headers in (("/files", {"Upload-Draft-Interop-Version": str(v)}), ("/files/", {})):
        response = await api.client.options(path, headers=headers)
        accepted = {t.strip() for t in response.headers["accept-patch"].split(",")}
        assert accepted == {"application/partial-upload", "application/offset+octet-stream"}


async def test_unknown_interop_version_is_400(api: Api, v: int) -> None:
    """9 included: -12 kept interop version 8, and no draft up to it defines 9."""
    for unknown in ("2", "9", str(v + 90)):
        response = await api.client.post(
            "/files",
            content=b"a",
            headers={**api.auth(), "Upload-Draft-Interop-Version": unknown, "Upload-Complete": "?1"},
        )
        assert response.status_code == 400
        assert problem(response)["field"] == "Upload-Draft-Interop-Version"


async def test_an_interop_version_with_parameters_is_that_version(api: Api, v: int) -> None:
    """The field is a structured-field Integer, which may carry parameters: "8;x=1" is version 8."""
    headers = {**api.auth(), "Upload-Draft-Interop-Version": f"{v};x=1", **completion(v, True)}
    response = await api.client.post("/files", content=b"abc", headers=headers)
    assert response.status_code == 201, response.text
    assert response.headers["upload-draft-interop-version"] == str(v)


async def test_max_append_size(tmp_path, settings: Settings, v: int) -> None:
    from chunkd.app import create_app

    settings.resumable_max_append_bytes = 4
    settings.resumable_min_append_bytes = 2
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        _, key = await app.state.chunkd.keys.create("alice", "files:create,files:read")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            headers = {"Authorization": f"Bearer {key}", "Upload-Draft-Interop-Version": str(v), **completion(v, False)}
            created = await client.post("/files", content=b"ab", headers=headers)
            assert created.status_code == 201
            assert limits(created)["max-append-size"] == 4 and limits(created)["min-append-size"] == 2
            path = upload_path(created)
            patch = {**headers, **append_type(v), "Upload-Offset": "2"}
            too_big = await client.patch(path, content=b"cdefg", headers=patch)
            assert too_big.status_code == 413
            assert limits(too_big)["max-append-size"] == 4
            too_small = await client.patch(path, content=b"c", headers=patch)
            assert too_small.status_code == 400
            # -12: a refusal for a limit SHOULD carry Upload-Limit with all limits.
            assert limits(too_small)["min-append-size"] == 2
            # The last append may be smaller than min-append-size.
            last = await client.patch(path, content=b"c", headers={**patch, **completion(v, True)})
            assert last.status_code == 200


# ---- concurrency -------------------------------------------------------------------------------------------------
async def test_offset_retrieval_ends_a_stale_append(api: Api, v: int) -> None:
    """The draft's recommended concurrency handling: a new request (here the client's HEAD before
    resuming) ends the append still running; its bytes are kept and the offset answered is the
    one the next append must use."""
    data = os.urandom(3 * 1024 * 1024)
    path = upload_path(await create(api, v))
    gate = asyncio.Event()
    streaming = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield data[:1_000_000]
        streaming.set()  # the server took the first bytes and asks for more: it is in the engine
        await gate.wait()  # the connection hangs: no more bytes, no close
        yield data[1_000_000:]

    headers = {**hd(api, v), **append_type(v), **completion(v, True), "Upload-Offset": "0"}
    old = asyncio.create_task(api.client.patch(path, content=stalled(), headers=headers))
    await streaming.wait()
    state = await head(api, v, path)
    assert state.status_code == 204
    offset = int(state.headers["upload-offset"])
    assert offset == 1_000_000
    assert (await old).status_code == 400
    done = await append(api, v, path, offset, data[offset:], complete=True)
    assert done.status_code == 200
    assert done.json()["md5"] == hashlib.md5(data).hexdigest()
    gate.set()


async def test_offset_retrieval_ends_a_stale_creation(api: Api, v: int) -> None:
    """The same for a creation whose body stalls: the refusal of the creation carries the offset
    up to version 6 (drafts -01 to -05: the offset on every answer for an active upload, failures
    too), and the upload resumes from it."""
    data = os.urandom(3 * 1024 * 1024)
    gate, streaming = asyncio.Event(), asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield data[:1_000_000]
        streaming.set()
        await gate.wait()
        yield data[1_000_000:]

    headers = {**hd(api, v), **completion(v, True)}
    old = asyncio.create_task(api.client.post("/files", content=stalled(), headers=headers))
    await streaming.wait()
    listed = (await api.client.get("/v1/files", headers=api.auth("alice"))).json()
    path = "/files/" + next(f["id"] for f in listed["data"] if f["status"] == "PENDING")
    offset = int((await head(api, v, path)).headers["upload-offset"])
    assert offset == 1_000_000
    refused = await old
    assert refused.status_code == 400 and problem(refused)["code"] == "upload_taken_over"
    if v <= 6:
        assert refused.headers["upload-offset"] == str(offset)
    done = await append(api, v, path, offset, data[offset:], complete=True)
    assert done.status_code == 200
    assert done.json()["md5"] == hashlib.md5(data).hexdigest()
    gate.set()
