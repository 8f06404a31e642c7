"""``chunkd.frontends.digests``: one parser of the integrity fields for every dialect, each caller
keeping its own rules (an append ignores algorithms it does not know and takes md5; a part refuses
a Content-Digest naming none it verifies and leaves md5 to Content-MD5)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator

import pytest

from chunkd.domain.errors import InvalidInput
from chunkd.frontends.digests import (
    content_digest_checksum,
    parse_digest_field,
    parse_want,
    repr_digest_header,
    repr_digest_of,
    request_digest,
    wants,
)


def sf(raw: bytes) -> str:
    return ":" + base64.b64encode(raw).decode() + ":"


SHA256 = hashlib.sha256(b"abc").digest()
SHA512 = hashlib.sha512(b"abc").digest()
MD5 = hashlib.md5(b"abc").digest()


def test_the_strongest_known_member_is_verified() -> None:
    value = f"md5={sf(MD5)}, sha-256={sf(SHA256)}, sha-512={sf(SHA512)}"
    found = content_digest_checksum(value)
    assert found is not None and found[1] == SHA512
    part = request_digest({"content-digest": value})
    assert part is not None and part.expected == SHA512 and part.field == "Content-Digest"


def test_an_append_takes_md5_and_ignores_unknown_algorithms() -> None:
    found = content_digest_checksum(f"md5={sf(MD5)}")
    assert found is not None and found[1] == MD5
    assert content_digest_checksum(f"unixsum={sf(b'12')}") is None
    assert content_digest_checksum(None) is None


def test_a_part_refuses_a_content_digest_it_cannot_verify() -> None:
    for value in (f"md5={sf(MD5)}", f"unixsum={sf(b'12')}"):
        with pytest.raises(InvalidInput) as raised:
            request_digest({"content-digest": value})
        assert raised.value.field == "Content-Digest"
    assert request_digest({}) is None


def test_s3_checksum_headers_come_before_content_digest() -> None:
    found = request_digest(
        {"x-amz-checksum-sha256": base64.b64encode(SHA256).decode(), "content-digest": f"sha-512={sf(SHA512)}"}
    )
    assert found is not None and found.field == "x-amz-checksum-sha256" and found.expected == SHA256
    with pytest.raises(InvalidInput):
        request_digest({"x-amz-checksum-crc32": "AAAA"})  # 3 bytes, not 4


@pytest.mark.parametrize("value", ["sha-256=(", "sha-256=:AAAA:", f"sha-256={sf(SHA256)}, ="])
def test_malformed_or_short_digests_are_400(value: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        content_digest_checksum(value)
    assert raised.value.field == "Content-Digest"


def test_non_byte_sequence_members_are_ignored() -> None:
    assert parse_digest_field(f'sha-256={sf(SHA256)}, note="x", n=5', "Repr-Digest") == {"sha-256": SHA256}


def test_want_repr_digest_preferences() -> None:
    assert parse_want("sha-256=3, sha-512=10, md5=0, crc=?1, bad=11") == {"sha-256": 3, "sha-512": 10}
    assert wants("sha-256=3, sha-512=10") == ["sha-512", "sha-256"]
    assert parse_want("((") == {}


async def test_repr_digest_kept_and_read() -> None:
    crc = bytes(7) + bytes([255])
    assert repr_digest_of(MD5.hex(), "00000000000000ff") == f"md5={sf(MD5)}, crc64nvme={sf(crc)}"
    assert repr_digest_of(None, None) is None
    reads = 0

    async def read() -> AsyncIterator[bytes]:
        nonlocal reads
        reads += 1
        yield b"ab"
        yield b"c"

    value = await repr_digest_header(MD5.hex(), "sha-512=1, sha-256=2", read)
    assert value == f"md5={sf(MD5)}, sha-256={sf(SHA256)}, sha-512={sf(SHA512)}"
    assert reads == 1  # one read of the stored bytes for every algorithm asked for
