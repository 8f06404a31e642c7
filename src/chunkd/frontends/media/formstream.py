"""Streaming ``multipart/form-data``: small text fields are collected, one file part is handed
over as an async iterator of its bytes while the request body is still arriving. Nothing is
spooled to disk or held whole in memory (Starlette's ``request.form()`` spools file parts, which
would store every chunk twice).

Built on python-multipart's low-level ``MultipartParser`` (the parser Starlette itself uses): its
callbacks are turned into a queue of events that is refilled, one network chunk at a time, as the
consumer pulls. Memory is bounded by one received chunk plus the text fields (``max_field_bytes``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from chunkd.domain.errors import InvalidInput

__all__ = ["FilePart", "FormStream"]

MAX_FIELDS = 50


@dataclass
class FilePart:
    """A file part whose headers have been read; ``body()`` yields its bytes as they arrive."""

    name: str
    filename: str
    content_type: str | None
    stream: FormStream = field(repr=False)

    def body(self) -> AsyncIterator[bytes]:
        return self.stream._file_body()


class FormStream:
    """Pull-based reader of one ``multipart/form-data`` request body."""

    def __init__(self, request: Request, *, file_fields: frozenset[str], max_field_bytes: int = 8192) -> None:
        content_type, params = parse_options_header(request.headers.get("content-type", ""))
        if content_type != b"multipart/form-data" or not params.get(b"boundary"):
            raise InvalidInput("the body must be multipart/form-data", field="Content-Type")
        self.fields: dict[str, str] = {}
        self.file_fields = file_fields
        self.max_field_bytes = max_field_bytes
        self._source = request.stream()
        self._events: deque[tuple[str, Any]] = deque()
        self._ended = False
        self._in_file = False
        self._seen_file = False
        self._done = False
        self._parser = MultipartParser(
            params[b"boundary"],
            callbacks={
                "on_part_begin": lambda: self._events.append(("begin", None)),
                "on_header_field": lambda d, s, e: self._events.append(("hfield", d[s:e])),
                "on_header_value": lambda d, s, e: self._events.append(("hvalue", d[s:e])),
                "on_header_end": lambda: self._events.append(("hend", None)),
                "on_headers_finished": lambda: self._events.append(("hdone", None)),
                "on_part_data": lambda d, s, e: self._events.append(("data", bytes(d[s:e]))),
                "on_part_end": lambda: self._events.append(("end", None)),
                "on_end": lambda: self._events.append(("eof", None)),
            },
        )

    async def _next(self) -> tuple[str, Any]:
        while not self._events:
            if self._ended:
                raise InvalidInput("the multipart body ended early", field="body")
            try:
                chunk = await anext(self._source)
            except StopAsyncIteration:
                self._ended = True
                self._parser.finalize()
                continue
            try:
                self._parser.write(chunk)
            except Exception as exc:  # python-multipart raises MultipartParseError and friends
                raise InvalidInput(f"malformed multipart body: {exc}", field="body") from None
        return self._events.popleft()

    async def _headers(self) -> dict[str, bytes]:
        headers: dict[str, bytes] = {}
        name = b""
        value = b""
        while True:
            kind, data = await self._next()
            if kind == "hfield":
                name += data
            elif kind == "hvalue":
                value += data
            elif kind == "hend":
                headers[name.decode("latin-1").lower()] = value
                name, value = b"", b""
                if len(headers) > 16:
                    raise InvalidInput("too many headers in a multipart part", field="body")
            elif kind == "hdone":
                return headers

    async def next_file(self) -> FilePart | None:
        """Read text fields until a file part named in ``file_fields`` begins (returned, its bytes
        not yet read) or the body ends (None)."""
        if self._in_file:
            raise RuntimeError("read the current file part first")
        while not self._done:
            kind, _ = await self._next()
            if kind == "eof":
                self._done = True
                break
            if kind != "begin":
                continue
            headers = await self._headers()
            _, params = parse_options_header(headers.get("content-disposition", b""))
            name = params.get(b"name", b"").decode("utf-8", "replace")
            filename = params.get(b"filename")
            if name in self.file_fields or filename is not None:
                if name not in self.file_fields:
                    raise InvalidInput(
                        f"unexpected file field {name!r}; send the file as {' or '.join(sorted(self.file_fields))}",
                        field=name or "body",
                    )
                if self._seen_file:
                    raise InvalidInput("send exactly one file part per request", field=name)
                self._seen_file = True
                self._in_file = True
                ctype = headers.get("content-type")
                return FilePart(
                    name=name,
                    filename=(filename or b"").decode("utf-8", "replace"),
                    content_type=ctype.decode("latin-1") if ctype else None,
                    stream=self,
                )
            await self._read_field(name)
        return None

    async def _read_field(self, name: str) -> None:
        value = bytearray()
        while True:
            kind, data = await self._next()
            if kind == "data":
                value += data
                if len(value) > self.max_field_bytes:
                    raise InvalidInput(f"form field {name!r} is longer than {self.max_field_bytes} bytes", field=name)
            elif kind == "end":
                break
        if len(self.fields) >= MAX_FIELDS:
            raise InvalidInput("too many form fields", field="body")
        try:
            self.fields[name] = value.decode()
        except UnicodeDecodeError:
            raise InvalidInput(f"form field {name!r} is not UTF-8 text", field=name) from None

    async def _file_body(self) -> AsyncIterator[bytes]:
        while self._in_file:
            kind, data = await self._next()
            if kind == "data":
                if data:
                    yield data
            elif kind == "end":
                self._in_file = False

    async def finish(self) -> dict[str, str]:
        """Read the rest of the body (text fields after the file); returns every field seen."""
        if self._in_file:
            async for _ in self._file_body():
                pass
        while await self.next_file() is not None:  # a second file part is refused inside
            pass
        return self.fields
