"""The whole-file PUT (the native uploadUrl) checks a Content-MD5, x-amz-checksum-* or Content-Digest
sent with the body, as S3's PutObject does: a mismatch is a 400 naming the header and records
nothing of the body (the upload stays pending, its earlier parts as they were), even when the body
is stored as several parts; the right bytes PUT again are kept."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from chunkd.domain.upload import Status
from chunkd.service.crc import crc64nvme
from tests.api.test_part_digests import good_and_bad
from tests.conftest import Api

PART = 1000


def content_md5_of(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


async def new_file(api: Api, size: int) -> str:
    return str((await created(api, size))["id"])


async def created(api: Api, size: int) -> dict[str, str]:
    answer = await api.client.post(
        "/v1/files", json={"filename": "w.bin", "sizeBytes": size, "partSize": PART}, headers=api.auth()
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def parts_of(api: Api, file_id: str) -> list[tuple[int, int]]:
    view = (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()
    assert view["status"] == "PENDING"
    return [(part["partNumber"], part["sizeBytes"]) for part in view["parts"]]


async def test_a_wrong_content_md5_refuses_the_whole_body_and_the_right_one_is_kept(api: Api) -> None:
    data = os.urandom(3 * PART + 17)  # four parts
    file = await created(api, len(data))
    file_id, signed = file["id"], file["uploadUrl"]  # the signed uploadUrl: no credentials
    url = f"/v1/files/{file_id}/content"
    corrupted = data[:-1] + bytes([data[-1] ^ 1])  # the last part differs: the first three were fine
    refused = await api.client.put(signed, content=corrupted, headers={"Content-MD5": content_md5_of(data)})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "checksum_mismatch" and error["field"] == "Content-MD5"
    assert await parts_of(api, file_id) == []  # no part of the refused body was recorded
    # A complete without an MD5 cannot finish the refused bytes.
    missing = await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())
    assert missing.status_code == 409 and missing.json()["error"]["code"] == "missing_parts", missing.text

    kept = await api.client.put(signed, content=data, headers={"Content-MD5": content_md5_of(data)})
    assert kept.status_code == 200, kept.text
    assert [p["sizeBytes"] for p in kept.json()["parts"]] == [PART, PART, PART, 17]
    stored = await api.runtime.uploads.get("alice", file_id)
    assert stored.hash_offset == len(data)  # the MD5 checked is the one complete uses: nothing read back
    done = await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())
    assert done.status_code == 200 and done.json()["status"] == "COMPLETED", done.text
    view = (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()
    assert view["md5"] == hashlib.md5(data).hexdigest()
    assert (await api.client.get(url, headers=api.auth())).content == data


async def test_a_refused_put_leaves_the_parts_stored_before_it(api: Api) -> None:
    """Over parts already stored (a resumed upload) the refused body replaces none of them, and a
    right PUT then replaces them all; its MD5 is its own body's, not the stored parts'."""
    data = os.urandom(2 * PART + 5)
    file_id = await new_file(api, len(data))
    old = os.urandom(PART)
    assert (await api.client.put(f"/v1/files/{file_id}/parts/1", content=old, headers=api.auth())).status_code == 200
    url = f"/v1/files/{file_id}/content"
    wrong = await api.client.put(url, content=data, headers={**api.auth(), "Content-MD5": content_md5_of(b"other")})
    assert wrong.status_code == 400 and wrong.json()["error"]["field"] == "Content-MD5", wrong.text
    assert await parts_of(api, file_id) == [(1, PART)]
    assert (await api.runtime.uploads.get("alice", file_id)).parts[1].crc64 == f"{crc64nvme(old):016x}"

    kept = await api.client.put(url, content=data, headers={**api.auth(), "Content-MD5": content_md5_of(data)})
    assert kept.status_code == 200, kept.text
    done = await api.client.post(
        f"/v1/files/{file_id}/complete", json={"md5": hashlib.md5(data).hexdigest()}, headers=api.auth()
    )
    assert done.status_code == 200, done.text
    assert (await api.client.get(url, headers=api.auth())).content == data


@pytest.mark.parametrize("index", range(5))
async def test_digest_headers_are_verified_over_the_whole_body(api: Api, index: int) -> None:
    data = os.urandom(3 * PART + 1)
    header, good, bad = good_and_bad(data)[index]
    file_id = await new_file(api, len(data))
    url = f"/v1/files/{file_id}/content"
    refused = await api.client.put(url, content=data, headers={**api.auth(), header: bad})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "checksum_mismatch" and error["field"].lower() == header
    assert await parts_of(api, file_id) == []
    kept = await api.client.put(url, content=data, headers={**api.auth(), header: good})
    assert kept.status_code == 200, kept.text
    assert (await api.client.post(f"/v1/files/{file_id}/complete", headers=api.auth())).status_code == 200


async def test_a_checked_put_broken_off_records_nothing(api: Api) -> None:
    """A body that stops after whole parts: without a digest its parts are kept (a resumable PUT);
    with one, none is recorded, since nothing of it could be checked."""
    data = os.urandom(4 * PART)

    async def broken() -> AsyncIterator[bytes]:
        yield data[: 2 * PART + 10]
        raise ConnectionResetError("the client went away")

    service = api.runtime.uploads
    checked = await new_file(api, len(data))
    with pytest.raises(ConnectionResetError):
        await service.put_whole("alice", checked, broken(), content_md5=hashlib.md5(data).hexdigest())
    upload = await service.get("alice", checked)
    assert upload.status is Status.PENDING and upload.parts == {}
    unchecked = await new_file(api, len(data))
    with pytest.raises(ConnectionResetError):
        await service.put_whole("alice", unchecked, broken())
    assert sorted((await service.get("alice", unchecked)).parts) == [1, 2]


async def test_an_empty_file_is_checked_too(api: Api) -> None:
    file_id = await new_file(api, 0)
    url = f"/v1/files/{file_id}/content"
    wrong = await api.client.put(url, content=b"", headers={**api.auth(), "Content-MD5": content_md5_of(b"x")})
    assert wrong.status_code == 400 and wrong.json()["error"]["field"] == "Content-MD5", wrong.text
    right = await api.client.put(url, content=b"", headers={**api.auth(), "Content-MD5": content_md5_of(b"")})
    assert right.status_code == 200, right.text
