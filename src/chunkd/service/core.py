"""What every use case shares: the ports, the settings, the store's capabilities, owner-scoped
loading, the whole-file hash frontier and in-process events.

Concurrency: parts of one upload stream in parallel without a lock; the short *commit* of a part
(metadata + hash frontier), ``complete``, ``cancel``, expiry and whole appends run under the upload's
lock (invariant 2). A part is acknowledged only after its bytes are durable and its row committed
(invariant 1).

The whole-file MD5 (invariant 4) lives in ``upload.hash_state``/``hash_offset``: the digest state of
bytes ``[0, hash_offset)``. A part that starts at the frontier when it begins streaming is hashed
into a copy of that state as it arrives; parts that arrive ahead of a gap are hashed when the gap
fills (read back from storage once, normally from the page cache). Each part keeps the state after
it, so a re-sent part with different bytes rewinds the frontier to its start instead of to zero.

That read-back runs *outside* the upload's lock, in one hash run per upload and process
(``_carry_hash``): the commits of parallel parts record their rows under the lock and never wait
behind another part's MD5; the run hashes every part that has become contiguous with the frontier,
then records the new frontier under the lock only if nothing moved it meanwhile (the frontier and
the parts' blobs are checked again: a re-sent part or another node's run simply wins). A commit
that leaves work for the run is answered at once while the run is at most ``hash_lag_bytes``
behind the bytes received, and waits for it to catch up to that distance otherwise, so the run
works while the client sends more parts and never falls far behind. ``complete`` waits for this
process's run (at most that much hashing) and then reads nothing; on another node, or if the run
failed or lost the race, it carries the frontier itself under the lock (reading back at most
about that much).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from chunkd.domain.checksum import ResumableMD5
from chunkd.domain.errors import Busy, NotFound, StorageError, StorageFull
from chunkd.domain.names import is_upload_id
from chunkd.domain.upload import Part, Status, Upload
from chunkd.ports.blobs import BlobStore, StoreCapabilities
from chunkd.ports.locks import LockManager
from chunkd.ports.repository import UploadRepository
from chunkd.service.config import EngineConfig
from chunkd.service.faults import warn_failed
from chunkd.service.hooks import NO_HOOKS, UploadHooks

__all__ = ["EngineCore", "utcnow"]

log = logging.getLogger("chunkd.service")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _HashRun:
    """The hash run of one upload in this process (see the module docstring). ``wanted`` is bumped by
    every commit that leaves parts to hash while the run is going: it makes one more pass.
    ``frontier``: where its passes have recorded the frontier so far; ``moved`` is set (and replaced)
    after each pass."""

    task: asyncio.Task[None] | None = None
    wanted: int = 0
    frontier: int = 0
    moved: asyncio.Event = field(default_factory=asyncio.Event)


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
        self._hash_runs: dict[str, _HashRun] = {}

    async def get(self, owner: str, upload_id: str, *, with_parts: bool | Callable[[Upload], bool] = True) -> Upload:
        """The owner's upload (another owner's is a ``NotFound``, exactly like a missing one), with
        its parts when ``with_parts`` says so (of the upload's row, when it is a function)."""
        # Ids are ours (invariant 7): anything else cannot exist and never reaches the database
        # (a NUL or a megabyte-long id would be a database error there, not a 404).
        upload = None
        if is_upload_id(upload_id):
            parts_from = _parts_from(with_parts) if callable(with_parts) else (1 if with_parts else None)
            upload = await self.repo.get(upload_id, owner, parts_from=parts_from)
        if upload is None:
            raise NotFound(f"no upload with id {upload_id!r}", field="id")
        return upload

    async def _free(self, upload: Upload) -> None:
        """Free every byte of an upload whose record already says it is gone (cancelled, expired,
        rejected, deleted). Best effort: the change is committed, so a storage fault here must not
        fail the request that made it (the client would retry an operation that was done); what
        is left no record points at, and ``chunkd gc`` sweeps it."""
        try:
            await self.blobs.delete(upload)
        except Exception:
            warn_failed(log, "could not free the bytes of upload %s; gc will", upload.id)

    async def _discard_unrecorded(self, upload: Upload, number: int, ref: str, error: BaseException) -> None:
        """The save that was to record blob ``ref`` as part ``number`` failed with ``error``, but may
        have committed all the same: a connection lost while the commit's answer was on its way
        (PostgreSQL restarted or crashed, a backend or the lock's session terminated) says nothing
        about the commit itself, and neither does a read made at once: a commit that is durable
        but not yet visible (the server died in the middle of it) reads as absent until recovery
        has run. So when the save's outcome is unknown (its connection lost, or the request
        cancelled during it) the blob is kept, and ``chunkd gc`` frees it if no row names it;
        freeing it on such a read left a part recorded after recovery without its bytes, and an
        upload that could never complete. Otherwise (the database answered and refused the save,
        a full one included: its blob would only take more of the room that is short) the blob is
        freed, unless the part's row names it after all."""
        refused = isinstance(error, StorageFull)  # the database had no room: it said no, nothing was saved
        if (isinstance(error, StorageError | Busy) and not refused) or not isinstance(error, Exception):
            log.warning("kept part %s of upload %s: whether its record was saved is unknown", number, upload.id)
            return
        try:
            current = await self.repo.get(upload.id, parts_from=None, part_numbers=[number])
        except Exception:
            log.warning("kept part %s of upload %s: whether its record was saved is unknown", number, upload.id)
            return
        stored = current.parts.get(number) if current is not None else None
        if stored is not None and stored.blob_ref == ref:
            log.warning(
                "part %s of upload %s was recorded though its save failed; its bytes are kept", number, upload.id
            )
            return
        await self.blobs.discard(upload, [ref])

    async def _release_completed(self, upload: Upload) -> None:
        """The COMPLETED record of ``upload`` is saved: let the store free what its completion no
        longer needs (S3's staged parts). Best effort: the file is complete and correct, what is
        left costs space only and is removed with the upload (or by ``chunkd gc``)."""
        cleaner = self.caps.cleaner
        if cleaner is None:
            return
        try:
            await cleaner.release_completed(upload)
        except Exception:
            warn_failed(log, "could not free what the completion of upload %s left behind", upload.id)

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
            warn_failed(log, "storage could not settle part %s of upload %s", part.number, upload.id)

    async def _feed_part(self, upload: Upload, part: Part, feed: Callable[[bytes], None]) -> None:
        """Read ``part`` back from storage into ``feed`` (a digest's update), off the event loop: in
        one worker-thread hop where the store can read blocking, else one hop per chunk."""
        reader = self.caps.reader
        if reader is not None:
            chunks = reader.read_part_blocking(upload, part)
            await asyncio.to_thread(_feed_all, chunks, feed)
            return
        async for chunk in self.blobs.read_part(upload, part):
            await asyncio.to_thread(feed, chunk)

    async def _advance_hash(self, upload: Upload) -> list[Part]:
        """Carry the whole-file hash over loaded parts that are contiguous with the frontier, reading
        them back from storage (parts that arrived ahead of a gap; normally still in the page cache)."""
        advanced: list[Part] = []
        while (part := upload.next_part_to_hash()) is not None:
            digest = ResumableMD5(upload.hash_state)
            await self._feed_part(upload, part, digest.update)
            upload.mark_hashed(part, digest.state())
            advanced.append(part)
        return advanced

    async def _carry_hash(self, upload: Upload) -> None:
        """Carry the whole-file hash over the parts contiguous with the frontier, outside the lock
        (``upload``: the state just committed, used as the run's first snapshot). Returns at once
        while the frontier is at most ``hash_lag_bytes`` behind the bytes this commit saw, else once
        the run has come that close (or ended); a failed run only leaves work for ``complete``."""
        run = self._hash_runs.get(upload.id)
        if run is None:
            run = self._hash_runs[upload.id] = _HashRun(frontier=upload.hash_offset)
            run.task = asyncio.create_task(self._hash_run(upload.id, run, upload))
        else:
            run.wanted += 1
        near = upload.bytes_received - self.config.hash_lag_bytes
        # Waiting never cancels the run: other requests, and complete, count on it.
        while run.frontier < near and run.task is not None and not run.task.done():
            moved = asyncio.ensure_future(run.moved.wait())
            try:
                await asyncio.wait([moved, run.task], return_when=asyncio.FIRST_COMPLETED)
            finally:
                moved.cancel()

    async def finish_hash_runs(self, timeout: float = 10.0) -> None:
        """At shutdown: let this process's hash runs end (each is at most ``hash_lag_bytes``
        behind), cancelling what is left after ``timeout`` (complete carries it on later)."""
        tasks = [run.task for run in self._hash_runs.values() if run.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _hash_idle(self, upload_id: str) -> None:
        """Wait for this process's hash run of the upload, if one is going (``complete`` does, so
        that it does not hash the same parts again under the lock)."""
        run = self._hash_runs.get(upload_id)
        if run is not None and run.task is not None:
            await asyncio.shield(run.task)

    async def _hash_run(self, upload_id: str, run: _HashRun, first: Upload) -> None:
        snapshot: Upload | None = first
        error: Exception | None = None
        try:
            while True:
                seen = run.wanted
                if snapshot is None:
                    snapshot = await self.repo.get(upload_id, parts_from=lambda row: row.frontier_part_number())
                more = False  # a pass stopped at its size with contiguous parts left
                # Passes of at most half the lag, each recorded, so that a commit waiting for the run
                # to come within the lag is let go once it has, not once a long gap is all hashed.
                if snapshot is not None and await self._hash_ahead(snapshot, self.config.hash_lag_bytes // 2):
                    run.frontier = max(run.frontier, snapshot.hash_offset)
                    more = snapshot.next_part_to_hash() is not None
                run.moved.set()
                run.moved = asyncio.Event()
                snapshot = None
                if run.wanted == seen and not more:  # nothing new came in, nothing is left: done
                    return
        except Exception as exc:  # complete carries the frontier itself; the parts are durable either way
            error = exc
        finally:
            # No await between the last check of ``wanted`` and here: a commit either bumped this
            # run before it ended, or finds no run and starts one.
            if self._hash_runs.get(upload_id) is run:
                del self._hash_runs[upload_id]
        if error is not None:  # off the table already: a commit from here on starts a new run
            if await self._still_pending(upload_id):
                # Usually a race that loses nothing (a part replaced, on another node, while it was
                # read): one line, the traceback only at debug level. ``complete`` hashes what is left.
                log.warning("could not carry the hash frontier of upload %s: %s", upload_id, error)
                log.debug("the hash run of upload %s failed", upload_id, exc_info=error)
            else:  # cancelled, deleted or completed under the run (which answers no request): its parts went with it
                log.debug("the hash run of upload %s stopped: the upload has ended", upload_id, exc_info=error)

    async def _replaced(self, upload_id: str, part: Part) -> bool:
        """Whether the PENDING upload's part of ``part``'s number is another one now (sent again
        meanwhile); False if it is the same, the upload has ended, or the database cannot tell."""
        try:
            current = await self.repo.get(upload_id, parts_from=None, part_numbers=[part.number])
        except Exception:
            return False
        if current is None or current.status is not Status.PENDING:
            return False  # ended: the run's error path says so (at debug level)
        stored = current.parts.get(part.number)
        return stored is None or stored.blob_ref != part.blob_ref

    async def _still_pending(self, upload_id: str) -> bool:
        """Whether the upload is still PENDING (True if the database cannot tell)."""
        try:
            current = await self.repo.get(upload_id, parts_from=None)
        except Exception:
            return True
        return current is not None and current.status is Status.PENDING

    async def _hash_ahead(self, upload: Upload, size: int) -> bool:
        """One pass: hash the loaded parts contiguous with ``upload``'s frontier (read back once, no
        lock held), stopping once ``size`` bytes are hashed (0: no limit; at least one part), then
        record the new frontier under the lock if it has not moved meanwhile. True if it moved."""
        if upload.status is not Status.PENDING:
            return False
        start_offset, start_state = upload.hash_offset, upload.hash_state
        hashed: list[tuple[Part, bytes]] = []
        digest: ResumableMD5 | None = None
        while (part := upload.next_part_to_hash()) is not None:
            digest = digest or ResumableMD5(upload.hash_state)
            try:
                await self._feed_part(upload, part, digest.update)
            except StorageError:
                if not await self._replaced(upload.id, part):
                    raise
                # The part was sent again while it was read, and the replacement dropped the old
                # blob: expected, not a fault. What was hashed before it is recorded below; the
                # replacement's commit has the run look again and hash the new part.
                break
            state = digest.state()
            hashed.append((part, state))
            upload.mark_hashed(part, state)
            if size and upload.hash_offset - start_offset >= size:
                break
        if not hashed:
            return False
        async with self.locks.hold(upload.id, timeout=self.config.lock_timeout):
            current = await self.repo.get(upload.id, parts_from=None, part_numbers=[p.number for p, _ in hashed])
            if (
                current is None
                or current.status is not Status.PENDING
                or current.hash_offset != start_offset
                or current.hash_state != start_state
            ):
                return False  # moved meanwhile (a re-sent part, another node, complete): its owner carries on
            advanced: list[Part] = []
            for part, state in hashed:
                stored = current.parts.get(part.number)
                if stored is None or stored.blob_ref != part.blob_ref or stored.offset != current.hash_offset:
                    break  # replaced since it was read: the frontier stops before it
                current.mark_hashed(stored, state)
                advanced.append(stored)
            if advanced:
                await self.repo.save(current, advanced)
            return bool(advanced)

    def subscribe(self, listener: Callable[[str, Upload], Awaitable[None]]) -> None:
        """Call ``listener(event, upload)`` after each lifecycle event (created, completed,
        cancelled, rejected, expired, deleted), in this process: one call per event the outbox
        records."""
        self.listeners.append(listener)

    async def _emit(self, event: str, upload: Upload) -> None:
        for listener in self.listeners:
            await listener(event, upload)


def _feed_all(chunks: Generator[bytes, None, None], feed: Callable[[bytes], None]) -> None:
    with contextlib.closing(chunks):  # its file is closed here, in this thread, even if ``feed`` fails
        for chunk in chunks:
            feed(chunk)


def _parts_from(wanted: Callable[[Upload], bool]) -> Callable[[Upload], int | None]:
    """A repository's ``parts_from`` that loads every part of a row ``wanted`` says to, none else."""

    def first(row: Upload) -> int | None:
        return 1 if wanted(row) else None

    return first
