"""Numbered parts (PARTS mode): one part per request, in any order and in parallel, or the whole
body in one PUT stored as consecutive parts. Parts stream without the upload's lock; only their
short commit (metadata + hash frontier) runs under it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

from chunkd.domain.checksum import ResumableMD5, StreamHasher
from chunkd.domain.errors import (
    ChecksumMismatch,
    InvalidState,
    NotFound,
    PartSizeMismatch,
    SizeMismatch,
    StorageError,
)
from chunkd.domain.upload import Mode, Part, Upload
from chunkd.service.lifecycle import Lifecycle
from chunkd.service.streaming import BodyReader, StreamedPart, stream_into

__all__ = ["Parts"]

log = logging.getLogger("chunkd.service")


class Parts(Lifecycle):
    """Storing numbered parts (a part of an upload whose size is not declared yet counts against
    the byte quotas, in the owner's quota turn, which the lifecycle keeps)."""

    async def put_part(
        self,
        owner: str,
        upload_id: str,
        number: int,
        body: AsyncIterator[bytes],
        *,
        content_md5: str | None = None,
        declared_size: int | None = None,
        md5_etag: bool = False,
        digest: tuple[StreamHasher, bytes, str] | None = None,
        last: bool = False,
    ) -> Part:
        """Store part ``number`` (1-based) of a PARTS upload; replaces an earlier copy atomically.
        ``declared_size`` (a request's Content-Length) refuses a wrong-sized part before any byte of
        it is read; the streamed size is checked in any case. The part's own MD5 is computed only
        when ``content_md5`` is to be checked or the dialect's ETag is an MD5 (``md5_etag``);
        otherwise its checksum is its CRC-64/NVME. ``digest``: (hasher, expected digest, the field
        that carried it), verified over the part's bytes before it is acknowledged. ``last``: the
        caller knows this part ends a file whose size is not yet declared (it may be shorter than
        the part size)."""
        upload = await self.get(owner, upload_id, with_parts=False)
        upload.ensure_pending(self.clock())
        upload.check_part_number(number)
        if declared_size is not None:
            upload.check_part_size(number, declared_size)
        expected = upload.expected_part_size(number)
        streamed = await self._stream_part(
            upload,
            number,
            body,
            limit=expected,
            limit_error=lambda: PartSizeMismatch(
                f"part {number} must be {expected} bytes; the body is longer", field="body", expectedSize=expected
            ),
            part_md5=content_md5 is not None or md5_etag,
            extra=digest[0] if digest is not None else None,
        )
        try:
            upload.check_part_size(number, streamed.size, last=last)
            if content_md5 is not None and content_md5 != streamed.md5:
                raise ChecksumMismatch(
                    "the part's bytes do not match its Content-MD5", field="Content-MD5", actualMd5=streamed.md5
                )
            if digest is not None and streamed.extra is not None and streamed.extra.digest() != digest[1]:
                raise ChecksumMismatch(f"the part's bytes do not match its {digest[2]}", field=digest[2])
        except BaseException:
            await streamed.writer.abort()
            raise
        return await self._commit_part(owner, upload_id, number, streamed, upload)

    async def settle_part_size(self, owner: str, upload_id: str) -> Upload:
        """An upload created with a provisional part size (``PART_SIZE_FROM_PART_1``) takes part 1's
        size, now that part 1 is stored, as its part size; a no-op once settled."""
        async with self.locks.hold(upload_id, timeout=self.config.lock_timeout):
            upload = await self.get(owner, upload_id)
            upload.ensure_pending(self.clock())
            if upload.settle_part_size():
                upload.updated_at = self.clock()
                await self.repo.save(upload)
        return upload

    async def put_whole(
        self,
        owner: str,
        upload_id: str,
        body: AsyncIterator[bytes],
        *,
        content_md5: str | None = None,
        digest: tuple[StreamHasher, bytes, str] | None = None,
    ) -> Upload:
        """One PUT of the whole file, stored as the upload's parts one after another (each durable
        as soon as it is complete, so a broken PUT can be resumed part by part).

        A part the upload already holds is replaced only once the whole body has arrived, of the
        right length: until then its new bytes are durable but not recorded. A body refused for
        its length (a chunked one shows it only at its end), or broken off, so never replaces a
        stored part; it used to, and a later complete without an MD5 stored the wrong bytes.

        ``content_md5`` (hex) and ``digest`` ((hasher, expected digest, the field that carried
        it), as ``put_part``'s) are checked over the whole body before any part of it is recorded:
        every part is then held as a replaced one is (durable, not recorded), so a mismatch (a
        ``ChecksumMismatch`` naming the field) or a crash leaves the upload as it was, pending and
        open to a fresh PUT. The MD5 is the whole-file MD5 the parts are hashed into as they
        arrive, begun afresh at byte 0 (the upload's own frontier may be past earlier bytes), and
        ``digest``'s hasher runs on across the parts; nothing is read back."""
        upload = await self.get(owner, upload_id, with_parts=False)
        upload.ensure_pending(self.clock())
        if upload.mode is not Mode.PARTS or upload.size_bytes is None:
            raise InvalidState("this upload does not take a whole-file PUT")
        verified = content_md5 is not None or digest is not None
        stored: set[int] = set()
        if upload.parts_received:
            stored = set((await self.get(owner, upload_id)).parts)
        reader = BodyReader(body)
        count = upload.part_count or 0
        # Part n is made durable and recorded while part n+1 streams in (the fsync and the metadata
        # write no longer stall the body); commits still run one at a time, in order.
        # Nor does a part's end wait for its last writes, MD5 and sync: the next part streams in
        # meanwhile, its whole-file MD5 continuing in the same lane (8 MiB parts: the body stalled
        # at each of them while the pipeline drained and refilled; a 512 MiB PUT took 1.41–1.50 s,
        # against 1.22–1.24 s with 64 MiB parts).
        committing: asyncio.Task[Part] | None = None
        streamed: StreamedPart | None = None
        held: list[tuple[int, StreamedPart, str]] = []  # durable, not recorded yet (replacements; a checked PUT's)
        try:
            for number in range(1, count + 1):
                expected = upload.expected_part_size(number)
                streamed = await self._stream_part(
                    upload,
                    number,
                    reader.slice(expected),
                    limit=None,
                    follows=streamed,
                    wait=False,
                    whole=ResumableMD5() if verified and number == 1 else None,
                    extra=digest[0] if digest is not None else None,
                )
                if streamed.received != expected:
                    await streamed.abandon()
                    raise SizeMismatch(
                        f"the body ended after {upload.offset_of(number) + streamed.received} bytes; "
                        f"sizeBytes is {upload.size_bytes}",
                        field="body",
                    )
                if number == count and not await reader.at_end():
                    # Too long (only a chunked body shows it, at its end): the last part goes with
                    # the refusal, so the upload never holds a whole file the client sent wrong.
                    await streamed.abandon()
                    raise SizeMismatch(f"the body is longer than sizeBytes ({upload.size_bytes})", field="body")
                if committing is not None:
                    previous, committing = committing, None
                    try:
                        await previous
                    except BaseException:
                        await streamed.abandon()
                        raise
                if number in stored or verified:
                    # Landed before the next part streams, so ``digest``'s one hasher sees the
                    # parts' bytes in order.
                    held.append((number, streamed, await self._make_durable(owner, upload_id, streamed)))
                else:
                    committing = asyncio.create_task(self._commit_part(owner, upload_id, number, streamed, upload))
            if committing is not None:
                previous, committing = committing, None
                await previous
            if not await reader.at_end():
                raise SizeMismatch(f"the body is longer than sizeBytes ({upload.size_bytes})", field="body")
            if verified:  # every part has landed: the hashers have seen the whole body
                _check_whole(streamed.whole_end if streamed is not None else None, content_md5, digest)
            if held:  # the whole body arrived, of the right length (and checked): the held parts count now
                recorded, held = held, []  # a failed record discards its own blobs
                await self._record_replacements(owner, upload_id, recorded, upload)
        finally:
            if committing is not None:
                # The body broke off (or was too short) after a whole part: that part is kept, so the
                # upload can be resumed from it; the error that stopped the body is the one raised.
                with contextlib.suppress(Exception):
                    await committing
            if held:
                await self.blobs.discard(upload, [ref for _, _, ref in held])
        return await self.get(owner, upload_id)

    async def _make_durable(self, owner: str, upload_id: str, streamed: StreamedPart) -> str:
        """Wait for ``streamed`` to land and commit its blob (durable, not recorded): its ref."""
        try:
            await streamed.landed()
            return await streamed.writer.commit()
        except StorageError:
            await streamed.abandon()
            await self._ensure_still_pending(owner, upload_id)
            raise
        except BaseException:
            await streamed.abandon()
            raise

    async def _stream_part(
        self,
        upload: Upload,
        number: int,
        body: AsyncIterator[bytes],
        *,
        limit: int | None,
        limit_error: Callable[[], Exception] | None = None,
        extra: StreamHasher | None = None,
        offset: int | None = None,
        part_md5: bool = False,
        follows: StreamedPart | None = None,
        wait: bool = True,
        whole: ResumableMD5 | None = None,
    ) -> StreamedPart:
        """``follows``: the part before this one in the same body (its whole-file hash goes on into
        this one). ``wait``: as ``stream_into``'s; the part's commit waits for it to land.
        ``whole``: the whole-file MD5 state to hash into, instead of the upload's frontier."""
        offset = upload.offset_of(number) if offset is None else offset
        # Hash into the whole-file state as we go when this part starts at the frontier.
        if whole is None and upload.hash_offset == offset and upload.hash_state:
            whole = ResumableMD5(upload.hash_state)
        await self.blobs.ensure_room()
        writer = await self.blobs.open_writer(upload, number, offset)
        streamed = StreamedPart(writer, whole, extra, part_md5=part_md5 or self.caps.part_md5, follows=follows)
        await self._keep_alive(upload)
        try:
            await stream_into(
                streamed,
                body,
                limit=limit,
                limit_error=limit_error,
                heartbeat=lambda: self.repo.touch(upload.id, self.clock() + self.config.ttl),
                heartbeat_every=self.config.heartbeat_every,
                wait=wait,
            )
        except StorageError:
            await writer.abort()
            await self._ensure_still_pending(upload.owner, upload.id)
            raise
        except BaseException:
            await writer.abort()
            raise
        return streamed

    async def _ensure_still_pending(self, owner: str, upload_id: str) -> None:
        """After a storage error on a part: raise the upload's own state error instead if it was
        cancelled, deleted or expired while the part streamed (its bytes, directory included,
        were freed under the part: that is why they could not be made durable, not a fault)."""
        current = await self.repo.get(upload_id, owner, parts_from=None)
        if current is None:
            raise NotFound(f"no upload with id {upload_id!r}", field="id")
        current.ensure_pending(self.clock())

    async def _keep_alive(self, upload: Upload) -> None:
        """Push ``expiresAt`` forward before bytes start to flow, unless it is already far off
        (every commit moves it to now + TTL, so parallel parts rarely need this extra write)."""
        horizon = self.clock() + self.config.ttl
        slack = timedelta(seconds=self.config.heartbeat_every)
        if upload.expires_at is None or upload.expires_at < horizon - slack:
            await self.repo.touch(upload.id, horizon)

    def _place_streamed(
        self, upload: Upload, number: int, streamed: StreamedPart, ref: str, now: datetime
    ) -> tuple[Part, Part | None]:
        """Place the durable blob ``ref`` as part ``number`` of ``upload`` (loaded under its lock,
        with the part it replaces): the new part and the one it replaces."""
        old = upload.parts.get(number)
        part = Part(
            number=number,
            offset=upload.offset_of(number),
            size=streamed.size,
            md5=streamed.md5,
            blob_ref=ref,
            created_at=now,
            crc64=streamed.crc_hex,
        )
        upload.place_part(part, old, hashed_from=streamed.whole_start, hashed_to=streamed.whole_end)
        upload.expires_at = now + self.config.ttl
        upload.updated_at = now
        if self.caps.settler is not None:
            self.caps.settler.invalidate(upload, part, old)
        return part, old

    async def _record_replacements(
        self, owner: str, upload_id: str, held: list[tuple[int, StreamedPart, str]], opened: Upload
    ) -> None:
        """Record a whole-file PUT's parts held until its whole body arrived (replacements of
        parts the upload held; every part of a PUT checked against a digest), all in one write
        under its lock: a crash (or a failure) leaves the old parts or the new ones, never
        some of each (recorded one by one, a kill between two left a file nobody sent, which a
        complete without an MD5 took). The PUT declared the size: no byte quota moves."""
        numbers = [number for number, _, _ in held]
        upload = opened
        saving = False  # from here on, a failure may come after the record's commit
        try:
            async with self.locks.hold(upload_id, timeout=self.config.lock_timeout):
                loaded = await self.repo.get(
                    upload_id,
                    owner,
                    parts_from=lambda row: min(row.frontier_part_number(), max(min(numbers) - 1, 1)),
                    part_numbers=numbers,
                )
                if loaded is None:
                    raise NotFound(f"no upload with id {upload_id!r}", field="id")
                upload = loaded
                now = self.clock()
                upload.ensure_pending(now)
                placed = [self._place_streamed(upload, number, streamed, ref, now) for number, streamed, ref in held]
                saving = True
                await self.repo.save(upload, [part for part, _ in placed])
                for part, _ in placed:
                    await self._settle(upload, part)
        except BaseException as exc:
            if not saving:
                await self.blobs.discard(upload, [ref for _, _, ref in held])
            for number, _, ref in held if saving else ():
                await self._discard_unrecorded(upload, number, ref, exc)
            raise
        replaced = [old.blob_ref for part, old in placed if old is not None and old.blob_ref != part.blob_ref]
        if replaced:
            await self.blobs.discard(upload, replaced)
        if upload.next_part_to_hash() is not None:
            await self._carry_hash(upload)

    async def _commit_part(
        self, owner: str, upload_id: str, number: int, streamed: StreamedPart, opened: Upload, ref: str | None = None
    ) -> Part:
        """Make the streamed part durable (unless ``ref``: it is, as that blob), then record it
        under the upload's lock."""
        saving = False  # from here on, a failure may come after the record's commit
        upload = opened
        try:
            # Make the bytes durable before taking the lock: the commit may be slow (an fsync, or
            # the whole transfer to object storage) and must not serialise an upload's parallel
            # parts. Nothing points at the blob until the metadata is saved under the lock.
            try:
                if ref is None:
                    await streamed.landed()
                    ref = await streamed.writer.commit()
            except StorageError:
                await self._ensure_still_pending(owner, upload_id)
                raise
            async with self.locks.hold(upload_id, timeout=self.config.lock_timeout):
                # Load only the parts this commit can touch: from the hash frontier (or the part
                # before this one) onwards, plus this number (a replaced part).
                loaded = await self.repo.get(
                    upload_id,
                    owner,
                    parts_from=lambda row: min(row.frontier_part_number(), max(number - 1, 1)),
                    part_numbers=[number],
                )
                if loaded is None:
                    raise NotFound(f"no upload with id {upload_id!r}", field="id")
                upload = loaded
                now = self.clock()
                upload.ensure_pending(now)
                part, old = self._place_streamed(upload, number, streamed, ref, now)
                # A part of an upload whose size is not declared yet (a Fine Uploader file sent without
                # its total size) counts as it arrives: without the check one such upload took any
                # number of parts past every byte quota (a size declared later counts what it adds).
                grown = part.size - (old.size if old is not None else 0) if upload.size_bytes is None else 0
                async with self.bytes_in_quota(upload.owner, grown):
                    saving = True
                    await self.repo.save(upload, [part])
                await self._settle(upload, part)
        except BaseException as exc:
            if ref is None:
                await streamed.abandon()
            elif saving:
                await self._discard_unrecorded(upload, number, ref, exc)
            else:
                await self.blobs.discard(upload, [ref])
            raise
        if old is not None and old.blob_ref != part.blob_ref:
            await self.blobs.discard(upload, [old.blob_ref])
        if upload.next_part_to_hash() is not None:
            # Parts that arrived ahead of the frontier (this one, or ones this part made contiguous)
            # are hashed now, outside the lock, so parallel parts' commits never wait behind an MD5.
            await self._carry_hash(upload)
        return part


def _check_whole(
    whole_state: bytes | None, content_md5: str | None, digest: tuple[StreamHasher, bytes, str] | None
) -> None:
    """Refuse a whole-file PUT whose bytes do not match what its request declared. ``whole_state``:
    the whole-file MD5 state after the body's last part (None: the body was empty)."""
    if content_md5 is not None:
        actual = ResumableMD5(whole_state).hexdigest()
        if actual != content_md5:
            raise ChecksumMismatch(
                "the file's bytes do not match its Content-MD5", field="Content-MD5", actualMd5=actual
            )
    if digest is not None and digest[0].digest() != digest[1]:
        raise ChecksumMismatch(f"the file's bytes do not match its {digest[2]}", field=digest[2])
