"""The streaming multipart reader (``chunkd.frontends.multipart``): ``FormStream`` on a tiny inline
app (fields before and after the file part, bodies cut into tiny network pieces, the malformed
cases) and the ``form_events`` primitive it is built on, fed directly."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chunkd.domain.errors import ChunkdError, InvalidInput, TooLarge
from chunkd.frontends.multipart import (
    MAX_FIELD_BYTES,
    MAX_FIELDS,
    FileData,
    FileEnd,
    FileStart,
    FormEvent,
    FormStream,
    TextField,
    boundary_of,
    form_events,
)


async def endpoint(request: Request) -> JSONResponse:
    try:
        form = FormStream(request, file_fields=frozenset({"image", "document"}), max_field_bytes=100)
        part = await form.next_file()
        before = dict(form.fields)
        result: dict[str, Any] = {"before": before}
        if part is not None:
            digest = hashlib.md5()
            size = 0
            pieces = 0
            async for chunk in part.body():
                digest.update(chunk)
                size += len(chunk)
                pieces += 1
                assert len(chunk) <= 70_000  # never more than one network read at once
            result.update(name=part.name, filename=part.filename, md5=digest.hexdigest(), size=size, pieces=pieces)
        result["all"] = await form.finish()
        return JSONResponse(result)
    except InvalidInput as exc:
        return JSONResponse({"error": exc.message, "field": exc.field}, status_code=400)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Route("/", endpoint, methods=["POST"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c


def encode(parts: list[tuple[str, str | None, bytes]], boundary: str = "XyZ") -> bytes:
    out = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


HEADERS = {"Content-Type": "multipart/form-data; boundary=XyZ"}


async def test_fields_around_a_file_in_tiny_pieces(client: httpx.AsyncClient) -> None:
    # A boundary look-alike inside the file. The byte after it is fixed: a random one was a space or a
    # tab (transport padding, RFC 2046) one run in 128, which makes it the start of a real delimiter
    # line, and the parser rightly refused the body (a sender must pick a boundary not in its data).
    data = os.urandom(50_000) + b"\r\n--XyZx" + os.urandom(100)
    body = encode([("upload_id", None, b"abc"), ("image", "p.png", data), ("after", None, "é".encode())])
    response = await client.post("/", content=pieces(body, 7), headers=HEADERS)
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["before"] == {"upload_id": "abc"}
    assert got["all"] == {"upload_id": "abc", "after": "é"}
    assert got["name"] == "image" and got["filename"] == "p.png"
    assert got["size"] == len(data) and got["md5"] == hashlib.md5(data).hexdigest()


async def test_big_file_is_streamed_in_pieces(client: httpx.AsyncClient) -> None:
    data = os.urandom(3 * 1024 * 1024)
    response = await client.post("/", content=pieces(encode([("document", "d.pdf", data)]), 65536), headers=HEADERS)
    got = response.json()
    assert got["md5"] == hashlib.md5(data).hexdigest() and got["pieces"] >= 40


@pytest.mark.parametrize(
    ("parts", "field"),
    [
        ([("image", "a", b"1"), ("document", "b", b"2")], "document"),  # two files
        ([("video", "a", b"1")], "video"),  # a file in an unknown field
        ([("note", None, b"x" * 101), ("image", "a", b"1")], "note"),  # a field over its limit
    ],
    ids=["two-files", "unknown-file-field", "long-field"],
)
async def test_refused_forms(client: httpx.AsyncClient, parts: list[tuple[str, str | None, bytes]], field: str) -> None:
    response = await client.post("/", content=encode(parts), headers=HEADERS)
    assert response.status_code == 400 and response.json()["field"] == field


async def test_truncated_and_wrong_type(client: httpx.AsyncClient) -> None:
    body = encode([("image", "a", os.urandom(1000))])
    truncated = await client.post("/", content=body[:600], headers=HEADERS)
    assert truncated.status_code == 400 and "ended early" in truncated.json()["error"]
    plain = await client.post("/", content=b"x", headers={"Content-Type": "text/plain"})
    assert plain.status_code == 400 and plain.json()["field"] == "Content-Type"
    no_file = await client.post("/", content=encode([("a", None, b"1")]), headers=HEADERS)
    assert no_file.status_code == 200 and no_file.json()["all"] == {"a": "1"}


async def collect(body: bytes, piece: int = 5, file_fields: frozenset[str] = frozenset({"qqfile"})) -> list[FormEvent]:
    return [event async for event in form_events(pieces(body, piece), b"XyZ", file_fields=file_fields)]


async def test_events_in_order_with_file_bytes_as_they_arrive() -> None:
    data = os.urandom(1000)
    events = await collect(encode([("qquuid", None, b"u-1"), ("qqfile", "blob", data), ("qqfilename", None, b"a b")]))
    assert events[0] == TextField("qquuid", "u-1")
    assert events[1] == FileStart("qqfile", "blob", "application/octet-stream")
    chunks = [event.data for event in events[2:-2] if isinstance(event, FileData)]
    assert len(chunks) == len(events) - 4 and len(chunks) > 100  # one slice per network piece, none held back
    assert b"".join(chunks) == data
    assert events[-2:] == [FileEnd(), TextField("qqfilename", "a b")]


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        (encode([("qqfilename", None, b"x" * (MAX_FIELD_BYTES + 1))]), TooLarge, "qqfilename"),
        (encode([(f"f{i}", None, b"1") for i in range(MAX_FIELDS + 1)]), InvalidInput, "body"),
        (encode([("other", "a.bin", b"1")]), InvalidInput, "other"),
        (encode([("qqfilename", None, b"\xff")]), InvalidInput, "qqfilename"),
        (b"--XyZ\r\nContent-Disposition: form-data\r\n\r\n1\r\n--XyZ--\r\n", InvalidInput, "body"),
        (b"--XyZ\r\n" + b"X-A: 1\r\n" * 17 + b"\r\n1\r\n--XyZ--\r\n", InvalidInput, "body"),
        (encode([("qqfile", "blob", b"1" * 100)])[:80], InvalidInput, "body"),
    ],
    ids=["long-field", "too-many-fields", "unexpected-file", "not-utf8", "no-name", "too-many-headers", "truncated"],
)
async def test_refused_events(body: bytes, error: type[ChunkdError], field: str) -> None:
    with pytest.raises(error) as caught:
        await collect(body)
    assert type(caught.value) is error and caught.value.field == field
    assert field == "body" or field in caught.value.message  # a named field is named in the message too


def test_boundary_of() -> None:
    assert boundary_of("multipart/form-data; boundary=abc") == b"abc"
    assert boundary_of("application/json") is None and boundary_of(None) is None
    for bad in ("multipart/form-data", "multipart/form-data; boundary=" + "b" * 300):
        with pytest.raises(InvalidInput) as caught:
            boundary_of(bad)
        assert caught.value.field == "Content-Type"
