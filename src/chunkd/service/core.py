"""What every use case shares: the ports, the settings, the store's capabilities, owner-scoped
loading, the whole-file hash frontier and in-process events.

Concurrency: parts of one upload stream in parallel without a lock; the short *commit* of a part
(metadata + hash frontier), ``complete``, ``cancel``, expiry and whole appends run under the upload's
lock (invariant 2). A part is acknowledged only after its bytes are durable and its row committed
(invariant 1).

The whole-file MD5 (invariant 4) lives in ``upload.hash_state``/``hash_offset``: the digest state of
bytes ``[0, hash_offset)``. A part that starts at the frontier when it begins streaming is hashed
into a copy of that state as it arrives; parts that arrive ahead of a gap are hashed when the gap
fills (read back from storage, normally the page cache). Each part keeps the state after it, so a
re-sent part with different bytes rewinds the frontier to its start instead of to zero.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

from chunkd.domain.checksum import ResumableMD5
from chunkd.domain.errors import NotFound
from chunkd.domain.names import is_upload_id
from chunkd.domain.upload import Part, Upload
from chunkd.ports.blobs import BlobStore, StoreCapabilities
from chunkd.ports.locks import LockManager
from chunkd.ports.repository import UploadRepository
from chunkd.service.config import EngineConfig
from chunkd.service.hooks import NO_HOOKS, UploadHooks

__all__ = ["EngineCore", "utcnow"]

log = logging.getLogger("chunkd.service")


def utcnow() -> datetime:
    return datetime.now(UTC)


class EngineCore:
    """The state every use-case group of ``UploadService`` works on."""

    def __init__(
        self,
        repo: UploadRepository,
        blobs: BlobStore,
        locks: LockManager,
        config: EngineConfig | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        capabilities: StoreCapabilities | None = None,
    ) -> None:
        self.repo = repo
        self.blobs = blobs
        self.locks = locks
        self.config = config or EngineConfig()
        self.clock = clock
        self.listeners: list[Callable[[str, Upload], Awaitable[None]]] = []
        self.caps = capabilities or StoreCapabilities.of(blobs)
        self.hooks: UploadHooks = NO_HOOKS  # blocking hooks and scans (chunkd.service.hooks), set at start-up

    async def get(self, owner: str, upload_id: str, *, with_parts: bool = True) -> Upload:
        """The owner's upload (another owner's is a ``NotFound``, exactly like a missing one)."""
        # Ids are ours (invariant 7): anything else cannot exist and never reaches the database
        # (a NUL or a megabyte-long id would be a database error there, not a 404).
        upload = None
        if is_upload_id(upload_id):
            upload = await self.repo.get(upload_id, owner, parts_from=1 if with_parts else None)
        if upload is None:
            raise NotFound(f"no upload with id {upload_id!r}", field="id")
        return upload

    async def _settle(self, upload: Upload, part: Part) -> None:
        """Let a store that derives state from parts (S3 coalescing) do so, under the lock. A failure
        here does not undo the committed part: ``complete`` finishes whatever is left."""
        settler = self.caps.settler
        if settler is None:
            return

        async def load_parts(numbers: Iterable[int]) -> dict[int, Part]:
            loaded = await self.repo.get(upload.id, parts_from=None, part_numbers=numbers)
            return loaded.parts if loaded is not None else {}

        try:
            if await settler.settle(upload, part, load_parts):
                await self.repo.save(upload)
        except Exception:
            log.warning("storage could not settle part %s of upload %s", part.number, upload.id, exc_info=True)

    async def _advance_hash(self, upload: Upload) -> list[Part]:
        """Carry the whole-file hash over loaded parts that are contiguous with the frontier, reading
        them back from storage (parts that arrived ahead of a gap; normally still in the page cache)."""
        advanced: list[Part] = []
        while (part := upload.next_part_to_hash()) is not None:
            digest = ResumableMD5(upload.hash_state)
            async for chunk in self.blobs.read_part(upload, part):
                await asyncio.to_thread(digest.update, chunk)
            upload.mark_hashed(part, digest.state())
            advanced.append(part)
        return advanced

    def subscribe(self, listener: Callable[[str, Upload], Awaitable[None]]) -> None:
        """Call ``listener(event, upload)`` after each lifecycle event (created, completed,
        cancelled, expired, deleted), in this process."""
        self.listeners.append(listener)

    async def _emit(self, event: str, upload: Upload) -> None:
        for listener in self.listeners:
            await listener(event, upload)
