"""Streaming ``multipart/form-data`` for every frontend that takes one: the body is parsed as it
arrives and file parts flow on without being stored first.

Starlette's ``request.form()`` spools file parts to temporary files before the handler sees them;
chunks must instead flow straight into the blob writer (invariant 5), or every chunk would be
written twice. So this drives python-multipart's low-level push parser (the one Starlette itself
uses) over ``request.stream()``: every network chunk is fed to the parser, whose callbacks queue
small events (a text field, the start of a file part, a slice of its bytes, its end), and the
events are yielded before the next network chunk is read. The consumer pulls; nothing is read
ahead of it, so memory stays at one network chunk plus the small text fields (``max_field_bytes``
each, ``max_fields`` of them).

Two ways in: ``form_events`` (the primitive, an event stream; the pm frontend) and ``FormStream``
(built on it: text fields collected, exactly one file part handed over as an async iterator; the
media frontend).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MAX_BOUNDARY_LENGTH, MultipartParser, parse_options_header
from starlette.requests import Request

from chunkd.domain.errors import ChunkdError, InvalidInput, TooLarge

__all__ = [
    "MAX_FIELDS",
    "MAX_FIELD_BYTES",
    "FileData",
    "FileEnd",
    "FilePart",
    "FileStart",
    "FormEvent",
    "FormStream",
    "TextField",
    "boundary_of",
    "form_events",
    "replayed",
]

# Text fields are a few dozen bytes (uuids, numbers, names); these caps keep a hostile body from
# making the server buffer anything large outside the streamed file part.
MAX_FIELD_BYTES = 16 * 1024
MAX_FIELDS = 64
# A form-data part carries Content-Disposition and perhaps Content-Type; a few more are tolerated.
MAX_PART_HEADERS = 16


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
    if len(boundary) > MAX_BOUNDARY_LENGTH:  # the parser would refuse it with a bare ValueError (a 5xx)
        raise InvalidInput(
            f"the multipart boundary is longer than {MAX_BOUNDARY_LENGTH} characters", field="Content-Type"
        )
    return boundary


def _file_fields_hint(file_fields: frozenset[str]) -> str:
    if not file_fields:
        return "no file is expected here"
    return f"send the file as {' or '.join(sorted(file_fields))}"


class _Collector:
    """python-multipart callbacks → a list of events (the parser's callbacks are synchronous)."""

    def __init__(
        self, file_fields: frozenset[str], max_field_bytes: int, max_fields: int, oversize: type[ChunkdError]
    ) -> None:
        self.events: list[FormEvent] = []
        self.file_fields = file_fields
        self.max_field_bytes = max_field_bytes
        self.max_fields = max_fields
        self.oversize = oversize
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
        if len(self._headers) > MAX_PART_HEADERS:
            raise InvalidInput("too many headers in a multipart part", field="body")

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
            if self.fields > self.max_fields:
                raise InvalidInput(f"more than {self.max_fields} form fields", field="body")
            if filename is not None:
                raise InvalidInput(
                    f"unexpected file part {self._name!r}; {_file_fields_hint(self.file_fields)}",
                    field=self._name or "body",
                )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            if end > start:
                self.events.append(FileData(bytes(data[start:end])))
            return
        if len(self._value) + end - start > self.max_field_bytes:
            raise self.oversize(
                f"form field {self._name!r} is longer than {self.max_field_bytes} bytes", field=self._name
            )
        self._value += data[start:end]

    def on_part_end(self) -> None:
        if self._is_file:
            self.events.append(FileEnd())
        else:
            try:
                value = self._value.decode()
            except UnicodeDecodeError:
                raise InvalidInput(f"form field {self._name!r} is not UTF-8 text", field=self._name) from None
            self.events.append(TextField(self._name, value))
        self._value.clear()

    def on_end(self) -> None:
        pass


async def form_events(
    stream: AsyncIterator[bytes],
    boundary: bytes,
    *,
    file_fields: frozenset[str],
    max_field_bytes: int = MAX_FIELD_BYTES,
    max_fields: int = MAX_FIELDS,
    oversize: type[ChunkdError] = TooLarge,
) -> AsyncIterator[FormEvent]:
    """Yield the events of a multipart body in order as its bytes arrive. Parts named in
    ``file_fields`` come as FileStart, FileData…, FileEnd; all others as TextField (a part with a
    filename outside ``file_fields`` is refused). A text field over ``max_field_bytes`` raises
    ``oversize`` naming the field (TooLarge, or InvalidInput where a dialect answers 400)."""
    collector = _Collector(file_fields, max_field_bytes, max_fields, oversize)
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
        raise InvalidInput("the multipart/form-data body ended early, before its closing boundary", field="body")


async def replayed(seen: list[FormEvent], rest: AsyncIterator[FormEvent]) -> AsyncIterator[FormEvent]:
    """Events already read (to look ahead), then the rest of the form, none of them lost."""
    for event in seen:
        yield event
    async for event in rest:
        yield event


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
    """Pull-based reader of one ``multipart/form-data`` request body with at most one file part:
    text fields are collected in ``fields``, the file part is handed over by ``next_file``."""

    def __init__(
        self,
        request: Request,
        *,
        file_fields: frozenset[str],
        max_field_bytes: int = 8192,
        max_fields: int = 50,
        oversize: type[ChunkdError] = InvalidInput,
    ) -> None:
        # The defaults are the media API's own (django-chunked-upload answers any bad form with 400).
        boundary = boundary_of(request.headers.get("content-type"))
        if boundary is None:
            raise InvalidInput("the body must be multipart/form-data", field="Content-Type")
        self.fields: dict[str, str] = {}
        self._events = form_events(
            request.stream(),
            boundary,
            file_fields=file_fields,
            max_field_bytes=max_field_bytes,
            max_fields=max_fields,
            oversize=oversize,
        )
        self._in_file = False
        self._seen_file = False
        self._done = False

    async def next_file(self) -> FilePart | None:
        """Read text fields until a file part named in ``file_fields`` begins (returned, its bytes
        not yet read) or the body ends (None). A second file part is refused."""
        if self._in_file:
            raise RuntimeError("read the current file part first")
        while not self._done:
            event = await anext(self._events, None)
            if event is None:
                self._done = True
            elif isinstance(event, TextField):
                self.fields[event.name] = event.value
            elif isinstance(event, FileStart):
                if self._seen_file:
                    raise InvalidInput("send exactly one file part per request", field=event.name)
                self._seen_file = self._in_file = True
                return FilePart(event.name, event.filename or "", event.content_type, stream=self)
        return None

    async def _file_body(self) -> AsyncIterator[bytes]:
        while self._in_file:
            event = await anext(self._events, None)
            if isinstance(event, FileData):
                yield event.data
            elif event is None or isinstance(event, FileEnd):  # None cannot happen: an early end raises
                self._in_file = False
        # The rest of the form is read before the file's bytes count as complete, so a bad form
        # (a second file part, a field over its limit) fails the consumer's write before it commits
        # anything, instead of after.
        while await self.next_file() is not None:  # a second file part is refused inside
            pass

    async def finish(self) -> dict[str, str]:
        """Read the rest of the body (text fields after the file); returns every field seen."""
        if self._in_file:
            async for _ in self._file_body():
                pass
        while await self.next_file() is not None:  # a second file part is refused inside
            pass
        return self.fields
