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


def append_type(v: int) -> dict[str, str]:
    return {"Content-Type": "application/partial-upload"} if v >= 6 else {}


async def create(api: Api, v: int, data: bytes = b"", *, complete: bool = False, **extra: str) -> httpx.Response:
    return await api.client.post("/files", content=data, headers={**hd(api, v, **extra), **completion(v, complete)})


def upload_path(response: httpx.Response) -> str:
    return "/files/" + response.headers["location"].rsplit("/", 1)[1]


async def append(
    api: Api, v: int, path: str, offset: int, data: bytes, *, complete: bool = False, **extra: str
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
    digest = base64.b64encode(hashlib.md5(data).digest()).decode()
    assert response.headers["repr-digest"] == f"md5=:{digest}:"
    upload = await api.runtime.uploads.get("alice", body["id"])
    assert upload.status.value == "COMPLETED"
    download = await api.client.get(upload_path(response), headers=api.auth())
    assert download.content == data


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


async def test_reaching_the_length_does_not_complete_without_the_client_saying_so(api: Api, v: int) -> None:
    response = await create(api, v, b"12345", complete=False, **{"Upload-Length": "5"})
    path = upload_path(response)
    state = await head(api, v, path)
    assert not is_complete(v, state) and state.headers["upload-offset"] == "5"
    done = await append(api, v, path, 5, b"", complete=True)
    assert done.status_code == 200 and is_complete(v, done)
    assert done.json()["md5"] == hashlib.md5(b"12345").hexdigest()


async def test_empty_creation_then_appends(api: Api, v: int) -> None:
    data = os.urandom(50_000)
    response = await create(api, v)
    path = upload_path(response)
    assert response.headers["upload-offset"] == "0"
    first = await append(api, v, path, 0, data[:20_000])
    assert first.status_code == 204 and not is_complete(v, first)
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
    """Versions 3-5 reject a HEAD or DELETE carrying Upload-Offset or the completion field."""
    path = upload_path(await create(api, v, b"ab"))
    with_offset = await head(api, v, path, **{"Upload-Offset": "2"})
    deleted = await api.client.delete(path, headers={**hd(api, v), **completion(v, False)})
    if v <= 5:
        assert with_offset.status_code == 400
        assert deleted.status_code == 400
    else:
        assert with_offset.status_code == 204
        assert deleted.status_code == 204


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
    if v >= 6:
        assert body["type"] == PROBLEMS + "mismatching-upload-offset"
        assert body["expected-offset"] == 3 and body["provided-offset"] == 7
    assert (await head(api, v, path)).headers["upload-offset"] == "3"


async def test_append_media_type(api: Api, v: int) -> None:
    """From version 6 an append must be application/partial-upload."""
    path = upload_path(await create(api, v, b"abc"))
    headers = {**hd(api, v), **completion(v, False), "Upload-Offset": "3", "Content-Type": "text/plain"}
    response = await api.client.patch(path, content=b"de", headers=headers)
    if v >= 6:
        assert response.status_code == 415
        assert (await head(api, v, path)).headers["upload-offset"] == "3"
    else:
        assert response.status_code == 204


async def test_append_needs_offset_and_completion(api: Api, v: int) -> None:
    path = upload_path(await create(api, v, b"abc"))
    headers = {**hd(api, v), **append_type(v), **completion(v, False)}
    assert (await api.client.patch(path, content=b"d", headers=headers)).status_code == 400
    headers = {**hd(api, v), **append_type(v), "Upload-Offset": "3"}
    assert (await api.client.patch(path, content=b"d", headers=headers)).status_code == 400


async def test_appending_to_a_completed_upload(api: Api, v: int) -> None:
    path = upload_path(await create(api, v, b"abc", complete=True))
    response = await append(api, v, path, 3, b"more")
    assert response.status_code == 400
    if v >= 6:
        assert problem(response)["type"] == PROBLEMS + "completed-upload"
    # A client that lost the final response may ask again: it is replayed.
    again = await append(api, v, path, 3, b"", complete=True)
    assert again.status_code == 200 and is_complete(v, again)


async def test_inconsistent_lengths_are_400(api: Api, v: int) -> None:
    response = await create(api, v, b"abc", complete=True, **{"Upload-Length": "10"})
    assert response.status_code == 400
    if v >= 7:
        assert problem(response)["type"] == PROBLEMS + "inconsistent-upload-length"
    path = upload_path(await create(api, v, b"abc", **{"Upload-Length": "10"}))
    later = await append(api, v, path, 3, b"d", **{"Upload-Length": "11"})
    assert later.status_code == 400
    assert (await head(api, v, path)).headers["upload-offset"] == "3"


async def test_the_offset_never_passes_the_length(api: Api, v: int) -> None:
    path = upload_path(await create(api, v, b"abc", **{"Upload-Length": "5"}))
    response = await append(api, v, path, 3, b"defgh")
    assert response.status_code == 413
    assert (await head(api, v, path)).headers["upload-offset"] == "3"


async def test_content_digest_is_verified_before_the_append_is_kept(api: Api, v: int) -> None:
    path = upload_path(await create(api, v, b"abc"))
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    response = await append(api, v, path, 3, b"def", **{"Content-Digest": f"sha-256=:{wrong}:"})
    assert response.status_code == 400
    assert (await head(api, v, path)).headers["upload-offset"] == "3"
    right = base64.b64encode(hashlib.sha256(b"def").digest()).decode()
    response = await append(api, v, path, 3, b"def", **{"Content-Digest": f"sha-256=:{right}:"})
    assert response.status_code == 204
    assert response.headers["upload-offset"] == "6"


async def test_repr_digest_declared_at_creation_is_checked_on_completion(api: Api, v: int) -> None:
    wrong = base64.b64encode(hashlib.md5(b"nope").digest()).decode()
    path = upload_path(await create(api, v, b"abc", **{"Repr-Digest": f"md5=:{wrong}:"}))
    response = await append(api, v, path, 3, b"", complete=True)
    assert response.status_code == 400
    still_open = await head(api, v, path)
    assert not is_complete(v, still_open)


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


async def test_unknown_interop_version_is_400(api: Api, v: int) -> None:
    response = await api.client.post(
        "/files",
        content=b"a",
        headers={**api.auth(), "Upload-Draft-Interop-Version": str(v + 90), "Upload-Complete": "?1"},
    )
    assert response.status_code == 400
    assert problem(response)["field"] == "Upload-Draft-Interop-Version"


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
