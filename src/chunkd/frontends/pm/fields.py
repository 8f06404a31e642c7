"""The ``qq*`` parameters: typed, checked access to each value (the bodies are read by
``chunkd.frontends.forms``)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from chunkd.domain.checksum import parse_md5_hex
from chunkd.domain.errors import InvalidInput
from chunkd.domain.upload import MAX_PARTS

__all__ = ["QQ"]

# Not only dots: "." and ".." would make a file_url that URL normalisation turns into another path.
_INTEGER = re.compile(r"-?[0-9]+")
_UUID = re.compile(r"^(?!\.+$)[A-Za-z0-9._-]{1,128}$")
# The largest number any qq* field may carry: byte counts and offsets are stored as signed 64-bit
# integers, so a larger one could never be stored (and used to end in a 500).
MAX_INTEGER = 2**63 - 1
# Fields with a smaller bound: a file has at most MAX_PARTS chunks. (A qqtotalparts of 10**12 was
# once kept and then counted through, one by one, at the done request, blocking the event loop.)
_MAXIMUM = {"qqtotalparts": MAX_PARTS, "qqpartindex": MAX_PARTS - 1}


class QQ:
    """Typed, validated access to the qq* fields of one request."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        self.fields = dict(fields)

    def __contains__(self, name: str) -> bool:
        return bool(self.fields.get(name, "").strip())

    def text(self, name: str) -> str | None:
        value = self.fields.get(name, "").strip()
        return value or None

    def integer(self, name: str, *, minimum: int = 0) -> int | None:
        """``name`` as an integer from ``minimum`` to the field's maximum; None when it is absent."""
        maximum = _MAXIMUM.get(name, MAX_INTEGER)
        raw = self.text(name)
        if raw is None:
            return None
        # ASCII digits only: Python's int() also reads "٣" (3), "1_000" and "+7". Past 30 digits the
        # value is out of range whatever it is (and int() refuses past 4,300).
        digits = raw.strip()
        if not _INTEGER.fullmatch(digits):
            raise InvalidInput(f"{name} must be an integer, got {raw[:40]!r}", field=name)
        value = int(digits[:31])
        if value < minimum:
            raise InvalidInput(f"{name} must be at least {minimum}", field=name)
        if value > maximum:
            raise InvalidInput(f"{name} must be at most {maximum}", field=name)
        return value

    def uuid(self, name: str = "qquuid") -> str | None:
        raw = self.text(name)
        if raw is not None and not _UUID.fullmatch(raw):
            raise InvalidInput(f"{name} must be 1-128 letters, digits, '.', '_' or '-' (not only dots)", field=name)
        return raw

    def md5(self, name: str = "qqmd5") -> str | None:
        raw = self.text(name)
        if raw is None:
            return None
        try:
            return parse_md5_hex(raw, field=name)
        except ValueError as exc:
            raise InvalidInput(str(exc), field=name) from None

    def require(self, name: str, why: str = "") -> str:
        value = self.text(name)
        if value is None:
            raise InvalidInput(f"{name} is required{why}", field=name)
        return value
