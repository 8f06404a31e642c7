"""RFC 9530 digest fields: Repr-Digest on completion and downloads (md5 and CRC-64/NVME kept by
the engine, sha-256/512 read from storage when Want-Repr-Digest asks), Content-Digest verified on
appends before they are acknowledged."""

from __future__ import annotations

import base64
import hashlib
import os

import http_sf
import pytest
from awscrt.checksums import crc64nvme  # type: ignore[import-untyped]

from tests.conftest import Api

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


@pytest.fixture
def db_url() -> None:
    return None


def sf_bytes(digest: bytes) -> str:
    return ":" + base64.b64encode(digest).decode() + ":"


def kept(data: bytes) -> str:
    """The Repr-Digest of what the engine keeps for ``data``: its MD5 and its CRC-64/NVME."""
    crc = int(crc64nvme(data)).to_bytes(8, "big")
    return f"md5={sf_bytes(hashlib.md5(data).digest())}, crc64nvme={sf_bytes(crc)}"


def members(value: str) -> dict[str, bytes]:
    parsed = http_sf.parse(value.encode(), tltype="dictionary")
    assert isinstance(parsed, dict)
    return {key: member[0] for key, member in parsed.items()}


async def tus_upload(api: Api, data: bytes) -> tuple[str, dict[str, str]]:
    created = await api.client.post("/files", headers={**TUS, **api.auth(), "Upload-Length": str(len(data))})
    path = "/files/" + created.headers["location"].rsplit("/", 1)[1]
    done = await api.client.patch(path, content=data, headers={**TUS, **OCTETS, **api.auth(), "Upload-Offset": "0"})
    assert done.status_code == 204
    return path, dict(done.headers)


async def test_tus_completion_carries_the_kept_repr_digests(api: Api) -> None:
    data = os.urandom(10_000)
    _, headers = await tus_upload(api, data)
    assert headers["repr-digest"] == kept(data)


async def test_downloads_carry_repr_digest_and_honour_want_repr_digest(api: Api) -> None:
    data = os.urandom(300_000)
    path, _ = await tus_upload(api, data)
    upload_id = path.rsplit("/", 1)[1]
    for url in (path, f"/v1/files/{upload_id}/content"):
        plain = await api.client.get(url, headers=api.auth())
        assert plain.headers["repr-digest"] == kept(data)
        wanted = await api.client.get(url, headers={**api.auth(), "Want-Repr-Digest": "sha-256=10, sha-512=3, crc=1"})
        found = members(wanted.headers["repr-digest"])
        assert found["sha-256"] == hashlib.sha256(data).digest()
        assert found["sha-512"] == hashlib.sha512(data).digest()
        assert found["md5"] == hashlib.md5(data).digest()
        assert found["crc64nvme"] == int(crc64nvme(data)).to_bytes(8, "big")
        assert "crc" not in found
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
    assert wrong.status_code == 460 and "Content-Digest" in wrong.text, wrong.text  # the header it came in
    assert (await api.client.head(path, headers={**TUS, **api.auth()})).headers["upload-offset"] == "0"
    # A digest of an algorithm chunkd checks that is no byte sequence (md5 as hex, a token) is a
    # 400 naming the field, nothing kept: it was skipped, and the bytes kept unchecked.
    for malformed in ("md5=" + hashlib.md5(b"abc").hexdigest(), "sha-256=abc", "unixsum=3, sha-512"):
        refused = await api.client.patch(path, content=b"abc", headers={**headers, "Content-Digest": malformed})
        assert refused.status_code == 400 and "Content-Digest" in refused.text, (malformed, refused.text)
        assert (await api.client.head(path, headers={**TUS, **api.auth()})).headers["upload-offset"] == "0"
    right = await api.client.patch(
        path, content=b"abc", headers={**headers, "Content-Digest": "md5=" + sf_bytes(hashlib.md5(b"abc").digest())}
    )
    assert right.status_code == 204 and right.headers["upload-offset"] == "3"
    bad_field = await api.client.patch(
        path, content=b"def", headers={**headers, "Upload-Offset": "3", "Content-Digest": "sha-256=("}
    )
    assert bad_field.status_code == 400
