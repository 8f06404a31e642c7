"""Where upload bytes live. A small required interface; optional capabilities are separate
protocols, checked once at start-up (as tusd composes its data stores)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from chunkd.domain.upload import Part, Upload

__all__ = [
    "BlobStore",
    "BlobWriter",
    "BlockingReader",
    "BlockingWriter",
    "CompletionCleaner",
    "DownloadRedirector",
    "PartAppender",
    "PartLinker",
    "PartLoader",
    "PartSettler",
    "StoreCapabilities",
    "Sweeper",
    "UploadCopier",
]


class BlobWriter(Protocol):
    """Receives one part's bytes. Nothing written is visible until ``commit`` returns. A failing
    ``write`` or ``commit`` raises ``StorageError`` (``StorageFull`` when out of space), never a
    bare ``OSError``: the engine then aborts and records nothing of the request."""

    async def write(self, chunks: Sequence[bytes]) -> None:
        """Append ``chunks``, in order (one batch of bounded total size; a list rather than one
        joined buffer so that the bytes as received are never copied in the event loop)."""

    async def commit(self) -> str:
        """Make the bytes durable (fsync or equivalent) and return the part's ``blob_ref``."""

    async def abort(self) -> None:
        """Forget the bytes written so far; safe to call after a failed ``write``."""


@runtime_checkable
class BlockingWriter(Protocol):
    """Optional, on a ``BlobWriter``: the same write as a plain blocking call, for the engine to run
    in a worker thread it already uses. A body that arrives as one batch (a 256 KiB PATCH, a 64 KiB
    part) is then written and checksummed in one executor hop instead of one per stage."""

    def write_blocking(self, chunks: Sequence[bytes]) -> None: ...

    def sync_blocking(self) -> None:
        """Make what was written so far durable now, in the caller's thread; ``commit`` then has
        nothing left to wait for (the same hop as the write: one hop, not two, per small body).
        Bytes made durable here and then aborted are dropped by ``abort`` as ever."""


@runtime_checkable
class BlockingReader(Protocol):
    """Optional: a stored part's bytes as a plain blocking generator, for the engine to run in one
    worker thread. A part read back to be hashed (it arrived ahead of the hash frontier) then costs
    one executor hop instead of two per chunk read; each hop waits its turn on the event loop, which
    is busy receiving the other parts in flight just when parts arrive ahead of the frontier.
    Failures raise ``StorageError``, as ``read_part`` does."""

    def read_part_blocking(self, upload: Upload, part: Part) -> Generator[bytes, None, None]: ...


class BlobStore(Protocol):
    """Stores parts, assembles them on completion, serves byte ranges, frees space."""

    async def open_writer(self, upload: Upload, number: int, offset: int) -> BlobWriter:
        """A writer for part ``number`` starting at byte ``offset`` of the file. A committed part
        never overwrites another blob: a re-sent part gets a new ``blob_ref`` and the old one is
        discarded after the metadata points at the new one."""

    def read_part(self, upload: Upload, part: Part) -> AsyncIterator[bytes]:
        """The bytes of one stored part (used to carry the whole-file hash over parts that
        arrived out of order)."""

    def read(self, upload: Upload, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of a COMPLETED upload."""

    async def complete(self, upload: Upload) -> None:
        """Turn the upload's parts into the final file without copying it where possible."""

    async def discard(self, upload: Upload, blob_refs: list[str]) -> None:
        """Free superseded parts' blobs (best effort; gc sweeps what is left)."""

    async def delete(self, upload: Upload) -> None:
        """Free every byte of the upload (cancel, expiry, delete)."""

    async def ensure_room(self) -> None:
        """Raise ``StorageFull`` when no new upload bytes should be accepted now (e.g. below a
        free-space floor); a no-op for stores without such a notion."""

    async def close(self) -> None: ...


@runtime_checkable
class PartAppender(Protocol):
    """Optional: continue an APPEND upload's last part in place (the same blob grows), so appends
    cost no new blob, directory entry or part row. The writer first drops any bytes past the part's
    committed size (an append that was never acknowledged) and, on abort, truncates back to it."""

    async def open_appender(self, upload: Upload, part: Part) -> BlobWriter: ...


@runtime_checkable
class PartLinker(Protocol):
    """Optional: reuse another upload's stored part without copying its bytes (tus concatenation)."""

    async def link_part(self, source: Upload, part: Part, target: Upload, number: int, offset: int) -> str: ...


@runtime_checkable
class UploadCopier(Protocol):
    """Optional: copy a COMPLETED upload's whole file into another upload as its part ``number``
    (at byte ``offset``) inside the store, so no byte passes through chunkd (tus concatenation on
    S3: a server-side copy). Preferred over ``PartLinker`` where both exist."""

    async def copy_upload(self, source: Upload, target: Upload, number: int, offset: int) -> str:
        """Returns the new part's ``blob_ref``; the part's size is the source's."""


# Loads the given part numbers of an upload (those that exist), for a store that needs more parts
# than the operation loaded.
PartLoader = Callable[[Iterable[int]], Awaitable[dict[int, Part]]]


@runtime_checkable
class PartSettler(Protocol):
    """Optional: a store that derives its own state from committed parts (S3 coalesces small parts
    into multipart-upload parts). Both calls run under the upload's lock. Whatever the store keeps
    lives in ``upload.metadata`` under a key starting with ``_`` (reserved for storage; frontends do
    not show such keys), and is saved by the service with the upload."""

    def invalidate(self, upload: Upload, part: Part, replaced: Part | None) -> None:
        """Before the commit of ``part`` (replacing ``replaced``) is saved: forget derived state
        the new part makes stale, so that a crash after the save never leaves stale state trusted."""

    async def settle(self, upload: Upload, part: Part, load_parts: PartLoader) -> bool:
        """After the commit of ``part`` was saved: build derived state. True if ``upload.metadata``
        changed and must be saved again. Failing is harmless (``complete`` finishes the work)."""


@runtime_checkable
class CompletionCleaner(Protocol):
    """Optional: a store whose ``complete`` leaves blobs behind that the finished file no longer
    needs (S3: the staged parts its multipart upload was built from). ``complete`` keeps them: until
    the service has saved the COMPLETED record, the upload's part rows still name them, and a record
    that fails (the upload's lock or the database lost) leaves the upload PENDING on those parts,
    to be resumed and completed again."""

    async def release_completed(self, upload: Upload) -> None:
        """After the COMPLETED record is saved: free what completion no longer needs."""


@runtime_checkable
class DownloadRedirector(Protocol):
    """Optional: a store that can hand clients a direct, time-limited download URL."""

    async def download_url(self, upload: Upload, *, filename: str, disposition: str) -> str | None:
        """A URL serving the COMPLETED file (with Range), or None to stream it through chunkd."""


@runtime_checkable
class Sweeper(Protocol):
    """Optional: find and free blobs no metadata points at (``chunkd gc``)."""

    async def sweep(
        self,
        live: dict[str, set[str]],
        *,
        grace_seconds: float,
        completed: Collection[str] = frozenset(),
        spared: Collection[str] = frozenset(),
    ) -> int:
        """Remove blobs of uploads not in ``live`` (upload id → referenced blob refs) and blob refs
        not referenced, when older than ``grace_seconds``; returns how many were removed. A store
        may also free what the completion of an upload in ``completed`` (COMPLETED ones) left.
        The unreferenced blobs of uploads in ``spared`` (live ones written to lately) stay, however
        old: a whole-file PUT holds the replacements of stored parts unrecorded until its body ends."""

    async def database_mark(self) -> str | None:
        """The id of the database this store's blobs belong to, as ``mark_database`` left it; None
        for a store never marked."""

    async def mark_database(self, database_id: str) -> None:
        """Note, durably, that this store's blobs belong to the database ``database_id``."""


@dataclass(frozen=True)
class StoreCapabilities:
    """What a blob store can do beyond the required interface, found once at start-up (as tusd's
    composer does) and read by the engine as plain fields, never probed per call."""

    appender: PartAppender | None
    linker: PartLinker | None
    copier: UploadCopier | None
    settler: PartSettler | None
    cleaner: CompletionCleaner | None
    redirector: DownloadRedirector | None
    sweeper: Sweeper | None
    reader: BlockingReader | None
    # The store verifies what it holds against each part's own MD5 (S3 ETags), so every part gets
    # one; otherwise a part's MD5 is computed only on a client's or dialect's request (invariant 5).
    part_md5: bool

    @classmethod
    def of(cls, store: BlobStore) -> StoreCapabilities:
        return cls(
            appender=store if isinstance(store, PartAppender) else None,
            linker=store if isinstance(store, PartLinker) else None,
            copier=store if isinstance(store, UploadCopier) else None,
            settler=store if isinstance(store, PartSettler) else None,
            cleaner=store if isinstance(store, CompletionCleaner) else None,
            redirector=store if isinstance(store, DownloadRedirector) else None,
            sweeper=store if isinstance(store, Sweeper) else None,
            reader=store if isinstance(store, BlockingReader) else None,
            part_md5=bool(getattr(store, "wants_part_md5", False)),
        )

    def names(self) -> list[str]:
        """The capabilities present, for the start-up log."""
        found = {
            "append-in-place": self.appender,
            "link-parts": self.linker,
            "copy-uploads": self.copier,
            "settle-parts": self.settler,
            "clean-after-complete": self.cleaner,
            "download-redirects": self.redirector,
            "sweep": self.sweeper,
            "blocking-reads": self.reader,
        }
        return [name for name, present in found.items() if present is not None] + (
            ["part-md5"] if self.part_md5 else []
        )
