"""RFC 9530 digest fields: Repr-Digest on completion and downloads (md5 kept by the engine,
sha-256/512 read from storage when Want-Repr-Digest asks), Content-Digest verified on appends
before they are acknowledged."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest

from tests.conftest import Api

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


@pytest.fixture
def db_url() -> None:
    return None


def sf_bytes(digest: bytes) -> str:
    return ":" + base64.b64encode(digest).decode() + ":"


async def tus_upload(api: Api, data: bytes) -> tuple[str, dict[str, str]]:
    created = await api.client.post("/files", headers={**TUS, **api.auth(), "Upload-Length": str(len(data))})
    path = "/files/" + created.headers["location"].rsplit("/", 1)[1]
    done = await api.client.patch(path, content=data, headers={**TUS, **OCTETS, **api.auth(), "Upload-Offset": "0"})
    assert done.status_code == 204
    return path, dict(done.headers)


async def test_tus_completion_carries_the_md5_repr_digest(api: Api) -> None:
    data = os.urandom(10_000)
    _, headers = await tus_upload(api, data)
    assert headers["repr-digest"] == "md5=" + sf_bytes(hashlib.md5(data).digest())


async def test_downloads_carry_repr_digest_and_honour_want_repr_digest(api: Api) -> None:
    data = os.urandom(300_000)
    path, _ = await tus_upload(api, data)
    upload_id = path.rsplit("/", 1)[1]
    for url in (path, f"/v1/files/{upload_id}/content"):
        plain = await api.client.get(url, headers=api.auth())
        assert plain.headers["repr-digest"] == "md5=" + sf_bytes(hashlib.md5(data).digest())
        wanted = await api.client.get(url, headers={**api.auth(), "Want-Repr-Digest": "sha-256=10, sha-512=3, crc=1"})
        members = dict(part.strip().split("=", 1) for part in wanted.headers["repr-digest"].split(","))
        assert members["sha-256"] == sf_bytes(hashlib.sha256(data).digest())
        assert members["sha-512"] == sf_bytes(hashlib.sha512(data).digest())
        assert members["md5"] == sf_bytes(hashlib.md5(data).digest())
        assert "crc" not in members
        # A range is part of the same representation: the digest is still the whole file's.
        ranged = await api.client.get(
            url, headers={**api.auth(), "Range": "bytes=0-9", "Want-Repr-Digest": "sha-256=1"}
        )
        assert ranged.status_code == 206
        assert f"sha-256={sf_bytes(hashlib.sha256(data).digest())}" in ranged.headers["repr-digest"]


async def test_tus_patch_with_content_digest(api: Api) -> None:
    created = await api.client.post("/files", headers={**TUS, **api.auth(), "Upload-Length": "6"})
    path = "/files/" + created.headers["location"].rsplit("/", 1)[1]
    headers = {**TUS, **OCTETS, **api.auth(), "Upload-Offset": "0"}
    wrong = await api.client.patch(
        path,
        content=b"abc",
        headers={**headers, "Content-Digest": "sha-256=" + sf_bytes(hashlib.sha256(b"x").digest())},
    )
    assert wrong.status_code == 460
    assert (await api.client.head(path, headers={**TUS, **api.auth()})).headers["upload-offset"] == "0"
    right = await api.client.patch(
        path, content=b"abc", headers={**headers, "Content-Digest": "md5=" + sf_bytes(hashlib.md5(b"abc").digest())}
    )
    assert right.status_code == 204 and right.headers["upload-offset"] == "3"
    bad_field = await api.client.patch(
        path, content=b"def", headers={**headers, "Upload-Offset": "3", "Content-Digest": "sha-256=("}
    )
    assert bad_field.status_code == 400
