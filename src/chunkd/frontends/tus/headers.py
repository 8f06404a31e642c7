"""Parsing of the tus request headers (per tus 1.0) and formatting of the response ones.

Every parser raises ``InvalidInput`` naming the header, so a malformed header is a 400 that says
which header is wrong. Nothing a client sent is ever copied into a response header: metadata is
re-encoded from its validated form, and URLs are rebuilt from server-made ids.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from chunkd.domain.checksum import STREAM_HASH_ALGORITHMS, StreamHasher, new_stream_hasher
from chunkd.domain.errors import InvalidInput

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "Concat",
    "Metadata",
    "http_date",
    "parse_checksum",
    "parse_concat",
    "parse_metadata",
]

CHECKSUM_ALGORITHMS = tuple(STREAM_HASH_ALGORITHMS)
MAX_METADATA_BYTES = 16 * 1024
# A metadata key: "MUST NOT contain spaces and commas and MUST NOT be empty"; it "SHOULD be ASCII",
# which binds the client, not us: tusd takes any other byte, so a key sent as UTF-8 is taken (its
# bytes, read as Latin-1, are answered as they came: RFC 9110's obs-text). We keep out ASCII control
# characters so a key can be echoed in a header safely.
_KEY = re.compile(r"^[!-+\--~\x80-\xff]+$")  # printable ASCII but space (0x20) and comma (0x2c), or obs-text
_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


@dataclass(frozen=True)
class Metadata:
    """Validated ``Upload-Metadata``: key → value bytes (None for a key without a value)."""

    pairs: dict[str, bytes | None]

    def values(self, *keys: str) -> tuple[bytes | None, ...]:
        """The values of ``keys``, in that order (None for a key absent or without a value)."""
        return tuple(self.pairs.get(key) for key in keys)

    def stored(self) -> dict[str, str | None]:
        """The form kept with the upload: values as base64 (JSON-safe, byte-exact)."""
        return {k: base64.b64encode(v).decode() if v is not None else None for k, v in self.pairs.items()}

    @classmethod
    def from_stored(cls, stored: dict[str, str | None]) -> Metadata:
        return cls({k: base64.b64decode(v) if v is not None else None for k, v in stored.items()})

    def header(self) -> str:
        """The ``Upload-Metadata`` header value, re-encoded from the validated pairs."""
        return ",".join(
            key if value is None else f"{key} {base64.b64encode(value).decode()}" for key, value in self.pairs.items()
        )


def parse_metadata(value: str | None) -> Metadata:
    """``Upload-Metadata: key base64,key2,key3 base64``: every key valid and unique, every value
    base64. Empty items (``a,,b``, a trailing comma) are skipped, as RFC 9110 §5.6.1 has a
    recipient of a comma-separated list do and as tusd does; a value whose ``=`` padding was left
    off is read as if it were there (tusd drops such a pair: its value is plain, so it is kept)."""
    if value is None or not value.strip():
        return Metadata({})
    if len(value) > MAX_METADATA_BYTES:
        raise InvalidInput(f"Upload-Metadata is longer than {MAX_METADATA_BYTES} bytes", field="Upload-Metadata")
    pairs: dict[str, bytes | None] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        fields = item.strip().split(" ")
        if len(fields) > 2 or not fields[0]:
            raise InvalidInput(
                "Upload-Metadata must be comma-separated pairs of a key and a base64 value", field="Upload-Metadata"
            )
        key = fields[0]
        if not _KEY.fullmatch(key):
            raise InvalidInput(
                f"Upload-Metadata key {key[:40]!r} must have no spaces, commas or control characters",
                field="Upload-Metadata",
            )
        if key in pairs:
            raise InvalidInput(f"Upload-Metadata key {key!r} appears twice", field="Upload-Metadata")
        if len(fields) == 1:
            pairs[key] = None
            continue
        encoded = fields[1]
        if not _B64.fullmatch(encoded):
            raise InvalidInput(f"Upload-Metadata value of {key!r} is not base64", field="Upload-Metadata")
        try:
            # Padding restored ("YQ" is "YQ=="); a length no padding can fix ("YWJjZ") stays an error.
            pairs[key] = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"Upload-Metadata value of {key!r} is not base64", field="Upload-Metadata") from None
    return Metadata(pairs)


def parse_checksum(value: str | None) -> tuple[StreamHasher, bytes, str] | None:
    """``Upload-Checksum: <algorithm> <base64 digest>`` → (fresh hasher, expected digest, the
    header's name, which a mismatch names)."""
    if value is None:
        return None
    fields = value.strip().split(" ")
    if len(fields) != 2:
        raise InvalidInput("Upload-Checksum must be '<algorithm> <base64 digest>'", field="Upload-Checksum")
    algorithm, encoded = fields
    try:
        hasher = new_stream_hasher(algorithm.lower())
    except ValueError:
        raise InvalidInput(
            f"Upload-Checksum algorithm must be one of {', '.join(CHECKSUM_ALGORITHMS)}", field="Upload-Checksum"
        ) from None
    try:
        digest = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("Upload-Checksum digest is not base64", field="Upload-Checksum") from None
    # A digest of the wrong length for its algorithm is well formed but matches no body: a
    # mismatch (460, once the body is in), as the checksum extension has it. Its only 400 is for
    # an algorithm the server does not support.
    return hasher, digest, "Upload-Checksum"


@dataclass(frozen=True)
class Concat:
    """``Upload-Concat``: ``partial``, or ``final`` with the URLs of the partial uploads."""

    final: bool
    urls: tuple[str, ...] = ()


def parse_concat(value: str | None) -> Concat | None:
    if value is None:
        return None
    value = value.strip()
    if value == "partial":
        return Concat(final=False)
    if value.startswith("final;"):
        urls = tuple(u for u in value[len("final;") :].split(" ") if u)
        if not urls:
            raise InvalidInput("Upload-Concat final needs the URLs of the partial uploads", field="Upload-Concat")
        return Concat(final=True, urls=urls)
    raise InvalidInput("Upload-Concat must be 'partial' or 'final;<url> <url> ...'", field="Upload-Concat")


def http_date(value: datetime) -> str:
    """RFC 9110 IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT`` (for ``Upload-Expires``)."""
    return format_datetime(value, usegmt=True)
