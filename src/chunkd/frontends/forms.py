"""Small request bodies without a file, as the "done"/"complete" calls of browser upload libraries
send them: url-encoded, JSON, or multipart/form-data, all read into ``{name: text}``.

Bounded: the body is refused past a limit (TooLarge) rather than buffered whole, and multipart
text fields keep the caps of ``chunkd.frontends.multipart``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

from starlette.requests import Request

from chunkd.domain.errors import ChunkdError, InvalidInput, TooLarge
from chunkd.frontends import jsondepth
from chunkd.frontends.multipart import MAX_FIELD_BYTES, MAX_FIELDS, TextField, boundary_of, form_events

__all__ = ["MAX_SMALL_BODY", "parse_small_body", "read_small_body", "small_form"]

MAX_SMALL_BODY = 64 * 1024


async def read_small_body(stream: AsyncIterator[bytes], limit: int = MAX_SMALL_BODY) -> bytes:
    """A non-file body (done requests, url-encoded or JSON), refused past ``limit`` bytes."""
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"the request body is longer than {limit} bytes", field="body")
    return bytes(body)


def parse_small_body(body: bytes, content_type: str | None, *, numbers: bool = True) -> dict[str, str]:
    """Fields of a url-encoded or JSON body. JSON is recognised by its Content-Type or by its
    shape: browser examples send JSON with ``fetch`` and no Content-Type (so ``text/plain``), or
    under ``application/x-www-form-urlencoded``. JSON numbers and booleans become their JSON text
    when ``numbers`` is true (Fine Uploader sends ``"qqtotalparts": 5``), and are refused otherwise;
    ``null`` means absent."""
    text = body.decode("utf-8", "replace").strip()
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json") or text.startswith("{"):
        data = jsondepth.loads(text) if text else {}
        if not isinstance(data, dict):
            raise InvalidInput("the JSON body must be an object", field="body")
        fields: dict[str, str] = {}
        for key, value in data.items():
            if value is None or isinstance(value, str):
                if value is not None:
                    fields[key] = value
            elif not numbers:
                raise InvalidInput(f"{key} must be a string", field=key)
            elif isinstance(value, (dict, list)):
                raise InvalidInput(f"{key} must be a string or a number", field=key)
            else:
                fields[key] = json.dumps(value) if isinstance(value, bool) else str(value)
        return fields
    try:
        return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=False))
    except ValueError as exc:  # pragma: no cover - parse_qsl only raises on strict parsing
        raise InvalidInput(f"the body is not url-encoded: {exc}", field="body") from None


async def small_form(
    request: Request,
    *,
    numbers: bool = True,
    max_field_bytes: int = MAX_FIELD_BYTES,
    max_fields: int = MAX_FIELDS,
    oversize: type[ChunkdError] = TooLarge,
) -> dict[str, str]:
    """The fields of a request body without a file: url-encoded, JSON (see ``parse_small_body``),
    or multipart/form-data (streamed; any file part is refused; the field caps are
    ``form_events``')."""
    content_type = request.headers.get("content-type")
    boundary = boundary_of(content_type)
    if boundary is None:
        return parse_small_body(await read_small_body(request.stream()), content_type, numbers=numbers)
    fields: dict[str, str] = {}
    events = form_events(
        request.stream(),
        boundary,
        file_fields=frozenset(),
        max_field_bytes=max_field_bytes,
        max_fields=max_fields,
        oversize=oversize,
    )
    async for event in events:
        if isinstance(event, TextField):
            fields[event.name] = event.value
    return fields
