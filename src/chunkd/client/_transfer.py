"""The bytes in motion: a part's body as it goes out, a download's as it comes in, and the progress
they add up to. Their methods block (disk reads and writes, MD5); the async client calls them from
worker threads."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx

from chunkd.client.source import CHUNK, Source

__all__ = ["DownloadSink", "PartBody", "ProgressCallback", "Tracker"]

ProgressCallback = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) as bytes go out or come in (from worker threads in
:class:`~chunkd.client.Client`)."""


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


class PartBody:
    """One part's bytes, read ``CHUNK`` at a time and counted into the progress as they go out;
    :meth:`rewind` (before the part is sent again) starts over and gives back what was counted."""

    def __init__(self, src: Source, offset: int, length: int, tracker: Tracker) -> None:
        self._src, self._start, self._end, self._tracker = src, offset, offset + length, tracker
        self._position = offset

    def read(self) -> bytes:
        """The next chunk, ``b""`` at the end of the part."""
        if self._position >= self._end:
            return b""
        data = self._src.chunk(self._position, self._end)
        self._position += len(data)
        self._tracker.add(len(data))
        return data

    def rewind(self) -> None:
        self._tracker.add(self._start - self._position)
        self._position = self._start


class DownloadSink:
    """Where a download's bytes go: the hidden partial file, the running MD5 and the progress.
    ``offset`` is how many bytes of the file are in the partial file (and the digest)."""

    def __init__(self, size: int, on_progress: ProgressCallback | None) -> None:
        self.size = size
        self.offset = 0
        self.digest = hashlib.md5()
        self.tracker = Tracker(size, on_progress)
        self._out: IO[bytes] | None = None

    def resume_from(self, partial: Path) -> None:
        """Take the bytes an interrupted download left in ``partial`` (hashing them again)."""
        with open(partial, "rb") as handle:
            while data := handle.read(CHUNK):
                self.digest.update(data)
                self.offset += len(data)

    def open(self, out: IO[bytes]) -> None:
        """Write from ``offset`` on into ``out`` (the partial file, opened for writing)."""
        out.truncate(self.offset)
        out.seek(self.offset)
        self._out = out
        self.tracker.add(self.offset)

    @property
    def finished(self) -> bool:
        return self.offset >= self.size and self.size != 0

    def range_headers(self) -> dict[str, str]:
        return {"Range": f"bytes={self.offset}-"} if self.offset else {}

    def accepts(self, response: httpx.Response) -> bool:
        """Whether the answer's body is the file's bytes (else it is an error's). A 200 to a Range
        request is the whole file again: what was kept is dropped."""
        if not response.is_success:
            return False
        if response.status_code == 200 and self.offset:
            assert self._out is not None
            self._out.seek(0)
            self._out.truncate()
            self.tracker.add(-self.offset)
            self.digest, self.offset = hashlib.md5(), 0
        return True

    def write(self, data: bytes) -> None:
        assert self._out is not None
        self._out.write(data)
        self.digest.update(data)
        self.offset += len(data)
        self.tracker.add(len(data))

    def sync(self) -> None:
        """Make the bytes durable before the file takes its name."""
        assert self._out is not None
        self._out.flush()
        os.fsync(self._out.fileno())
