"""Checks that uploaded bytes really are what a client says they are: a PDF that parses, an image
that decodes. Used as the ``check`` hook of ``UploadService.complete``, so a failed check leaves the
upload PENDING.

The bytes are read back (``UploadService.read_received``) into a spooled temporary file
(memory up to 1 MiB, disk beyond) because Pillow and pypdf need a seekable file; the callers' size
limits bound how much is read."""

from __future__ import annotations

import asyncio
import tempfile
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO

from chunkd.domain.errors import InvalidInput

__all__ = ["IMAGE_FORMATS", "Inspection", "inspect_image", "inspect_pdf", "spool"]

# Formats a browser can show. Others Pillow knows (EPS runs Ghostscript, for one) are refused.
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
SPOOL_MEMORY = 1024 * 1024


@dataclass(frozen=True)
class Inspection:
    """What the content turned out to be: for images their pixel size, for PDFs the first page's
    size in points."""

    kind: str  # "image" or "pdf"
    width: int
    height: int
    format: str
    mime_type: str


async def spool(chunks: AsyncIterator[bytes]) -> IO[bytes]:
    """``chunks`` in a seekable temporary file (closed by the caller)."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 (returned open)
    try:
        async for chunk in chunks:
            await asyncio.to_thread(spool.write, chunk)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


def inspect_image(handle: IO[bytes], *, max_pixels: int, field: str = "type") -> Inspection:
    """Open and verify an image with Pillow (as Django's ImageField does). Refuses anything that is
    not one of ``IMAGE_FORMATS``, is damaged, or has more than ``max_pixels`` pixels (a
    decompression bomb: a small file that would expand to gigabytes when decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(handle, formats=IMAGE_FORMATS) as image:
                width, height = image.size
                fmt = image.format or "unknown"
                if width * height > max_pixels:
                    raise InvalidInput(
                        f"the image has {width}x{height} pixels, more than the {max_pixels} allowed",
                        field=field,
                    )
                image.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidInput(f"the image has more than the {max_pixels} pixels allowed", field=field) from None
    except UnidentifiedImageError:
        raise InvalidInput(
            f"the file is not an image (one of {', '.join(IMAGE_FORMATS)} is expected)", field=field
        ) from None
    except InvalidInput:
        raise
    except Exception as exc:  # Pillow raises many kinds (SyntaxError, OSError, struct.error …) on damaged files
        raise InvalidInput(f"the image is damaged: {exc}", field=field) from None
    if width <= 0 or height <= 0:
        raise InvalidInput("the image has no pixels", field=field)
    return Inspection("image", width, height, fmt, Image.MIME.get(fmt, "application/octet-stream"))


def inspect_pdf(handle: IO[bytes], *, field: str = "type") -> Inspection:
    """Accept a real PDF only: the ``%PDF-`` signature near the start (as readers allow, within the
    first 1024 bytes) and a pypdf parse of its page tree with at least one page."""
    from pypdf import PdfReader

    head = handle.read(1024)
    handle.seek(0)
    if b"%PDF-" not in head:
        raise InvalidInput("the file is not a PDF (no %PDF- signature)", field=field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pypdf warns about recoverable oddities; parsing decides
            reader = PdfReader(handle, strict=False)
            if reader.is_encrypted:
                reader.decrypt("")  # most "encrypted" PDFs only restrict printing; an owner password is fine
            pages = len(reader.pages)
            if pages == 0:
                raise InvalidInput("the PDF has no pages", field=field)
            box = reader.pages[0].mediabox
            width, height = round(float(box.width)), round(float(box.height))
    except InvalidInput:
        raise
    except Exception as exc:  # pypdf raises PdfReadError, but also ValueError/KeyError … on damaged files
        raise InvalidInput(f"the PDF cannot be read: {exc}", field=field) from None
    return Inspection("pdf", abs(width), abs(height), "PDF", "application/pdf")
