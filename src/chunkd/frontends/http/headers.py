"""Request headers every dialect reads the same way: byte counts (``Content-Length``, and the
``Upload-Length``/``Upload-Offset`` of tus and the draft), whether a body is declared, byte
ranges (RFC 9110), and a body's ``Content-MD5`` (RFC 1864)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import Request

from chunkd.domain.checksum import parse_content_md5
from chunkd.domain.errors import InvalidInput

__all__ = [
    "ByteRange",
    "byte_count",
    "content_length",
    "content_md5",
    "declares_body",
    "field_value",
    "parse_length",
    "parse_range",
]

# ASCII digits only (str.isdigit also accepts "²" and other digits int() refuses); 19 digits always
# fit the signed 64-bit integers the database stores sizes and offsets in.
_BYTE_COUNT = re.compile(r"[0-9]{1,19}")


def field_value(request: Request, name: str) -> str | None:
    """Header ``name`` with all its lines joined by ", " (RFC 9110 §5.3; RFC 9651 §4.2 parses a
    structured field so): ``Upload-Offset: 3`` and ``Upload-Offset: 0`` make ``3, 0``, which a
    parser of one Item refuses, instead of the first line read as the field. None when absent."""
    lines = request.headers.getlist(name)
    return ", ".join(lines) if lines else None


def byte_count(value: str | None) -> int | None:
    """``value`` (surrounding whitespace ignored) as a number of bytes; None when it is absent or
    not one. For code that only looks (the guards); a route refuses a bad value: ``parse_length``."""
    if value is None:
        return None
    value = value.strip()
    return int(value) if _BYTE_COUNT.fullmatch(value) else None


def parse_length(value: str | None, header: str) -> int | None:
    """The byte count in header ``header`` (``value``); None when the header is absent; a value
    that is not a non-negative integer is refused, naming the header."""
    if value is None:
        return None
    count = byte_count(value)
    if count is None:
        raise InvalidInput(f"{header} must be a non-negative integer (a number of bytes)", field=header)
    return count


def content_length(request: Request) -> int | None:
    """The request's Content-Length when it is given (to refuse a wrong-sized body before reading
    it); a value that is not a number of bytes is refused, naming the header."""
    return parse_length(request.headers.get("content-length"), "Content-Length")


def content_md5(request: Request) -> str | None:
    """The request's ``Content-MD5`` as lower-case hex, to be checked against its body; None when
    absent; a value that is not the base64 of 16 bytes is refused, naming the header."""
    value = request.headers.get("content-md5")
    if value is None:
        return None
    try:
        return parse_content_md5(value)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="Content-MD5") from None


def declares_body(headers: Mapping[str, str]) -> bool:
    """Whether the request says it has a body: chunked, or a Content-Length other than 0."""
    length = headers.get("content-length")
    return headers.get("transfer-encoding") is not None or (length is not None and length.strip() != "0")


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start


_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
# A position past any file: RFC 9110 puts no bound on the digits of a range, and int() refuses
# more than 4,300 of them (a Range of 5,000 nines was a 500).
_BEYOND = 2**63


def _position(digits: str) -> int:
    """A range position, clamped to ``_BEYOND`` (which means the same as any larger one)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 else _BEYOND


def parse_range(header: str | None, size: int) -> ByteRange | bool | None:
    """One RFC 9110 byte range → ByteRange; None for "send everything" (no, multiple or
    malformed ranges, which a server may ignore); False when unsatisfiable (416)."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = _position(last)
        if suffix == 0:
            return False
        # Of an empty file a suffix range is the one satisfiable form: the whole (empty) file.
        return ByteRange(max(0, size - suffix), size) if size else None
    start = _position(first)
    if start >= size:
        return False
    end = min(_position(last) + 1, size) if last else size
    if end <= start:
        return None
    return ByteRange(start, end)
