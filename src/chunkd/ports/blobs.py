"""Where upload bytes live. A small required interface; optional capabilities are separate
protocols, checked once at start-up (as tusd composes its data stores)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from chunkd.domain.upload import Part, Upload

__all__ = ["BlobStore", "BlobWriter", "PartLinker"]


class BlobWriter(Protocol):
    """Receives one part's bytes. Nothing written is visible until ``commit`` returns."""

    async def write(self, data: bytes) -> None:
        """Append ``data`` (called with chunks of bounded size, in order)."""

    async def commit(self) -> str:
        """Make the bytes durable (fsync or equivalent) and return the part's ``blob_ref``."""

    async def abort(self) -> None:
        """Forget the bytes written so far; safe to call after a failed ``write``."""


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

    async def close(self) -> None: ...


@runtime_checkable
class PartLinker(Protocol):
    """Optional: reuse another upload's stored part without copying its bytes (tus concatenation)."""

    async def link_part(self, source: Upload, part: Part, target: Upload, number: int, offset: int) -> str: ...
