"""The ``qq*`` parameters: reading small bodies (url-encoded or JSON) and checking each value."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from urllib.parse import parse_qsl

from chunkd.domain.checksum import parse_md5_hex
from chunkd.domain.errors import InvalidInput, TooLarge

__all__ = ["MAX_SMALL_BODY", "QQ", "parse_small_body", "read_small_body"]

MAX_SMALL_BODY = 64 * 1024
# Not only dots: "." and ".." would make a file_url that URL normalisation turns into another path.
_UUID = re.compile(r"^(?!\.+$)[A-Za-z0-9._-]{1,128}$")


async def read_small_body(stream: AsyncIterator[bytes], limit: int = MAX_SMALL_BODY) -> bytes:
    """A non-file body (done requests, url-encoded or JSON), refused past ``limit`` bytes."""
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"the request body is longer than {limit} bytes", field="body")
    return bytes(body)


def parse_small_body(body: bytes, content_type: str | None) -> dict[str, str]:
    """Fields of a url-encoded or JSON body. JSON is recognised by its Content-Type or, since the
    seed's example sends JSON with ``fetch`` and no Content-Type (so ``text/plain``), by its shape."""
    text = body.decode("utf-8", "replace").strip()
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json") or text.startswith("{"):
        try:
            data = json.loads(text) if text else {}
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"the body is not valid JSON: {exc.msg} at character {exc.pos}", field="body") from None
        if not isinstance(data, dict):
            raise InvalidInput("the JSON body must be an object", field="body")
        fields: dict[str, str] = {}
        for key, value in data.items():
            if value is None:
                continue
            if isinstance(value, (dict, list)):
                raise InvalidInput(f"{key} must be a string or a number", field=key)
            fields[key] = json.dumps(value) if isinstance(value, bool) else str(value)
        return fields
    try:
        return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=False))
    except ValueError as exc:  # pragma: no cover - parse_qsl only raises on strict parsing
        raise InvalidInput(f"the body is not url-encoded: {exc}", field="body") from None


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
        raw = self.text(name)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise InvalidInput(f"{name} must be an integer, got {raw[:40]!r}", field=name) from None
        if value < minimum:
            raise InvalidInput(f"{name} must be at least {minimum}", field=name)
        return value

    def uuid(self, name: str = "qquuid") -> str | None:
        raw = self.text(name)
        if raw is not None and not _UUID.match(raw):
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
