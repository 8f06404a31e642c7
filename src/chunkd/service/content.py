"""Checks that uploaded bytes really are what a client says they are: a PDF that parses, an image
that decodes. Used as the ``check`` hook of ``UploadService.complete``, so a failed check leaves the
upload PENDING.

These functions parse hostile input: they run only inside the worker processes of
``chunkd.service.inspection`` (CPU, memory and wall-time limits), never in the server's process.
The bytes are read back (``UploadService.read_received``) into a temporary file (``spool_to_file``)
that the worker opens; the callers' size limits bound how much is read."""

from __future__ import annotations

import asyncio
import os
import tempfile
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO

from chunkd.domain.errors import InvalidInput

__all__ = ["IMAGE_FORMATS", "MAX_PAGE_POINTS", "Inspection", "inspect_image", "inspect_pdf", "spool_to_file"]

# Formats a browser can show. Others Pillow knows (EPS runs Ghostscript, for one) are refused.
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
# The largest page side kept, in points: the media record's width and height are 32-bit integers
# (PostgreSQL's INTEGER; SQLite refuses past 64 bits). A PDF's MediaBox may name any number, and
# a page 10^30 points wide made the media record's insert fail (a 500 on every retry, the upload
# COMPLETED with no media). Real pages are at most 14,400 points a side (PDF 1.7, Annex C).
MAX_PAGE_POINTS = 2**31 - 1


@dataclass(frozen=True)
class Inspection:
    """What the content turned out to be: for images their pixel size, for PDFs the first page's
    size in points."""

    kind: str  # "image" or "pdf"
    width: int
    height: int
    format: str
    mime_type: str


async def spool_to_file(chunks: AsyncIterator[bytes], directory: str | None = None) -> str:
    """``chunks`` written to a new temporary file; its path (the caller removes it)."""
    fd, path = tempfile.mkstemp(prefix="chunkd-inspect-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            async for chunk in chunks:
                await asyncio.to_thread(handle.write, chunk)
    except BaseException:
        os.unlink(path)
        raise
    return path


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


def inspect_pdf(handle: IO[bytes], *, max_pages: int, field: str = "type") -> Inspection:
    """Accept a real PDF only: the ``%PDF-`` signature near the start (as readers allow, within the
    first 1024 bytes) and a pypdf parse of its page tree with at least one page and at most
    ``max_pages``. The page count the document declares is checked before the tree is walked
    (refusing an honest huge document at once); a document that lies about it is bounded by the
    worker's limits while the tree is walked, and refused after."""
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
            declared = reader.root_object["/Pages"].get_object().get("/Count")  # type: ignore[union-attr]
            if isinstance(declared, int) and declared > max_pages:
                raise InvalidInput(f"the PDF has {declared} pages; at most {max_pages} are allowed", field=field)
            pages = len(reader.pages)
            if pages > max_pages:
                raise InvalidInput(f"the PDF has {pages} pages; at most {max_pages} are allowed", field=field)
            if pages == 0:
                raise InvalidInput("the PDF has no pages", field=field)
            box = reader.pages[0].mediabox
            width, height = abs(round(float(box.width))), abs(round(float(box.height)))
            if max(width, height) > MAX_PAGE_POINTS:
                raise InvalidInput(
                    f"the PDF's first page is {width}x{height} points, larger than any page"
                    f" (at most {MAX_PAGE_POINTS} points a side)",
                    field=field,
                )
    except InvalidInput:
        raise
    except Exception as exc:  # pypdf raises PdfReadError, but also ValueError/KeyError … on damaged files
        raise InvalidInput(f"the PDF cannot be read: {exc}", field=field) from None
    return Inspection("pdf", width, height, "PDF", "application/pdf")
