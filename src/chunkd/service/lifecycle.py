"""An upload's life: create, complete (verify and finish), rename, cancel, delete, and expiry of idle uploads."""

from __future__ import annotations

import contextlib
import json
import logging
import mimetypes
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from chunkd.domain.checksum import ResumableMD5
from chunkd.domain.errors import (
    Busy,
    ChecksumMismatch,
    ContentRefused,
    ForeignStore,
    InvalidInput,
    InvalidState,
    TooLarge,
)
from chunkd.domain.events import Event, EventType
from chunkd.domain.metadata import REJECTED
from chunkd.domain.names import check_client_ref, clean_filename, media_type, new_upload_id
from chunkd.domain.parts import choose_part_size, part_count
from chunkd.domain.upload import MAX_PARTS, Mode, Status, Upload
from chunkd.service.core import EngineCore
from chunkd.service.crc import crc64_combine, crc64_hex
from chunkd.service.hooks import ContentRejected
from chunkd.service.quotas import byte_room, check_new_upload

__all__ = ["Lifecycle"]

log = logging.getLogger("chunkd.service")


class Lifecycle(EngineCore):
    """Creating and finishing uploads."""

    async def create(
        self,
        owner: str,
        *,
        filename: str,
        size_bytes: int | None,
        mime_type: str | None = None,
        md5: str | None = None,
        part_size: int | None = None,
        mode: Mode = Mode.PARTS,
        frontend: str = "native",
        client_ref: str | None = None,
        metadata: dict[str, Any] | None = None,
        strict_part_size: bool = True,
        defer_size: bool = False,
    ) -> Upload:
        """A new PENDING upload, stored. PARTS uploads need ``size_bytes`` unless ``defer_size``
        (the size is then declared with ``declare_size`` once the last part is known); APPEND
        uploads may always defer it."""
        async with self.quota_turn(owner):
            upload = await self.new(
                owner,
                filename=filename,
                size_bytes=size_bytes,
                mime_type=mime_type,
                md5=md5,
                part_size=part_size,
                mode=mode,
                frontend=frontend,
                client_ref=client_ref,
                metadata=metadata,
                strict_part_size=strict_part_size,
                defer_size=defer_size,
            )
            await self.store_new(upload)
        return upload

    @contextlib.asynccontextmanager
    async def client_ref_turn(self, owner: str, frontend: str, client_ref: str | None) -> AsyncIterator[None]:
        """One request at a time per client reference (an ``Idempotency-Key``), on every node, for
        the block that looks for the upload it made and makes it if there is none. Without it, a
        create sent again while the first was still running passed the look (nothing stored yet)
        and met the limits the first had just taken: through an upload link at its ``maxFiles``,
        a 403 ``quota_exceeded`` instead of the upload. No reference: nothing to wait for."""
        if client_ref is None:
            yield
            return
        name = json.dumps(["client_ref", frontend, owner, client_ref])  # unambiguous whatever the owner's name
        async with self.locks.hold(name, timeout=self.config.lock_timeout):
            yield

    @contextlib.asynccontextmanager
    async def quota_turn(self, owner: str) -> AsyncIterator[None]:
        """With quotas set: one creation of ``owner``'s at a time, from its quota check (``new``)
        to its row's commit (``store_new``), on every node (a lock of the upload locks' kind, on
        the owner). Without it, parallel creations each read the same usage and passed a quota
        only one of them fitted in (20 at once against a quota of 3 pending uploads: 7 made).
        Without quotas: nothing to wait for."""
        if not self.config.has_quotas:
            yield
            return
        async with self.locks.hold(f"quota:{owner}", timeout=self.config.lock_timeout):
            yield

    @contextlib.asynccontextmanager
    async def bytes_in_quota(
        self, owner: str, size: int, *, on_refusal: Callable[[], Awaitable[None]] | None = None
    ) -> AsyncIterator[None]:
        """With byte quotas, for ``size`` bytes a write adds to ``owner``'s usage (bytes of an upload
        whose size is not declared yet count as they arrive; a size declared late counts for what
        it adds): the body runs in the owner's quota turn, after a check that they still fit (the
        room read when the body began may have been taken since); if not, ``on_refusal`` runs and
        the quota's error is raised. Without quotas, or nothing added: nothing."""
        if size <= 0 or not self.config.has_quotas:
            yield
            return
        async with self.quota_turn(owner):
            quota = await byte_room(self.repo, self.config, owner)
            if quota is not None and size > quota[0]:
                if on_refusal is not None:
                    await on_refusal()
                raise quota[1]
            yield

    async def store_new(self, upload: Upload, created: Event | None = None) -> None:
        """Store an upload made by ``new`` (with its ``upload.created`` event: ``created`` when the
        caller made it before the upload changed) and tell the subscribers."""
        created = created or Event.for_upload(EventType.UPLOAD_CREATED, upload, upload.created_at)
        await self.repo.create(upload, [created])
        await self._emit("created", upload)

    async def new(
        self,
        owner: str,
        *,
        filename: str,
        size_bytes: int | None,
        mime_type: str | None = None,
        md5: str | None = None,
        part_size: int | None = None,
        mode: Mode = Mode.PARTS,
        frontend: str = "native",
        client_ref: str | None = None,
        metadata: dict[str, Any] | None = None,
        strict_part_size: bool = True,
        defer_size: bool = False,
    ) -> Upload:
        """What ``create`` stores: the upload checked against the limits and quotas and passed by
        the pre-create hook, not stored yet (``store_new`` stores it)."""
        cfg = self.config
        filename = clean_filename(filename)
        if client_ref is not None:
            check_client_ref(client_ref)
        if size_bytes is not None:
            if size_bytes < 0:
                raise InvalidInput("sizeBytes must not be negative", field="sizeBytes")
            if size_bytes > cfg.max_file_size:
                raise TooLarge(
                    f"sizeBytes exceeds the maximum file size of {cfg.max_file_size} bytes",
                    field="sizeBytes",
                    limit="max_file_size",
                    maxSizeBytes=cfg.max_file_size,
                )
        elif mode is Mode.PARTS and not defer_size:
            raise InvalidInput("sizeBytes is required", field="sizeBytes")
        part_size = choose_part_size(
            size_bytes,
            part_size,
            default=cfg.default_part_size,
            minimum=cfg.min_part_size,
            maximum=cfg.max_part_size,
            mode=mode,
            strict=strict_part_size,
            ceiling=cfg.max_file_size,
        )
        guessed = mimetypes.guess_type(filename)[0]
        mime = media_type((mime_type or "").strip() or guessed or "application/octet-stream")
        await check_new_upload(self.repo, self.config, owner, size_bytes)
        await self.blobs.ensure_room()
        now = self.clock()
        upload = Upload(
            id=new_upload_id(),
            owner=owner,
            filename=filename,
            mime_type=mime,
            size_bytes=size_bytes,
            part_size=part_size,
            mode=mode,
            status=Status.PENDING,
            created_at=now,
            updated_at=now,
            expires_at=now + cfg.ttl,
            frontend=frontend,
            client_ref=client_ref,
            declared_md5=md5,
            hash_state=ResumableMD5().state(),
            metadata=dict(metadata or {}),
        )
        await self.hooks.pre_create(upload)  # may refuse, or set metadata
        return upload

    async def complete(
        self,
        owner: str,
        upload_id: str,
        *,
        md5: str | None = None,
        check: Callable[[Upload], Awaitable[None]] | None = None,
    ) -> Upload:
        """Verify and finish an upload. Idempotent: completing a COMPLETED upload returns it.
        Any failure (missing parts, wrong size, wrong MD5, ``check`` raising) leaves it PENDING.
        ``check`` lets a frontend validate the content (e.g. "is this really a PDF") first; what it
        records in ``upload.metadata`` is saved together with the COMPLETED status, or with the
        PENDING one when it raises ``ContentRefused``."""
        await self._hash_idle(upload_id)  # a hash run of this process going: let it finish, not redo it
        async with self.locks.hold(upload_id, timeout=self.config.lock_timeout):
            upload = await self.get(owner, upload_id)
            if upload.status is Status.COMPLETED:
                if md5 is not None and md5 != upload.md5:
                    raise ChecksumMismatch("md5 does not match the completed file", field="md5")
                return upload
            now = self.clock()
            upload.check_complete(now)
            advanced = await self._advance_hash(upload) if upload.hash_offset != upload.size_bytes else []
            if advanced:
                # Recorded before the store finishes the file: a complete retried after a crash
                # that kept the COMPLETED record from being written must not read them again.
                await self.repo.save(upload, advanced)
                advanced = []
            try:
                await self.hooks.pre_finish(upload)  # may refuse (stays PENDING) or record a result
                await self._finish(upload, now, md5=md5, check=check)
            except BaseException as exc:
                # A refused content keeps what the check recorded (the refusal itself, so the
                # same bytes are not inspected again); the upload stays PENDING either way.
                if advanced or isinstance(exc, ContentRefused):
                    await self.repo.save(upload, advanced)
                if isinstance(exc, ContentRejected):
                    await self._discard_rejected(upload, exc)
                raise
            await self.repo.save(upload, advanced, events=[Event.for_upload(EventType.UPLOAD_COMPLETED, upload, now)])
        await self._release_completed(upload)
        await self._emit("completed", upload)
        return upload

    async def _finish(
        self,
        upload: Upload,
        now: datetime,
        *,
        md5: str | None,
        check: Callable[[Upload], Awaitable[None]] | None,
    ) -> None:
        """The checks and steps that turn a full, hashed PENDING upload into a COMPLETED one, under
        its lock (the caller saves it). Raises, leaving it PENDING, when any check fails."""
        upload.check_complete(now)
        if upload.hash_offset != upload.size_bytes or upload.hash_state is None:
            raise InvalidState("the file's checksum is not available; re-send the parts after the gap")
        digest = ResumableMD5(upload.hash_state).hexdigest()
        for name, expected in (("md5", md5), ("md5 declared at creation", upload.declared_md5)):
            if expected is not None and expected != digest:
                raise ChecksumMismatch(
                    f"{name} {expected} does not match the uploaded bytes", field="md5", actualMd5=digest
                )
        if check is not None:
            await check(upload)
        await self.blobs.complete(upload)
        upload.crc64 = _whole_crc(upload)
        upload.mark_completed(now, digest)

    async def _check_declared_length(self, upload: Upload, size_bytes: int) -> None:
        """A deferred length may be set once: not below the bytes received, within the file size
        limit and the owner's byte quotas (a tus PATCH's ``Upload-Length``, a concatenation whose
        sources' lengths were not all known when it was made)."""
        if upload.size_bytes is not None:
            raise InvalidState("the upload's length is already set", field="sizeBytes")
        if size_bytes < upload.bytes_received:
            raise InvalidInput(f"length is below the {upload.bytes_received} bytes received", field="sizeBytes")
        if size_bytes > self.config.max_file_size:
            raise TooLarge(
                f"length exceeds the maximum file size of {self.config.max_file_size} bytes", field="sizeBytes"
            )
        if upload.mode is Mode.PARTS and part_count(size_bytes, upload.part_size) > MAX_PARTS:
            # As at creation: a PARTS upload never has more than MAX_PARTS parts (a Fine Uploader
            # file of 1-byte chunks declared 5 TB long would otherwise have 5e12 parts to check).
            raise InvalidInput(
                f"sizeBytes {size_bytes} in parts of {upload.part_size} bytes gives more than {MAX_PARTS} parts",
                field="sizeBytes",
            )
        quota = await byte_room(self.repo, self.config, upload.owner)
        if quota is not None and size_bytes - upload.bytes_received > quota[0]:
            raise quota[1]

    async def _discard_rejected(self, upload: Upload, error: ContentRejected) -> None:
        """An upload whose content was refused for good (e.g. infected): cancelled, bytes removed,
        ``upload.rejected`` emitted (the caller holds the upload's lock)."""
        now = self.clock()
        upload.mark_cancelled(now)
        upload.metadata[REJECTED] = {"reason": error.reason, **error.details}
        rejected = Event.for_upload(
            EventType.UPLOAD_REJECTED, upload, now, parts=(), extra={"rejection": upload.metadata[REJECTED]}
        )
        await self.repo.save(upload, removed_parts=list(upload.parts), events=[rejected])
        await self._free(upload)
        upload.parts = {}
        await self._emit("rejected", upload)

    async def pre_download(self, upload: Upload) -> None:
        """Ask the blocking hooks before a COMPLETED file is served (every dialect's download)."""
        await self.hooks.pre_download(upload)

    async def rename(
        self,
        owner: str,
        upload_id: str,
        filename: str,
        *,
        mime_type: str | None = None,
        note: Mapping[str, Any] | None = None,
        check: Callable[[Upload], None] | None = None,
    ) -> Upload:
        """Change the display filename (and optionally the media type) of an upload in any status:
        protocols such as Fine Uploader's name the file only when it is finished. ``note``: metadata
        entries recorded with the name (a dialect's mark that its naming request was seen).
        ``check`` may refuse the renaming (by raising), judged under the upload's lock on the upload
        as it is then (a dialect whose first naming request wins)."""
        filename = clean_filename(filename)
        checked_mime = media_type(mime_type) if mime_type is not None else None
        async with self.locks.hold(upload_id, timeout=self.config.lock_timeout):
            upload = await self.get(owner, upload_id, with_parts=False)
            if check is not None:
                check(upload)
            new_mime = checked_mime if checked_mime is not None else upload.mime_type
            noted = note is None or all(upload.metadata.get(k) == v for k, v in note.items())
            if upload.filename == filename and upload.mime_type == new_mime and noted:
                return upload
            upload.filename = filename
            upload.mime_type = new_mime
            if note is not None:
                upload.metadata = {**upload.metadata, **note}
            upload.updated_at = self.clock()
            await self.repo.save(upload)
        return upload

    async def cancel(self, owner: str, upload_id: str) -> Upload:
        """PENDING → CANCELLED; its bytes are freed."""
        async with self.locks.hold(upload_id, timeout=self.config.lock_timeout):
            upload = await self.get(owner, upload_id)
            now = self.clock()
            upload.mark_cancelled(now)
            # The status and the forgetting of the part rows commit together, so no reader sees a
            # CANCELLED upload with parts (nor keeps one after a crash); bytes are freed after it
            # (a crash in between leaves orphaned blobs, which gc sweeps).
            cancelled = Event.for_upload(EventType.UPLOAD_CANCELLED, upload, now, parts=())
            await self.repo.save(upload, removed_parts=list(upload.parts), events=[cancelled])
            await self._free(upload)
            upload.parts = {}
        await self._emit("cancelled", upload)
        return upload

    async def delete(self, owner: str, upload_id: str, *, check: Callable[[Upload], None] | None = None) -> Upload:
        """Remove an upload whatever its status: bytes and record. ``check`` sees the upload as it
        is under the lock and may refuse (raise): a caller whose right to delete depends on the
        status (an unfinished upload may be ended with files:create, a finished one needs
        files:delete) judges the status it deletes, not one read before another request finished it."""
        async with self.locks.hold(upload_id, timeout=self.config.lock_timeout):
            upload = await self.get(owner, upload_id)
            if check is not None:
                check(upload)
            # The record (with its part rows) goes first, the bytes after it, as in ``cancel``: a
            # crash in between leaves orphaned blobs, which gc sweeps, never a record (a finished
            # file, or parts a client would not re-send) pointing at bytes that are gone.
            await self.repo.delete_upload(
                upload_id, [Event.for_upload(EventType.UPLOAD_DELETED, upload, self.clock(), parts=())]
            )
            await self._free(upload)
            upload.parts = {}
        await self._emit("deleted", upload)
        return upload

    async def sweep_orphans(self, grace_seconds: float) -> int:
        """Remove blobs no record points at and older than ``grace_seconds`` (a part being written
        is not recorded yet: the grace spares it), where the store can list them; returns how
        many. They are what a crash between a record's removal and its bytes' left behind (a
        delete, a cancel, an expiry), or a part written and never recorded."""
        sweeper = self.caps.sweeper
        if sweeper is None:
            return 0
        # Only in a store of this database's: a database lost and made anew, one restored after
        # the store moved on, a wrong CHUNKD_DATABASE_URL or --data-dir would take every stored
        # blob for an orphan. A store never marked (new, or from before marks) becomes this one's.
        database_id, mark = await self.repo.database_id(), await sweeper.database_mark()
        if mark is None:
            await sweeper.mark_database(database_id)
        elif mark != database_id:
            raise ForeignStore(
                f"the blob store belongs to another database ({mark}; this one is {database_id}): no orphaned blob "
                "is removed. If this database replaced that one for good, remove the store's database-id mark "
                "(docs/operations.md)"
            )
        # A database restored from a backup has the store's mark too, and no record of what was
        # stored after the backup: every blob written since would go as an orphan. So the grace
        # counts from the database's last write when that is older than now: what is newer than
        # it (less the grace) stays until the database has moved past it. In a database in use its
        # last write is a moment ago, and the grace is as given.
        # (A database with no upload at all has nothing to count from: one made anew for a store
        # whose mark the operator removed takes every blob for an orphan, as it should.)
        newest = await self.repo.newest_write()
        behind = max(0.0, (self.clock() - newest).total_seconds()) if newest is not None else 0.0
        # Uploads written to within the grace (a commit, or the heartbeat of a body still arriving,
        # moved their expiry to now + TTL) keep their unrecorded blobs: a whole-file PUT holds the
        # replacements of parts the upload already had until its whole body has arrived, which
        # may take longer than the grace; swept, they were recorded all the same, and lost.
        lately = self.clock() + self.config.ttl - timedelta(seconds=grace_seconds)
        spared = await self.repo.pending_expiring_after(lately)
        live, completed = await self.repo.live_blobs(), await self.repo.completed_ids()
        return await sweeper.sweep(live, grace_seconds=grace_seconds + behind, completed=completed, spared=spared)

    async def expire_due(self, limit: int = 100) -> int:
        """Expire PENDING uploads idle past ``expiresAt``; uploads busy with a writer are skipped
        (and their heartbeats keep them alive). Safe to run in several processes at once."""
        now = self.clock()
        expired = 0
        for upload_id in await self.repo.list_expirable(now, limit):
            if await self._finished_instead_of_expired(upload_id):
                continue
            try:
                async with self.locks.hold(upload_id, timeout=0):
                    # Parts are loaded first because ``expire`` forgets their rows in the same
                    # transaction as the status change (as ``cancel`` does); the blob store may
                    # need them to free the bytes.
                    upload = await self.repo.get(upload_id)
                    if upload is None or upload.status is not Status.PENDING:
                        continue
                    upload.mark_expired(now)  # as the row will be if ``expire`` applies (the event shows it)
                    expired_event = Event.for_upload(EventType.UPLOAD_EXPIRED, upload, now, parts=())
                    if not await self.repo.expire(upload_id, now, [expired_event]):
                        continue
                    await self._free(upload)
                    upload.parts = {}
            except Busy:
                continue
            expired += 1
            await self._emit("expired", upload)
        return expired

    async def _finished_instead_of_expired(self, upload_id: str) -> bool:
        """Whether an upload due to expire was finished instead (by a subclass that can finish
        uploads nobody writes to: a concatenation whose sources have all ended)."""
        return False


def _whole_crc(upload: Upload) -> str | None:
    """The whole file's CRC-64/NVME, combined from its parts' (None if a part has none: stored
    before parts had CRCs)."""
    crc = 0
    for part in upload.sorted_parts():
        if not part.crc64:
            return None
        crc = crc64_combine(crc, int(part.crc64, 16), part.size)
    return crc64_hex(crc)
