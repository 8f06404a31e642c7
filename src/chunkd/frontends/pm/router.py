"""Private-message files, ``/api/v2/pm/upload/`` (seeds 000 and 001): Fine Uploader's
traditional-server protocol.

* ``POST /api/v2/pm/upload/`` — multipart/form-data, one chunk (or a whole small file) per request,
  streamed into storage as it is parsed (held, up to ``pm_max_held_chunk_bytes``, when it comes
  before every field that places it) → ``{"file_uuid", "success": true}``.
* ``POST /api/v2/pm/upload/?done`` (or ``?done/``) — url-encoded or JSON → ``{"file_url",
  "file_uuid", "success": true}``.
* ``GET /api/v2/pm/upload/{uuid}`` — the file (``file_url``); ``GET …/{uuid}/info`` — its File
  object ``{uuid, filename, filesize, mimetype, duration, url, thumbnail}``.
* ``DELETE /api/v2/pm/upload/{uuid}`` — cancel a pending upload or delete a file.

Every path also answers without its trailing slash. Errors use Fine Uploader's shape
(``chunkd.frontends.pm.errors``).
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator, Awaitable, Callable
from itertools import islice
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Path, Request
from starlette.responses import JSONResponse, Response

from chunkd.domain import errors as e
from chunkd.domain.names import clean_filename, media_type
from chunkd.domain.upload import PART_SIZE_FROM_PART_1, Status, Upload
from chunkd.frontends.forms import parse_small_body, read_small_body, small_form
from chunkd.frontends.held import HeldBytes
from chunkd.frontends.http import (
    DOWNLOAD,
    dialect_route,
    file_response,
    principal,
    public_base_url,
    runtime,
    takes_file_bytes,
)
from chunkd.frontends.multipart import (
    FileData,
    FileEnd,
    FileStart,
    FormEvent,
    TextField,
    boundary_of,
    form_events,
    replayed,
)
from chunkd.frontends.openapi import form_schema
from chunkd.frontends.pm.chunks import (
    CHUNK_FIELDS,
    Stored,
    by_qquuid,
    chunk_count,
    find_upload,
    finish_whole_file,
    store_chunk,
    store_whole_file,
)
from chunkd.frontends.pm.errors import DONE_KEYS, ERROR_RESPONSES, is_done, render
from chunkd.frontends.pm.fields import QQ
from chunkd.service.uploads import UploadService

__all__ = ["BASE", "file_url", "router"]

router = APIRouter(tags=["private messages"], route_class=dialect_route(render), responses=ERROR_RESPONSES)

BASE = "/api/v2/pm/upload"
FileUuid = Annotated[str, Path(description="The file's qquuid.", min_length=1, max_length=128)]


def file_url(request: Request, file_uuid: str) -> str:
    return f"{public_base_url(request)}{BASE}/{file_uuid}"


def _query(request: Request) -> tuple[bool, dict[str, str]]:
    """(is this a done request, the other query parameters)."""
    pairs = parse_qsl(request.url.query, keep_blank_values=True)
    done = any(key in DONE_KEYS for key, _ in pairs)
    return done, {key: value for key, value in pairs if key not in DONE_KEYS}


def _field(description: str, kind: str = "string") -> dict[str, str]:
    return {"type": kind, "description": description}


UPLOAD_OPENAPI: dict[str, Any] = {
    "parameters": [
        {
            "name": "done",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "Present (``?done`` or ``?done/``): finish a chunked file (Chunk Upload Done).",
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                # qqfile is required (400 naming it otherwise) but not listed as such: generated
                # clients (openapi-python-client) write required fields first, and the fields that
                # place a chunk must come before its bytes.
                "schema": form_schema(
                    {
                        "qquuid": _field("The file's uuid; required when qqpartindex > 0 (issued if absent)."),
                        "qqpartindex": _field("0-based chunk index; absent for a whole small file.", "integer"),
                        "qqtotalparts": _field("Number of chunks; required with qqpartindex.", "integer"),
                        "qqfiletype": _field("Media type of the file."),
                        "qqtotalfilesize": _field("Size of the whole file in bytes (optional).", "integer"),
                        "qqpartbyteoffset": _field("Byte offset of this chunk.", "integer"),
                        "qqchunksize": _field(
                            "Size of this chunk in bytes (optional: without it, chunk 0's own size is the chunk"
                            " size, and chunk 0 must be sent first).",
                            "integer",
                        ),
                        "qqfilename": _field("Name of the file."),
                        # Last: the fields that place the bytes must come before them.
                        "qqfile": {"type": "string", "format": "binary", "description": "The chunk (last part)."},
                    }
                )
            },
            "application/x-www-form-urlencoded": {
                "schema": form_schema(
                    {
                        "qquuid": _field("The file's uuid."),
                        "qqfilename": _field("Name of the file."),
                        "qqtotalparts": _field("Number of chunks.", "integer"),
                        "qqmd5": _field("MD5 hex digest of the whole file."),
                        "qqfiletype": _field("Media type of the file."),
                        "qqtotalfilesize": _field("Size of the whole file in bytes.", "integer"),
                    },
                    description="With ?done (Chunk Upload Done; also accepted as JSON or multipart).",
                    required=["qquuid", "qqfilename"],
                )
            },
        },
    },
    "responses": {
        "200": {
            "description": "A chunk: {file_uuid, success}. A whole file or ?done: {file_url, file_uuid, success}.",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["file_uuid", "success"],
                        "properties": {
                            "file_uuid": _field("The file's qquuid (issued by the first chunk when it had none)."),
                            "file_url": _field("The file's URL, once it is complete."),
                            "success": {"type": "boolean"},
                        },
                    },
                    "example": {"file_uuid": "string", "success": True},
                }
            },
        },
        "400": {"description": 'Fine Uploader error shape: {"success": false, "error", "preventRetry": true}'},
    },
}


@router.post(
    f"{BASE}/",
    summary="Upload a chunk (or a whole small file); ?done finishes a chunked file",
    openapi_extra=UPLOAD_OPENAPI,
)
@router.post(BASE, include_in_schema=False)
@takes_file_bytes(when=lambda scope: not is_done(scope))  # done: a write, not file bytes
async def upload(request: Request) -> JSONResponse:
    """Fine Uploader's upload endpoint and, with ``?done``, its chunking-success endpoint; with
    ``_method=DELETE`` (its ``deleteFile.method: "POST"``), its delete endpoint."""
    who = await principal(request)
    done, query = _query(request)
    if done or boundary_of(request.headers.get("content-type")) is not None:
        await principal(request, "files:create")  # else a delete, perhaps: scoped in _upload
    if done:
        return await _done(request, who.owner, query)
    return await _upload(request, who.owner, query)


def _deleting(fields: dict[str, str]) -> bool:
    return fields.get("_method", "").strip().upper() == "DELETE"


async def _upload(request: Request, owner: str, query: dict[str, str]) -> JSONResponse:
    service = runtime(request).uploads
    boundary = boundary_of(request.headers.get("content-type"))
    if boundary is None:
        # The seed's own examples send only the fields (JSON or url-encoded), which carry no bytes.
        given = {
            **query,
            **parse_small_body(await read_small_body(request.stream()), request.headers.get("content-type")),
        }
        if _deleting(given):
            file_uuid = QQ(given).uuid()
            if file_uuid is None:
                raise e.InvalidInput("qquuid is required to delete a file", field="qquuid")
            return await _delete(request, file_uuid)
        await principal(request, "files:create")
        QQ(given).uuid()
        raise e.InvalidInput(
            "qqfile is required: send the chunk as the qqfile file part of a multipart/form-data body", field="qqfile"
        )
    fields: dict[str, str] = dict(query)
    held = _Held()
    try:
        stored = await _store(request, owner, fields, boundary, held)
    finally:
        held.release()
    if stored is None:
        raise e.InvalidInput("qqfile is required: the form has no qqfile part", field="qqfile")
    body: dict[str, Any] = {"file_uuid": stored.file_uuid, "success": True}
    if stored.whole:
        # No done request follows a whole file: it is complete now, and its URL is known.
        await finish_whole_file(service, owner, stored, QQ(fields))
        body["file_url"] = file_url(request, stored.file_uuid)
    return JSONResponse(body)


async def _store(request: Request, owner: str, fields: dict[str, str], boundary: bytes, held: _Held) -> Stored | None:
    """Read the form, storing its qqfile where the fields say (``fields`` fills as it is read)."""
    service = runtime(request).uploads
    events: AsyncIterator[FormEvent] = form_events(request.stream(), boundary, file_fields=frozenset({"qqfile"}))
    stored: Stored | None = None
    async for event in events:
        if isinstance(event, TextField):
            fields[event.name] = event.value
            # Fields that decide where the bytes go are useless after them: the bytes went to a
            # file of the server's own making, which is removed again.
            misplaced = (stored is not None and stored.whole and event.name in CHUNK_FIELDS) or (
                stored is not None and stored.issued and event.name == "qquuid" and event.value.strip()
            )
            if misplaced and stored is not None:
                await service.delete(owner, stored.upload.id)
                raise e.InvalidInput(f"{event.name} must come before qqfile in the form", field=event.name)
        elif isinstance(event, FileStart):
            if stored is not None:
                raise e.InvalidInput("only one qqfile per request", field="qqfile")
            qq = QQ(fields)
            qq.md5()  # a malformed qqmd5 is refused before any byte is stored
            limit = runtime(request).settings.pm_max_held_chunk_bytes
            if limit > 0 and not any(name in qq for name in _PLACING):
                # Nothing before the bytes says where they go (a form built in the seed's table
                # order: qqfile first): hold them, up to a bound, to read the fields after them.
                ended = await held.hold(events, limit)
                if ended:
                    await _read_rest(events, fields)
                    qq = QQ(fields)
                    qq.md5()
                events = replayed(held.events, events)  # after _read_rest, nothing is left past them
            if any(name in qq for name in CHUNK_FIELDS):
                stored = await store_chunk(service, owner, qq, event, events)
            else:
                stored = await store_whole_file(service, owner, qq, event, events)
    return stored


# Fields that, sent before qqfile, say where its bytes go.
_PLACING = (*CHUNK_FIELDS, "qquuid", "qqfilename", "qqtotalfilesize")


class _Held:
    """One request's held file part: its events, and their bytes counted against the process's
    budget (chunkd.frontends.held). Fine Uploader itself sends qqfile last: only forms built in the
    seed's table order are held."""

    def __init__(self) -> None:
        self.events: list[FormEvent] = []
        self.bytes = HeldBytes(
            "too many forms that send qqfile before qquuid and the chunk fields are being held;"
            " retry, or send qqfile last",
            field="qqfile",
        )

    async def hold(self, events: AsyncIterator[FormEvent], limit: int) -> bool:
        """The file part's events up to ``limit`` bytes; whether the part ended within them."""
        while self.bytes.size <= limit:
            event = await anext(events, None)
            if event is None:
                break  # the form ends inside the file: file_bytes says so
            self.events.append(event)
            if isinstance(event, FileEnd):
                return True
            if isinstance(event, FileData):
                self.bytes.take(len(event.data), limit=limit)
        return False

    def release(self) -> None:
        self.bytes.release()
        self.events.clear()


async def _read_rest(events: AsyncIterator[FormEvent], fields: dict[str, str]) -> None:
    """The text fields after a held file part (a second qqfile is refused)."""
    async for event in events:
        if isinstance(event, TextField):
            fields[event.name] = event.value
        elif isinstance(event, FileStart):
            raise e.InvalidInput("only one qqfile per request", field="qqfile")


async def _done(request: Request, owner: str, query: dict[str, str]) -> JSONResponse:
    service = runtime(request).uploads
    qq = QQ({**query, **await small_form(request)})
    file_uuid = qq.uuid()
    if file_uuid is None:
        raise e.InvalidInput("qquuid is required", field="qquuid")
    filename = clean_filename(qq.require("qqfilename"), field="qqfilename")
    md5 = qq.md5()
    total_parts = qq.integer("qqtotalparts", minimum=1)
    total_size = qq.integer("qqtotalfilesize")
    mime = qq.text("qqfiletype")
    if mime is not None:
        # Checked before the file is completed: refused by the rename after it, the file was
        # complete but unnamed, and the corrected done was then a 409 (a finished file is not renamed).
        mime = media_type(mime)  # its mimeType is qqfiletype in this dialect's errors
    # As it stands now: one past its expiry is EXPIRED (410) before the reaper records it, not a
    # file missing chunks or of unknown size.
    upload = (await find_upload(service, owner, file_uuid)).as_of(service.clock())
    if upload.status is Status.EXPIRED:
        raise by_qquuid(e.Expired(f"upload {upload.id} has expired"), upload, file_uuid)
    # The first done names the file: the one that completes a chunked file, or the one that follows
    # a file sent whole (completed by its one request, which may have carried no name). A done
    # repeated after it is answered as before when it names the file alike (a retry whose answer
    # was lost), and refused when it names it otherwise: a file is not renamed, nor its download,
    # by whoever may send a done.

    async def name_it(finishing: Upload) -> None:
        # Under the upload's lock, saved with its COMPLETED status: the done that completes the
        # file names it in the same write. Named after it, a done sent again in between (a retry
        # whose answer was lost, or the same done sent twice at once) found the file finished but
        # still under its chunks' name, and was refused 409 for the very name it asked for.
        _rename(finishing, filename, mime)

    try:
        upload = await _finish(
            service, owner, upload, md5=md5, total_parts=total_parts, total_size=total_size, name=name_it
        )
    except (e.InvalidState, e.Expired) as exc:
        raise by_qquuid(exc, upload, file_uuid) from None
    if upload.metadata.get("pm") == "whole" and not _named(upload):
        # A file sent whole was completed by its one request, maybe with no name: the first done
        # names it, judged under the lock (two dones at once both found it unnamed, and the second
        # renamed it after the first had been told its name stood).
        def first_to_name(current: Upload) -> None:
            if _named(current):
                _named_alike(current, filename, mime, file_uuid)

        upload = await service.rename(
            owner,
            upload.id,
            filename,
            mime_type=_done_type(upload, filename, mime),
            note={NAMED_BY_DONE: True},
            check=first_to_name,
        )
    else:
        # Finished before this done (which must name it alike), or named by it just now.
        _named_alike(upload, filename, mime, file_uuid)
    return JSONResponse({"file_url": file_url(request, file_uuid), "file_uuid": file_uuid, "success": True})


def _done_type(upload: Upload, filename: str, mime: str | None) -> str | None:
    """The type a done gives ``upload``: its ``qqfiletype``, else the type its name suggests when
    the chunks gave none (sent nameless, "blob"), else None (the type stays)."""
    if mime is None and upload.mime_type == UNKNOWN_TYPE:
        return mimetypes.guess_type(filename)[0]
    return mime


def _rename(upload: Upload, filename: str, mime: str | None) -> None:
    """Name ``upload`` as a done does (typed by ``_done_type``), marked as named by a done."""
    mime = _done_type(upload, filename, mime)
    upload.filename = filename
    if mime is not None:
        upload.mime_type = media_type(mime)
    upload.metadata = {**upload.metadata, NAMED_BY_DONE: True}


def _named_alike(upload: Upload, filename: str, mime: str | None, file_uuid: str) -> None:
    """Refuse a done that names a finished file otherwise than it was named (409)."""
    if filename != upload.filename:
        raise e.Conflict(
            f"qqfilename {filename!r} differs from {upload.filename!r}, the name file {file_uuid} was finished "
            "with; a done cannot rename a finished file",
            field="qqfilename",
        )
    if mime is not None and media_type(mime) != upload.mime_type:
        raise e.Conflict(
            f"qqfiletype {mime!r} differs from {upload.mime_type!r}, the type file {file_uuid} was finished "
            "with; a done cannot change it",
            field="qqfiletype",
        )


# In the upload's metadata: a done has named the file (see ``_done``).
NAMED_BY_DONE = "pmNamed"
UNKNOWN_TYPE = "application/octet-stream"


def _named(upload: Upload) -> bool:
    return bool(upload.metadata.get(NAMED_BY_DONE))


async def _finish(
    service: UploadService,
    owner: str,
    upload: Upload,
    *,
    md5: str | None,
    total_parts: int | None,
    total_size: int | None,
    name: Callable[[Upload], Awaitable[None]],
) -> Upload:
    """Check the done request's totals against the file (declaring its size if no chunk told it)
    and complete it, ``name`` naming it in the same write (not called if it was complete)."""
    if upload.size_bytes is None and upload.status is Status.PENDING:
        upload = await _declare_size_at_done(service, owner, upload, total_size, total_parts)
    if total_size is not None and total_size != upload.size_bytes:
        raise e.SizeMismatch(
            f"qqtotalfilesize {total_size} differs from the {upload.size_bytes} bytes of this file",
            field="qqtotalfilesize",
        )
    # A file sent whole, in one request, is one chunk (it is an appended upload: no part count).
    count = 1 if upload.metadata.get("pm") == "whole" else upload.part_count
    if total_parts is not None and count is not None and total_parts != count:
        raise e.InvalidInput(
            f"qqtotalparts {total_parts} differs from the {count} chunk{'s' if count != 1 else ''} of this file",
            field="qqtotalparts",
        )
    return await service.complete(owner, upload.id, md5=md5, check=name)


async def _declare_size_at_done(
    service: UploadService, owner: str, upload: Upload, total_size: int | None, total_parts: int | None
) -> Upload:
    """A chunked file whose size no chunk told: qqtotalfilesize of the done request, or the end of
    its last chunk (qqtotalparts, or the count its first chunk gave)."""
    if total_size is None:
        count = chunk_count(upload) or total_parts
        if count is None:
            raise e.InvalidInput(
                "the file's size is unknown: send qqtotalfilesize or qqtotalparts", field="qqtotalfilesize"
            )
        parts = (await service.get(owner, upload.id)).parts
        if count not in parts:
            # Lazily, and at most 1000: a count recorded before counts were bounded may be huge.
            missing = list(islice((n for n in range(1, count + 1) if n not in parts), 1000))
            raise e.MissingParts("parts not received", missingParts=missing)
        total_size = parts[count].offset + parts[count].size
    elif (count := chunk_count(upload)) is not None and not upload.metadata.get(PART_SIZE_FROM_PART_1):
        # A size the chunks' own qqtotalparts contradicts could never be filled, and once declared
        # it stays: every later chunk and done was refused against it.
        chunks = -(-total_size // upload.part_size)
        if chunks != count:
            raise e.InvalidInput(
                f"qqtotalfilesize {total_size} makes {chunks} chunk{'s' if chunks != 1 else ''} of "
                f"{upload.part_size} bytes; the file's chunks said qqtotalparts {count}",
                field="qqtotalfilesize",
            )
    return await service.declare_size(owner, upload.id, total_size)


def _file_object(request: Request, upload: Upload, file_uuid: str) -> dict[str, Any]:
    return {
        "uuid": file_uuid,
        "filename": upload.filename,
        "filesize": upload.size_bytes if upload.size_bytes is not None else upload.bytes_received,
        "mimetype": upload.mime_type,
        "duration": None,  # chunkd does not probe media; the field is part of the File schema
        "url": file_url(request, file_uuid) if upload.status is Status.COMPLETED else None,
        "thumbnail": None,
        "status": upload.status.value,
        "id": upload.id,
    }


# GET and HEAD as two routes: one route with both methods gives both operations one operationId,
# which OpenAPI requires to be unique.
@router.get(f"{BASE}/{{file_uuid}}", summary="Download a file (its file_url)", **DOWNLOAD)
@router.head(f"{BASE}/{{file_uuid}}", summary="Download a file's headers", **DOWNLOAD)
@router.api_route(f"{BASE}/{{file_uuid}}/", methods=["GET", "HEAD"], include_in_schema=False)
async def download(request: Request, file_uuid: FileUuid) -> Response:
    who = await principal(request, "files:read")
    service = runtime(request).uploads
    upload = (await find_upload(service, who.owner, file_uuid)).as_of(service.clock())
    if upload.status is Status.EXPIRED:
        raise by_qquuid(e.Expired(f"upload {upload.id} has expired"), upload, file_uuid)
    if upload.status is not Status.COMPLETED:  # said with the qquuid, not the engine's id
        raise e.InvalidState(
            f"the file with qquuid {file_uuid} is {upload.status.value}; only COMPLETED files can be downloaded",
            field="qquuid",
        )
    return await file_response(request, who.owner, upload.id)


@router.get(f"{BASE}/{{file_uuid}}/info", summary="The File object of a file")
async def info(request: Request, file_uuid: FileUuid) -> dict[str, Any]:
    who = await principal(request, "files:read")
    service = runtime(request).uploads
    upload = (await find_upload(service, who.owner, file_uuid)).as_of(service.clock())  # expired: EXPIRED
    return _file_object(request, upload, file_uuid)


@router.delete(f"{BASE}/{{file_uuid}}", summary="Cancel a pending upload or delete a file")
@router.delete(f"{BASE}/{{file_uuid}}/", include_in_schema=False)
async def delete(request: Request, file_uuid: FileUuid) -> JSONResponse:
    """Cancelling one's own unfinished upload is part of uploading (scope files:create, as the
    Files API's cancel); removing a finished file needs files:delete."""
    return await _delete(request, file_uuid)


async def _delete(request: Request, file_uuid: str) -> JSONResponse:
    who = await principal(request)
    service = runtime(request).uploads
    upload = await find_upload(service, who.owner, file_uuid)
    if upload.status is Status.PENDING:
        await principal(request, "files:create")
        await service.cancel(who.owner, upload.id)
    else:
        await principal(request, "files:delete")
        await service.delete(who.owner, upload.id)
    return JSONResponse({"file_uuid": file_uuid, "success": True})
