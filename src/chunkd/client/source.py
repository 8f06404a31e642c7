"""The bytes to upload: a local path (read with ``pread``, so parallel parts need no lock) or a
seekable binary file object (read from its current position to its end, under a lock)."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections.abc import Iterator
from typing import IO, Union

from chunkd.client.state import LocalFile

__all__ = ["CHUNK", "Source", "SourceLike", "display_name", "part_range"]

CHUNK = 1024 * 1024  # bytes read (and sent) at a time
SourceLike = Union[str, "os.PathLike[str]", IO[bytes]]


def display_name(name: str) -> str:
    """The name the server keeps for a local file's: bytes of it that are not UTF-8 (a name made
    on a Latin-1 system, which Python holds as surrogates) become U+FFFD. Sent as they were, they
    could not be encoded into the request, and the upload failed with a traceback."""
    return os.fsencode(name).decode("utf-8", "replace")


def part_range(number: int, part_size: int, size: int) -> tuple[int, int]:
    """(offset, length) of part ``number`` (1-based) of a ``size``-byte file."""
    offset = (number - 1) * part_size
    return offset, max(0, min(part_size, size - offset))


class Source:
    """Random access to the bytes of one upload, safe from several threads."""

    def __init__(self, source: SourceLike) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition()  # close() waits for reads in flight: a closed fd number may be reused
        self._readers = 0
        self._fd: int | None = None
        self._fileobj: IO[bytes] | None = None
        self.local: LocalFile | None = None
        if isinstance(source, (str, os.PathLike)):
            self.local = LocalFile.of(source)
            # O_NONBLOCK: opening a FIFO waits for a writer otherwise (the upload hung there for good);
            # it changes nothing for the regular file that is read.
            self._fd = os.open(self.local.path, os.O_RDONLY | os.O_NONBLOCK)
            if not stat.S_ISREG(os.fstat(self._fd).st_mode):  # a directory, device or pipe has no size to declare
                os.close(self._fd)
                raise IsADirectoryError(
                    errno.EISDIR,
                    "not a regular file (a directory, device or pipe has no size to upload)",
                    self.local.path,
                )
            self.name = display_name(os.path.basename(self.local.path))
            self.start = 0
            self.size = os.fstat(self._fd).st_size
        else:
            if not (hasattr(source, "read") and source.seekable()):
                raise TypeError("upload() takes a path or a seekable binary file object")
            self._fileobj = source
            self.name = os.path.basename(str(getattr(source, "name", "") or "")) or "upload.bin"
            self.start = source.tell()
            self.size = source.seek(0, os.SEEK_END) - self.start
            source.seek(self.start)

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (relative to the start of the upload)."""
        if self._fileobj is None:
            with self._idle:
                if self._fd is None:
                    raise ValueError(f"{self.name} is closed")
                fd = self._fd
                self._readers += 1
            try:
                return os.pread(fd, length, self.start + offset)
            finally:
                with self._idle:
                    self._readers -= 1
                    self._idle.notify_all()
        with self._lock:
            self._fileobj.seek(self.start + offset)
            return self._fileobj.read(length)

    def chunk(self, offset: int, end: int) -> bytes:
        """The next piece of the range [offset, end): up to ``CHUNK`` bytes; fails if the file
        shrank under us."""
        data = self.read(offset, min(CHUNK, end - offset))
        if not data:
            raise OSError(f"{self.name} is shorter than when the upload started")
        return data

    def chunks(self, offset: int, length: int) -> Iterator[bytes]:
        """The range as ``CHUNK``-sized pieces; fails if the file shrank under us."""
        end = offset + length
        while offset < end:
            data = self.chunk(offset, end)
            offset += len(data)
            yield data

    def md5(self, offset: int = 0, length: int | None = None, stop: threading.Event | None = None) -> bytes:
        """MD5 digest of a range (the whole upload by default); gives up (an empty result) soon after
        ``stop`` is set, so an interrupted upload does not wait for a whole file to be hashed."""
        digest = hashlib.md5()
        for data in self.chunks(offset, self.size - offset if length is None else length):
            if stop is not None and stop.is_set():
                return b""
            digest.update(data)
        return digest.digest()

    def close(self) -> None:
        with self._idle:
            while self._readers:
                self._idle.wait()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
