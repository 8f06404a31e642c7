"""Appended bytes (APPEND mode: tus PATCH, Content-Range and Fine Uploader chunks): one writer at a
time, at the current end, continuing the upload's last blob where the store can; and a length
declared later (tus Upload-Defer-Length)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from chunkd.domain.checksum import ResumableMD5, StreamHasher
from chunkd.domain.errors import (
    ChecksumMismatch,
    ChunkdError,
    NotFound,
    SizeMismatch,
    StorageError,
    TooLarge,
)
from chunkd.domain.events import Event, EventType
from chunkd.domain.names import is_upload_id
from chunkd.domain.upload import Part, Upload
from chunkd.service.hooks import ContentRejected
from chunkd.service.lifecycle import Lifecycle
from chunkd.service.quotas import byte_room
from chunkd.service.streaming import StreamedPart, stream_into

__all__ = ["Appends"]

log = logging.getLogger("chunkd.service")


class Appends(Lifecycle):
    """Appending bytes (finishing an upload the append fills needs the lifecycle)."""

    async def _load_for_append(self, owner: str, upload_id: str) -> Upload:
        """The upload row with its last part (the one an append continues), in one read."""
        upload = None
        if is_upload_id(upload_id):
            upload = await self.repo.get(upload_id, owner, parts_from=lambda row: max(row.parts_received, 1))
        if upload is None:
            raise NotFound(f"no upload with id {upload_id!r}", field="id")
        return upload

    async def append(
        self,
        owner: str,
        upload_id: str,
        offset: int,
        body: AsyncIterator[bytes],
        *,
        checksum: tuple[StreamHasher, bytes | Callable[[], bytes], str] | None = None,
        keep_partial: bool = True,
        max_bytes: int | None = None,
        exact_size: int | None = None,
        lock_timeout: float = 0.0,
        finish: bool = False,
        inspect: Callable[[Upload], None] | None = None,
        declare_length: int | None = None,
        created: Upload | None = None,
        stored: Awaitable[None] | None = None,
        store_created: bool = False,
    ) -> Upload:
        """Append bytes at ``offset`` (which must be the current end) to an APPEND upload.

        One writer at a time: the lock is held while the body streams; a second writer gets
        ``Busy``. Where the store can (``PartAppender``), the bytes continue the upload's last
        part in place: one blob per upload, not one per request, so no number of appends comes
        near the part ceiling. If the body breaks off (client gone), the bytes that arrived and
        were written are kept when ``keep_partial`` and no ``checksum`` is to be verified.
        ``checksum`` is (hasher, expected digest) over this request's bytes — the digest may be a
        callable, asked once the body has ended (a checksum sent as a trailer); on mismatch none of
        them are kept. Past the declared size (or ``max_bytes``) reading stops and nothing of this
        request is kept. ``exact_size``: the body must be exactly that long (a chunk whose length
        a header announced); a longer or shorter body is refused with ``SizeMismatch`` and nothing
        of it is kept. A storage fault (``StorageError``) keeps nothing of the request either: the
        offset stays at the last durable byte and the client resumes there once storage is back.
        ``finish``: when the bytes reach the declared size, complete the upload under the same
        lock and in the same write (tus: the PATCH that ends an upload). ``inspect``: a frontend's
        own checks on the row just loaded, before anything else (it may raise). ``declare_length``:
        fix a deferred length in the same write (tus Upload-Length on a PATCH). ``created``: the
        upload exactly as this same request just created it (its id not yet given to anyone:
        tus creation-with-upload), used instead of loading it again; ``stored``: its creation's
        write, still under way while the body streams (its sync then overlaps the body's), awaited
        before this append writes anything (the caller awaits it on every other way out). So one
        request costs one lock, one load and one write. ``store_created``: ``created`` is not stored
        yet, and this append stores it: its row, its ``upload.created`` event and the bytes that
        arrived in one write (and the upload alone when none did). If the append fails before it
        writes, the upload is never stored."""
        finished = False
        finish_after_turn = False  # filled in the owner's quota turn: finished once out of it
        unstored: Event | None = None  # the created event of an upload this append must store
        if store_created:
            assert created is not None and created.id == upload_id and stored is None
            unstored = Event.for_upload(EventType.UPLOAD_CREATED, created, created.created_at)
        refused: ChunkdError | None = None  # a pre-finish hook's refusal of the upload this fills
        async with self.locks.hold(upload_id, timeout=lock_timeout):
            if created is not None and created.id == upload_id and created.owner == owner:
                upload = created
            else:
                upload = await self._load_for_append(owner, upload_id)
            if inspect is not None:
                inspect(upload)
            now = self.clock()
            upload.ensure_pending(now)
            upload.check_append(offset)
            declared = False  # this request fixes a deferred length
            received = upload.bytes_received  # what the owner's usage counts for it until this saves
            if declare_length is not None and upload.size_bytes != declare_length:
                await self._check_declared_length(upload, declare_length)
                upload.size_bytes, declared = declare_length, True
            deferred = upload.size_bytes is None
            room = upload.room_left()
            cap = room if room is not None else self.config.max_file_size - offset
            if max_bytes is not None:
                cap = min(cap, max_bytes)
            over: Exception = TooLarge(f"the body goes past the upload's length ({offset + cap} bytes)", field="body")
            if upload.size_bytes is None:
                # A deferred length declares nothing up front: its bytes count against the quotas as they come.
                quota = await byte_room(self.repo, self.config, owner)
                if quota is not None and quota[0] < cap:
                    cap, over = quota
            if exact_size is not None:
                if exact_size > cap:
                    raise over
                cap, keep_partial = exact_size, False
                over = SizeMismatch(f"the body is longer than {exact_size} bytes", field="body")
            await self.blobs.ensure_room()
            last = upload.last_part()
            appender = self.caps.appender
            if appender is not None and last is not None and last.crc64:
                extended: Part | None = last
                writer = await appender.open_appender(upload, last)
                number, part_offset, seed = last.number, last.offset, int(last.crc64, 16)
            else:
                # A new blob: the first append, a store that cannot grow one, or a part stored
                # before parts had a CRC to continue.
                extended = None
                number, part_offset, seed = upload.parts_received + 1, offset, 0
                writer = await self.blobs.open_writer(upload, number, offset)
            streamed = StreamedPart(
                writer, ResumableMD5(upload.hash_state), checksum[0] if checksum else None, crc_seed=seed
            )
            broken: Exception | None = None
            try:
                await stream_into(
                    streamed,
                    body,
                    limit=cap,
                    limit_error=lambda: over,
                    heartbeat=lambda: self.repo.touch(upload.id, self.clock() + self.config.ttl),
                    heartbeat_every=self.config.heartbeat_every,
                )
            except (TooLarge, SizeMismatch, StorageError):
                await writer.abort()
                raise
            except Exception as exc:  # the body broke off: the client went away, timed out or was taken over
                broken = exc
            except BaseException:
                await writer.abort()
                raise
            try:
                if broken is not None and (not keep_partial or checksum is not None):
                    raise broken
                if checksum is not None and streamed.extra is not None:
                    expected = checksum[1]() if callable(checksum[1]) else checksum[1]
                    if streamed.extra.digest() != expected:
                        raise ChecksumMismatch(f"the body does not match {checksum[2]}", field=checksum[2])
                if exact_size is not None and streamed.size != exact_size:
                    raise SizeMismatch(f"the body has {streamed.size} bytes, not {exact_size}", field="body")
            except BaseException:
                await writer.abort()
                raise
            if stored is not None:
                # The row everything below updates, and that hooks and webhooks may look up.
                try:
                    await stored
                except BaseException:
                    await writer.abort()
                    raise
            # Bytes of a deferred length count against the byte quotas as they come, and a length
            # declared here counts whole: checked again, with the save, in the owner's quota turn,
            # so parallel appends to several such uploads cannot each fill the same room (three of
            # 900 bytes held 1,800 of 1,000).
            counted = streamed.size if deferred else (upload.size_bytes or 0) - received if declared else 0
            async with self.bytes_in_quota(owner, counted, on_refusal=writer.abort):
                if streamed.size == 0:
                    await writer.abort()
                    if unstored is not None:
                        await self.store_new(upload, unstored)
                        unstored = None
                    elif declared and broken is None and not (finish and upload.bytes_received == upload.size_bytes):
                        # A body-less PATCH that declares a deferred length: the length alone is the
                        # change (when it equals the offset, finishing below saves it).
                        upload.updated_at = self.clock()
                        await self.repo.save(upload)
                else:
                    try:
                        ref = await writer.commit()
                    except BaseException:
                        await writer.abort()
                        raise
                    assert streamed.whole is not None
                    part = Part(
                        number=number,
                        offset=part_offset,
                        size=(extended.size if extended is not None else 0) + streamed.size,
                        md5="",
                        blob_ref=ref,
                        created_at=extended.created_at if extended is not None else now,
                        crc64=streamed.crc_hex,
                    )
                    upload.record_append(part, extended, streamed.whole.state())
                    upload.updated_at = self.clock()
                    upload.expires_at = upload.updated_at + self.config.ttl
                    if self.caps.settler is not None:
                        self.caps.settler.invalidate(upload, part, extended)
                    filled = finish and broken is None and upload.bytes_received == upload.size_bytes
                    if filled and counted and self.config.has_quotas:
                        # Saved first, and finished below, outside the owner's quota turn: a
                        # pre-finish hook or a virus scan of the whole file must not hold every other
                        # creation of the owner's (they wait for the turn, then get 423).
                        finish_after_turn = True
                    elif filled:
                        if len(upload.parts) != upload.parts_received:  # the store needs every part to finish
                            # The stored parts, and over them the ones this append holds in memory: the
                            # part it just made (or grew) is not saved yet, so the database lacks it.
                            upload.parts = {**await self._all_parts(upload), **upload.parts}
                        try:
                            await self.hooks.pre_finish(upload)
                        except ChunkdError as exc:
                            refused = exc  # the part is kept and the upload stays PENDING (or is discarded below)
                        else:
                            await self._finish(upload, now, md5=None, check=None)
                            finished = True
                    try:
                        done = [Event.for_upload(EventType.UPLOAD_COMPLETED, upload, now)] if finished else []
                        if unstored is not None:
                            await self.repo.create(upload, [unstored, *done], parts=[part])
                        else:
                            await self.repo.save(upload, [part], events=done)
                    except BaseException as exc:
                        if extended is None:
                            await self._discard_unrecorded(upload, part.number, ref, exc)
                        raise
                    if unstored is not None:
                        unstored = None
                        await self._emit("created", upload)
                    if not finished and not finish_after_turn:
                        await self._settle(upload, part)
            if broken is not None:
                raise broken
            if refused is not None:
                if isinstance(refused, ContentRejected):
                    await self._discard_rejected(upload, refused)
                raise refused
            if finish and not finished and upload.size_bytes is not None and upload.bytes_received == upload.size_bytes:
                # Nothing arrived, but the upload was already full (e.g. a zero-length upload), or
                # the bytes that filled it were saved in the owner's quota turn (above).
                if len(upload.parts) != upload.parts_received:
                    upload.parts = await self._all_parts(upload)
                try:
                    await self.hooks.pre_finish(upload)
                except ContentRejected as exc:
                    await self._discard_rejected(upload, exc)
                    raise
                await self._finish(upload, now, md5=None, check=None)
                await self.repo.save(upload, events=[Event.for_upload(EventType.UPLOAD_COMPLETED, upload, now)])
                finished = True
        if finished:
            await self._release_completed(upload)
            await self._emit("completed", upload)
        return upload

    async def _all_parts(self, upload: Upload) -> dict[int, Part]:
        loaded = await self.repo.get(upload.id, parts_from=1)
        return loaded.parts if loaded is not None else {}

    async def declare_size(self, owner: str, upload_id: str, size_bytes: int) -> Upload:
        """Fix the size of an APPEND upload created without one (tus Upload-Defer-Length)."""
        async with self.locks.hold(upload_id, timeout=self.config.lock_timeout):
            upload = await self.get(owner, upload_id, with_parts=False)
            upload.ensure_pending(self.clock())
            if upload.size_bytes == size_bytes:
                return upload
            # In the owner's quota turn, as a creation: parallel declarations for several uploads
            # each read the same usage, and passed a byte quota only one of them fitted in.
            async with self.quota_turn(owner):
                await self._check_declared_length(upload, size_bytes)
                upload.size_bytes = size_bytes
                upload.updated_at = self.clock()
                await self.repo.save(upload)
        return upload
