"""Concatenation (tus): an upload made of other uploads of the same owner, one after another,
linking their stored parts where the store can.

The sources may still be running when the concatenation is asked for (tus
``concatenation-unfinished``), if they were created as concatenation sources
(``CONCATENATION_SOURCE`` in their metadata). The new upload then stays PENDING and *waits*: the
request that finishes the last source fills and completes it in the same breath (a listener on
this engine's events), and if a source is cancelled, deleted, rejected or expires first, the
waiting upload is cancelled with the reason recorded, so it never hangs. Sources are never written
to by a concatenation (a PATCH may be streaming into one): the waiting upload is found from the
source by a scan of the owner's PENDING uploads, done only when a source ends.

Every change of the new upload's bytes, offset and hash state goes through the ``Upload``
aggregate (``record_append`` per placed part, ``declare_size`` for a length learnt late).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from chunkd.domain.checksum import ResumableMD5
from chunkd.domain.errors import Busy, ChunkdError, InvalidInput, InvalidState, NotFound, StorageError
from chunkd.domain.events import Event, EventType
from chunkd.domain.metadata import CONCATENATION, CONCATENATION_SOURCE
from chunkd.domain.upload import Mode, Part, Status, Upload
from chunkd.service.crc import Crc64Hasher
from chunkd.service.faults import warn_failed
from chunkd.service.hooks import ContentRejected
from chunkd.service.lifecycle import Lifecycle
from chunkd.service.streaming import StreamedPart

__all__ = ["Concatenation", "waiting_for"]

log = logging.getLogger("chunkd.service")

# Uploads listed per page when a source that ended looks for the concatenations waiting on it.
_SCAN_PAGE = 500


class _Hashing:
    """The whole-file MD5 being carried over placed parts (replaced wholesale when a source's own
    state can be taken over)."""

    def __init__(self, md5: ResumableMD5) -> None:
        self.md5 = md5


def waiting_for(upload: Upload) -> list[str] | None:
    """The source ids a PENDING concatenation still waits for (None: not a waiting concatenation)."""
    info = upload.metadata.get(CONCATENATION)
    if upload.status is not Status.PENDING or not isinstance(info, dict) or not info.get("waiting"):
        return None
    return [str(i) for i in info.get("sources", [])]


class Concatenation(Lifecycle):
    """Joining uploads into a new one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subscribe(self._source_ended)

    async def concatenate(
        self,
        owner: str,
        source_ids: Sequence[str],
        *,
        filename: str,
        mime_type: str | None = None,
        frontend: str = "native",
        metadata: dict[str, Any] | None = None,
        unfinished: bool = False,
    ) -> Upload:
        """A new upload whose bytes are the given uploads of the same owner, one after another (tus
        concatenation). Each source part becomes a part of the new upload: linked where the blob
        store has the ``PartLinker`` capability (no byte copied), otherwise copied through the
        store. The sources are left as they were.

        With every source COMPLETED the new upload is returned COMPLETED (and on any failure it is
        removed again). With ``unfinished``, sources still PENDING are allowed if they were created
        as concatenation sources: the new upload is returned PENDING and is completed when the last
        of them finishes (see the module's docstring)."""
        if not source_ids:
            raise InvalidInput("name at least one upload to concatenate", field="sources")
        sources = [await self.get(owner, source_id, with_parts=False) for source_id in source_ids]
        now = self.clock()
        for source in sources:
            if source.status is Status.COMPLETED:
                continue
            if not unfinished or source.status is not Status.PENDING:
                raise InvalidState(
                    f"upload {source.id} is {source.status.value}; only completed uploads can be concatenated",
                    field="sources",
                )
            source.ensure_pending(now)  # an upload past its expiry will not finish
            if not source.metadata.get(CONCATENATION_SOURCE):
                raise InvalidState(
                    f"upload {source.id} is not finished and was not created as a concatenation source",
                    field="sources",
                )
        sizes = [source.size_bytes for source in sources]
        size = sum(s for s in sizes if s is not None) if None not in sizes else None
        info = {"sources": list(source_ids), "waiting": True}
        upload = await self.create(
            owner,
            filename=filename,
            size_bytes=size,
            mime_type=mime_type,
            mode=Mode.APPEND,
            frontend=frontend,
            metadata={**(metadata or {}), CONCATENATION: info},
            strict_part_size=False,
        )
        try:
            # Sources may have finished (or gone) since they were looked at: this settles it, and a
            # source that finishes after it finds this upload by its scan.
            upload = await self.finish_concatenation(owner, upload.id, refusals=True)
        except BaseException:
            await self._remove(upload)
            raise
        if upload.status is Status.CANCELLED:  # a source went away meanwhile: nothing to keep
            await self._remove(upload)
            raise InvalidState(str(upload.metadata.get(CONCATENATION, {}).get("failed")), field="sources")
        return upload

    async def finish_concatenation(self, owner: str, upload_id: str, *, refusals: bool = False) -> Upload:
        """Complete a waiting concatenation if all its sources are finished, or cancel it if one
        of them will never finish; otherwise leave it waiting. Idempotent and safe on any node
        (under the upload's lock). Storage errors leave it waiting, with nothing placed.
        ``refusals``: a pre-finish hook's refusal is raised (once the upload is cancelled) rather
        than only recorded."""
        ended: str | None = None
        refused: ChunkdError | None = None
        async with self.locks.hold(upload_id, timeout=self.config.lock_timeout):
            upload = await self.get(owner, upload_id, with_parts=False)
            source_ids = waiting_for(upload)
            if source_ids is None:
                return upload
            sources: list[Upload] = []
            for source_id in source_ids:
                source = await self.repo.get(source_id, owner, parts_from=None)
                if source is None or source.status in (Status.CANCELLED, Status.EXPIRED):
                    state = "deleted" if source is None else source.status.value.lower()
                    await self._fail(upload, f"upload {source_id} was {state} before the concatenation was assembled")
                    ended = "cancelled"
                    break
                sources.append(source)
            else:
                if any(source.status is not Status.COMPLETED for source in sources):
                    return upload
                ended, refused = await self._fill_and_finish(upload, sources)
        # The end is told (metrics, webhook worker) also when the refusal is raised: it is in the
        # outbox either way.
        if ended is not None:
            await self._emit(ended, upload)
        if refused is not None and refusals:
            raise refused
        return upload

    async def _fill_and_finish(self, upload: Upload, sources: list[Upload]) -> tuple[str | None, ChunkdError | None]:
        """Place every source's parts into ``upload`` and complete it (its lock is held). Returns
        the event still to emit, and the refusal that ended it, if one did. A refusal by a
        pre-finish hook cancels it (its content will not change); any other failure removes what
        was placed and leaves it waiting."""
        now = self.clock()
        # A concatenation left waiting past its expiry is for expiry to end, unless every source
        # had ended before it was due: it was finished then, and only its assembly came late (a
        # crash or an error after the last source completed). It completes now.
        expires_at = upload.expires_at
        if expires_at is not None and all(s.completed_at is not None and s.completed_at <= expires_at for s in sources):
            upload.expires_at = None  # completing clears it anyway; the checks below must not expire it
        upload.ensure_pending(now)
        if upload.size_bytes is None:
            # Its length is learnt only now (a source's was deferred when it was made): held to
            # the file size limit and the byte quotas as any declared length is, before anything
            # is placed, and saved in the owner's quota turn (as ``declare_size`` does), so that
            # concatenations finishing at once each count the others' lengths; only the
            # declaration holds the turn, not the copy. It is saved with its expiry: if the copy
            # fails, it waits and expires as before. Refused, it can never complete: cancelled,
            # as a hook's refusal is.
            try:
                async with self.quota_turn(upload.owner):
                    total = sum(s.size_bytes or 0 for s in sources)
                    await self._check_declared_length(upload, total)
                    upload.declare_size(total)
                    upload.updated_at = now
                    await self.repo.save(dataclasses.replace(upload, expires_at=expires_at))
            except (Busy, StorageError):
                raise  # the owner's turn or storage not to be had now: it waits, settled again later
            except ChunkdError as exc:
                await self._fail(upload, f"refused: {exc}")
                return "cancelled", exc
        try:
            parts = await self._fill(upload, sources)
            waiting = upload.metadata.pop(CONCATENATION)  # done waiting: nothing left to record
            upload.updated_at = now
            try:
                await self.hooks.pre_finish(upload)
            except ContentRejected as exc:
                await self._discard_rejected(upload, exc)  # emits "rejected"
                return None, exc
            except ChunkdError as exc:
                upload.metadata[CONCATENATION] = waiting
                await self._fail(upload, f"refused: {exc}")
                return "cancelled", exc
            await self._finish(upload, now, md5=None, check=None)
            await self.repo.save(upload, parts, events=[Event.for_upload(EventType.UPLOAD_COMPLETED, upload, now)])
            await self._release_completed(upload)
        except BaseException:
            if upload.status is Status.PENDING:
                await self.blobs.delete(upload)  # whatever was placed; the upload waits as before
                upload.parts = {}
            raise
        return "completed", None

    async def _fill(self, upload: Upload, sources: list[Upload]) -> list[Part]:
        """Append the bytes of ``sources`` (each held by its lock, so none is deleted meanwhile)
        to ``upload``, carrying the whole-file MD5 over them."""
        total = sum(source.size_bytes or 0 for source in sources)
        if upload.size_bytes is None:
            upload.declare_size(total)
        elif upload.size_bytes != total:
            raise InvalidState(f"the sources hold {total} bytes, not {upload.size_bytes}", field="sources")
        # MD5 states cannot be combined, so the whole-file MD5 is computed here once, over the
        # placed bytes read back from storage (normally the page cache): linking or copying inside
        # the store saves the copy, not the read. The first source needs no read: the states it
        # kept are the new upload's too. When copying through chunkd, the copy is hashed as it passes.
        whole = _Hashing(ResumableMD5())
        placed: list[Part] = []
        for source in sources:
            async with self.locks.hold(source.id, timeout=self.config.lock_timeout):
                current = await self.get(upload.owner, source.id, with_parts=self.caps.copier is None)
                if current.status is not Status.COMPLETED:
                    raise InvalidState(f"upload {source.id} is {current.status.value}", field="sources")
                # Nothing placed yet: this source's own hash states are the new upload's.
                first = upload.bytes_received == 0
                if self.caps.copier is not None:
                    if current.size_bytes:
                        piece = await self._copy_whole(current, upload, whole, first=first)
                        upload.record_append(piece, None, whole.md5.state())
                        placed.append(piece)
                    continue
                for part in current.sorted_parts():
                    piece = await self._place(current, part, upload, whole, first=first)
                    upload.record_append(piece, None, whole.md5.state())
                    placed.append(piece)
        return placed

    async def _copy_whole(self, source: Upload, target: Upload, whole: _Hashing, *, first: bool) -> Part:
        """``source``'s whole file as the next part of ``target``, copied inside the store."""
        assert self.caps.copier is not None and source.size_bytes
        number, offset = target.parts_received + 1, target.bytes_received
        ref = await self.caps.copier.copy_upload(source, target, number, offset)
        part = Part(
            number=number,
            offset=offset,
            size=source.size_bytes,
            md5=source.md5 or "",  # the source's whole-file MD5 is this part's own
            blob_ref=ref,
            created_at=self.clock(),
            crc64=source.crc64 or "",
        )
        if first and source.hash_offset == source.size_bytes and source.hash_state and part.crc64:
            whole.md5 = ResumableMD5(source.hash_state)
        else:
            part.crc64 = await self._hash(target, part, whole)
        return part

    async def _place(self, source: Upload, part: Part, target: Upload, whole: _Hashing, *, first: bool) -> Part:
        """``source``'s ``part`` as the next part of ``target``: linked where the store can, else
        copied through chunkd; its bytes go into ``whole``."""
        number, offset = target.parts_received + 1, target.bytes_received
        placed = Part(
            number=number,
            offset=offset,
            size=part.size,
            md5=part.md5,
            blob_ref="",
            created_at=self.clock(),
            crc64=part.crc64,
        )
        linker = self.caps.linker
        if linker is not None:
            placed.blob_ref = await linker.link_part(source, part, target, number, offset)
            if first and part.hash_state is not None and part.crc64:
                whole.md5 = ResumableMD5(part.hash_state)
            else:
                placed.crc64 = await self._hash(target, placed, whole)
            return placed
        writer = await self.blobs.open_writer(target, number, offset)
        streamed = StreamedPart(writer, whole.md5, None)
        try:
            async for chunk in self.blobs.read_part(source, part):
                await streamed.feed([chunk])
            placed.blob_ref = await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        placed.crc64 = streamed.crc_hex
        return placed

    async def _hash(self, upload: Upload, part: Part, whole: _Hashing) -> str:
        """Read ``part`` of ``upload`` back into ``whole``; returns its CRC (the one it has, or
        computed on the way)."""
        crc = None if part.crc64 else Crc64Hasher()

        def feed(chunk: bytes) -> None:  # both digests in one worker-thread hop, off the event loop
            whole.md5.update(chunk)
            if crc is not None:
                crc.update(chunk)

        await self._feed_part(upload, part, feed)
        return crc.hexdigest() if crc is not None else part.crc64

    async def _fail(self, upload: Upload, reason: str) -> None:
        """A concatenation that cannot be completed: cancelled, bytes freed, the reason recorded
        (its lock is held)."""
        now = self.clock()
        upload.mark_cancelled(now)
        upload.metadata[CONCATENATION].update(waiting=False, failed=reason)
        cancelled = Event.for_upload(EventType.UPLOAD_CANCELLED, upload, now, parts=())
        await self.repo.save(upload, removed_parts=list(upload.parts), events=[cancelled])
        await self._free(upload)
        upload.parts = {}

    async def _remove(self, upload: Upload) -> None:
        await self.blobs.delete(upload)
        await self.repo.delete_upload(
            upload.id, [Event.for_upload(EventType.UPLOAD_DELETED, upload, self.clock(), parts=())]
        )
        await self._emit("deleted", upload)  # as ``delete`` does: the outbox has it

    async def _finished_instead_of_expired(self, upload_id: str) -> bool:
        """A waiting concatenation due to expire is settled first. Its sources may all have ended
        with nobody left to settle it: a crash between the last source's completion and the
        assembly (``_source_ended``), or an error there. It then completes (or is cancelled, if a
        source went away) rather than expiring over finished sources."""
        upload = await self.repo.get(upload_id, parts_from=None)
        if upload is None or waiting_for(upload) is None:
            return False
        try:
            settled = await self.finish_concatenation(upload.owner, upload_id)
        except Exception:
            warn_failed(log, "could not settle concatenation %s before its expiry", upload_id)
            return False
        return settled.status is not Status.PENDING

    async def _source_ended(self, event: str, source: Upload) -> None:
        """A concatenation source finished or went away: settle the concatenations waiting on it.
        Never raises (the request that ended the source has succeeded); a concatenation left
        waiting by an error is settled again by ``finish_concatenation`` (tus: its next HEAD)."""
        if event == "created" or not source.metadata.get(CONCATENATION_SOURCE):
            return
        try:
            waiting = await self._waiting_on(source)
        except Exception:
            warn_failed(log, "could not look for concatenations waiting on upload %s", source.id)
            return
        for upload_id in waiting:
            try:
                await self.finish_concatenation(source.owner, upload_id)
            except NotFound:
                # Removed since it was found: deleted, or its creation met this very source's end
                # and gave up (a DELETE of a partial racing the final's POST). Nothing to settle;
                # it was logged as a failure, with a traceback, each time a client did that.
                continue
            except Exception:
                warn_failed(log, "could not finish concatenation %s after %s", upload_id, source.id)

    async def _waiting_on(self, source: Upload) -> list[str]:
        """Ids of the owner's waiting concatenations that name ``source``."""
        found: list[str] = []
        before = None
        while True:
            page = await self.repo.list_uploads(source.owner, status=Status.PENDING, limit=_SCAN_PAGE, before=before)
            found.extend(u.id for u in page if source.id in (waiting_for(u) or ()))
            if len(page) < _SCAN_PAGE:
                return found
            before = (page[-1].created_at, page[-1].id)
