"""ResumableMD5: a saved state carries the digest across objects (and restarts) exactly like one
hashlib.md5 over the whole input; client digests are parsed strictly."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import random

import pytest

from chunkd.domain.checksum import (
    MD5_STATE_SIZE,
    ResumableMD5,
    new_stream_hasher,
    parse_content_md5,
    parse_md5_hex,
)


def test_empty_input() -> None:
    assert ResumableMD5().hexdigest() == hashlib.md5(b"").hexdigest()
    assert len(ResumableMD5().state()) == MD5_STATE_SIZE


@pytest.mark.parametrize("seed", range(8))
def test_state_survives_random_splits_across_objects(seed: int) -> None:
    rng = random.Random(seed)
    data = os.urandom(rng.randrange(1, 300_000))
    # Random cut points, including cuts inside a 64-byte block and empty pieces.
    cuts = sorted({0, len(data), *(rng.randrange(0, len(data) + 1) for _ in range(rng.randrange(1, 12)))})
    state = ResumableMD5().state()
    for lo, hi in itertools.pairwise(cuts):
        hasher = ResumableMD5(bytes(state))  # a fresh object, as after a restart
        hasher.update(data[lo:hi])
        state = hasher.state()
    assert ResumableMD5(state).hexdigest() == hashlib.md5(data).hexdigest()


def test_hexdigest_does_not_disturb_the_state() -> None:
    data = os.urandom(100_003)
    hasher = ResumableMD5()
    reference = hashlib.md5()
    for lo in range(0, len(data), 777):
        piece = data[lo : lo + 777]
        hasher.update(piece)
        reference.update(piece)
        before = hasher.state()
        assert hasher.hexdigest() == reference.hexdigest()
        assert hasher.state() == before
    assert hasher.hexdigest() == hashlib.md5(data).hexdigest()


def test_update_accepts_bytes_like_and_copies_are_independent() -> None:
    hasher = ResumableMD5()
    hasher.update(bytearray(b"abc"))
    hasher.update(memoryview(b"def"))
    hasher.update(b"")
    twin = hasher.copy()
    twin.update(b"ghi")
    assert hasher.hexdigest() == hashlib.md5(b"abcdef").hexdigest()
    assert twin.hexdigest() == hashlib.md5(b"abcdefghi").hexdigest()


@pytest.mark.parametrize("size", [0, 91, 93])
def test_state_of_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="92"):
        ResumableMD5(b"\0" * size)


def test_parse_md5_hex() -> None:
    digest = hashlib.md5(b"x").hexdigest()
    assert parse_md5_hex(digest.upper(), field="md5") == digest
    assert parse_md5_hex(f' "{digest}" ', field="md5") == digest
    for bad in ("", "xyz", digest[:-1], digest + "0", "g" * 32):
        with pytest.raises(ValueError, match="md5"):
            parse_md5_hex(bad, field="md5")


def test_parse_content_md5() -> None:
    raw = hashlib.md5(b"x").digest()
    assert parse_content_md5(base64.b64encode(raw).decode()) == raw.hex()
    for bad in ("", "not base64!", base64.b64encode(raw[:15]).decode(), raw.hex()):
        with pytest.raises(ValueError, match="Content-MD5"):
            parse_content_md5(bad)


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha256"])
def test_stream_hashers_match_hashlib(algorithm: str) -> None:
    hasher = new_stream_hasher(algorithm)
    hasher.update(b"hello ")
    hasher.update(b"world")
    assert hasher.digest() == hashlib.new(algorithm, b"hello world").digest()


def test_crc32_and_unknown_algorithm() -> None:
    import zlib

    hasher = new_stream_hasher("crc32")
    hasher.update(b"hello ")
    hasher.update(b"world")
    assert hasher.digest() == zlib.crc32(b"hello world").to_bytes(4, "big")
    with pytest.raises(ValueError, match="unsupported"):
        new_stream_hasher("whirlpool")


def test_an_md5_with_a_newline_before_its_closing_quote_is_refused() -> None:
    """ "$" matches before a trailing newline: '"<32 hex>\\n"' (stripped of spaces, then quotes)
    passed as an MD5 and could only ever mismatch; it is malformed."""
    digest = "0" * 32
    assert parse_md5_hex(f' "{digest.upper()}" ', field="md5") == digest
    with pytest.raises(ValueError, match="md5"):
        parse_md5_hex(f'"{digest}\n"', field="md5")
