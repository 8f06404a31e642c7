"""A ``multipart/form-data`` body as a stream of events, parsed as it arrives.

Starlette's ``request.form()`` spools file parts to temporary files before the handler sees them;
Fine Uploader chunks must instead flow straight into the blob writer (invariant 5). So this drives
python-multipart's low-level push parser over ``request.stream()``: every network chunk is fed to
the parser, whose callbacks queue small events (a text field, the start of a file part, a slice of
its bytes, its end), and the events are yielded before the next network chunk is read. The consumer
pulls; nothing is read ahead of it, so memory stays at one network chunk plus small text fields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from chunkd.domain.errors import InvalidInput, TooLarge

__all__ = ["FileData", "FileEnd", "FileStart", "FormEvent", "TextField", "boundary_of", "form_events"]

# Text fields are a few dozen bytes (uuids, numbers, names); these caps keep a hostile body from
# making the server buffer anything large outside the streamed file part.
MAX_FIELD_BYTES = 16 * 1024
MAX_FIELDS = 64


@dataclass(frozen=True)
class TextField:
    name: str
    value: str


@dataclass(frozen=True)
class FileStart:
    name: str
    filename: str | None
    content_type: str | None


@dataclass(frozen=True)
class FileData:
    data: bytes


@dataclass(frozen=True)
class FileEnd:
    pass


FormEvent = TextField | FileStart | FileData | FileEnd


def boundary_of(content_type: str | None) -> bytes | None:
    """The boundary of a ``multipart/form-data`` Content-Type; None for any other type."""
    if not content_type:
        return None
    kind, options = parse_options_header(content_type)
    if kind.lower() != b"multipart/form-data":
        return None
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidInput("multipart/form-data without a boundary", field="Content-Type")
    return boundary


class _Collector:
    """python-multipart callbacks → a list of events (the parser's callbacks are synchronous)."""

    def __init__(self, file_fields: frozenset[str]) -> None:
        self.events: list[FormEvent] = []
        self.file_fields = file_fields
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._is_file = False
        self._value = bytearray()
        self.fields = 0

    def on_part_begin(self) -> None:
        self._headers = {}
        self._value.clear()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        kind, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if kind.lower() != b"form-data" or name is None:
            raise InvalidInput("a multipart part lacks Content-Disposition: form-data; name=...", field="body")
        self._name = name.decode("utf-8", "replace")
        filename = options.get(b"filename")
        self._is_file = self._name in self.file_fields
        if self._is_file:
            content_type = self._headers.get(b"content-type")
            self.events.append(
                FileStart(
                    self._name,
                    filename.decode("utf-8", "replace") if filename is not None else None,
                    content_type.decode("latin-1").strip() if content_type else None,
                )
            )
        else:
            self.fields += 1
            if self.fields > MAX_FIELDS:
                raise InvalidInput(f"more than {MAX_FIELDS} form fields", field="body")
            if filename is not None:
                raise InvalidInput(f"unexpected file part {self._name!r}; the file goes in qqfile", field=self._name)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            if end > start:
                self.events.append(FileData(bytes(data[start:end])))
            return
        if len(self._value) + end - start > MAX_FIELD_BYTES:
            raise TooLarge(f"form field {self._name} is longer than {MAX_FIELD_BYTES} bytes", field=self._name)
        self._value += data[start:end]

    def on_part_end(self) -> None:
        if self._is_file:
            self.events.append(FileEnd())
        else:
            try:
                value = self._value.decode()
            except UnicodeDecodeError:
                raise InvalidInput(f"{self._name} is not UTF-8 text", field=self._name) from None
            self.events.append(TextField(self._name, value))
        self._value.clear()

    def on_end(self) -> None:
        pass


async def form_events(
    stream: AsyncIterator[bytes], boundary: bytes, *, file_fields: frozenset[str]
) -> AsyncIterator[FormEvent]:
    """Yield the events of a multipart body in order as its bytes arrive. Parts named in
    ``file_fields`` come as FileStart, FileData…, FileEnd; all others as TextField."""
    collector = _Collector(file_fields)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": collector.on_part_begin,
            "on_header_field": collector.on_header_field,
            "on_header_value": collector.on_header_value,
            "on_header_end": collector.on_header_end,
            "on_headers_finished": collector.on_headers_finished,
            "on_part_data": collector.on_part_data,
            "on_part_end": collector.on_part_end,
            "on_end": collector.on_end,
        },
    )
    ended = False
    async for chunk in stream:
        if not chunk:
            continue
        try:
            parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidInput(f"malformed multipart/form-data body: {exc}", field="body") from None
        events, collector.events = collector.events, []
        for event in events:
            yield event
        ended = parser.state.name == "END"
    if not ended:
        raise InvalidInput("the multipart/form-data body ended before its closing boundary", field="body")
