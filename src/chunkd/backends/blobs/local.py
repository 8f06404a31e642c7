"""Upload bytes on local disk.

Layout: ``<root>/<id[:2]>/<id>/<number>.<token>.part`` — one file per stored part.

Why one file per part (a *manifest* of part files) rather than writing parts at their offsets into
one file: a re-sent part must replace the earlier one atomically. Overwriting a range in place
would leave a torn part (old metadata, half-new bytes) after a crash. A new file with a fresh name,
fsynced before the metadata row points at it, is either fully there or absent; the old file is
removed only afterwards. Completion is then O(1): the ordered part rows *are* the file, and reads
stream across the part files. Tus concatenation hard-links parts into the final upload, so it costs
no copy either.

Every name here is built by the server: upload ids and blob refs are checked against strict
patterns before they touch a path, so client input can never escape ``root``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Generator, Iterator, Sequence
from pathlib import Path

from chunkd.backends.blobs import local_fs as fs
from chunkd.backends.blobs.errors import storage_error
from chunkd.domain.errors import StorageError, StorageFull
from chunkd.domain.names import is_upload_id
from chunkd.domain.upload import Part, Upload

__all__ = ["LocalBlobStore"]

_REF = re.compile(r"^[0-9]{1,5}\.[A-Za-z0-9_-]{8,32}\.part$")
READ_CHUNK = 1024 * 1024
# A download's reads are smaller: a client reading slowly holds about two of them (the one in the
# socket's buffer, the next waiting): 3.1 MiB per slow reader with 1 MiB reads (200 readers: +574
# MiB, 2026-12-02), against a few thread hops more per MiB for a fast one.
DOWNLOAD_CHUNK = 256 * 1024


# A completion checks this many part files at most on the event loop, more in a worker thread. A
# stat answers from the inode cache in microseconds (the parts were just written); the hop to a
# thread cost ~0.2 ms of CPU per completion (64 KiB tus files, 2026-11-30), more than the stats.
_INLINE_CHECKS = 8


@contextlib.contextmanager
def _disk(doing: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise storage_error(exc, doing) from exc


# In the store's root, beside the shard directories (a sweep looks only into directories): the id of
# the database whose records name these blobs.
DATABASE_MARK = "database-id"


class _LocalWriter:
    """Writes one part's bytes: a new file (a new part, or a re-sent one: never overwriting a
    committed file), or, for appends, the upload's last part file continued past its committed
    size ``base`` (the same file grows; no new file, name or directory entry per append)."""

    def __init__(self, store: LocalBlobStore, directory: Path, name: str, *, base: int | None, fsync: bool) -> None:
        self._store = store
        self._dir = directory
        self._name = name
        self._path = directory / name
        self._base = base  # None: a new file; else the committed size of the file being continued
        self._fsync = fsync
        self._fd: int | None = None
        self._written = 0
        self._flushed = 0
        self._synced = -1  # bytes made durable by sync_blocking (name included); -1: not synced
        # Writes run in worker threads. If a request is cancelled mid-write (server shutdown), its
        # abort may come while a write is still running: the lock makes the abort wait for it, so a
        # closed descriptor number, reused by another file, is never written to.
        self._lock = threading.Lock()
        self._closed = False

    def _open(self) -> int:
        if self._base is not None:
            fd = os.open(self._path, os.O_WRONLY)
            try:
                held = os.fstat(fd).st_size
                if held < self._base:
                    # Storage lost acknowledged bytes: ftruncate would fill them with zeros, and the
                    # upload would complete with the MD5 of the bytes that were sent, not of these.
                    raise StorageError(
                        f"part file {self._name} holds {held} bytes in storage, fewer than the {self._base} recorded"
                    )
                # Bytes past the committed size were never acknowledged (a crash or a failed append
                # left them): they go, and this append starts exactly at the recorded offset.
                os.ftruncate(fd, self._base)
                os.lseek(fd, self._base, os.SEEK_SET)
            except BaseException:
                os.close(fd)
                raise
            return fd
        return fs.create_in(self._dir, self._path, fsync=self._fsync)

    def write_blocking(self, chunks: Sequence[bytes]) -> None:
        """``write`` as a blocking call (``BlockingWriter``), for a caller already in a worker thread."""
        self._write_all(chunks)

    def _write_all(self, chunks: Sequence[bytes]) -> None:
        with self._lock:
            if self._closed:  # a cancelled request's late write: not a storage fault
                raise OSError(errno.EBADF, "write to a part that was already committed or aborted")
            self._store.check_room()
            with _disk("writing"):
                self._write_locked(chunks)

    def _write_locked(self, chunks: Sequence[bytes]) -> None:
        if self._fd is None:
            self._fd = self._open()
        self._written += fs.writev_all(self._fd, chunks)
        if self._fsync and fs.START_WRITEBACK is not None and self._written - self._flushed >= fs.WRITEBACK_EVERY:
            start = self._base or 0
            fs.START_WRITEBACK(self._fd, start + self._flushed, self._written - self._flushed)
            self._flushed = self._written

    async def write(self, chunks: Sequence[bytes]) -> None:
        await asyncio.to_thread(self._write_all, chunks)

    def sync_blocking(self) -> None:
        with self._lock:
            if self._closed:
                raise OSError(errno.EBADF, "sync of a part that was already committed or aborted")
            with _disk("making bytes durable"):
                self._sync_locked()
                self._synced = self._written

    def _sync_locked(self) -> None:
        if self._fd is None:
            self._fd = self._open()
        if self._fsync:
            # fdatasync: the data and the new length, not the timestamps.
            os.fdatasync(self._fd)
            if self._base is None:
                fs.fsync_dir(self._dir)  # a new file's name must be durable too
                fs.ensure_settled(self._dir)  # and the directories above it

    def _commit(self) -> str:
        with self._lock:
            if self._closed:
                raise OSError(errno.EBADF, "part was already committed or aborted")
            self._closed = True
            with _disk("making bytes durable"):
                return self._commit_locked()

    def _commit_locked(self) -> str:
        try:
            if self._synced != self._written:
                self._sync_locked()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        return self._name

    async def commit(self) -> str:
        if self._synced == self._written:
            return self._commit()  # durable already (sync_blocking): closing needs no worker thread
        return await asyncio.to_thread(self._commit)

    def _abort(self) -> None:
        with self._lock:
            self._closed = True
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    if self._base is not None:
                        os.ftruncate(self._fd, self._base)
                os.close(self._fd)
                self._fd = None
            if self._base is None:
                # Best effort, as the truncation above: abort runs on the way out of a storage
                # fault (a volume gone read-only refuses the unlink too), whose 503 must not turn
                # into a 500; a file left behind is an orphan that gc sweeps.
                with contextlib.suppress(OSError):
                    self._path.unlink(missing_ok=True)

    async def abort(self) -> None:
        await asyncio.to_thread(self._abort)


class LocalBlobStore:
    """Parts as files under one directory; see the module docstring for why."""

    def __init__(self, root: Path, *, fsync: bool = True, min_free_bytes: int = 0) -> None:
        self.root = root
        self.fsync = fsync
        self.min_free_bytes = min_free_bytes
        if not root.is_dir():
            root.mkdir(parents=True, exist_ok=True)
            if fsync:
                fs.fsync_dir(root.parent)  # the root's own name, before any part below it is acknowledged

    def check_room(self) -> None:
        """Raise ``StorageFull`` once the volume has less than ``min_free_bytes`` free: new bytes are
        refused before the disk is full, so the database beside them always has room to commit."""
        if self.min_free_bytes <= 0:
            return
        with _disk("checking free space"):
            stats = os.statvfs(self.root)
        if stats.f_bavail * stats.f_frsize < self.min_free_bytes:
            raise StorageFull(
                f"the storage volume has less than the {self.min_free_bytes} bytes free that it keeps in reserve"
            )

    async def ensure_room(self) -> None:
        # Called inline, not in a worker thread: statvfs answers from the filesystem's in-memory
        # counters (a few microseconds), less than the thread hop it used to take per request.
        self.check_room()

    def _dir(self, upload_id: str) -> Path:
        if not is_upload_id(upload_id):
            raise ValueError("invalid upload id for storage")
        return self.root / upload_id[:2] / upload_id

    def _path(self, upload_id: str, blob_ref: str) -> Path:
        if not _REF.fullmatch(blob_ref):
            raise ValueError("invalid blob reference")
        return self._dir(upload_id) / blob_ref

    async def open_writer(self, upload: Upload, number: int, offset: int) -> _LocalWriter:
        name = f"{number}.{secrets.token_urlsafe(12)}.part"
        return _LocalWriter(self, self._dir(upload.id), name, base=None, fsync=self.fsync)

    async def open_appender(self, upload: Upload, part: Part) -> _LocalWriter:
        """Continue ``part``'s file past its committed size (appends grow one file)."""
        self._path(upload.id, part.blob_ref)  # validates the ref
        return _LocalWriter(self, self._dir(upload.id), part.blob_ref, base=part.size, fsync=self.fsync)

    async def _read_file(self, path: Path, start: int, end: int, size: int = READ_CHUNK) -> AsyncGenerator[bytes, None]:
        # A part file gone, cut short or unreadable is a storage fault (503, the upload stays as it
        # was), not a bug: complete reads parts back to carry the hash, a download reads them all.
        with _disk("reading stored bytes"):
            fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
        try:
            position = start
            while position < end:
                with _disk("reading stored bytes"):
                    chunk = await asyncio.to_thread(os.pread, fd, min(size, end - position), position)
                if not chunk:
                    raise StorageError(f"part file {path.name} is shorter than its recorded size")
                position += len(chunk)
                yield chunk
        finally:
            os.close(fd)

    async def read_part(self, upload: Upload, part: Part) -> AsyncIterator[bytes]:
        async for chunk in self._read_file(self._path(upload.id, part.blob_ref), 0, part.size):
            yield chunk

    def read_part_blocking(self, upload: Upload, part: Part) -> Generator[bytes, None, None]:
        """BlockingReader: ``read_part`` in the caller's (worker) thread."""
        path = self._path(upload.id, part.blob_ref)
        with _disk("reading stored bytes"):
            fd = os.open(path, os.O_RDONLY)
        try:
            position = 0
            while position < part.size:
                with _disk("reading stored bytes"):
                    chunk = os.pread(fd, min(READ_CHUNK, part.size - position), position)
                if not chunk:
                    raise StorageError(f"part file {path.name} is shorter than its recorded size")
                position += len(chunk)
                yield chunk
        finally:
            os.close(fd)

    async def read(self, upload: Upload, start: int, end: int) -> AsyncIterator[bytes]:
        for part in upload.sorted_parts():
            if part.end <= start or part.offset >= end:
                continue
            lo = max(start, part.offset) - part.offset
            hi = min(end, part.end) - part.offset
            # Closed with this generator (a download cut off), not when collected: its file with it.
            async with contextlib.aclosing(
                self._read_file(self._path(upload.id, part.blob_ref), lo, hi, DOWNLOAD_CHUNK)
            ) as chunks:
                async for chunk in chunks:
                    yield chunk

    async def complete(self, upload: Upload) -> None:
        """Nothing to move: the ordered, durable part files are the finished file. Checked first:
        every part file holds at least its recorded bytes (a file may be longer: bytes of an append
        that was never acknowledged), so a file whose bytes storage lost never completes."""

        def check() -> None:
            for part in upload.sorted_parts():
                with _disk("checking stored parts"):
                    size = self._path(upload.id, part.blob_ref).stat().st_size
                if size < part.size:
                    raise StorageError(
                        f"part {part.number} holds {size} bytes in storage, fewer than the {part.size} recorded"
                    )

        if len(upload.parts) <= _INLINE_CHECKS:
            check()
        else:
            await asyncio.to_thread(check)

    async def discard(self, upload: Upload, blob_refs: list[str]) -> None:
        def unlink_all() -> None:
            for ref in blob_refs:
                # Best effort: a discard follows a committed replacement (the request succeeded)
                # or a failed one (its own error is the answer); a blob left behind is swept by gc.
                with contextlib.suppress(OSError):
                    self._path(upload.id, ref).unlink(missing_ok=True)

        await asyncio.to_thread(unlink_all)

    async def delete(self, upload: Upload) -> None:
        await asyncio.to_thread(shutil.rmtree, self._dir(upload.id), True)

    async def link_part(self, source: Upload, part: Part, target: Upload, number: int, offset: int) -> str:
        def link() -> str:
            directory = self._dir(target.id)
            name = f"{number}.{secrets.token_urlsafe(12)}.part"
            try:
                fs.link_or_copy(self._path(source.id, part.blob_ref), directory / name, fsync=self.fsync)
            except FileNotFoundError:
                if not directory.is_dir():
                    fs.make_upload_dir(directory, fsync=self.fsync)
                fs.link_or_copy(self._path(source.id, part.blob_ref), directory / name, fsync=self.fsync)
            if self.fsync:
                fs.fsync_dir(directory)
                fs.ensure_settled(directory)
            return name

        with _disk("linking stored parts"):  # a source part file gone is a storage fault, as on reads
            return await asyncio.to_thread(link)

    async def database_mark(self) -> str | None:
        def read() -> str | None:
            try:
                return (self.root / DATABASE_MARK).read_text(encoding="ascii").strip() or None
            except FileNotFoundError:
                return None

        with _disk("reading the store's database mark"):
            return await asyncio.to_thread(read)

    async def mark_database(self, database_id: str) -> None:
        def write() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            fs.replace_durably(self.root / DATABASE_MARK, (database_id + "\n").encode("ascii"))

        with _disk("marking the store with its database"):
            await asyncio.to_thread(write)

    async def sweep(
        self,
        live: dict[str, set[str]],
        *,
        grace_seconds: float,
        completed: Collection[str] = frozenset(),
        spared: Collection[str] = frozenset(),
    ) -> int:
        """Remove blobs no metadata points at: directories of unknown uploads and unreferenced part
        files (crash leftovers), if older than ``grace_seconds`` so in-flight writes are spared.
        ``live`` maps each upload id that still holds bytes to its referenced blob refs (a completed
        upload's parts are its file here: ``completed`` changes nothing)."""

        def sweep() -> int:
            removed = 0
            cutoff = time.time() - grace_seconds
            for shard in self.root.iterdir():
                if not shard.is_dir():
                    continue
                for directory in shard.iterdir():
                    if directory.name in spared:
                        continue
                    # Beside a running server a directory or file may go (a cancel, a delete, an
                    # expiry) or a part arrive while it is looked at: that is no reason to stop.
                    with contextlib.suppress(FileNotFoundError):
                        removed += sweep_upload(directory, live.get(directory.name), cutoff)
            return removed

        def sweep_upload(directory: Path, refs: set[str] | None, cutoff: float) -> int:
            removed = 0
            # Its age before this sweep's unlinks (each of which makes it young again).
            old = directory.stat().st_mtime < cutoff
            for entry in directory.iterdir():
                # A blob's age is its last write; a part hard-linked into a concatenation
                # is touched when linked (fs.link_or_copy), so it is young until recorded.
                with contextlib.suppress(FileNotFoundError):
                    if (refs is None or entry.name not in refs) and entry.stat().st_mtime < cutoff:
                        entry.unlink()
                        removed += 1
            # An empty directory of no known upload goes too, if it is old: a young one may be a
            # new upload's, made just before its first part file.
            if refs is None and old and not any(directory.iterdir()):
                with contextlib.suppress(OSError):  # a first part arrived meanwhile: its directory stays
                    directory.rmdir()
            return removed

        return await asyncio.to_thread(sweep)

    async def close(self) -> None:
        return None


def from_settings(settings: object) -> LocalBlobStore:
    from chunkd.settings import Settings

    assert isinstance(settings, Settings)
    return LocalBlobStore(settings.data_dir / "blobs", fsync=settings.fsync, min_free_bytes=settings.min_free_bytes)
