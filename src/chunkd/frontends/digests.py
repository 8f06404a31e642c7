"""Integrity fields, parsed once for every dialect: RFC 9530 ``Content-Digest`` (one request's
content), ``Repr-Digest`` and ``Want-Repr-Digest`` (the whole file), and S3's
``x-amz-checksum-<algorithm>`` on a part. (``Content-MD5`` stays where it is read: it also makes
a part's ETag an MD5.)

What chunkd can say without extra work, and what costs a pass over the bytes:

- ``md5`` of the whole representation is the engine's own whole-file MD5 (carried forward as bytes
  arrive, invariant 4), and ``crc64nvme`` its whole-file CRC-64/NVME (combined from the parts'
  CRCs at completion), so ``Repr-Digest: md5=:…:, crc64nvme=:…:`` costs nothing on completion and
  downloads. (RFC 9530 lists md5 as "deprecated" for collision resistance; it is still what the
  engine keeps, and it detects transfer corruption. ``crc64nvme`` is not in the IANA registry of
  digest algorithms; RFC 9530 §2 has recipients ignore algorithms they do not know, and it is the
  CRC S3 clients already check, ``x-amz-checksum-crc64nvme``.)
- ``sha-256`` / ``sha-512`` of a whole file are not kept (a second hash over every uploaded byte
  would break invariant 5), so they are computed only when a request asks for them in
  ``Want-Repr-Digest``, or a draft creation declares them in ``Repr-Digest`` (checked at
  completion), by reading the stored bytes once.
- A digest of one request's content is verified by the engine while the body streams (one extra
  hash over that request's bytes, which the client asked for) before the bytes are acknowledged;
  on mismatch nothing of the request is kept.

Digests travel in the structured-field byte-sequence form ``algorithm=:base64:``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import http_sf
from starlette.requests import ClientDisconnect

from chunkd.domain.checksum import StreamHasher, new_stream_hasher
from chunkd.domain.errors import ChecksumMismatch, InvalidInput
from chunkd.service.crc import Crc32cHasher, Crc64Hasher

__all__ = [
    "APPEND_ALGORITHMS",
    "PART_ALGORITHMS",
    "RequestDigest",
    "content_digest",
    "content_digest_checksum",
    "declared_digests",
    "parse_digest_field",
    "parse_want",
    "repr_digest_header",
    "repr_digest_of",
    "request_digest",
    "verify_read_digests",
    "wants",
]

# RFC 9530 algorithm → (hasher, digest length in bytes)
_RFC9530: dict[str, tuple[Callable[[], StreamHasher], int]] = {
    "sha-512": (hashlib.sha512, 64),
    "sha-256": (hashlib.sha256, 32),
    "md5": (hashlib.md5, 16),
}
# Content-Digest algorithms each dialect verifies, strongest first (the first one sent is verified).
# An append (tus, the draft) also takes md5; a part has Content-MD5 for that.
APPEND_ALGORITHMS = ("sha-512", "sha-256", "md5")
PART_ALGORITHMS = ("sha-512", "sha-256")
# S3 header suffix → (hasher, digest length)
_AMZ: dict[str, tuple[Callable[[], StreamHasher], int]] = {
    "crc64nvme": (Crc64Hasher, 8),
    "crc32c": (Crc32cHasher, 4),
    "crc32": (lambda: new_stream_hasher("crc32"), 4),
    "sha256": (hashlib.sha256, 32),
    "sha1": (hashlib.sha1, 20),
}
# Whole-file algorithms computed by reading the stored bytes, when asked for.
_READ_ALGORITHMS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}


class RequestDigest:
    """One digest to verify over a request's bytes: a fresh hasher, the expected digest, and the
    header that carried it (named in the error)."""

    def __init__(self, field: str, make: Callable[[], StreamHasher], expected: bytes) -> None:
        self.field = field
        self.hasher = make()
        self.expected = expected

    def matches(self) -> bool:
        return self.hasher.digest() == self.expected

    @property
    def checksum(self) -> tuple[StreamHasher, bytes, str]:
        """``(hasher, expected digest, header)``, the form the engine's appends take."""
        return self.hasher, self.expected, self.field


# ---- parsing -----------------------------------------------------------------------------------
def _dictionary(value: str) -> dict[str, object] | None:
    try:
        parsed = http_sf.parse(value.encode("latin-1"), tltype="dictionary")
    except (http_sf.StructuredFieldError, UnicodeEncodeError):
        return None
    assert isinstance(parsed, dict)
    return {key: member[0] if isinstance(member, tuple) else member for key, member in parsed.items()}


def parse_digest_field(value: str | None, field: str) -> dict[str, bytes]:
    """A ``Content-Digest`` / ``Repr-Digest`` dictionary: algorithm → digest bytes. A field that is
    not a dictionary is a 400, and so is a member of an algorithm chunkd checks that is not a byte
    sequence (``md5=<hex>``, a common slip, left the body unchecked); members of other algorithms
    are ignored (RFC 9530 §2)."""
    if value is None:
        return {}
    parsed = _dictionary(value)
    if parsed is None:
        raise InvalidInput(f"{field} must be a dictionary of algorithm=:base64:", field=field)
    for key, item in parsed.items():
        if key in _RFC9530 and not isinstance(item, bytes):
            raise InvalidInput(f"{field}'s {key} must be a byte sequence, {key}=:base64 of the digest:", field=field)
    return {key: item for key, item in parsed.items() if isinstance(item, bytes)}


def declared_digests(value: str | None) -> dict[str, str]:
    """The whole file's digests a ``Repr-Digest`` declares, algorithm → hex, among md5, sha-256 and
    sha-512 (others are ignored, RFC 9530 §2), to be checked at completion. A member of the wrong
    length is a 400 now, before anything is stored: it could never match, and would leave an
    upload that cannot be completed."""
    digests = parse_digest_field(value, "Repr-Digest")
    declared: dict[str, str] = {}
    for name, (_, length) in _RFC9530.items():
        if (digest := digests.get(name)) is not None:
            if len(digest) != length:
                raise InvalidInput(f"Repr-Digest's {name} must be a {length}-byte digest", field="Repr-Digest")
            declared[name] = digest.hex()
    return declared


def parse_want(value: str | None) -> dict[str, int]:
    """``Want-Repr-Digest``: algorithm → preference (1–10; 0 means "not acceptable", left out).
    A malformed field is ignored: it only states a preference."""
    parsed = _dictionary(value) if value is not None else None
    if not parsed:
        return {}
    return {
        key: item
        for key, item in parsed.items()
        if isinstance(item, int) and not isinstance(item, bool) and 0 < item <= 10
    }


def wants(value: str | None) -> list[str]:
    """The algorithms a ``Want-Repr-Digest`` asks for, most preferred first."""
    return [key for key, _ in sorted(parse_want(value).items(), key=lambda kv: -kv[1])]


# ---- one request's content -----------------------------------------------------------------------
def content_digest(value: str | None, algorithms: tuple[str, ...], *, unknown_is_error: bool) -> RequestDigest | None:
    """The ``Content-Digest`` member to verify: the first of ``algorithms`` that the field carries.
    A member of the wrong length is a 400. When the field names none of ``algorithms``, a 400 if
    ``unknown_is_error``, else None (RFC 9530 lets a recipient ignore algorithms it does not know)."""
    digests = parse_digest_field(value, "Content-Digest")
    if value is None:
        return None
    for name in algorithms:
        if name in digests:
            make, length = _RFC9530[name]
            if len(digests[name]) != length:
                raise InvalidInput(f"Content-Digest's {name} must be a {length}-byte digest", field="Content-Digest")
            return RequestDigest("Content-Digest", make, digests[name])
    if unknown_is_error:
        known = ", ".join(algorithms)
        raise InvalidInput(f"Content-Digest names no algorithm chunkd verifies ({known})", field="Content-Digest")
    return None


def content_digest_checksum(value: str | None) -> tuple[StreamHasher, bytes, str] | None:
    """An append's ``Content-Digest`` (tus, the draft) as the engine's ``checksum=``: the strongest
    of sha-512, sha-256 and md5 sent; None when there is no header, or only algorithms chunkd does
    not know."""
    found = content_digest(value, APPEND_ALGORITHMS, unknown_is_error=False)
    return found.checksum if found is not None else None


def _b64(value: str, length: int, field: str) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != length:
        raise InvalidInput(f"{field} must be the base64 encoding of a {length}-byte digest", field=field)
    return raw


def request_digest(headers: Mapping[str, str]) -> RequestDigest | None:
    """The digest a part's request asks to have verified, if any (one per request: the first of
    the S3 headers, else the strongest ``Content-Digest`` member of sha-512 and sha-256; a
    ``Content-Digest`` naming neither is a 400)."""
    for suffix, (make, length) in _AMZ.items():
        name = f"x-amz-checksum-{suffix}"
        value = headers.get(name)
        if value is not None:
            return RequestDigest(name, make, _b64(value, length, name))
    return content_digest(headers.get("content-digest"), PART_ALGORITHMS, unknown_is_error=True)


# ---- the whole representation ----------------------------------------------------------------------
def _byte_sequence(digest: bytes) -> str:
    return ":" + base64.b64encode(digest).decode() + ":"


def repr_digest_of(md5_hex: str | None, crc64_hex: str | None = None) -> str | None:
    """``Repr-Digest`` from what the engine keeps: ``md5=:…:`` and, once the file is complete,
    ``crc64nvme=:…:`` (8 big-endian bytes, as S3 sends it); None when there is neither."""
    members: list[str] = []
    for name, hex_value in (("md5", md5_hex), ("crc64nvme", crc64_hex)):
        try:
            digest = bytes.fromhex(hex_value) if hex_value else b""
        except ValueError:
            digest = b""
        if digest:
            members.append(f"{name}={_byte_sequence(digest)}")
    return ", ".join(members) or None


async def repr_digest_header(
    md5_hex: str | None,
    want: str | None,
    read: Callable[[], AsyncIterator[bytes]] | None = None,
    crc64_hex: str | None = None,
    gone: Callable[[], Awaitable[bool]] | None = None,
) -> str | None:
    """The ``Repr-Digest`` value for a file: what the engine keeps (free), plus sha-256/sha-512
    when ``want`` asks for them and ``read`` (the stored bytes) is given — one read of the file,
    hashed in a worker thread. ``gone`` (the request's ``is_disconnected``) is asked between
    chunks: a client that asked for the hash of a large file and left stops the work
    (``ClientDisconnect``) rather than costing a whole read of the file for nobody."""
    members = [kept] if (kept := repr_digest_of(md5_hex, crc64_hex)) else []
    names = [name for name in wants(want) if name in _READ_ALGORITHMS]
    if read is not None and names:
        computed = await _read_digests(names, read, gone)
        members += [f"{name}={_byte_sequence(digest)}" for name, digest in computed.items()]
    return ", ".join(members) or None


async def verify_read_digests(
    declared: Mapping[str, str],
    read: Callable[[], AsyncIterator[bytes]],
    gone: Callable[[], Awaitable[bool]] | None = None,
) -> None:
    """Check the sha-256/sha-512 a ``Repr-Digest`` declared (``declared_digests``) against the
    stored bytes, read once (the md5 is the engine's own, checked at no cost); a mismatch is a
    ``ChecksumMismatch`` naming the field. Nothing is read when none was declared."""
    names = [name for name in declared if name in _READ_ALGORITHMS]
    if not names:
        return
    for name, digest in (await _read_digests(names, read, gone)).items():
        if digest.hex() != declared[name]:
            raise ChecksumMismatch(f"Repr-Digest's {name} does not match the uploaded bytes", field="Repr-Digest")


async def _read_digests(
    names: list[str], read: Callable[[], AsyncIterator[bytes]], gone: Callable[[], Awaitable[bool]] | None
) -> dict[str, bytes]:
    """The ``names`` digests of the bytes ``read`` yields, hashed in a worker thread. ``gone`` is
    asked between chunks: a client that left stops the work (``ClientDisconnect``)."""
    hashers = {name: _READ_ALGORITHMS[name]() for name in names}
    async for chunk in read():
        if gone is not None and await gone():
            raise ClientDisconnect()
        for hasher in hashers.values():
            await asyncio.to_thread(hasher.update, chunk)
    return {name: hasher.digest() for name, hasher in hashers.items()}
