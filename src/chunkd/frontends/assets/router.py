"""The asset API (``/asset``): create an asset, send it in one signed PUT (files up to the part
size, completed at once) or in signed per-part PUTs answered with an S3-style ``ETag``, then
``POST /asset/complete`` with ``action: complete`` or ``cancel`` (S3 CompleteMultipartUpload
semantics for the parts list). A thin adapter: an asset is an engine PARTS upload (frontend
``assets``) whose ``fileId`` is the upload id; the ``uploadId`` is an opaque random token kept in
the upload's metadata and checked on completion.

Part and upload URLs carry their own HMAC signature (``runtime.signer``) bound to method, path (the
asset and part), the asset's owner and expiry, so a browser or partner can PUT without the API key
(``chunkd.frontends.signed``)."""

from __future__ import annotations

import hmac
import re
import secrets
import unicodedata
from itertools import pairwise
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator
from starlette.responses import JSONResponse, Response

from chunkd.auth.principal import Principal
from chunkd.auth.signing import Grant
from chunkd.domain import errors as e
from chunkd.domain.checksum import same_bytes
from chunkd.domain.names import clean_filename
from chunkd.domain.parts import part_count
from chunkd.domain.upload import MAX_PARTS, Mode, Status, Upload
from chunkd.frontends import jsondepth
from chunkd.frontends.assets.errors import ERROR_RESPONSES, render_error
from chunkd.frontends.digests import request_digest
from chunkd.frontends.forms import read_small_body
from chunkd.frontends.http import (
    content_length,
    content_md5,
    dialect_route,
    isotime,
    principal,
    runtime,
    takes_file_bytes,
)
from chunkd.frontends.signed import SigningKey, signed_upload, signed_url
from chunkd.service.takeover import TAKE_OVER_WAIT
from chunkd.service.uploads import UploadService

__all__ = ["ASSETS_FRONTEND", "router", "s3_key"]

ASSETS_FRONTEND = "assets"
MAX_JSON_BYTES = 4 * 1024 * 1024  # a complete call lists up to 10,000 parts
ACTIONS = ("complete", "cancel")


async def _render(_: Request, exc: Exception) -> Response | None:
    return render_error(exc)


router = APIRouter(prefix="/asset", tags=["assets"], route_class=dialect_route(_render), responses=ERROR_RESPONSES)

FileId = Annotated[str, Path(min_length=1, max_length=64, description="The asset's fileId.")]
Expires = Annotated[str | None, Query(max_length=20)]
Signature = Annotated[str | None, Query(max_length=100)]


class CreateAsset(BaseModel):
    model_config = ConfigDict(extra="ignore")
    filename: StrictStr = Field(min_length=1, max_length=1024)
    filesize: StrictInt = Field(ge=0)  # strict: JSON false is not a size of 0
    originalFileId: StrictStr | None = Field(None, max_length=256)

    @field_validator("originalFileId")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        # Kept and echoed back as the client's reference: no control characters (a NUL cannot even
        # be stored in a PostgreSQL JSON column, and CR/LF have no business in an id).
        if value is not None and any(unicodedata.category(ch)[0] == "C" for ch in value):
            raise ValueError("must not contain control or format characters")
        return value


class PartRef(BaseModel):
    # The seed's "number": 1, or 1.0 as clients that hold numbers as floats write it (Python,
    # Java's double); not "1", not true, not 1.5.
    partNumber: int = Field(ge=1, le=10_000)
    etag: StrictStr = Field(max_length=200)

    @field_validator("partNumber", mode="before")
    @classmethod
    def _number(cls, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("must be a whole number")
        return int(value)


class CompleteAsset(BaseModel):
    model_config = ConfigDict(extra="ignore")
    fileId: StrictStr = Field(min_length=1, max_length=64)
    filename: StrictStr | None = Field(None, max_length=1024)
    filesize: StrictInt | None = Field(None, ge=0)
    # Checked by the route (its message names both actions); the schema lists them as the seed's
    # enum does, so that clients generated from chunkd's OpenAPI document know them too.
    action: StrictStr = Field(json_schema_extra={"enum": list(ACTIONS)})
    originalFileId: StrictStr | None = Field(None, max_length=256)
    uploadId: StrictStr | None = Field(None, max_length=256)
    parts: list[PartRef] = Field(default_factory=list, max_length=10_000)


def s3_key(file_id: str, filename: str) -> str:
    """``masters/<fileId>/<filename>`` with the name reduced to characters safe in any object
    store and URL: ASCII letters, digits, ``.``, ``_``, ``-`` (runs of anything else become one
    ``-``), e.g. ``2 vid.mp4`` → ``2-vid.mp4``."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_name)
    safe = re.sub(r"-+\.", ".", safe).strip("-")
    if safe.startswith("."):  # only the extension survived ("видео.mp4"): keep it
        safe = "file" + safe
    safe = safe.rstrip("-.") or "file"
    return f"masters/{file_id}/{safe[:200]}"


async def _json(request: Request, model: type[BaseModel]) -> Any:
    raw = await read_small_body(request.stream(), MAX_JSON_BYTES)
    try:
        data = jsondepth.loads(raw or b"null")
    except jsondepth.TooDeep:
        raise
    except e.InvalidInput as exc:
        raise e.InvalidInput(f"the body must be a JSON object; {exc.message}", field="body") from None
    if not isinstance(data, dict):
        raise e.InvalidInput("the body must be a JSON object", field="body")
    return model.model_validate(data)


def _signed(request: Request, upload: Upload, path: str) -> str:
    grant = Grant("PUT", path, upload.id, upload.owner)
    # An asset's URLs are handed out once, when it is created, and cannot be asked for again: cut
    # at the end of a 15-minute access token (the seed's own credential), an asset that takes
    # longer to send could never be finished. They end with the key behind the token all the same.
    return signed_url(request, grant, runtime(request).settings.asset_url_ttl_seconds, outlives_credential=True)


def _asset_view(request: Request, upload: Upload) -> dict[str, Any]:
    meta = upload.metadata
    view: dict[str, Any] = {
        "fileId": upload.id,
        "filename": upload.filename,
        "filesize": upload.size_bytes,
        "originalFileId": meta.get("originalFileId"),
        "s3Key": s3_key(upload.id, upload.filename),
        "multipart": meta.get("uploadId") is not None,
        "expiresAt": isotime(upload.expires_at),
    }
    if meta.get("uploadId") is None:
        view.update(uploadUrl=_signed(request, upload, f"{router.prefix}/{upload.id}/content"), uploadMethod="PUT")
    else:
        view.update(
            uploadId=meta["uploadId"],
            partSize=upload.part_size,
            partCount=upload.part_count,
            parts=[
                {"partNumber": n, "uploadUrl": _signed(request, upload, f"{router.prefix}/{upload.id}/parts/{n}")}
                for n in range(1, (upload.part_count or 0) + 1)
            ],
        )
    return view


def _result(upload: Upload, action: str) -> dict[str, Any]:
    """Seed 003's 200 answer. Every field is a "(string)" there: one the asset has none of (no
    originalFileId given, no uploadId for a single-PUT asset) is "", never null, which a client
    decoding the seed's types strictly refuses."""
    meta = upload.metadata
    return {
        "fileId": upload.id,
        "filename": upload.filename,
        "action": action,
        "originalFileId": meta.get("originalFileId") or "",
        "uploadId": meta.get("uploadId") or "",
        "s3Key": s3_key(upload.id, upload.filename),
        "status": "success",
    }


async def _asset(service: UploadService, owner: str, file_id: str, *, with_parts: bool = True) -> Upload:
    try:
        upload: Upload | None = await service.get(owner, file_id, with_parts=with_parts)
    except e.NotFound:
        upload = None  # said as this API says it: the engine's "no upload with id" names no fileId
    if upload is None or upload.frontend != ASSETS_FRONTEND:
        raise e.NotFound(f"no asset with fileId {file_id!r}", field="fileId")
    return upload


async def _writer(
    request: Request, path: str, file_id: str, expires: str | None, signature: str | None, key_id: str | None
) -> str:
    """The owner a PUT writes for: from a URL signature made for this asset, part and owner, else
    from the request's credentials."""
    if signature is not None or expires is not None or key_id is not None:
        upload = await signed_upload(request, "PUT", path, file_id, expires, signature, key_id)
        if upload is None or upload.frontend != ASSETS_FRONTEND:
            raise e.NotFound(f"no asset with fileId {file_id!r}", field="fileId")
        return upload.owner
    who: Principal = await principal(request, "files:create")
    return who.owner


@router.post("", status_code=201, summary="Create an asset and get its upload URL(s)")
@router.post("/", status_code=201, include_in_schema=False)
async def create_asset(request: Request) -> dict[str, Any]:
    """``{filename, filesize, originalFileId?}``. Files up to the part size (100 MiB by default)
    get one ``uploadUrl`` (a PUT of the whole body stores and completes the asset); larger ones get
    ``uploadId``, ``partSize`` and one signed ``uploadUrl`` per part, to be finished with
    ``POST /asset/complete``."""
    who = await principal(request, "files:create")
    body: CreateAsset = await _json(request, CreateAsset)
    rt = runtime(request)
    part_size = rt.settings.asset_part_size
    filename = clean_filename(body.filename)
    multipart = body.filesize > part_size
    too_many = part_count(body.filesize, part_size) > MAX_PARTS
    if too_many and body.filesize <= rt.uploads.config.max_file_size:  # the engine's error names a partSize
        raise e.InvalidInput(
            f"filesize {body.filesize} needs more than {MAX_PARTS} parts of {part_size} bytes; an asset holds at "
            f"most {MAX_PARTS * part_size} bytes",
            field="filesize",
        )
    upload = await rt.uploads.create(
        who.owner,
        filename=filename,
        size_bytes=body.filesize,
        part_size=part_size,
        mode=Mode.PARTS,
        frontend=ASSETS_FRONTEND,
        strict_part_size=False,
        metadata={
            "originalFileId": body.originalFileId,
            # S3 multipart upload ids are long opaque strings; this one is 512 random bits.
            "uploadId": secrets.token_urlsafe(64) if multipart else None,
        },
    )
    return _asset_view(request, upload)


@router.put("/{file_id}/parts/{part_number}", summary="Upload one part (signed URL); answers its ETag")
@takes_file_bytes()
async def put_part(
    request: Request,
    file_id: FileId,
    part_number: Annotated[int, Path(ge=1, le=10_000)],
    expires: Expires = None,
    signature: Signature = None,
    key_id: SigningKey = None,
) -> Response:
    path = f"{router.prefix}/{file_id}/parts/{part_number}"
    owner = await _writer(request, path, file_id, expires, signature, key_id)
    service = runtime(request).uploads
    await _asset(service, owner, file_id, with_parts=False)
    # The asset API's contract is S3's: a part's ETag is its MD5 (clients compare them), and a
    # Content-MD5 (or x-amz-checksum-*) sent with the part is checked before it is kept.
    wanted = request_digest(request.headers)
    part = await service.put_part(
        owner,
        file_id,
        part_number,
        request.stream(),
        content_md5=content_md5(request),
        declared_size=content_length(request),
        md5_etag=True,
        digest=(wanted.hasher, wanted.expected, wanted.field) if wanted is not None else None,
    )
    return Response(status_code=200, headers={"ETag": f'"{part.md5}"', "Access-Control-Expose-Headers": "ETag"})


@router.put("/{file_id}/content", summary="Upload a whole asset of up to one part (signed URL); completes it")
@takes_file_bytes()
async def put_content(
    request: Request, file_id: FileId, expires: Expires = None, signature: Signature = None, key_id: SigningKey = None
) -> Response:
    path = f"{router.prefix}/{file_id}/content"
    owner = await _writer(request, path, file_id, expires, signature, key_id)
    service = runtime(request).uploads
    upload = await _asset(service, owner, file_id, with_parts=False)
    length = content_length(request)
    if length is not None and length != upload.size_bytes:
        raise e.SizeMismatch(f"Content-Length {length} is not the asset's filesize {upload.size_bytes}")
    md5 = content_md5(request)  # S3's PutObject checks it; so does this PUT, before completing
    if upload.status is not Status.COMPLETED:
        # One such PUT at a time, from its bytes to the complete (a newer one stops an older one
        # still streaming): two at once each completed the asset with whichever body was stored
        # last, and the one whose body was replaced was answered 200 with the other's ETag.
        async with runtime(request).takeover.whole_body(file_id, wait=TAKE_OVER_WAIT) as writer:
            upload = await _asset(service, owner, file_id, with_parts=False)  # as the one before left it
            if upload.status is not Status.COMPLETED:
                # Checked over the body before it is recorded: a refused body is not left for a
                # complete without an MD5 (POST /asset/complete) to finish.
                await service.put_whole(owner, file_id, writer.guard(request.stream()), content_md5=md5)
                try:
                    upload = await service.complete(owner, file_id, md5=md5)
                except e.ChecksumMismatch as exc:  # left PENDING: the right bytes PUT again replace these
                    raise e.ChecksumMismatch("the body does not match its Content-MD5", field="Content-MD5") from exc
                return _stored(upload)
    if md5 is not None and md5 != upload.md5:
        raise e.ChecksumMismatch("the body does not match its Content-MD5", field="Content-MD5")
    elif not await same_bytes(request.stream(), upload.size_bytes or 0, upload.md5):
        # The same body again is a retry whose answer was lost: answered as before. Other bytes
        # would be dropped under a "success": the asset is complete and its bytes stay as they are.
        raise e.InvalidState(
            "this asset is complete: its bytes cannot be replaced (create a new asset for other bytes)",
            field="uploadUrl",
        )
    return _stored(upload)


def _stored(upload: Upload) -> JSONResponse:
    """The answer to an asset's single PUT: the asset, and its MD5 as the ETag."""
    return JSONResponse(
        _result(upload, "complete"),
        headers={"ETag": f'"{upload.md5}"', "Access-Control-Expose-Headers": "ETag"},
    )


def _etag(value: str) -> str:
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip().strip('"').strip().lower()


def _check_parts(upload: Upload, parts: list[PartRef]) -> None:
    """S3 CompleteMultipartUpload rules over the parts the engine holds."""
    count = upload.part_count or 0
    if not parts:
        raise e.InvalidInput("parts must list every part with its etag", field="parts")
    numbers = [ref.partNumber for ref in parts]
    if any(a >= b for a, b in pairwise(numbers)):
        raise e.InvalidInput("parts must be in strictly ascending partNumber order", field="parts")
    if numbers[-1] > count:
        raise e.InvalidInput(f"part {numbers[-1]} is beyond the asset's {count} parts", field="parts")
    for index, ref in enumerate(parts):
        number = ref.partNumber
        stored = upload.parts.get(number)
        if stored is None:
            raise e.InvalidInput(f"part {number} has not been uploaded", field="parts")
        if _etag(ref.etag) != stored.md5:
            raise e.InvalidInput(f"the etag of part {number} does not match the stored part", field="parts")
        # The engine already refuses wrong-sized parts at PUT; S3's rule is checked again here so
        # that the parts list itself is validated as S3 would.
        if index < len(parts) - 1 and stored.size < upload.part_size:
            raise e.InvalidInput(
                f"part {number} has {stored.size} bytes; every part but the last needs {upload.part_size}",
                field="parts",
            )
    listed = {ref.partNumber for ref in parts}
    missing = [n for n in range(1, count + 1) if n not in listed]
    if missing:
        raise e.InvalidInput(f"parts is missing part {missing[0]} of {count}", field="parts")


@router.post("/complete", summary="Complete or cancel a multipart asset upload")
@router.post("/complete/", include_in_schema=False)
async def complete_asset(request: Request) -> dict[str, Any]:
    """``action: complete`` checks the parts list (ascending, every part, etags matching the stored
    parts) and ``filesize`` against the bytes received, then completes the asset; ``action:
    cancel`` aborts it and frees its parts. Both are idempotent (a repeated complete is checked
    against the parts list as the first was)."""
    who = await principal(request, "files:create")
    # Seed 003: "Content-Type (string, required) Enum: "application/json"" (its parameters, such as
    # a charset, allowed).
    content_type = request.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != "application/json":
        raise e.InvalidInput(
            f"Content-Type must be application/json, not {content_type[:100]!r}"
            if content_type
            else "Content-Type is required: application/json",
            field="Content-Type",
        )
    body: CompleteAsset = await _json(request, CompleteAsset)
    if body.action not in ACTIONS:
        raise e.InvalidInput(f"action must be 'complete' or 'cancel' (case-sensitive), not {body.action!r}")
    action: Literal["complete", "cancel"] = body.action  # type: ignore[assignment]
    service = runtime(request).uploads
    try:
        upload = await _asset(service, who.owner, body.fileId, with_parts=action == "complete")
    except e.NotFound as exc:  # seed 003 lists 400 for every error of a request's own (no 404)
        raise e.InvalidInput(exc.message, field="fileId") from None
    expected_id = upload.metadata.get("uploadId")
    if expected_id is not None and not body.uploadId:
        raise e.InvalidInput("uploadId is required: this asset is a multipart upload", field="uploadId")
    if (expected_id is not None or body.uploadId) and (
        not body.uploadId
        # bytes: compare_digest refuses non-ASCII str (a TypeError, i.e. a 500, for a hostile uploadId)
        or not hmac.compare_digest(str(expected_id or "").encode(), body.uploadId.encode())
    ):
        raise e.InvalidInput("uploadId does not belong to this fileId", field="uploadId")
    if body.filename is not None and clean_filename(body.filename) != upload.filename:
        raise e.InvalidInput(f"filename does not match the asset's {upload.filename!r}", field="filename")
    stored_original = upload.metadata.get("originalFileId")
    if body.originalFileId and stored_original and body.originalFileId != stored_original:
        raise e.InvalidInput("originalFileId does not match the asset's", field="originalFileId")
    if action == "cancel":
        if upload.status is not Status.CANCELLED:
            upload = await service.cancel(who.owner, upload.id)
        return _result(upload, "cancel")
    if upload.status is not Status.COMPLETED:
        upload.ensure_pending(service.clock())  # a cancelled or expired asset says so, not "part 1 missing"
        if expected_id is None and not body.parts:
            # The seed: files of one part need no complete call; their PUT completes them.
            raise e.InvalidInput(
                "this asset has not been uploaded: PUT the whole file to its uploadUrl, which completes it"
                " (an asset of one part needs no complete call)",
                field="parts",
            )
        listed = body.parts
        filesize = body.filesize

        async def as_listed(current: Upload) -> None:
            _check_parts(current, listed)
            if filesize is not None and filesize != current.bytes_received:
                raise e.SizeMismatch(
                    f"filesize {filesize} does not match the {current.bytes_received} bytes received",
                    field="filesize",
                )

        await as_listed(upload)  # a wrong list is refused before the upload's lock is waited for
        # Checked again under the lock, on the parts the file is made of: a part PUT again between
        # the first check and the lock was completed as it stood, its etag not the one listed.
        upload = await service.complete(who.owner, upload.id, check=as_listed)
    else:
        if expected_id is not None:
            # Complete again (a retry): answered as the first time only for the list that completed
            # it. Any other list is refused as it would have been then (S3's rules).
            _check_parts(upload, body.parts)
        if body.filesize is not None and body.filesize != upload.size_bytes:
            raise e.SizeMismatch(f"filesize {body.filesize} does not match the asset's {upload.size_bytes} bytes")
    return _result(upload, "complete")
