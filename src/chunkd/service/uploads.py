"""The upload use cases every frontend calls: create, put_part, put_whole, append, complete,
cancel, delete, read, expire. Frontends translate requests into these calls and the errors of
``chunkd.domain.errors`` back into their own dialect.

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
import contextlib
import logging
import mimetypes
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from chunkd.domain.checksum import ResumableMD5, StreamHasher
from chunkd.domain.errors import (
    Busy,
    ChecksumMismatch,
    ChunkdError,
    InvalidInput,
    InvalidState,
    NotFound,
    PartSizeMismatch,
    SizeMismatch,
    StorageError,
    TooLarge,
)
from chunkd.domain.events import Event, EventType
from chunkd.domain.names import clean_filename, is_upload_id, new_upload_id
from chunkd.domain.upload import MAX_PARTS, Mode, Part, Status, Upload
from chunkd.ports.blobs import BlobStore, DownloadRedirector, PartAppender, PartLinker, PartSettler
from chunkd.ports.locks import LockManager
from chunkd.service.config import EngineConfig
from chunkd.service.crc import crc64_combine, crc64_hex, crc64nvme
from chunkd.service.hooks import NO_HOOKS, ContentRejected, UploadHooks
from chunkd.service.quotas import byte_room, check_new_upload
from chunkd.service.streaming import BodyReader, StreamedPart, stream_into

__all__ = ["EngineConfig", "UploadEvents", "UploadService", "utcnow"]

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}(;[ -~]*)?$")


def _media_type(value: str) -> str:
    """``value`` stripped, once it is a usable media type: RFC 6838 type/subtype (parameters of
    printable ASCII), at most 255 characters. It is served back as Content-Type. The raw value is
    checked for control characters, so a trailing newline is refused, not trimmed."""
    stripped = value.strip()
    if len(value) > 255 or any(ord(c) < 32 or ord(c) == 127 for c in value) or not _MEDIA_TYPE.match(stripped):
        raise InvalidInput("mimeType is not a valid media type (type/subtype)", field="mimeType")
    return stripped


def _check_client_ref(client_ref: str) -> None:
    """A client's own id for an upload is stored and queried: printable and at most 128 characters."""
    if not client_ref or len(client_ref) > 128 or any(ord(c) < 32 or ord(c) == 127 for c in client_ref):
        raise InvalidInput("the client's upload id must be 1-128 printable characters", field="id")


class UploadEvents(Protocol):
    async def __call__(self, event: str, upload: Upload) -> None: ...


class Repository(Protocol):
    """The subset of the repository port the service needs (see ``chunkd.ports.repository``)."""

    async def create(self, upload: Upload, events: Sequence[Event] = ()) -> None: ...
    async def get(
        self,
        upload_id: str,
        owner: str | None = None,
        *,
        parts_from: int | Callable[[Upload], int] | None = 1,
        part_numbers: Iterable[int] = (),
    ) -> Upload | None: ...
    async def find_by_client_ref(self, owner: str, frontend: str, client_ref: str) -> Upload | None: ...
    async def save(
        self, upload: Upload, changed_parts: Any = (), removed_parts: Any = (), events: Sequence[Event] = ()
    ) -> None: ...
    async def touch(self, upload_id: str, expires_at: datetime) -> None: ...
    async def list_uploads(
        self, owner: str, *, status: Status | None, limit: int, before: tuple[datetime, str] | None
    ) -> list[Upload]: ...
    async def list_expirable(self, now: datetime, limit: int) -> list[str]: ...
    async def expire(self, upload_id: str, now: datetime, events: Sequence[Event] = ()) -> bool: ...
    async def delete_parts(self, upload_id: str) -> None: ...
    async def delete_upload(self, upload_id: str, events: Sequence[Event] = ()) -> None: ...
    async def usage(self, owner: str) -> tuple[int, int, int]: ...


class UploadService:
    def __init__(
        self,
        repo: Repository,
        blobs: BlobStore,
        locks: LockManager,
        config: EngineConfig | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.repo = repo
        self.blobs = blobs
        self.locks = locks
        self.config = config or EngineConfig()
        self.clock = clock
        self.listeners: list[Callable[[str, Upload], Awaitable[None]]] = []
        self.hooks: UploadHooks = NO_HOOKS  # blocking hooks and scans (chunkd.service.hooks), set at start-up
        # Capabilities are read once here, not probed per call.
        self._appender: PartAppender | None = blobs if isinstance(blobs, PartAppender) else None
        # A store that verifies what it holds against each part's MD5 (S3 ETags) gets one for every
        # part; otherwise a part's own MD5 is computed only on request (invariant 5).
        self._store_wants_md5 = bool(getattr(blobs, "wants_part_md5", False))

    # ---- queries ------------------------------------------------------------------------
    async def get(self, owner: str, upload_id: str, *, with_parts: bool = True) -> Upload:
        # Ids are ours (invariant 7): anything else cannot exist and never reaches the database
        # (a NUL or a megabyte-long id would be a database error there, not a 404).
        upload = None
        if is_upload_id(upload_id):
            upload = await self.repo.get(upload_id, owner, parts_from=1 if with_parts else None)
        if upload is None:
            raise NotFound(f"no upload with id {upload_id!r}", field="id")
        return upload

    async def find(self, owner: str, frontend: str, client_ref: str) -> Upload | None:
        _check_client_ref(client_ref)
        return await self.repo.find_by_client_ref(owner, frontend, client_ref)

    async def list_uploads(
        self, owner: str, *, status: Status | None = None, limit: int = 50, before: tuple[datetime, str] | None = None
    ) -> list[Upload]:
        return await self.repo.list_uploads(owner, status=status, limit=limit, before=before)

    # ---- create ---------------------------------------------------------------------------
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
    ) -> Upload:
        """A new PENDING upload. PARTS uploads need ``size_bytes``; APPEND uploads may defer it."""
        cfg = self.config
        filename = clean_filename(filename)
        if client_ref is not None:
            _check_client_ref(client_ref)
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
        elif mode is Mode.PARTS:
            raise InvalidInput("sizeBytes is required", field="sizeBytes")
        if part_size is None:
            part_size = cfg.default_part_size
            if size_bytes is not None and -(-size_bytes // part_size) > MAX_PARTS:
                part_size = -(-size_bytes // MAX_PARTS)
        if strict_part_size and not cfg.min_part_size <= part_size <= cfg.max_part_size:
            raise InvalidInput(
                f"partSize must be between {cfg.min_part_size} and {cfg.max_part_size} bytes", field="partSize"
            )
        if part_size <= 0:
            raise InvalidInput("partSize must be positive", field="partSize")
        if mode is Mode.PARTS and size_bytes is not None and -(-size_bytes // part_size) > MAX_PARTS:
            raise InvalidInput(
                f"partSize gives more than {MAX_PARTS} parts; use at least {-(-size_bytes // MAX_PARTS)} bytes",
                field="partSize",
            )
        mime = _media_type((mime_type or "").strip() or mimetypes.guess_type(filename)[0] or "application/octet-stream")
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
        await self.repo.create(upload, [Event.for_upload(EventType.UPLOAD_CREATED, upload, now)])
        await self._emit("created", upload)
        return upload

    # ---- parts ----------------------------------------------------------------------------
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
    ) -> Part:
        """Store part ``number`` (1-based) of a PARTS upload; replaces an earlier copy atomically.
        ``declared_size`` (a request's Content-Length) refuses a wrong-sized part before any byte of
        it is read; the streamed size is checked in any case. The part's own MD5 is computed only
        when ``content_md5`` is to be checked or the dialect's ETag is an MD5 (``md5_etag``);
        otherwise its checksum is its CRC-64/NVME. ``digest``: (hasher, expected digest, the field
        that carried it), verified over the part's bytes before it is acknowledged."""
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
            upload.check_part_size(number, streamed.size)
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

    async def put_whole(self, owner: str, upload_id: str, body: AsyncIterator[bytes]) -> Upload:
        """One PUT of the whole file, stored as the upload's parts one after another (each durable
        as soon as it is complete, so a broken PUT can be resumed part by part)."""
        upload = await self.get(owner, upload_id, with_parts=False)
        upload.ensure_pending(self.clock())
        if upload.mode is not Mode.PARTS or upload.size_bytes is None:
            raise InvalidState("this upload does not take a whole-file PUT")
        reader = BodyReader(body)
        count = upload.part_count or 0
        # Part n is made durable and recorded while part n+1 streams in (the fsync and the metadata
        # write no longer stall the body); commits still run one at a time, in order.
        committing: asyncio.Task[Part] | None = None
        try:
            for number in range(1, count + 1):
                expected = upload.expected_part_size(number)
                streamed = await self._stream_part(upload, number, reader.slice(expected), limit=None)
                if streamed.size != expected:
                    await streamed.writer.abort()
                    raise SizeMismatch(
                        f"the body ended after {upload.offset_of(number) + streamed.size} bytes; "
                        f"sizeBytes is {upload.size_bytes}",
                        field="body",
                    )
                if streamed.whole is not None:
                    # The next part carries the whole-file hash on from here rather than having it
                    # re-read from storage at its commit (its commit checks that this still holds).
                    upload.hash_offset = upload.offset_of(number) + streamed.size
                    upload.hash_state = streamed.whole.state()
                if committing is not None:
                    previous, committing = committing, None
                    try:
                        await previous
                    except BaseException:
                        await streamed.writer.abort()
                        raise
                committing = asyncio.create_task(self._commit_part(owner, upload_id, number, streamed, upload))
            if committing is not None:
                previous, committing = committing, None
                await previous
        finally:
            if committing is not None:
                # The body broke off (or was too short) after a whole part: that part is kept, so the
                # upload can be resumed from it; the error that stopped the body is the one raised.
                with contextlib.suppress(Exception):
                    await committing
        if not await reader.at_end():
            raise SizeMismatch(f"the body is longer than sizeBytes ({upload.size_bytes})", field="body")
        return await self.get(owner, upload_id)

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
    ) -> StreamedPart:
        offset = upload.offset_of(number) if offset is None else offset
        # Hash into the whole-file state as we go when this part starts at the frontier.
        whole = ResumableMD5(upload.hash_state) if upload.hash_offset == offset and upload.hash_state else None
        await self.blobs.ensure_room()
        writer = await self.blobs.open_writer(upload, number, offset)
        streamed = StreamedPart(writer, whole, extra, part_md5=part_md5 or self._store_wants_md5)
        await self._keep_alive(upload)
        try:
            await stream_into(
                streamed,
                body,
                limit=limit,
                limit_error=limit_error,
                heartbeat=lambda: self.repo.touch(upload.id, self.clock() + self.config.ttl),
                heartbeat_every=self.config.heartbeat_every,
            )
        except BaseException:
            await writer.abort()
            raise
        return streamed

    async def _keep_alive(self, upload: Upload) -> None:
        """Push ``expiresAt`` forward before bytes start to flow, unless it is already far off
        (every commit moves it to now + TTL, so parallel parts rarely need this extra write)."""
        horizon = self.clock() + self.config.ttl
        slack = timedelta(seconds=self.config.heartbeat_every)
        if upload.expires_at is None or upload.expires_at < horizon - slack:
            await self.repo.touch(upload.id, horizon)

    async def _commit_part(
        self, owner: str, upload_id: str, number: int, streamed: StreamedPart, opened: Upload
    ) -> Part:
        """Make the streamed part durable, then record it under the upload's lock."""
        ref: str | None = None
        saved = False
        upload = opened
        try:
            # Make the bytes durable before taking the lock: the commit may be slow (an fsync, or
            # the whole transfer to object storage) and must not serialise an upload's parallel
            # parts. Nothing points at the blob until the metadata is saved under the lock.
            ref = await streamed.writer.commit()
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
                upload.place_part(
                    part,
                    old,
                    hashed_from=streamed.whole_start,
                    hashed_to=streamed.whole.state() if streamed.whole is not None else None,
                )
                changed = {part.number: part}
                for advanced in await self._advance_hash(upload):
                    changed[advanced.number] = advanced
                upload.expires_at = now + self.config.ttl
                upload.updated_at = now
                if isinstance(self.blobs, PartSettler):
                    self.blobs.invalidate(upload, part, old)
                await self.repo.save(upload, list(changed.values()))
                saved = True
                await self._settle(upload, part)
        except BaseException:
            if ref is None:
                await streamed.writer.abort()
            elif not saved:
                await self.blobs.discard(upload, [ref])
            raise
        if old is not None and old.blob_ref != part.blob_ref:
            await self.blobs.discard(upload, [old.blob_ref])
        return part

    async def _settle(self, upload: Upload, part: Part) -> None:
        """Let a store that derives state from parts (S3 coalescing) do so, under the lock. A failure
        here does not undo the committed part: ``complete`` finishes whatever is left."""
        if not isinstance(self.blobs, PartSettler):
            return

        async def load_parts(numbers: Iterable[int]) -> dict[int, Part]:
            loaded = await self.repo.get(upload.id, parts_from=None, part_numbers=numbers)
            return loaded.parts if loaded is not None else {}

        try:
            if await self.blobs.settle(upload, part, load_parts):
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

    # ---- appends --------------------------------------------------------------------------
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
        checksum: tuple[StreamHasher, bytes] | None = None,
        keep_partial: bool = True,
        max_bytes: int | None = None,
        exact_size: int | None = None,
        lock_timeout: float = 0.0,
        finish: bool = False,
    ) -> Upload:
        """Append bytes at ``offset`` (which must be the current end) to an APPEND upload.

        One writer at a time: the lock is held while the body streams; a second writer gets
        ``Busy``. Where the store can (``PartAppender``), the bytes continue the upload's last
        part in place: one blob per upload, not one per request, so no number of appends comes
        near the part ceiling. If the body breaks off (client gone), the bytes that arrived and
        were written are kept when ``keep_partial`` and no ``checksum`` is to be verified.
        ``checksum`` is (hasher, expected digest) over this request's bytes; on mismatch none of
        them are kept. Past the declared size (or ``max_bytes``) reading stops and nothing of this
        request is kept. ``exact_size``: the body must be exactly that long (a chunk whose length
        a header announced); a longer or shorter body is refused with ``SizeMismatch`` and nothing
        of it is kept. A storage fault (``StorageError``) keeps nothing of the request either: the
        offset stays at the last durable byte and the client resumes there once storage is back.
        ``finish``: when the bytes reach the declared size, complete the upload under the same
        lock and in the same write (tus: the PATCH that ends an upload)."""
        finished = False
        refused: ChunkdError | None = None  # a pre-finish hook's refusal of the upload this fills
        async with self.locks.hold(upload_id, timeout=lock_timeout):
            upload = await self._load_for_append(owner, upload_id)
            now = self.clock()
            upload.ensure_pending(now)
            upload.check_append(offset)
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
            if self._appender is not None and last is not None and last.crc64:
                extended: Part | None = last
                writer = await self._appender.open_appender(upload, last)
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
                if checksum is not None and streamed.extra is not None and streamed.extra.digest() != checksum[1]:
                    raise ChecksumMismatch("the body does not match Upload-Checksum", field="Upload-Checksum")
                if exact_size is not None and streamed.size != exact_size:
                    raise SizeMismatch(f"the body has {streamed.size} bytes, not {exact_size}", field="body")
            except BaseException:
                await writer.abort()
                raise
            if streamed.size == 0:
                await writer.abort()
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
                if isinstance(self.blobs, PartSettler):
                    self.blobs.invalidate(upload, part, extended)
                if finish and broken is None and upload.bytes_received == upload.size_bytes:
                    if len(upload.parts) != upload.parts_received:  # the store needs every part to finish
                        upload.parts = await self._all_parts(upload)
                    try:
                        await self.hooks.pre_finish(upload)
                    except ChunkdError as exc:
                        refused = exc  # the part is kept and the upload stays PENDING (or is discarded below)
                    else:
                        await self._finish(upload, now, md5=None, check=None)
                        finished = True
                try:
                    done = [Event.for_upload(EventType.UPLOAD_COMPLETED, upload, now)] if finished else []
                    await self.repo.save(upload, [part], events=done)
                except BaseException:
                    if extended is None:
                        await self.blobs.discard(upload, [ref])
                    raise
                if not finished:
                    await self._settle(upload, part)
            if broken is not None:
                raise broken
            if refused is not None:
                if isinstance(refused, ContentRejected):
                    await self._discard_rejected(upload, refused)
                raise refused
            if finish and not finished and upload.size_bytes is not None and upload.bytes_received == upload.size_bytes:
                # Nothing arrived, but the upload was already full (e.g. a zero-length upload).
                if len(upload.parts) != upload.parts_received:
                    upload.parts = await self._all_parts(upload)
                await self.hooks.pre_finish(upload)
                await self._finish(upload, now, md5=None, check=None)
                await self.repo.save(upload, events=[Event.for_upload(EventType.UPLOAD_COMPLETED, upload, now)])
                finished = True
        if finished:
            await self._emit("completed", upload)
        return upload

    async def _all_parts(self, upload: Upload) -> dict[int, Part]:
        loaded = await self.repo.get(upload.id, parts_from=1)
        return loaded.parts if loaded is not None else {}

    async def concatenate(
        self,
        owner: str,
        source_ids: Sequence[str],
        *,
        filename: str,
        mime_type: str | None = None,
        frontend: str = "native",
        metadata: dict[str, Any] | None = None,
    ) -> Upload:
        """A new COMPLETED upload whose bytes are the given COMPLETED uploads of the same owner, one
        after another (tus concatenation). Each source part becomes a part of the new upload: linked
        where the blob store has the ``PartLinker`` capability (no byte copied), otherwise copied
        through the store. The sources are left as they were."""
        if not source_ids:
            raise InvalidInput("name at least one upload to concatenate", field="sources")
        sources = [await self.get(owner, source_id) for source_id in source_ids]
        for source in sources:
            if source.status is not Status.COMPLETED:
                raise InvalidState(
                    f"upload {source.id} is {source.status.value}; only completed uploads can be concatenated",
                    field="sources",
                )
        size = sum(source.size_bytes or 0 for source in sources)
        upload = await self.create(
            owner,
            filename=filename,
            size_bytes=size,
            mime_type=mime_type,
            mode=Mode.APPEND,
            frontend=frontend,
            metadata=metadata,
            strict_part_size=False,
        )
        try:
            async with self.locks.hold(upload.id, timeout=self.config.lock_timeout):
                parts: dict[int, Part] = {}
                # MD5 states cannot be combined, so the final's whole-file MD5 is computed here once,
                # over the linked parts' bytes read back from storage (normally the page cache):
                # linking saves the copy, not the read. When copying, the copy is hashed as it passes.
                whole = ResumableMD5()
                offset = 0
                for source in sources:
                    # The source's lock keeps it from being deleted while its parts are linked.
                    async with self.locks.hold(source.id, timeout=self.config.lock_timeout):
                        current = await self.get(owner, source.id)
                        if current.status is not Status.COMPLETED:
                            raise InvalidState(f"upload {source.id} is {current.status.value}", field="sources")
                        for part in current.sorted_parts():
                            number = len(parts) + 1
                            placed = await self._place_copy(current, part, upload, number, offset, whole)
                            ref, crc = placed
                            parts[number] = Part(
                                number=number,
                                offset=offset,
                                size=part.size,
                                md5=part.md5,
                                blob_ref=ref,
                                created_at=self.clock(),
                                hash_state=whole.state(),
                                crc64=crc,
                            )
                            offset += part.size
                upload.parts = parts
                upload.bytes_received = offset
                upload.parts_received = len(parts)
                upload.hash_offset = offset
                upload.hash_state = whole.state()
                upload.updated_at = self.clock()
                await self.repo.save(upload, tuple(parts.values()))
            return await self.complete(owner, upload.id)
        except BaseException:
            await self.blobs.delete(upload)
            await self.repo.delete_upload(
                upload.id, [Event.for_upload(EventType.UPLOAD_DELETED, upload, self.clock(), parts=())]
            )
            raise

    async def _place_copy(
        self, source: Upload, part: Part, target: Upload, number: int, offset: int, whole: ResumableMD5
    ) -> tuple[str, str]:
        """Put ``source``'s ``part`` into ``target`` as part ``number``; feed its bytes to ``whole``.
        Returns the new part's blob ref and CRC."""
        if isinstance(self.blobs, PartLinker):
            ref = await self.blobs.link_part(source, part, target, number, offset)
            crc = 0
            async for chunk in self.blobs.read_part(target, replace(part, blob_ref=ref)):
                await asyncio.to_thread(whole.update, chunk)
                if not part.crc64:
                    crc = crc64nvme(chunk, crc)
            return ref, part.crc64 or crc64_hex(crc)
        writer = await self.blobs.open_writer(target, number, offset)
        streamed = StreamedPart(writer, whole, None)
        try:
            async for chunk in self.blobs.read_part(source, part):
                await streamed.feed([chunk])
            return await writer.commit(), streamed.crc_hex
        except BaseException:
            await writer.abort()
            raise

    async def declare_size(self, owner: str, upload_id: str, size_bytes: int) -> Upload:
        """Fix the size of an APPEND upload created without one (tus Upload-Defer-Length)."""
        async with self.locks.hold(upload_id, timeout=self.config.lock_timeout):
            upload = await self.get(owner, upload_id, with_parts=False)
            upload.ensure_pending(self.clock())
            if upload.size_bytes is not None:
                if upload.size_bytes == size_bytes:
                    return upload
                raise InvalidState("the upload's length is already set", field="sizeBytes")
            if size_bytes < upload.bytes_received:
                raise InvalidInput(f"length is below the {upload.bytes_received} bytes received", field="sizeBytes")
            if size_bytes > self.config.max_file_size:
                raise TooLarge(
                    f"length exceeds the maximum file size of {self.config.max_file_size} bytes", field="sizeBytes"
                )
            quota = await byte_room(self.repo, self.config, owner)
            if quota is not None and size_bytes - upload.bytes_received > quota[0]:
                raise quota[1]
            upload.size_bytes = size_bytes
            upload.updated_at = self.clock()
            await self.repo.save(upload)
        return upload

    # ---- finishing ------------------------------------------------------------------------
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
        records in ``upload.metadata`` is saved together with the COMPLETED status."""
        async with self.locks.hold(upload_id, timeout=self.config.lock_timeout):
            upload = await self.get(owner, upload_id)
            if upload.status is Status.COMPLETED:
                if md5 is not None and md5 != upload.md5:
                    raise ChecksumMismatch("md5 does not match the completed file", field="md5")
                return upload
            now = self.clock()
            upload.check_complete(now)
            advanced = await self._advance_hash(upload) if upload.hash_offset != upload.size_bytes else []
            try:
                await self.hooks.pre_finish(upload)  # may refuse (stays PENDING) or record a result
                await self._finish(upload, now, md5=md5, check=check)
            except BaseException as exc:
                if advanced:
                    await self.repo.save(upload, advanced)
                if isinstance(exc, ContentRejected):
                    await self._discard_rejected(upload, exc)
                raise
            await self.repo.save(upload, advanced, events=[Event.for_upload(EventType.UPLOAD_COMPLETED, upload, now)])
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

    async def _discard_rejected(self, upload: Upload, error: ContentRejected) -> None:
        """An upload whose content was refused for good (e.g. infected): cancelled, bytes removed,
        ``upload.rejected`` emitted (the caller holds the upload's lock)."""
        now = self.clock()
        upload.mark_cancelled(now)
        upload.metadata["rejected"] = {"reason": error.reason, **error.details}
        rejected = Event.for_upload(
            EventType.UPLOAD_REJECTED, upload, now, parts=(), extra={"rejection": upload.metadata["rejected"]}
        )
        await self.repo.save(upload, removed_parts=list(upload.parts), events=[rejected])
        await self.blobs.delete(upload)
        upload.parts = {}
        await self._emit("rejected", upload)

    async def pre_download(self, upload: Upload) -> None:
        """Ask the blocking hooks before a COMPLETED file is served (every dialect's download)."""
        await self.hooks.pre_download(upload)

    async def rename(self, owner: str, upload_id: str, filename: str, *, mime_type: str | None = None) -> Upload:
        """Change the display filename (and optionally the media type) of an upload in any status:
        protocols such as Fine Uploader's name the file only when it is finished."""
        filename = clean_filename(filename)
        checked_mime = _media_type(mime_type) if mime_type is not None else None
        async with self.locks.hold(upload_id, timeout=self.config.lock_timeout):
            upload = await self.get(owner, upload_id, with_parts=False)
            new_mime = checked_mime if checked_mime is not None else upload.mime_type
            if upload.filename == filename and upload.mime_type == new_mime:
                return upload
            upload.filename = filename
            upload.mime_type = new_mime
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
            await self.blobs.delete(upload)
            upload.parts = {}
        await self._emit("cancelled", upload)
        return upload

    async def delete(self, owner: str, upload_id: str) -> Upload:
        """Remove an upload whatever its status: bytes and record."""
        async with self.locks.hold(upload_id, timeout=self.config.lock_timeout):
            upload = await self.get(owner, upload_id)
            await self._free(upload)
            await self.repo.delete_upload(
                upload_id, [Event.for_upload(EventType.UPLOAD_DELETED, upload, self.clock(), parts=())]
            )
        await self._emit("deleted", upload)
        return upload

    async def _free(self, upload: Upload) -> None:
        await self.blobs.delete(upload)
        await self.repo.delete_parts(upload.id)
        upload.parts = {}

    async def expire_due(self, limit: int = 100) -> int:
        """Expire PENDING uploads idle past ``expiresAt``; uploads busy with a writer are skipped
        (and their heartbeats keep them alive). Safe to run in several processes at once."""
        now = self.clock()
        expired = 0
        for upload_id in await self.repo.list_expirable(now, limit):
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
                    await self.blobs.delete(upload)
                    upload.parts = {}
            except Busy:
                continue
            expired += 1
            await self._emit("expired", upload)
        return expired

    # ---- reading --------------------------------------------------------------------------
    def read(self, upload: Upload, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of a COMPLETED upload (loaded with its parts)."""
        if upload.status is not Status.COMPLETED:
            raise InvalidState(f"upload {upload.id} is {upload.status.value}; only completed files can be read")
        size = upload.size_bytes or 0
        return self.blobs.read(upload, start, size if end is None else end)

    async def download_url(self, upload: Upload, *, disposition: str = "attachment") -> str | None:
        """A direct download URL for a COMPLETED file when the store offers one and is configured
        to (e.g. a presigned S3 GET); None means: stream it with ``read``."""
        if upload.status is not Status.COMPLETED or not isinstance(self.blobs, DownloadRedirector):
            return None
        return await self.blobs.download_url(upload, filename=upload.filename, disposition=disposition)

    async def read_received(self, upload: Upload) -> AsyncIterator[bytes]:
        """The bytes received so far by a PENDING upload, in order (for content checks)."""
        for part in upload.sorted_parts():
            async for chunk in self.blobs.read_part(upload, part):
                yield chunk

    # ---- events ---------------------------------------------------------------------------
    def subscribe(self, listener: Callable[[str, Upload], Awaitable[None]]) -> None:
        self.listeners.append(listener)

    async def _emit(self, event: str, upload: Upload) -> None:
        for listener in self.listeners:
            await listener(event, upload)


def _whole_crc(upload: Upload) -> str | None:
    """The whole file's CRC-64/NVME, combined from its parts' (None if a part has none: stored
    before parts had CRCs)."""
    crc = 0
    for part in upload.sorted_parts():
        if not part.crc64:
            return None
        crc = crc64_combine(crc, int(part.crc64, 16), part.size)
    return crc64_hex(crc)
