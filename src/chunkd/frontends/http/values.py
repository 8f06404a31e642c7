"""Values every dialect writes the same way: timestamps in JSON bodies and a safe
``Content-Disposition``."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

# One way to write times in every API, the engine's events included (defined beside them).
from chunkd.domain.events import isotime

__all__ = ["content_disposition", "isotime"]


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """RFC 6266: an ASCII fallback plus the exact name as RFC 8187 ``filename*``."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    ascii_name = re.sub(r"[^A-Za-z0-9._ ()\[\]+-]", "_", ascii_name).strip() or "download"
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"
