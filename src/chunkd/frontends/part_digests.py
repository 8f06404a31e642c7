"""Per-request integrity headers a client may send with a part or an append, verified before the
bytes are acknowledged: S3's ``x-amz-checksum-<algorithm>`` (base64 of the raw digest) and RFC 9530
``Content-Digest`` (a structured-field dictionary such as ``sha-256=:<base64>:``). ``Content-MD5``
is handled where it was before (it also makes the part's ETag an MD5)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Mapping

from chunkd.domain.checksum import StreamHasher, new_stream_hasher
from chunkd.domain.errors import InvalidInput
from chunkd.service.crc import Crc32cHasher, Crc64Hasher

__all__ = ["RequestDigest", "request_digest"]


# S3 header suffix → (hasher, digest length)
_AMZ: dict[str, tuple[Callable[[], StreamHasher], int]] = {
    "crc64nvme": (Crc64Hasher, 8),
    "crc32c": (Crc32cHasher, 4),
    "crc32": (lambda: new_stream_hasher("crc32"), 4),
    "sha256": (hashlib.sha256, 32),
    "sha1": (hashlib.sha1, 20),
}
# RFC 9530 algorithm names (the registry's active ones) → hasher
_RFC9530: dict[str, tuple[Callable[[], StreamHasher], int]] = {
    "sha-256": (hashlib.sha256, 32),
    "sha-512": (hashlib.sha512, 64),
}
_MEMBER = re.compile(r"^\s*([a-z0-9*_.-]+)\s*=\s*:([A-Za-z0-9+/=]*):\s*(;.*)?$")


class RequestDigest:
    """One digest to verify over a request's bytes: a fresh hasher, the expected digest, and the
    header that carried it (named in the error)."""

    def __init__(self, field: str, make: Callable[[], StreamHasher], expected: bytes) -> None:
        self.field = field
        self.hasher = make()
        self.expected = expected

    def matches(self) -> bool:
        return self.hasher.digest() == self.expected


def _b64(value: str, length: int, field: str) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != length:
        raise InvalidInput(f"{field} must be the base64 encoding of a {length}-byte digest", field=field)
    return raw


def request_digest(headers: Mapping[str, str]) -> RequestDigest | None:
    """The digest the request asks to have verified, if any (one per request: the first of the
    S3 headers, else the strongest ``Content-Digest`` member chunkd knows)."""
    for suffix, (make, length) in _AMZ.items():
        name = f"x-amz-checksum-{suffix}"
        value = headers.get(name)
        if value is not None:
            return RequestDigest(name, make, _b64(value, length, name))
    header = headers.get("content-digest")
    if header is None:
        return None
    found: dict[str, str] = {}
    for member in header.split(","):
        match = _MEMBER.match(member)
        if match is None:
            raise InvalidInput("Content-Digest must be a dictionary of algorithm=:base64:", field="Content-Digest")
        found[match.group(1)] = match.group(2)
    for algorithm in ("sha-512", "sha-256"):
        if algorithm in found:
            make, length = _RFC9530[algorithm]
            return RequestDigest("Content-Digest", make, _b64(found[algorithm], length, "Content-Digest"))
    known = ", ".join(_RFC9530)
    raise InvalidInput(f"Content-Digest names no algorithm chunkd verifies ({known})", field="Content-Digest")
