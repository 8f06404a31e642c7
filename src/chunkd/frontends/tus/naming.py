"""The name and media type an upload creation gives the file, for tus 1.0 and the IETF draft alike,
from the values its request offers: ``Upload-Metadata`` (both), and for the draft also
``Content-Disposition``'s filename and ``Content-Type``.

Neither protocol gives these values a meaning a server must act on: tus metadata is opaque
("arbitrary binary values"; no key is defined), and in the draft representation metadata "can
affect" how a server acts on the upload, which it "MUST" validate or sanitize if it uses it. So a
value chunkd cannot use (not UTF-8, ``..``, ``jpg`` for a type) is passed over for the next one
offered, and when none is usable the file is left unnamed (``upload``) or untyped, as tusd does,
rather than the upload refused: a client sending ``filetype jpg``, a Latin-1 file name or a
``Content-Type`` without a subtype is a client like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from chunkd.domain import errors as e
from chunkd.domain.names import clean_filename, media_type

__all__ = ["UNNAMED", "file_name", "file_type"]

UNNAMED = "upload"


def file_name(*offered: str | bytes | None) -> str:
    """The first of ``offered`` usable as a file name (cleaned), else ``UNNAMED``."""
    return _first_usable(offered, clean_filename) or UNNAMED


def file_type(*offered: str | bytes | None) -> str | None:
    """The first of ``offered`` that is a media type (``type/subtype``), else None (untyped: the
    engine guesses from the name)."""
    return _first_usable(offered, media_type)


def _first_usable(offered: Iterable[str | bytes | None], clean: Callable[[str], str]) -> str | None:
    for value in offered:
        if value is None:
            continue
        try:
            return clean(value.decode("utf-8") if isinstance(value, bytes) else value)
        except (UnicodeDecodeError, e.InvalidInput):
            continue
    return None
