"""Real media files for tests: PNGs made with Pillow, PDFs made with pypdf, a crafted
decompression bomb, and a django-chunked-upload-style client."""

from __future__ import annotations

import io
import os
import struct
import zlib

import httpx
from PIL import Image
from pypdf import PdfWriter

__all__ = ["CHUNK", "bomb_png", "chunked_upload", "make_pdf", "make_png"]

CHUNK = 204_800  # the API's documented chunk size


def make_png(width: int = 400, height: int = 300) -> bytes:
    """A noisy RGB PNG (noise does not compress, so it spans several chunks)."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def make_pdf(padding: int = 0, width: float = 612, height: float = 792) -> bytes:
    """A valid one-page PDF; ``padding`` random bytes go in as an embedded file to make it bigger."""
    writer = PdfWriter()
    writer.add_blank_page(width=width, height=height)
    if padding:
        writer.add_attachment("padding.bin", os.urandom(padding))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims 10^10 pixels: decoding it would need ~10 GB."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


async def chunked_upload(
    client: httpx.AsyncClient,
    data: bytes,
    filename: str,
    headers: dict[str, str],
    *,
    field: str = "image",
    chunk: int = CHUNK,
    path: str = "/api/v2/media/upload/chunk/",
) -> str:
    """What django-chunked-upload's JavaScript client does: POST Content-Range chunks, the
    ``upload_id`` of the first answer with every later one, continuing from the returned offset."""
    upload_id: str | None = None
    offset = 0
    while offset < len(data):
        piece = data[offset : offset + chunk]
        response = await client.post(
            path,
            data={"upload_id": upload_id} if upload_id else {},
            files={field: (filename, piece, "application/octet-stream")},
            headers={**headers, "Content-Range": f"bytes {offset}-{offset + len(piece) - 1}/{len(data)}"},
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == {"upload_id", "offset", "expires"}
        assert body["offset"] == offset + len(piece)
        assert upload_id in (None, body["upload_id"])
        upload_id, offset = body["upload_id"], body["offset"]
    assert upload_id is not None
    return upload_id
