"""The native Files API, ``/v1/files``: create → parts (or one PUT) → complete / cancel, then
download. A thin adapter: parsing and rendering here, every rule in the service and domain."""

from __future__ import annotations

import base64
import binascii
import contextlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from chunkd.auth.principal import Principal, require_scope
from chunkd.auth.signing import Grant
from chunkd.domain import errors as e
from chunkd.domain.checksum import parse_md5_hex
from chunkd.domain.events import file_object, file_summary
from chunkd.domain.metadata import PRE_FINISH, PURPOSE_METADATA_KEY
from chunkd.domain.names import is_upload_id
from chunkd.domain.upload import Status, Upload
from chunkd.frontends.digests import request_digest
from chunkd.frontends.http import (
    DOWNLOAD,
    content_length,
    content_md5,
    dialect_route,
    file_response,
    principal,
    runtime,
    takes_file_bytes,
)
from chunkd.frontends.native.errors import render_error
from chunkd.frontends.native.idempotency import HEADER, idempotency_key, same_request
from chunkd.frontends.native.schemas import (
    CompleteRequest,
    CreateFileRequest,
    DownloadUrl,
    ErrorResponse,
    FileCompletedResponse,
    FileCompleteResponse,
    FileList,
    FileObject,
    PartObject,
)
from chunkd.frontends.signed import SigningKey, signed_upload, signed_url, url_lifetime
from chunkd.service.concatenation import waiting_for
from chunkd.service.takeover import TAKE_OVER_WAIT

__all__ = ["router"]


async def _render(request: Request, exc: Exception) -> Response | None:
    if isinstance(exc, RequestValidationError) and _json_sent_as_something_else(request, exc):
        # FastAPI reads a JSON body only under a JSON Content-Type; under another (curl -d sends
        # application/x-www-form-urlencoded) it said "body: Input should be a valid dictionary".
        return render_error(
            e.InvalidInput(
                "the body must be a JSON object, sent with Content-Type: application/json", field="Content-Type"
            )
        )
    return render_error(exc)


def _json_sent_as_something_else(request: Request, exc: RequestValidationError) -> bool:
    """Whether the whole body was refused for its type while the request does not call it JSON."""
    errors = exc.errors()
    if not errors or tuple(errors[0].get("loc", ())) != ("body",) or errors[0].get("type") != "model_attributes_type":
        return False
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind != "application/json" and not kind.endswith("+json")


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 409, 413, 429)
}
router = APIRouter(prefix="/v1/files", tags=["files"], route_class=dialect_route(_render), responses=ERRORS)

FileId = Annotated[str, Path(description="Unique identifier of the file.", min_length=1, max_length=64)]
# Not "required": the one part of an empty file is an empty body.
OCTETS = {"requestBody": {"required": False, "content": {"application/octet-stream": {"schema": {}}}}}


def _content_path(file_id: str) -> str:
    """The path a signed URL for the file's whole content is made for (PUT to upload, GET to download)."""
    return f"/v1/files/{file_id}/content"


def _file_view(request: Request, upload: Upload, *, with_parts: bool, upload_url: bool) -> dict[str, Any]:
    """The file object; ``upload_url`` only for callers that may write (``files:create``): the URL
    is a write grant of its own, so a reader never gets one, and a request made through a signed
    URL never mints a fresh one (which would make the grant outlive its expiry). The rest is the
    object webhooks carry too (``chunkd.domain.events.file_object``). An upload past its expiry
    is shown EXPIRED, as complete and every write already answer, before the reaper records it."""
    upload = upload.as_of(runtime(request).uploads.clock())
    view = file_object(upload, with_parts=with_parts)
    who: Principal | None = getattr(request.state, "principal", None)
    # No signed uploadUrl for an upload link's token: it would outlive the link's revocation.
    if upload_url and upload.status is Status.PENDING and (who is None or who.upload_link is None):
        grant = Grant("PUT", _content_path(upload.id), upload.id, upload.owner)
        view.update(
            uploadUrl=signed_url(request, grant, runtime(request).settings.upload_ttl_seconds),
            uploadMethod="PUT",
            uploadHeaders={"Content-Type": "application/octet-stream"},
        )
    return view


def _md5_field(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    try:
        return parse_md5_hex(value, field=field)
    except ValueError as exc:
        raise e.InvalidInput(str(exc), field=field) from None


def _answer(
    model: type[BaseModel], content: dict[str, Any], status_code: int = 200, *, exclude_unset: bool = False
) -> Response:
    """``content`` as FastAPI answers with its ``response_model``: validated into ``model`` (so only
    its fields, with their defaults) and dumped to JSON. The JSON routes answer with their own
    ``Response`` so that they are called directly (frontends.http.routes); the decorator's
    ``response_model`` then only documents them."""
    body = model.model_validate(content, from_attributes=True).model_dump_json(
        by_alias=True, exclude_unset=exclude_unset
    )
    return Response(body, status_code=status_code, media_type="application/json")


@router.post(
    "",
    status_code=201,
    response_model=FileObject,
    summary="Create an upload",
    openapi_extra={
        "parameters": [
            {
                "name": HEADER,
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                "description": "Any 1-128 printable characters, new for each file (a UUID): the same create"
                " sent again (its answer lost) is answered with the upload the first one made. Sent again"
                " with another file, it is a 400.",
            }
        ]
    },
)
async def create_file(request: Request, body: CreateFileRequest) -> Response:
    who = await principal(request, "files:create")
    rt = runtime(request)
    md5 = _md5_field(body.md5, "md5")
    key = idempotency_key(request)
    try:
        # A create sent again while the first still runs waits for it here, then finds its
        # upload, rather than meeting the limits the first took (a link's maxFiles, quotas).
        async with rt.uploads.client_ref_turn(who.owner, "native", key):
            if key is not None and (earlier := await rt.uploads.find(who.owner, "native", key)) is not None:
                upload = same_request(earlier, who, body, md5)  # sent again: nothing new is made or counted
                return _answer(FileObject, _file_view(request, upload, with_parts=True, upload_url=True), 201)
            # Through an upload link: checked and counted against the link's limits first, and tagged.
            async with rt.links.admitted(
                who, filename=body.filename, size_bytes=body.sizeBytes, mime_type=body.mimeType, size_field="sizeBytes"
            ) as (tags, mime_type):
                upload = await rt.uploads.create(
                    who.owner,
                    filename=body.filename,
                    size_bytes=body.sizeBytes,
                    mime_type=mime_type,
                    md5=md5,
                    part_size=body.partSize,
                    client_ref=key,
                    metadata={**tags, PURPOSE_METADATA_KEY: body.purpose} if body.purpose is not None else tags,
                )
    except e.Conflict as exc:
        if key is None or exc.field != "client_ref":
            raise
        # The same key sent twice at once: the other request made it a moment ago.
        earlier = await rt.uploads.find(who.owner, "native", key)
        if earlier is None:
            raise
        upload = same_request(earlier, who, body, md5)
    return _answer(FileObject, _file_view(request, upload, with_parts=True, upload_url=True), 201)


@router.get("", response_model=FileList, summary="List your files, newest first")
async def list_files(
    request: Request,
    status: Annotated[Status | None, Query(description="Only files in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[str | None, Query(max_length=200, description="nextCursor of the previous page.")] = None,
) -> dict[str, Any]:
    who = await principal(request, "files:read")
    before = _decode_cursor(cursor) if cursor else None
    uploads = await runtime(request).uploads.list_uploads(who.owner, status=status, limit=limit + 1, before=before)
    page, more = uploads[:limit], len(uploads) > limit
    next_cursor = _encode_cursor(page[-1]) if more and page else None
    writer = "files:create" in who.scopes
    views = [_file_view(request, u, with_parts=False, upload_url=writer) for u in page]
    return {"data": views, "nextCursor": next_cursor}


def _encode_cursor(upload: Upload) -> str:
    raw = f"{upload.created_at.isoformat()}|{upload.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, upload_id = raw.split("|", 1)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None or not is_upload_id(upload_id):
            raise ValueError
        return when, upload_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise e.InvalidInput("cursor is not a cursor this API returned", field="cursor") from None


@router.get("/{file_id}", response_model=FileObject, summary="Get a file, with the parts received")
async def get_file(request: Request, file_id: FileId) -> dict[str, Any]:
    who = await principal(request)
    if who.upload_link is None:  # a link's token may read its own unfinished uploads (to resume)
        require_scope(who, "files:read")
    service = runtime(request).uploads
    upload = await service.get(who.owner, file_id)
    if waiting_for(upload) is not None:
        # A concatenation (a tus final) still waiting: the request that finished its last source
        # settles it, unless its node stopped in between. Settled here as a tus HEAD settles it,
        # so that a client polling this view sees it complete.
        with contextlib.suppress(e.Busy):  # someone is settling it right now
            await service.finish_concatenation(who.owner, file_id)
        upload = await service.get(who.owner, file_id)
    return _file_view(request, upload, with_parts=True, upload_url="files:create" in who.scopes)


@router.put(
    "/{file_id}/parts/{part_number}",
    response_model=PartObject,
    summary="Upload one part (raw body)",
    openapi_extra=OCTETS,
)
@takes_file_bytes()
async def put_part(request: Request, file_id: FileId, part_number: Annotated[int, Path(ge=1, le=10_000)]) -> Response:
    """Answers with its own response (the ``PartObject`` shape), so it is called without FastAPI's
    dependency solving and serialisation (frontends.http.routes: a part is a hot path)."""
    who = await principal(request, "files:create")
    service = runtime(request).uploads
    wanted = request_digest(request.headers)
    part = await service.put_part(
        who.owner,
        file_id,
        part_number,
        request.stream(),
        content_md5=content_md5(request),
        declared_size=content_length(request),
        digest=(wanted.hasher, wanted.expected, wanted.field) if wanted is not None else None,
    )
    return JSONResponse({"partNumber": part.number, "sizeBytes": part.size, "etag": f'"{part.checksum}"'})


@router.put(
    "/{file_id}/content",
    response_model=FileObject,
    summary="Upload the whole file in one request (the uploadUrl)",
    openapi_extra=OCTETS,
)
@takes_file_bytes()
async def put_content(
    request: Request,
    file_id: FileId,
    expires: Annotated[str | None, Query(max_length=20)] = None,
    signature: Annotated[str | None, Query(max_length=100)] = None,
    key_id: SigningKey = None,
) -> dict[str, Any]:
    """Stores the body as the file's parts. A ``Content-MD5``, ``x-amz-checksum-*`` or
    ``Content-Digest`` sent with it is checked over the whole body before any part of it is kept:
    a mismatch is a 400 naming the header, and the upload stays as it was."""
    rt = runtime(request)
    signed = signature is not None or expires is not None
    if signed:
        found = await signed_upload(request, "PUT", _content_path(file_id), file_id, expires, signature, key_id)
        if found is None:
            raise e.NotFound(f"no upload with id {file_id!r}", field="id")
        owner = found.owner
    else:
        owner = (await principal(request, "files:create")).owner
    upload = await rt.uploads.get(owner, file_id, with_parts=False)
    length = content_length(request)
    if length is not None and upload.size_bytes is not None and length != upload.size_bytes:
        raise e.SizeMismatch(
            f"Content-Length {length} does not match sizeBytes {upload.size_bytes}", field="Content-Length"
        )
    # Checked over the whole body before any of it is recorded, as a part's are over the part.
    wanted = request_digest(request.headers)
    # A newer whole-file PUT (a client that retries after its connection died) stops this one.
    async with rt.takeover.whole_body(file_id, wait=TAKE_OVER_WAIT) as writer:
        upload = await rt.uploads.put_whole(
            owner,
            file_id,
            writer.guard(request.stream()),
            content_md5=content_md5(request),
            digest=wanted.checksum if wanted is not None else None,
        )
    return _file_view(request, upload, with_parts=True, upload_url=not signed)


@router.post(
    "/{file_id}/complete",
    response_model=FileCompletedResponse,
    response_model_exclude_unset=True,
    summary="Complete a file upload",
)
async def complete_file(
    request: Request, file_id: FileId, body: Annotated[CompleteRequest | None, Body()] = None
) -> Response:
    """Finalizes an upload after the file bytes have been uploaded. If an optional md5 hex digest is
    provided, the server validates the checksum before marking the file as completed.

    Required scope: files:create. Rate limit category: Write."""
    who = await principal(request, "files:create")
    md5 = _md5_field(body.md5 if body else None, "md5")
    upload = await runtime(request).uploads.complete(who.owner, file_id, md5=md5)
    view = file_summary(upload)
    if PRE_FINISH in upload.metadata:
        view["preFinish"] = upload.metadata[PRE_FINISH]
    return _answer(FileCompletedResponse, view, exclude_unset=True)


@router.post("/{file_id}/cancel", response_model=FileCompleteResponse, summary="Cancel a pending upload")
async def cancel_file(request: Request, file_id: FileId) -> dict[str, Any]:
    who = await principal(request, "files:create")
    service = runtime(request).uploads
    try:
        upload = await service.cancel(who.owner, file_id)
    except e.InvalidState:
        # Cancelled already: a cancel sent again (its answer was lost on the way) is answered as
        # the first one was, as a complete sent again is; it was a 409 that told a client whose
        # cancel had worked that it had not. A completed upload stays a 409.
        upload = await service.get(who.owner, file_id)
        if upload.status is not Status.CANCELLED:
            raise
    return file_summary(upload)


@router.delete("/{file_id}", status_code=204, summary="Delete a file and its bytes")
async def delete_file(request: Request, file_id: FileId) -> Response:
    who = await principal(request, "files:delete")
    await runtime(request).uploads.delete(who.owner, file_id)
    return Response(status_code=204)


@router.post(
    "/{file_id}/download-url", response_model=DownloadUrl, summary="A short-lived URL that downloads a completed file"
)
async def create_download_url(request: Request, file_id: FileId) -> dict[str, Any]:
    """For a browser, which can follow a URL straight to disk but cannot send an ``Authorization``
    header when it does: a URL signed for GET (and HEAD) of this file's content only, for its owner,
    bound to the API key asking (revoking the key ends it), living ``download_url_ttl_seconds``.

    Required scope: files:read (an upload link's token may not download)."""
    who = await principal(request, "files:read")
    rt = runtime(request)
    upload = await rt.uploads.get(who.owner, file_id, with_parts=False)
    if upload.status is not Status.COMPLETED:
        raise e.InvalidState(f"file {file_id} is {upload.status.value}; only COMPLETED files can be downloaded")
    ttl = url_lifetime(request, rt.settings.download_url_ttl_seconds)
    grant = Grant("GET", _content_path(upload.id), upload.id, upload.owner)
    return {"url": signed_url(request, grant, ttl), "expiresIn": int(ttl)}


@router.get("/{file_id}/content", summary="Download a completed file (Range supported)", **DOWNLOAD)
@router.head("/{file_id}/content", summary="The headers of a download, without the body", **DOWNLOAD)
async def download(
    request: Request,
    file_id: FileId,
    expires: Annotated[str | None, Query(max_length=20)] = None,
    signature: Annotated[str | None, Query(max_length=100)] = None,
    key_id: SigningKey = None,
) -> Response:
    """With the credentials of a files:read key or token, or with the query of a URL from
    ``POST /v1/files/{id}/download-url`` (no credentials needed)."""
    if signature is not None or expires is not None or key_id is not None:
        found = await signed_upload(request, "GET", _content_path(file_id), file_id, expires, signature, key_id)
        if found is None:
            raise e.NotFound(f"no upload with id {file_id!r}", field="id")
        return await file_response(request, found.owner, file_id)
    who = await principal(request, "files:read")
    return await file_response(request, who.owner, file_id)
