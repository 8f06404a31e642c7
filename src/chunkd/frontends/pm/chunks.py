"""One Fine Uploader request's worth of the pm upload flow: map its qq* fields to engine calls.

A chunk (``qqpartindex`` present) is part ``qqpartindex + 1`` of a Mode.PARTS upload whose part
size is Fine Uploader's chunk size; the upload is found by its ``qquuid`` (the engine's client
reference for frontend "pm") or created by the first chunk that arrives. A request without the
chunk fields is a whole small file: stored and completed at once, since Fine Uploader sends no
done request for it.

The seed marks ``qqtotalfilesize`` optional. Without it the upload starts with its size unknown;
the size is declared when the last chunk (``qqpartindex == qqtotalparts - 1``) has been stored,
from its offset and its own size, or at the done request (``chunkd.frontends.pm.router``).

It marks ``qqchunksize`` and ``qqpartbyteoffset`` optional too, and has chunks sent in series:
a chunk 0 without ``qqchunksize`` starts an upload whose part size is provisional
(``PART_SIZE_FROM_PART_1``) and becomes chunk 0's own size once it is stored; until then a later
chunk cannot be placed and is asked to wait (``Busy``: 409, retried).
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime

from chunkd.domain import errors as e
from chunkd.domain.checksum import same_bytes
from chunkd.domain.upload import PART_SIZE_FROM_PART_1, Mode, Status, Upload
from chunkd.frontends.multipart import FileData, FileEnd, FileStart, FormEvent, replayed
from chunkd.frontends.pm.fields import QQ
from chunkd.service.uploads import UploadService

__all__ = [
    "CHUNK_FIELDS",
    "FRONTEND",
    "TOTAL_PARTS",
    "Stored",
    "by_qquuid",
    "chunk_count",
    "find_upload",
    "finish_whole_file",
    "store_chunk",
    "store_whole_file",
]

FRONTEND = "pm"
# Any of these makes the request a chunk; without them it is a whole file.
CHUNK_FIELDS = ("qqpartindex", "qqpartbyteoffset", "qqtotalparts", "qqchunksize")
# Fine Uploader names every chunk "blob"; such a part filename says nothing about the file.
_ANONYMOUS = {"", "blob"}
# Where an upload started without qqtotalfilesize keeps the qqtotalparts its first chunk gave.
TOTAL_PARTS = "pmTotalParts"


@dataclass
class Stored:
    upload: Upload
    file_uuid: str
    whole: bool
    issued: bool = False  # the server made up file_uuid (the request had no qquuid before qqfile)


async def find_upload(service: UploadService, owner: str, file_uuid: str) -> Upload:
    upload = await service.find(owner, FRONTEND, file_uuid)
    if upload is None:
        raise e.NotFound(f"no file with qquuid {file_uuid!r}", field="qquuid")
    return upload


async def file_bytes(events: AsyncIterator[FormEvent]) -> AsyncIterator[bytes]:
    """The file part's bytes, pulled from the form's event stream up to its end."""
    async for event in events:
        if isinstance(event, FileData):
            yield event.data
        elif isinstance(event, FileEnd):
            return
    raise e.InvalidInput("the body ended inside qqfile", field="qqfile")


def _name_and_type(qq: QQ, start: FileStart, fallback: str) -> tuple[str, str | None]:
    filename = qq.text("qqfilename") or (start.filename if (start.filename or "") not in _ANONYMOUS else None)
    mime = qq.text("qqfiletype")
    if mime is None and start.content_type and start.content_type.lower() != "application/octet-stream":
        mime = start.content_type
    return filename or fallback, mime


def chunk_count(upload: Upload) -> int | None:
    """The number of chunks of a pm upload: from its size, or (size still unknown) the
    qqtotalparts its first chunk gave; None when neither is known yet."""
    count = upload.part_count
    if count is None:
        recorded = upload.metadata.get(TOTAL_PARTS)
        count = recorded if isinstance(recorded, int) else None
    return count


def _part_size(qq: QQ, index: int, total_parts: int | None, total_size: int | None) -> int | None:
    """Fine Uploader's chunk size: ``qqchunksize`` is the size of *this* chunk (shorter for the
    last), so a later chunk's size comes from its byte offset. None: chunk 0 without
    ``qqchunksize``, whose own size will be the chunk size."""
    offset = qq.integer("qqpartbyteoffset")
    chunk = qq.integer("qqchunksize", minimum=1)
    if index > 0 and offset is not None:
        if offset < index:  # chunks of at least one byte each came before this one
            raise e.InvalidInput(
                f"qqpartbyteoffset {offset} is too small for chunk {index}: the chunks before it hold at least "
                f"{index} bytes",
                field="qqpartbyteoffset",
            )
        if offset % index:
            raise e.InvalidInput(
                f"qqpartbyteoffset {offset} is not a multiple of qqpartindex {index}", field="qqpartbyteoffset"
            )
        return offset // index
    if index == 0:
        if chunk is None:
            return None
        # A single-chunk file may be sent as chunk 0 of 1; its part size is then the whole size.
        return max(chunk, total_size or 0) if total_parts == 1 else chunk
    if chunk is not None and total_parts is not None and index < total_parts - 1:
        return chunk
    raise e.InvalidInput(
        "a later chunk needs qqchunksize or qqpartbyteoffset to start an upload; without them, send chunk 0 "
        "first (its size is the chunk size)",
        field="qqchunksize",
    )


async def _find_or_create(
    service: UploadService, owner: str, file_uuid: str, qq: QQ, start: FileStart
) -> tuple[Upload, bool]:
    """The file's upload, and whether this request created it."""
    upload = await service.find(owner, FRONTEND, file_uuid)
    index = qq.integer("qqpartindex") or 0
    if upload is not None and index == 0 and _dead(upload, service.clock()):
        # Chunk 0 again after an answer with "reset" (the upload expired or was cancelled):
        # Fine Uploader starts the file over under the same qquuid. The dead upload makes way.
        with suppress(e.NotFound):
            await service.delete(owner, upload.id)
        upload = await service.find(owner, FRONTEND, file_uuid)
    if upload is not None:
        return upload, False
    total_size = qq.integer("qqtotalfilesize")
    total_parts = qq.integer("qqtotalparts", minimum=1)
    part_size = _part_size(qq, index, total_parts, total_size)
    largest = service.config.max_file_size
    if part_size is not None and part_size > largest:
        # A chunk larger than the largest file could never be filled (nor, past 2**63, stored).
        field = "qqpartbyteoffset" if index > 0 and qq.integer("qqpartbyteoffset") is not None else "qqchunksize"
        raise e.TooLarge(
            f"{field} gives chunks of {part_size} bytes, more than the maximum file size of {largest} bytes",
            field=field,
            limit="max_file_size",
            maxSizeBytes=largest,
        )
    measured = part_size is None  # chunk 0 will measure it; until then the largest part allowed
    if total_size is None and total_parts is not None and index >= total_parts:
        raise e.PartOutOfRange(f"qqpartindex must be between 0 and {total_parts - 1}", field="qqpartindex")
    filename, mime = _name_and_type(qq, start, file_uuid)
    # Without qqtotalfilesize the size is learnt from the last chunk (or at done); while the part
    # size is provisional a qqtotalfilesize waits until chunk 0 has measured it.
    deferred = total_size is None or measured
    metadata: dict[str, object] = {}
    if deferred and total_parts is not None:
        metadata[TOTAL_PARTS] = total_parts
    if measured:
        metadata[PART_SIZE_FROM_PART_1] = True
    try:
        created = await service.create(
            owner,
            filename=filename,
            size_bytes=None if deferred else total_size,
            mime_type=mime,
            part_size=_largest_chunk(service) if part_size is None else part_size,
            mode=Mode.PARTS,
            frontend=FRONTEND,
            client_ref=file_uuid,
            defer_size=deferred,
            metadata=metadata or None,
            # Fine Uploader's default 2,000,000-byte chunks may be below the native minimum part size.
            strict_part_size=False,
        )
    except e.Conflict as exc:
        if exc.field != "client_ref":
            raise
        # Concurrent first chunks of one file: another request created it a moment ago.
        return await find_upload(service, owner, file_uuid), False
    return created, True


def _dead(upload: Upload, now: datetime) -> bool:
    """Expired (recorded or only due) or cancelled: nothing of it can be used again."""
    status = upload.as_of(now).status
    return status is Status.EXPIRED or status is Status.CANCELLED


def _still_empty(upload: Upload) -> None:
    """Refuse to remove an upload that holds a chunk (another request's, sent meanwhile)."""
    if upload.parts:
        raise e.Busy("the upload holds chunks", field="qquuid")


def _largest_chunk(service: UploadService) -> int:
    """The provisional part size of an upload whose chunk 0 is still measuring it."""
    return max(1, min(service.config.max_part_size, service.config.max_file_size))


def _check_chunk(upload: Upload, qq: QQ, index: int) -> None:
    """The chunk's declared geometry must agree with the upload's (the bytes are checked too)."""
    if upload.mode is not Mode.PARTS or upload.metadata.get("pm") == "whole":
        raise e.InvalidState("this qquuid names a file sent in one request, not in chunks", field="qquuid")
    if index > 0 and upload.metadata.get(PART_SIZE_FROM_PART_1):
        raise e.Busy(
            "chunk 0 has not arrived yet, and without qqchunksize its size is the chunk size: send chunk 0 first",
            field="qqpartindex",
        )
    count = chunk_count(upload)
    total_size = qq.integer("qqtotalfilesize")
    if total_size is not None and upload.size_bytes is not None and total_size != upload.size_bytes:
        raise e.InvalidInput(
            f"qqtotalfilesize {total_size} differs from the {upload.size_bytes} bytes this file started with",
            field="qqtotalfilesize",
        )
    total_parts = qq.integer("qqtotalparts", minimum=1)
    if total_parts is not None and count is not None and total_parts != count:
        known = f"{upload.size_bytes} bytes in chunks of {upload.part_size}" if upload.size_bytes is not None else count
        raise e.InvalidInput(f"qqtotalparts {total_parts} does not match {known}", field="qqtotalparts")
    count = count if count is not None else total_parts
    if count is not None and index >= max(count, 1):
        raise e.PartOutOfRange(f"qqpartindex must be between 0 and {max(count, 1) - 1}", field="qqpartindex")
    offset = qq.integer("qqpartbyteoffset")
    if offset is not None and offset != index * upload.part_size:
        raise e.InvalidInput(
            f"qqpartbyteoffset must be {index * upload.part_size} for chunk {index} of {upload.part_size} bytes",
            field="qqpartbyteoffset",
        )
    chunk = qq.integer("qqchunksize")
    expected = upload.expected_part_size(index + 1)
    last = index + 1 == count
    if upload.size_bytes is None and last:
        if chunk is not None and not 0 < chunk <= expected:
            raise e.PartSizeMismatch(f"qqchunksize of the last chunk must be 1 to {expected}", field="qqchunksize")
    elif chunk is not None and chunk != expected and not (last and chunk == upload.part_size):
        # The last chunk may give its own size (Fine Uploader's qqchunksize) or the chunk size all
        # chunks share (the seed's "the size of the chunk"), as it may when the file's size is
        # still unknown; its bytes are checked against its own size either way.
        sizes = f"{expected} (or the chunk size, {upload.part_size})" if last else str(expected)
        raise e.PartSizeMismatch(f"qqchunksize must be {sizes} for chunk {index}", field="qqchunksize")


async def store_chunk(
    service: UploadService, owner: str, qq: QQ, start: FileStart, events: AsyncIterator[FormEvent]
) -> Stored:
    """Stream one chunk into its upload (created by the first chunk to arrive)."""
    index = qq.integer("qqpartindex")
    if index is None:
        raise e.InvalidInput("qqpartindex is required with chunk fields, before qqfile", field="qqpartindex")
    if qq.integer("qqtotalparts", minimum=1) is None:
        # The seed marks it required for every chunk (Fine Uploader always sends it).
        raise e.InvalidInput("qqtotalparts is required with qqpartindex, before qqfile", field="qqtotalparts")
    if index == 0 and qq.integer("qqtotalparts") == 1 and not qq.integer("qqtotalfilesize"):
        empty, events = await _starts_empty(events)
        if empty and not qq.integer("qqchunksize"):
            # An empty file sent as chunk 0 of 1: a chunk must hold a byte, but the file is whole
            # as it is, so it is stored (and completed) as a whole file of 0 bytes.
            return await store_whole_file(service, owner, qq, start, events)
    file_uuid = qq.uuid()
    issued = file_uuid is None
    if file_uuid is None:
        if index > 0:
            raise e.InvalidInput("qquuid is required when qqpartindex > 0", field="qquuid")
        file_uuid = str(uuidlib.uuid4())
    upload, created = await _find_or_create(service, owner, file_uuid, qq, start)
    try:
        try:
            return await _fill_chunk(service, owner, qq, upload, index, events, file_uuid=file_uuid, issued=issued)
        except (e.InvalidState, e.Expired) as exc:
            raise by_qquuid(exc, upload, file_uuid) from None
    except BaseException as exc:
        if created:
            # The chunk that started the file was refused: the upload it made goes too, unless
            # another chunk was stored in it meanwhile (judged under its lock).
            with suppress(e.ChunkdError):
                await service.delete(owner, upload.id, check=_still_empty)
        elif isinstance(exc, e.NotFound):
            # Gone while this chunk streamed into it: the chunk that made it failed (broken off,
            # refused) and removed it, this one not stored yet. Sent again, this chunk makes the
            # file anew; a 404 (preventRetry) made Fine Uploader give the whole file up.
            raise e.Busy(
                f"the upload of qquuid {file_uuid} was removed while this chunk arrived (the chunk that "
                "started it failed); send this chunk again",
                field="qquuid",
            ) from None
        raise


async def _fill_chunk(
    service: UploadService,
    owner: str,
    qq: QQ,
    upload: Upload,
    index: int,
    events: AsyncIterator[FormEvent],
    *,
    file_uuid: str,
    issued: bool,
) -> Stored:
    """Store chunk ``index`` in ``upload`` (and the size, once a chunk tells it)."""
    _check_chunk(upload, qq, index)
    measuring = bool(upload.metadata.get(PART_SIZE_FROM_PART_1))
    total_size = qq.integer("qqtotalfilesize")
    if upload.size_bytes is None and total_size is not None and not measuring:
        upload = await service.declare_size(owner, upload.id, total_size)  # a later chunk tells the size after all
        _check_chunk(upload, qq, index)
    count = chunk_count(upload)
    last = upload.size_bytes is None and count is not None and index + 1 == count
    try:
        # A measuring chunk 0 may be any size up to the provisional (largest) part size.
        part = await service.put_part(owner, upload.id, index + 1, file_bytes(events), last=last or measuring)
    except e.PartSizeMismatch as exc:  # say it in chunk terms (the engine counts parts from 1)
        expected = exc.details.get("expectedSize")
        size = f"1 to {expected}" if last or measuring else str(expected)
        raise e.PartSizeMismatch(
            f"qqfile of chunk {index} must be {size} bytes", field="qqfile", expectedSize=expected
        ) from None
    if measuring:
        upload = await service.settle_part_size(owner, upload.id)
        if total_size is not None:
            _check_total_parts(upload, total_size, count)
            upload = await service.declare_size(owner, upload.id, total_size)
            last = False
    if last:
        # The last chunk ends the file: its size is now known.
        upload = await service.declare_size(owner, upload.id, part.offset + part.size)
    return Stored(upload, file_uuid, whole=False, issued=issued)


async def _starts_empty(events: AsyncIterator[FormEvent]) -> tuple[bool, AsyncIterator[FormEvent]]:
    """Whether the file part ends before its first byte; and the events, none of them lost."""
    seen: list[FormEvent] = []
    empty = False
    async for event in events:
        seen.append(event)
        if isinstance(event, FileEnd) or (isinstance(event, FileData) and event.data):
            empty = isinstance(event, FileEnd)
            break
    return empty, replayed(seen, events)


def by_qquuid(exc: e.InvalidState | e.Expired, upload: Upload, file_uuid: str) -> e.ChunkdError:
    """The engine's "upload <id> is COMPLETED" (or "has expired") said with the qquuid the client
    knows: the engine's id of the file is never shown to a Fine Uploader client."""
    if upload.id not in exc.message:
        return exc
    message = exc.message.replace(f"upload {upload.id}", f"the file with qquuid {file_uuid}")
    return type(exc)(message, field="qquuid", **exc.details)


def _check_total_parts(upload: Upload, total_size: int, count: int | None) -> None:
    """qqtotalparts must agree with qqtotalfilesize in chunks of the size chunk 0 measured."""
    chunks = -(-total_size // upload.part_size)
    if count is not None and chunks != count:
        raise e.InvalidInput(
            f"qqtotalparts {count} does not match {total_size} bytes in chunks of {upload.part_size}",
            field="qqtotalparts",
        )


async def store_whole_file(
    service: UploadService, owner: str, qq: QQ, start: FileStart, events: AsyncIterator[FormEvent]
) -> Stored:
    """Stream a whole small file into a new upload (appended, so its size need not be known
    first); the caller completes it once the rest of the form has been read."""
    issued = qq.uuid() is None
    file_uuid = qq.uuid() or str(uuidlib.uuid4())
    old = await service.find(owner, FRONTEND, file_uuid)
    if old is not None:
        if (old.status is Status.PENDING and old.metadata.get("pm") == "whole") or _dead(old, service.clock()):
            await service.delete(owner, old.id)  # what is left of a failed earlier attempt, or a dead one
        elif old.status is Status.COMPLETED and old.metadata.get("pm") == "whole" and await _same_file(old, events):
            # The same file sent again because the answer to the request that completed it was
            # lost (a node died, a connection broke): Fine Uploader retries with the same qquuid.
            # Answered as that request would have been; a 409 here made the client give up on a
            # file the server holds.
            return Stored(old, file_uuid, whole=True, issued=issued)
        else:
            raise e.Conflict(f"qquuid {file_uuid} is already taken; delete that file first", field="qquuid")
    filename, mime = _name_and_type(qq, start, file_uuid)
    try:
        upload = await service.create(
            owner,
            filename=filename,
            size_bytes=qq.integer("qqtotalfilesize"),
            mime_type=mime,
            mode=Mode.APPEND,
            frontend=FRONTEND,
            client_ref=file_uuid,
            metadata={"pm": "whole"},
            strict_part_size=False,
        )
    except e.Conflict as exc:
        if exc.field != "client_ref":
            raise
        raise e.Conflict(f"qquuid {file_uuid} is being uploaded by another request", field="qquuid") from None
    try:
        upload = await service.append(owner, upload.id, 0, file_bytes(events), keep_partial=False)
    except BaseException:
        await _forget(service, owner, upload.id)
        raise
    return Stored(upload, file_uuid, whole=True, issued=issued)


async def _same_file(completed: Upload, events: AsyncIterator[FormEvent]) -> bool:
    """Whether the qqfile part of ``events`` has exactly the bytes of the ``completed`` file."""
    return await same_bytes(file_bytes(events), completed.size_bytes or 0, completed.md5)


async def finish_whole_file(service: UploadService, owner: str, stored: Stored, qq: QQ) -> Upload:
    """Complete a whole file (declaring its size when the client did not); on failure the upload
    is removed, since a single-request file cannot be resumed."""
    upload = stored.upload
    try:
        if upload.size_bytes is None:
            declared = qq.integer("qqtotalfilesize")  # sent after the bytes, if at all
            await service.declare_size(owner, upload.id, upload.bytes_received if declared is None else declared)
        upload = await service.complete(owner, upload.id, md5=qq.md5())
        # Fields that came after the bytes may name the file only now.
        filename, mime = qq.text("qqfilename"), qq.text("qqfiletype")
        if (filename is not None and filename != upload.filename) or (mime is not None and mime != upload.mime_type):
            upload = await service.rename(owner, upload.id, filename or upload.filename, mime_type=mime)
        return upload
    except BaseException:
        await _forget(service, owner, upload.id)
        raise


async def _forget(service: UploadService, owner: str, upload_id: str) -> None:
    with suppress(e.ChunkdError):  # already gone; the reaper frees anything left anyway
        await service.delete(owner, upload_id)
