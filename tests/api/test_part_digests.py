"""Per-part integrity headers on the Files API: S3's x-amz-checksum-* and RFC 9530 Content-Digest are
verified before a part is acknowledged; a mismatch is a 400 naming the header and stores nothing."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib

import pytest

from chunkd.service.crc import crc64nvme
from tests.conftest import Api


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def new_file(api: Api, size: int) -> str:
    created = await api.client.post("/v1/files", json={"filename": "f.bin", "sizeBytes": size}, headers=api.auth())
    return str(created.json()["id"])


def good_and_bad(data: bytes) -> list[tuple[str, str, str]]:
    crc64 = crc64nvme(data).to_bytes(8, "big")
    return [
        ("x-amz-checksum-crc64nvme", b64(crc64), b64(bytes(8))),
        ("x-amz-checksum-crc32", b64(zlib.crc32(data).to_bytes(4, "big")), b64(bytes(4))),
        ("x-amz-checksum-sha256", b64(hashlib.sha256(data).digest()), b64(bytes(32))),
        ("content-digest", f"sha-256=:{b64(hashlib.sha256(data).digest())}:", f"sha-256=:{b64(bytes(32))}:"),
        ("content-digest", f"sha-512=:{b64(hashlib.sha512(data).digest())}:", f"sha-512=:{b64(bytes(64))}:"),
    ]


@pytest.mark.parametrize("index", range(5))
async def test_digest_headers_are_verified_before_the_part_is_kept(api: Api, index: int) -> None:
    data = os.urandom(70_000)
    header, good, bad = good_and_bad(data)[index]
    file_id = await new_file(api, len(data))
    refused = await api.client.put(f"/v1/files/{file_id}/parts/1", content=data, headers={**api.auth(), header: bad})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "checksum_mismatch" and error["field"].lower() == header
    assert (await api.client.get(f"/v1/files/{file_id}", headers=api.auth())).json()["parts"] == []
    kept = await api.client.put(f"/v1/files/{file_id}/parts/1", content=data, headers={**api.auth(), header: good})
    assert kept.status_code == 200, kept.text


async def test_a_malformed_digest_header_is_400_naming_it(api: Api) -> None:
    file_id = await new_file(api, 10)
    for header, value in (("x-amz-checksum-sha256", "not base64!"), ("content-digest", "md5=:AAAA:")):
        answer = await api.client.put(
            f"/v1/files/{file_id}/parts/1", content=b"0123456789", headers={**api.auth(), header: value}
        )
        assert answer.status_code == 400
        assert answer.json()["error"]["field"].lower() == header
