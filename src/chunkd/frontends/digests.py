"""RFC 9530 digest fields: ``Repr-Digest`` / ``Want-Repr-Digest`` for whole files and
``Content-Digest`` for one request's content.

What chunkd can say without extra work, and what costs a pass over the bytes:

- ``md5`` of the whole representation is the engine's own whole-file MD5 (carried forward as bytes
  arrive, invariant 4), so ``Repr-Digest: md5=:…:`` costs nothing on completion and downloads.
  (RFC 9530 lists md5 as "deprecated" for collision resistance; it is still what the engine
  keeps, and it detects transfer corruption.)
- ``sha-256`` / ``sha-512`` of a whole file are not kept (a second hash over every uploaded byte
  would break invariant 5), so they are computed only for a download whose request asks for them
  in ``Want-Repr-Digest``, by reading the stored bytes once before the response starts.
- ``Content-Digest`` on an append (sha-256, sha-512, md5) is verified by the engine while the
  body streams (one extra hash over that request's bytes, which the client asked for) before
  the append is acknowledged; on mismatch nothing of the request is kept.

Digests in the structured-field byte-sequence form ``algorithm=:base64:``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Callable

import http_sf

from chunkd.domain.checksum import StreamHasher
from chunkd.domain.errors import InvalidInput

__all__ = [
    "CONTENT_DIGEST_ALGORITHMS",
    "content_digest_checksum",
    "md5_repr_digest",
    "parse_digest_field",
    "parse_want",
    "repr_digest_header",
    "wants",
]

# Algorithms accepted in Content-Digest (strongest first, the first one present is verified).
CONTENT_DIGEST_ALGORITHMS: dict[str, Callable[[], StreamHasher]] = {
    "sha-512": hashlib.sha512,
    "sha-256": hashlib.sha256,
    "md5": hashlib.md5,
}
# Whole-file algorithms computed by reading the stored bytes (downloads only).
_READ_ALGORITHMS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}


def _byte_sequence(digest: bytes) -> str:
    return ":" + base64.b64encode(digest).decode() + ":"


def md5_repr_digest(md5_hex: str | None) -> str | None:
    """``md5=:…:`` from the engine's hex MD5, or None when there is none."""
    if not md5_hex:
        return None
    try:
        return "md5=" + _byte_sequence(bytes.fromhex(md5_hex))
    except ValueError:
        return None


def parse_digest_field(value: str | None, field: str) -> dict[str, bytes]:
    """A ``Content-Digest`` / ``Repr-Digest`` dictionary: algorithm → digest bytes. Members that
    are not byte sequences are ignored (RFC 9530 §2); a field that is not a dictionary is a 400."""
    if value is None:
        return {}
    try:
        parsed = http_sf.parse(value.encode("latin-1"), tltype="dictionary")
    except (http_sf.StructuredFieldError, UnicodeEncodeError):
        raise InvalidInput(f"{field} is not a structured-field dictionary", field=field) from None
    assert isinstance(parsed, dict)
    found: dict[str, bytes] = {}
    for key, member in parsed.items():
        item = member[0] if isinstance(member, tuple) else member
        if isinstance(item, bytes):
            found[key] = item
    return found


def parse_want(value: str | None) -> dict[str, int]:
    """``Want-Repr-Digest``: algorithm → preference (1–10; 0 means "not acceptable", left out).
    A malformed field is ignored: it only states a preference."""
    if value is None:
        return {}
    try:
        parsed = http_sf.parse(value.encode("latin-1"), tltype="dictionary")
    except (http_sf.StructuredFieldError, UnicodeEncodeError):
        return {}
    assert isinstance(parsed, dict)
    wanted: dict[str, int] = {}
    for key, member in parsed.items():
        item = member[0] if isinstance(member, tuple) else member
        if isinstance(item, int) and not isinstance(item, bool) and 0 < item <= 10:
            wanted[key] = item
    return wanted


def wants(value: str | None) -> list[str]:
    """The algorithms a ``Want-Repr-Digest`` asks for, most preferred first."""
    return [key for key, _ in sorted(parse_want(value).items(), key=lambda kv: -kv[1])]


def content_digest_checksum(value: str | None) -> tuple[StreamHasher, bytes] | None:
    """``(hasher, expected digest)`` for the engine's ``checksum=`` from a ``Content-Digest``
    header: the strongest algorithm we know among those sent. None when there is no header, or
    only algorithms we do not know (RFC 9530 lets a recipient ignore those)."""
    digests = parse_digest_field(value, "Content-Digest")
    for name, make in CONTENT_DIGEST_ALGORITHMS.items():
        if name in digests:
            return make(), digests[name]
    return None


async def repr_digest_header(
    md5_hex: str | None, want: str | None, read: Callable[[], AsyncIterator[bytes]] | None = None
) -> str | None:
    """The ``Repr-Digest`` value for a file: md5 always (free), plus sha-256/sha-512 when ``want``
    asks for them and ``read`` (the stored bytes) is given — one read of the file, hashed in a
    worker thread."""
    members: list[str] = []
    md5 = md5_repr_digest(md5_hex)
    if md5:
        members.append(md5)
    if read is not None:
        for name in wants(want):
            make = _READ_ALGORITHMS.get(name)
            if make is None:
                continue
            hasher = make()
            async for chunk in read():
                await asyncio.to_thread(hasher.update, chunk)
            members.append(f"{name}={_byte_sequence(hasher.digest())}")
    return ", ".join(members) or None
