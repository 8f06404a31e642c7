"""File-system steps of the local blob store, each made durable where a part's acknowledgement needs
it: directories whose names are synced into their parents (marked *unsettled* until then), new files
in an upload's directory, hard links made young, whole-file replacement, vectored writes and early
writeback. Paths come in already validated (``local``): nothing here looks at client input."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "START_WRITEBACK",
    "WRITEBACK_EVERY",
    "create_in",
    "ensure_settled",
    "fsync_dir",
    "link_or_copy",
    "make_upload_dir",
    "replace_durably",
    "writev_all",
]

COPY_CHUNK = 1024 * 1024


def _load_sync_file_range() -> Callable[[int, int, int], None] | None:
    """Linux's ``sync_file_range(fd, offset, n, SYNC_FILE_RANGE_WRITE)``: start writeback of a range
    without waiting for it. Python's ``os`` lacks it, hence ctypes. None where unavailable."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    sync_file_range_write = 2

    def start_writeback(fd: int, offset: int, length: int) -> None:
        call(fd, offset, length, sync_file_range_write)  # advisory: an error only means no head start

    return start_writeback


START_WRITEBACK = _load_sync_file_range()
# Start writing a part's bytes to disk every this many bytes, so the fsync before the part is
# acknowledged waits only for the tail instead of flushing the whole part at once (the disk works
# while the rest of the body is still arriving, as RocksDB's bytes_per_sync does).
WRITEBACK_EVERY = 8 * 1024 * 1024


# Linux's IOV_MAX: one writev takes at most this many buffers.
_IOV_MAX = 1024


def writev_all(fd: int, chunks: Sequence[bytes]) -> int:
    """Write every chunk with as few syscalls as possible (writev may stop short: resume there)."""
    views = [memoryview(chunk) for chunk in chunks if chunk]
    total = first = 0
    while first < len(views):
        written = os.writev(fd, views[first : first + _IOV_MAX])
        total += written
        while first < len(views) and written >= len(views[first]):
            written -= len(views[first])
            first += 1
        if written:
            views[first] = views[first][written:]
    return total


def fsync_dir(path: Path) -> None:
    """Make the names created in directory ``path`` durable (a file's own sync keeps its bytes,
    not its name)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(path: Path, data: bytes) -> None:
    """Put ``data`` at ``path`` whole, replacing what was there: written to a temporary file beside
    it (mkstemp: mode 0600), synced, renamed over ``path``, and the directory synced. A reader never
    sees it half-written, and a crash leaves the old file or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


# Set on a directory this store makes until its name is durable in its parent. A writer that finds
# its upload's directory already made (a concurrent part of the same new upload made it, or a new
# upload in the same new shard) cannot otherwise tell whether the maker's sync of the parent has
# returned; it must not acknowledge a part whose path may still vanish in a crash. On a directory
# that only its owner writes to, the sticky bit means nothing else.
_UNSETTLED = stat.S_ISVTX


def _make_dir(path: Path, *, fsync: bool) -> None:
    """``mkdir path`` (nothing if it exists), its name made durable in its parent when ``fsync``;
    marked unsettled until then, so that a concurrent writer knows to sync the parent itself."""
    try:
        os.mkdir(path, (0o777 | _UNSETTLED) if fsync else 0o777)
    except FileExistsError:
        return
    if fsync:
        _settle(path)


def _settle(path: Path) -> None:
    """Make the name of directory ``path`` durable in its parent, then take its unsettled mark off."""
    fsync_dir(path.parent)
    with contextlib.suppress(FileNotFoundError):  # gone meanwhile (a delete): nothing left to mark
        os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) & ~_UNSETTLED)


def ensure_settled(directory: Path) -> None:
    """Before a part in an upload's ``directory`` is acknowledged: if this directory or its shard
    is still marked unsettled (made by a concurrent writer whose sync may not have returned, or
    left so by a crash), sync its parent here. Two ``stat``s when nothing is pending."""
    for path in (directory.parent, directory):
        if os.stat(path).st_mode & _UNSETTLED:
            _settle(path)


def make_upload_dir(directory: Path, *, fsync: bool) -> None:
    """Create an upload's directory, and its shard if that is new too. With ``fsync`` each name
    created is made durable in its parent: a part file's own sync keeps its name, not the
    directories above it, and a shard created by this call would otherwise hang on the root's
    unsynced entry."""
    _make_dir(directory.parent, fsync=fsync)
    _make_dir(directory, fsync=fsync)


def create_in(directory: Path, path: Path, *, fsync: bool) -> int:
    """Open a new file ``path`` in an upload's ``directory``, creating the directory when missing.
    Tried first without looking: most parts go to a directory that exists, and a failed open
    costs less than a stat. Tried again if the directory vanished meanwhile (``chunkd gc`` removes
    the empty directories of uploads it does not know, which a brand-new upload's may be)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for _ in range(3):
        try:
            return os.open(path, flags, 0o600)
        except FileNotFoundError:
            make_upload_dir(directory, fsync=fsync)
    return os.open(path, flags, 0o600)


def link_or_copy(source: Path, target: Path, *, fsync: bool) -> None:
    """A hard link, made young; a copy once the source has as many links as its filesystem allows
    (ext4: 65,000; a tus final may name one partial up to 10,000 times, and several finals may)."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno != errno.EMLINK:
            raise
    else:
        # The new name shares its source's inode, and with it an old mtime: a sweep (chunkd gc)
        # between the link and the concatenation's record would take it for a crash leftover.
        # Touched, it is as young as a part just written (the source's own name is kept by its row).
        os.utime(target)
        return
    with open(source, "rb") as src:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with open(fd, "wb") as dst:
                shutil.copyfileobj(src, dst, COPY_CHUNK)
                dst.flush()
                if fsync:
                    os.fdatasync(fd)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
