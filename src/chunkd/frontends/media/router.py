"""The media API (``/api/v2/media``): django-chunked-upload's protocol — ``Content-Range`` chunks
in a multipart ``image`` or ``document`` field, then ``complete`` with ``upload_id`` and ``md5`` —
publishing an image or PDF as a Media object with an integer id. A thin adapter: chunks are
engine APPEND uploads (frontend ``media``), content checks run inside the engine's ``complete``.

Every path answers with and without its trailing slash (a redirect would turn a POST into a GET
in some clients)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from chunkd.auth.principal import Principal
from chunkd.auth.signing import Grant
from chunkd.domain import errors as e
from chunkd.domain.checksum import parse_md5_hex
from chunkd.domain.media import MediaRecord, MediaType
from chunkd.domain.upload import Mode, Upload
from chunkd.frontends.forms import small_form
from chunkd.frontends.held import HeldBytes
from chunkd.frontends.http import DOWNLOAD, dialect_route, file_response, isotime, principal, runtime, takes_file_bytes
from chunkd.frontends.media.errors import ERROR_RESPONSES, render_error
from chunkd.frontends.multipart import FilePart, FormStream
from chunkd.frontends.signed import SigningKey, signed_upload, signed_url
from chunkd.service.media import MEDIA_FRONTEND, MediaService, default_type, served_type
from chunkd.service.takeover import TAKE_OVER_WAIT

__all__ = ["router"]

# The service's two fields, and django-chunked-upload's own default ("file": the type then comes
# from the file's extension only).
FILE_FIELDS = frozenset({"image", "document", "file"})


def _hint(field: str) -> MediaType | None:
    """The media type the form field suggests (``default_type`` decides by extension first)."""
    return MediaType.DOC if field == "document" else MediaType.IMAGE if field == "image" else None


_CONTENT_RANGE = re.compile(r"^bytes (\d{1,19})-(\d{1,19})/(\d{1,19})$")

MediaId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The media's id (a 32-bit integer column).")]


async def _render(_: Request, exc: Exception) -> Response | None:
    return render_error(exc)


router = APIRouter(
    prefix="/api/v2/media", tags=["media"], route_class=dialect_route(_render), responses=ERROR_RESPONSES
)


def _both(method: str, path: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a handler at ``path`` with and without the trailing slash."""

    def register(handler: Callable[..., Any]) -> Callable[..., Any]:
        router.add_api_route(path, handler, methods=[method], **kwargs)
        router.add_api_route(path.rstrip("/"), handler, methods=[method], include_in_schema=False, **kwargs)
        return handler

    return register


def media_service(request: Request) -> MediaService:
    return runtime(request).media


def _content_range(header: str | None) -> tuple[int, int, int] | None:
    """(start, end, total) of a chunk; None without the header: jQuery File Upload sends none when
    the file fits in one chunk, and django-chunked-upload then takes the chunk as the whole file."""
    if header is None:
        return None
    match = _CONTENT_RANGE.match(header.strip())
    if not match:
        raise e.InvalidInput("Content-Range must be given as 'bytes START-END/TOTAL'", field="Content-Range")
    start, end, total = map(int, match.groups())
    if not start <= end < total:
        raise e.InvalidInput(
            f"Content-Range {start}-{end}/{total} is not a range inside the file", field="Content-Range"
        )
    return start, end, total


@_both("POST", "/upload/chunk/", status_code=201, summary="Upload one chunk (django-chunked-upload protocol)")
@takes_file_bytes()
async def upload_chunk(request: Request) -> dict[str, Any]:
    """``multipart/form-data``: the chunk in ``image`` or ``document`` (or ``file``), ``upload_id``
    from the second chunk on (before the file part), ``Content-Range: bytes START-END/TOTAL``. Answers
    ``{upload_id, offset, expires}``; a chunk that does not start at ``offset`` is refused (400,
    with the expected ``offset``) and nothing of it is kept. A later chunk may name its
    ``upload_id`` after the file part too (held in memory then: it is at most one chunk).
    Without ``Content-Range`` (and without ``upload_id``) the chunk is the whole file, at most one
    chunk long."""
    held = HeldBytes("too many chunks are held until their upload_id; retry, or send upload_id first", "upload_id")
    try:
        return await _upload_chunk(request, held)
    finally:
        held.release()


async def _upload_chunk(request: Request, held: HeldBytes) -> dict[str, Any]:
    who = await principal(request, "files:create")
    media = media_service(request)
    service = media.uploads
    content_range = _content_range(request.headers.get("content-range"))
    if content_range is not None:
        start, end, total = content_range
        length = end - start + 1
        if length > media.limits.chunk_bytes:
            raise _chunk_too_large(media, f"this one has {length}", "Content-Range")
    form = FormStream(request, file_fields=FILE_FIELDS)
    part = await form.next_file()
    if part is None:
        raise e.InvalidInput("no chunk was submitted: send it in the image or document field", field="image")
    upload_id = form.fields.get("upload_id") or None
    if content_range is None:
        if upload_id is not None:
            raise e.InvalidInput(
                "Content-Range is required with upload_id (only a file sent whole in one request may omit it)",
                field="Content-Range",
            )
        return await _whole_file(request, who.owner, media, form, part)
    body = part.body()
    if upload_id is None and start != 0:
        # A later chunk whose form names upload_id after the file part (django-chunked-upload
        # reads a form in any order): the chunk, at most media_max_chunk_bytes (checked above), is
        # held until the end of the form names its upload.
        data = await _hold(body, length, held)
        upload_id = form.fields.get("upload_id") or None
        body = _replay(data)
    created = False
    if upload_id is not None:
        upload = await media.upload(who.owner, upload_id)
        if upload.size_bytes != total:
            raise e.InvalidInput(
                f"Content-Range gives a total of {total} bytes; the upload was started with {upload.size_bytes}",
                field="Content-Range",
            )
    else:
        media.check_size(default_type(part.filename, _hint(part.name)), total)
        if start != 0:
            raise e.OffsetMismatch(
                f"the first chunk must start at byte 0, not {start} (or send upload_id before the file part)",
                field="Content-Range",
                expectedOffset=0,
            )
        upload = await _create(media, who.owner, part, total)
        created = True
    try:
        # A chunk retried after a dead connection ends the stale one (on any node) instead of a 409.
        async with runtime(request).takeover.take_over(upload.id, wait=TAKE_OVER_WAIT) as writer:
            try:
                upload = await service.append(
                    who.owner, upload.id, start, writer.guard(body), exact_size=length, lock_timeout=TAKE_OVER_WAIT
                )
            except e.OffsetMismatch as exc:
                # The engine names its own "offset" field; here the start comes in Content-Range.
                expected = exc.details.get("expectedOffset")
                raise e.OffsetMismatch(
                    f"Content-Range must start at byte {expected} (the offset received so far), not {start}",
                    field="Content-Range",
                    expectedOffset=expected,
                ) from None
        fields = await form.finish()
        late = fields.get("upload_id") or None
        if created and late is not None:
            raise e.InvalidInput("upload_id must come before the file part", field="upload_id")
    except BaseException:
        if created:  # a first chunk that failed leaves nothing behind
            with suppress(e.ChunkdError):
                await service.delete(who.owner, upload.id)
        raise
    return {"upload_id": upload.id, "offset": upload.bytes_received, "expires": isotime(upload.expires_at)}


async def _hold(body: AsyncIterator[bytes], length: int, budget: HeldBytes) -> bytes:
    """The chunk's bytes in memory, refused past its announced ``length``, and counted against the
    process's budget while they are read."""
    held = bytearray()
    async for piece in body:
        if len(held) + len(piece) > length:
            raise e.SizeMismatch(f"the body is longer than {length} bytes", field="body")
        budget.take(len(piece), limit=length)
        held += piece
    return bytes(held)


async def _replay(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _chunk_too_large(media: MediaService, what: str, field: str) -> e.TooLarge:
    return e.TooLarge(
        f"a chunk may have at most {media.limits.chunk_bytes} bytes; {what}",
        field=field,
        limit="media_max_chunk_bytes",
        maxChunkBytes=media.limits.chunk_bytes,
    )


async def _create(media: MediaService, owner: str, part: FilePart, size: int | None) -> Upload:
    """A media upload for the file ``part`` starts (``size``: the whole file's, when known), filled
    by appends of at most one chunk each."""
    return await media.uploads.create(
        owner,
        filename=part.filename or part.name,
        size_bytes=size,
        mode=Mode.APPEND,
        frontend=MEDIA_FRONTEND,
        metadata={"field": part.name},
        part_size=media.limits.chunk_bytes,
        strict_part_size=False,
    )


async def _whole_file(
    request: Request, owner: str, media: MediaService, form: FormStream, part: FilePart
) -> dict[str, Any]:
    """A chunk without Content-Range: the whole file in one request (jQuery File Upload's way for a
    file smaller than one chunk). Its size is what arrives, at most one chunk; then it is
    completed like any other (``complete`` with ``upload_id`` and ``md5``)."""
    service = media.uploads
    upload = await _create(media, owner, part, None)
    try:
        try:
            upload = await service.append(
                owner,
                upload.id,
                0,
                part.body(),
                keep_partial=False,
                max_bytes=media.limits.chunk_bytes,
                lock_timeout=TAKE_OVER_WAIT,  # as a chunk's: a lock connection may take a moment
            )
        except e.TooLarge:
            raise _chunk_too_large(media, "send a larger file in chunks with Content-Range", part.name) from None
        if (await form.finish()).get("upload_id"):
            raise e.InvalidInput("upload_id must come before the file part", field="upload_id")
        media.check_size(default_type(part.filename, _hint(part.name)), upload.bytes_received)
        upload = await service.declare_size(owner, upload.id, upload.bytes_received)
    except BaseException:
        with suppress(e.ChunkdError):  # a whole file that failed leaves nothing behind
            await service.delete(owner, upload.id)
        raise
    return {"upload_id": upload.id, "offset": upload.bytes_received, "expires": isotime(upload.expires_at)}


async def _params(request: Request) -> dict[str, str]:
    """The complete call's parameters from a url-encoded, JSON or multipart body. A JSON object is
    recognised by its first character too: the API's own JavaScript example sends JSON text under
    ``Content-Type: application/x-www-form-urlencoded``. Values must be strings, and multipart text
    fields have the chunk endpoint's limits (``FormStream``'s: 8 KiB, 50 fields, 400 past them)."""
    return await small_form(request, numbers=False, max_field_bytes=8192, max_fields=50, oversize=e.InvalidInput)


def _file_path(media_id: int) -> str:
    return f"{router.prefix}/{media_id}/file/"


def signed_file_url(request: Request, record: MediaRecord) -> str:
    """The media's file URL with its own signature, so it works where no header can be sent (an
    ``<img src>``), as S3 storages hand out pre-signed URLs. It names the upload behind the media
    and is signed for that upload and its owner, so once the media is gone the URL answers 404,
    whatever its id comes to name later. The expiry is rounded up to a step of a quarter of the
    lifetime, so repeated reads give the same URL (and browsers can cache it)."""
    ttl = runtime(request).settings.media_url_ttl_seconds
    step = max(60, int(ttl // 4))
    now = time.time()
    expires_at = math.ceil((now + ttl) / step) * step
    grant = Grant("GET", _file_path(record.id), record.upload_id, record.owner)
    return signed_url(request, grant, expires_at - now, extra=f"upload={record.upload_id}&")


def media_view(request: Request, record: MediaRecord, who: Principal) -> dict[str, Any]:
    """The Media object of the API's schema. The ``image`` URL reads the file without credentials,
    so only a credential that may read files (``files:read``) is given one: a files:create-only
    key (an uploader's) completes a media and gets ``image: null``, as the rest of the API never
    lets it read what it wrote."""
    return {
        "id": record.id,
        "added_at": isotime(record.added_at),
        "type": record.type.value,
        "title": None,
        "description": None,
        "url": None,
        "image": signed_file_url(request, record) if "files:read" in who.scopes else None,
        "image_width": record.width,
        "image_height": record.height,
        "order": record.order,
        "embed": None,
    }


@_both("POST", "/upload/complete/", status_code=201, summary="Complete a chunk upload and create the Media")
async def complete_upload(request: Request) -> dict[str, Any]:
    """``upload_id`` and ``md5`` required, ``type`` (image, doc, eimage) optional: by default
    ``doc`` for a ``.pdf`` name, else ``image``. The content must match the type (a PDF that parses;
    an image that decodes); any failure leaves the upload PENDING, so it can be completed again."""
    who = await principal(request, "files:create")
    params = await _params(request)
    upload_id = params.get("upload_id", "").strip()
    if not upload_id:
        raise e.InvalidInput("upload_id is required", field="upload_id")
    if not params.get("md5", "").strip():
        raise e.InvalidInput("md5 is required", field="md5")
    try:
        md5 = parse_md5_hex(params["md5"], field="md5")
    except ValueError as exc:
        raise e.InvalidInput(str(exc), field="md5") from None
    raw_type = params.get("type", "").strip()
    media_type: MediaType | None = None
    if raw_type:
        try:
            media_type = MediaType(raw_type)
        except ValueError:
            allowed = ", ".join(t.value for t in MediaType)
            raise e.InvalidInput(f"type must be one of {allowed}, not {raw_type!r}", field="type") from None
    record = await media_service(request).publish(who.owner, upload_id, md5=md5, media_type=media_type)
    return media_view(request, record, who)


@_both("GET", "/{media_id}/", summary="Get a Media object")
async def get_media(request: Request, media_id: MediaId) -> dict[str, Any]:
    who = await principal(request, "files:read")
    return media_view(request, await media_service(request).get(who.owner, media_id), who)


@_both("DELETE", "/{media_id}/", status_code=204, summary="Delete a Media object and its file")
async def delete_media(request: Request, media_id: MediaId) -> Response:
    who = await principal(request, "files:delete")
    await media_service(request).delete(who.owner, media_id)
    return Response(status_code=204)


@_both("GET", "/{media_id}/file/", summary="Download the media's file (the Media object's image URL)", **DOWNLOAD)
@_both("HEAD", "/{media_id}/file/", summary="The headers of the media's file, without the body", **DOWNLOAD)
async def media_file(
    request: Request,
    media_id: MediaId,
    upload: Annotated[str | None, Query(max_length=64)] = None,
    expires: Annotated[str | None, Query(max_length=20)] = None,
    signature: Annotated[str | None, Query(max_length=100)] = None,
    key_id: SigningKey = None,
) -> Response:
    """With the signature of the ``image`` URL no credentials are needed; without one, the owner's.
    Served only as the type the content was inspected to be, inline, sandboxed."""
    media = media_service(request)
    missing = e.NotFound(f"no media with id {media_id}", field="id")
    if signature is not None or expires is not None or upload is not None or key_id is not None:
        found = await signed_upload(request, "GET", _file_path(media_id), upload or "", expires, signature, key_id)
        if found is None:
            raise missing
        record = await media.get_signed(found, media_id)
    else:
        who = await principal(request, "files:read")
        record = await media.get(who.owner, media_id)
    legacy = None  # a record from before the inspected type was kept: its upload's type, if safe
    if record.mime_type is None:
        legacy = (await media.uploads.get(record.owner, record.upload_id, with_parts=False)).mime_type
    served = served_type(record, legacy)
    return await file_response(request, record.owner, record.upload_id, disposition="inline", media_type=served)
