"""What the sync and async clients share: no I/O here, only decisions."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from typing import Any

from chunkd.client.models import File
from chunkd.client.source import part_range

__all__ = ["ProgressCallback", "Tracker", "content_md5", "missing_parts", "resumable", "reusable", "user_agent"]

ProgressCallback = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) as bytes go out or come in (from worker threads in
:class:`~chunkd.client.Client`)."""


def user_agent() -> str:
    return "chunkd-client/0.1"


def content_md5(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def resumable(file: File, size: int) -> bool:
    """Whether a remembered upload can take the rest of this file's bytes."""
    return file.status == "PENDING" and file.size_bytes == size and bool(file.part_size) and file.parts is not None


def reusable(file: File, size: int) -> bool:
    """Whether a remembered upload is this file's: finished already (a crash came between *complete*
    and forgetting it) or still able to take the rest."""
    return (file.status == "COMPLETED" and file.size_bytes == size) or resumable(file, size)


def missing_parts(file: File) -> list[int]:
    """Part numbers the server does not hold yet, judged by number and size only (an etag's format
    is the server's business; the whole-file MD5 at *complete* is the check)."""
    assert file.part_size is not None
    count = file.part_count if file.part_count is not None else -(-file.size_bytes // file.part_size)
    held = {
        p.part_number
        for p in file.parts or ()
        if p.size_bytes == part_range(p.part_number, file.part_size, file.size_bytes)[1]
    }
    return [n for n in range(1, count + 1) if n not in held]


class Tracker:
    """Bytes done across parallel parts; a part that is sent again first gives its bytes back."""

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total = total
        self.done = 0
        self._callback = callback
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count
            done = self.done
        if self._callback is not None:
            self._callback(done, self.total)


def create_body(filename: str, size: int, part_size: int | None, mime_type: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"filename": filename, "sizeBytes": size}
    if part_size is not None:
        body["partSize"] = part_size
    if mime_type is not None:
        body["mimeType"] = mime_type
    return body


def download_name(file: File) -> str:
    """A safe local name for a file's (client-chosen, so untrusted) filename."""
    name = file.filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name if name not in ("", ".", "..") else file.id
