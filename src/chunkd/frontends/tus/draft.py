"""The IETF "Resumable Uploads for HTTP" draft (draft-ietf-httpbis-resumable-upload, interop
versions 3 to 8) at the tus endpoint, told apart from tus 1.0 by ``Upload-Draft-Interop-Version``.

The same engine calls as tus 1.0 (an upload in ``Mode.APPEND`` with ``frontend="tus"``), so the
same authentication, scopes, quotas, expiry and events apply, and an upload created by either
protocol is one engine upload. What the draft adds over tus:

- creation by any method with content (POST, PUT or PATCH on the collection) carrying the
  completion field (``Upload-Complete``, ``Upload-Incomplete`` in version 3); the length from
  ``Upload-Length`` or, when the request completes the upload, ``Content-Length``;
- ``104 Upload Resumption Supported`` with ``Location`` and ``Upload-Limit`` as soon as the upload
  exists, before the body is read, and progress 104s with the durable ``Upload-Offset`` every
  ``resumable_progress_bytes`` (each one a commit: the offset in a 104 is never ahead of the
  bytes stored), in ``draft_progress``;
- completion only when the client says so (``Upload-Complete: ?1``), never merely because the
  offset reached the length;
- errors as problem details (``draft_errors``); ``Upload-Limit`` on creation, HEAD, appends and
  OPTIONS; RFC 9530 digests (``chunkd.frontends.digests``).

The request fields are read in ``draft_fields``; version differences are in ``draft_versions``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

import http_sf
from fastapi import Request
from starlette.responses import Response

from chunkd.domain import errors as e
from chunkd.domain.upload import Mode, Status, Upload
from chunkd.frontends.digests import (
    content_digest_checksum,
    declared_digests,
    repr_digest_header,
    repr_digest_of,
    verify_read_digests,
)
from chunkd.frontends.http import declares_body, parse_length, principal, runtime
from chunkd.frontends.tus import draft_fields as fields
from chunkd.frontends.tus.draft_errors import CompletedUpload, InconsistentLength, length_overrun
from chunkd.frontends.tus.draft_progress import send_informational, write_body
from chunkd.frontends.tus.draft_versions import INTEROP_HEADER, PARTIAL_UPLOAD, InteropVersion
from chunkd.frontends.tus.errors import UnsupportedMediaType
from chunkd.frontends.tus.headers import parse_metadata
from chunkd.frontends.tus.naming import file_name, file_type
from chunkd.frontends.tus.resource import OFFSET_STREAM
from chunkd.service.hooks import ContentRejected
from chunkd.service.takeover import TAKE_OVER_WAIT

if TYPE_CHECKING:
    from chunkd.frontends.tus.router import TusEndpoint

__all__ = ["DraftEndpoint"]

# Content types that say how a request's body is framed, not what the file is: never the file's type.
# curl's --data-binary sends its default form type unless told another: a draft body is never a
# form, and the file was stored as application/x-www-form-urlencoded.
BODY_TYPES = frozenset({PARTIAL_UPLOAD, OFFSET_STREAM, "application/x-www-form-urlencoded"})


class DraftEndpoint:
    """The draft's requests at one tus mount point."""

    def __init__(self, tus: TusEndpoint) -> None:
        self.tus = tus

    # ---- shared pieces ------------------------------------------------------------------------
    def limits(self, request: Request, version: InteropVersion, upload: Upload | None = None) -> str:
        """``Upload-Limit`` from chunkd's settings (and the upload's own expiry)."""
        rt = runtime(request)
        settings = rt.settings
        service = rt.uploads
        members: dict[str, Any] = {"max-size": service.config.max_file_size, "min-size": 0}
        if settings.resumable_max_append_bytes is not None:
            members["max-append-size"] = settings.resumable_max_append_bytes
        if settings.resumable_min_append_bytes:
            members["min-append-size"] = settings.resumable_min_append_bytes
        now = service.clock()
        expires: datetime | None = now + service.config.ttl
        if upload is not None:
            expires = upload.expires_at if upload.status is Status.PENDING else None
        if expires is not None:
            members[version.lifetime_key] = max(0, int((expires - now).total_seconds()))
        value = http_sf.ser(members)
        request.state.upload_limit = value  # for a 413's problem response
        return value

    def state_headers(self, request: Request, version: InteropVersion, upload: Upload) -> dict[str, str]:
        """``Upload-Offset``, the completion field, ``Upload-Length`` and ``Upload-Limit``."""
        complete = upload.status is Status.COMPLETED
        headers = {
            INTEROP_HEADER: version.header,
            "Upload-Offset": str(upload.size_bytes if complete else upload.bytes_received),
            version.complete_field: version.complete_value(complete),
            "Upload-Limit": self.limits(request, version, upload),
        }
        if upload.size_bytes is not None:
            headers["Upload-Length"] = str(upload.size_bytes)
        return headers

    async def _finish(self, request: Request, owner: str, upload: Upload) -> Upload:
        """Complete the upload the client declared complete: its length is what arrived."""
        service = runtime(request).uploads
        if upload.size_bytes is None:
            upload = await service.declare_size(owner, upload.id, upload.bytes_received)
        elif upload.bytes_received != upload.size_bytes:
            raise InconsistentLength(
                f"the upload was declared complete at {upload.bytes_received} bytes, but its length is "
                f"{upload.size_bytes}",
                field="Upload-Complete",
            )
        declared = _draft_state(upload).get("repr")

        async def check(pending: Upload) -> None:
            if isinstance(declared, dict):
                await verify_read_digests(declared, lambda: service.read_received(pending), request.is_disconnected)

        try:
            return await service.complete(owner, upload.id, check=check)
        except e.ChecksumMismatch as exc:
            # "If the digests don't match, the server SHOULD consider the upload failed" (Repr-
            # Digest, declared at creation): it can neither change nor be met by these bytes, so
            # the upload is cancelled (a 404 from now on) rather than left to wait for its expiry.
            with contextlib.suppress(e.ChunkdError):
                await service.cancel(owner, upload.id)
            raise e.ChecksumMismatch(
                f"{exc.message}: the upload has failed and was cancelled", field="Repr-Digest", **exc.details
            ) from None

    async def completed_response(
        self, request: Request, version: InteropVersion, upload: Upload, *, status: int, location: str
    ) -> Response:
        """What the targeted resource (the collection) answers for a finished file: the file as
        JSON, with the draft's state fields and the representation digest (what the engine keeps,
        plus what ``Want-Repr-Digest`` asks for on this request or on the creation request)."""
        headers = self.state_headers(request, version, upload)
        headers["Location"] = location
        headers["Cache-Control"] = "no-store"
        want = request.headers.get("want-repr-digest") or _draft_state(upload).get("want")
        service = runtime(request).uploads
        try:
            digest = await repr_digest_header(
                upload.md5,
                want if isinstance(want, str) else None,
                lambda: service.read(upload),
                upload.crc64,
                gone=request.is_disconnected,
            )
        except e.StorageError:
            # Read after the upload's lock is let go: deleted since (its bytes go right after its
            # record), the file was completed all the same, and only the digests asked for (a
            # preference, RFC 9530) cannot be given; still recorded, storage is down (503).
            try:
                await service.get(upload.owner, upload.id, with_parts=False)
            except e.NotFound:
                digest = repr_digest_of(upload.md5, upload.crc64)
            else:
                raise
        if digest:
            headers["Repr-Digest"] = digest
        body = {
            "id": upload.id,
            "filename": upload.filename,
            "mimeType": upload.mime_type,
            "sizeBytes": upload.size_bytes,
            "md5": upload.md5,
            "status": upload.status.value,
            "url": location,
        }
        return Response(json.dumps(body), status_code=status, headers=headers, media_type="application/json")

    @contextlib.asynccontextmanager
    async def _offset_on_error(self, request: Request, owner: str, upload_id: str) -> AsyncIterator[None]:
        """On an error, note the upload's current offset for the problem response (versions 3–6:
        "the server MUST send the Upload-Offset header field in the response if it considers the
        upload active, either when the response is a success or when the response is a
        failure"); nothing when the upload is no longer active."""
        try:
            yield
        except (e.ChunkdError, UnsupportedMediaType):
            with contextlib.suppress(e.ChunkdError):
                upload = await runtime(request).uploads.get(owner, upload_id, with_parts=False)
                if upload.status is Status.PENDING:
                    request.state.draft_offset = upload.bytes_received
            raise

    async def _refuse_overrun(
        self, request: Request, version: InteropVersion, owner: str, upload_id: str, length: int, exc: e.TooLarge
    ) -> NoReturn:
        """A body that would take the offset past the upload's length, refused with nothing of it
        kept: a 400 from version 6 on (413 before); from version 7 the upload is no longer usable
        ("marking the upload resource invalid and rejecting any further interaction with it")."""
        if version.invalidates_on_length_overrun:
            with contextlib.suppress(e.ChunkdError):
                await runtime(request).uploads.cancel(owner, upload_id)
        raise length_overrun(version, f"the body goes past the upload's length of {length} bytes") from exc

    @staticmethod
    def _past_length(request: Request, length: int | None, offset: int, content_length: int | None) -> bool:
        """Whether a ``TooLarge`` from an append at ``offset`` means the upload's length was
        passed (not ``max-append-size`` nor the file size limit, which are 413s)."""
        if length is None:
            return False
        if content_length is not None:
            return offset + content_length > length
        most = runtime(request).settings.resumable_max_append_bytes
        return most is None or most >= length - offset

    # ---- creation --------------------------------------------------------------------------------
    async def create(self, request: Request, version: InteropVersion) -> Response:
        who = await principal(request, "files:create")
        service = runtime(request).uploads
        complete = fields.completion(request, version)
        offset = fields.sf_integer(request, "Upload-Offset")
        if offset not in (None, 0):
            raise e.InvalidInput("an upload creation request starts at offset 0", field="Upload-Offset")
        content_length = parse_length(request.headers.get("content-length"), "Content-Length")
        length = fields.declared_length(request, complete, 0, None, content_length)
        self.limits(request, version)  # kept on the request for a 413's answer
        fields.check_append_size(runtime(request).settings, complete, content_length, creation=True)
        if length is not None and content_length is not None and content_length > length:
            raise length_overrun(version, f"the body is longer than the upload's length of {length} bytes")
        meta = parse_metadata(request.headers.get("upload-metadata"))
        # Taken where usable, else the file is unnamed or untyped, as a tus creation does.
        filename = file_name(fields.filename(request), *meta.values("filename", "name"))
        content_type = fields.media_type(request)
        mime_type = file_type(
            *meta.values("filetype", "type"), content_type if content_type not in BODY_TYPES else None
        )
        declared = declared_digests(request.headers.get("repr-digest"))
        checksum = content_digest_checksum(request.headers.get("content-digest"))
        state: dict[str, Any] = {"meta": meta.stored(), "draft": version.number}
        if sha := {name: value for name, value in declared.items() if name != "md5"}:
            state["repr"] = sha  # checked against the stored bytes at completion
        if want := request.headers.get("want-repr-digest"):
            state["want"] = want[:200]  # honoured when the upload completes, maybe in a later request
        # Through an upload link (its token may POST to the tus collection, which is also the
        # draft's): checked and counted against the link's limits first, and tagged, as tus does.
        links = runtime(request).links
        async with links.admitted(
            who, filename=filename, size_bytes=length, mime_type=mime_type, size_field="Upload-Length"
        ) as (tags, mime_type):
            upload = await service.create(
                who.owner,
                filename=filename,
                size_bytes=length,
                mime_type=mime_type,
                md5=declared.get("md5"),
                mode=Mode.APPEND,
                frontend="tus",
                metadata={"tus": state, **tags},
                strict_part_size=False,
            )
        location = self.tus.location(request, upload.id)
        limits = self.limits(request, version, upload)
        await send_informational(
            request, {INTEROP_HEADER: version.header, "Location": location, "Upload-Limit": limits}
        )
        if declares_body(request.headers):
            try:
                # A body cut short (a newer request took over) keeps what arrived: the answer
                # carries the offset to resume from (the upload is deleted on the errors below).
                async with (
                    self._offset_on_error(request, who.owner, upload.id),
                    self.tus.inflight(request).take_over(upload.id, wait=TAKE_OVER_WAIT) as writer,
                ):
                    upload = await write_body(request, version, who.owner, upload.id, 0, writer, checksum)
            except e.TooLarge as exc:
                await service.delete(who.owner, upload.id)
                await links.release(who, length)
                if self._past_length(request, length, 0, content_length):
                    raise length_overrun(version, f"the body is longer than the upload's length of {length}") from exc
                raise
            except (e.ChecksumMismatch, e.SizeMismatch):
                # Nothing of the body was kept and the answer is a 4xx (do not resume): drop the
                # upload, and an upload link counts it no more.
                with contextlib.suppress(e.NotFound):
                    await service.delete(who.owner, upload.id)
                    await links.release(who, length)
                raise
        async with self._offset_on_error(request, who.owner, upload.id):
            if complete or _at_length(version, upload):
                upload = await self._finish(request, who.owner, upload)
                return await self.completed_response(request, version, upload, status=201, location=location)
        headers = self.state_headers(request, version, upload)
        headers["Location"] = location
        return Response(status_code=201, headers=headers)

    # ---- offset retrieval --------------------------------------------------------------------------
    async def head(self, request: Request, version: InteropVersion, file_id: str) -> Response:
        fields.reject_state_fields(request, version, head=True)
        who = await principal(request)
        _any_scope(who.scopes, "files:create", "files:read")
        upload = await self.tus.load(request, who.owner, file_id)
        if upload.status is Status.PENDING and "files:create" in who.scopes:
            # The client is about to resume: end a stale request (on any node) so the offset
            # answered is final and the next append can use it (a credential that may not write
            # only reads the offset).
            await self.tus.inflight(request).end_stale(file_id, wait=TAKE_OVER_WAIT)
            upload = await self.tus.load(request, who.owner, file_id)
            if _at_length(version, upload) and not self.tus.is_final(upload):
                # Full but not finished: the append that reached the length was saved and the
                # completion that follows it in another write was not (the server killed between
                # the two). Up to interop 6 reaching the length completes the upload, and a client
                # that reads this offset sends nothing more (tus-js-client's draft modes stop
                # there): finished here, as tus 1.0's HEAD finishes such an upload. A failure that
                # may pass (Busy, storage) or that ended the upload (its Repr-Digest not met, its
                # content rejected) is answered; a hook's refusal leaves the state as it is.
                try:
                    upload = await self._finish(request, who.owner, upload)
                except (e.Busy, e.StorageError, e.ChecksumMismatch, ContentRejected):
                    raise
                except e.ChunkdError:
                    upload = await self.tus.load(request, who.owner, file_id)
        self._check_active(request, upload)
        headers = self.state_headers(request, version, upload)
        headers["Cache-Control"] = "no-store"
        return Response(status_code=204, headers=headers)

    def _check_active(self, request: Request, upload: Upload) -> None:
        if upload.status is Status.PENDING or upload.status is Status.EXPIRED:
            upload.ensure_pending(runtime(request).uploads.clock())
        elif upload.status is Status.CANCELLED:
            raise e.NotFound(f"no upload with id {upload.id!r}", field="id")

    async def get(
        self,
        request: Request,
        version: InteropVersion,
        file_id: str,
        *,
        download: Callable[[Request, str], Awaitable[Response]],
    ) -> Response:
        """GET on an upload resource: the offset retrieval of HEAD for an unfinished upload; for a
        finished one, ``download`` serves its content, with the state fields -12 asks of a
        successful GET ("Upload-Offset", "Upload-Complete", "Upload-Limit")."""
        who = await principal(request)
        _any_scope(who.scopes, "files:create", "files:read")
        upload = await self.tus.load(request, who.owner, file_id)
        if upload.status is not Status.COMPLETED:
            return await self.head(request, version, file_id)
        response = await download(request, file_id)
        if response.status_code in (200, 206, 304):
            response.headers.update(self.state_headers(request, version, upload))
            response.headers["Cache-Control"] = "no-store"
        return response

    # ---- append --------------------------------------------------------------------------------------
    async def append(self, request: Request, version: InteropVersion, file_id: str) -> Response:
        who = await principal(request, "files:create")
        async with self._offset_on_error(request, who.owner, file_id):
            return await self._append(request, version, who.owner, file_id)

    async def _append(self, request: Request, version: InteropVersion, owner: str, file_id: str) -> Response:
        if version.requires_partial_upload_type and fields.media_type(request) != PARTIAL_UPLOAD:
            raise UnsupportedMediaType(f"an append must be sent as Content-Type: {PARTIAL_UPLOAD}")
        offset = fields.sf_integer(request, "Upload-Offset")
        if offset is None:
            raise e.InvalidInput("Upload-Offset is required (a non-negative integer)", field="Upload-Offset")
        complete = fields.completion(request, version, append=True)
        content_length = parse_length(request.headers.get("content-length"), "Content-Length")
        service = runtime(request).uploads
        upload = await self.tus.load(request, owner, file_id)
        if self.tus.is_final(upload):
            raise e.Forbidden("a final concatenation cannot be appended to", field="Upload-Concat")
        location = self.tus.location(request, upload.id)
        if upload.status is Status.COMPLETED:
            replay = complete and offset == upload.size_bytes and not declares_body(request.headers)
            if replay and (version.replays_final_response or version.completes_at_length):
                # The client lost the final response and asks again: replay it. Up to 6 also the
                # empty completing request of a client whose last append reached the length,
                # which completed the upload (``completes_at_length``).
                return await self.completed_response(request, version, upload, status=200, location=location)
            if version.bytes_to_completed_is_inconsistent_length and declares_body(request.headers):
                # Drafts -10/-11: "If the client attempted to append a non-zero length document,
                # the server MUST treat this as an inconsistent length failure."
                raise InconsistentLength(
                    f"upload {file_id} is already complete at {upload.size_bytes} bytes; nothing can be appended",
                    field="Upload-Offset",
                )
            raise CompletedUpload(f"upload {file_id} is already complete", field="Upload-Complete")
        self._check_active(request, upload)
        self._check_offset(upload, offset)
        length = fields.declared_length(request, complete, offset, upload.size_bytes, content_length)
        self.limits(request, version, upload)  # kept on the request for a 413's answer
        fields.check_append_size(runtime(request).settings, complete, content_length, creation=False)
        checksum = content_digest_checksum(request.headers.get("content-digest"))
        known = length if length is not None else upload.size_bytes
        try:
            if known is not None and content_length is not None and offset + content_length > known:
                raise e.TooLarge("the body goes past the upload's length", field="Content-Length")
            async with self.tus.inflight(request).take_over(file_id, wait=TAKE_OVER_WAIT) as writer:
                # Again now that a stale request (if any) has committed what it received.
                upload = await self.tus.load(request, owner, file_id)
                self._check_active(request, upload)
                self._check_offset(upload, offset)
                declare = length if length is not None and upload.size_bytes is None else None
                if declares_body(request.headers):
                    # Declared by the append's own write: a body refused (its Content-Digest, say)
                    # left the length fixed, and a retry with the right one was inconsistent.
                    upload = await write_body(request, version, owner, file_id, offset, writer, checksum, declare)
                elif declare is not None:
                    upload = await service.declare_size(owner, file_id, declare)
        except e.OffsetMismatch as exc:
            exc.details["providedOffset"] = offset
            raise
        except e.TooLarge as exc:
            if known is None or not self._past_length(request, known, offset, content_length):
                raise
            await self._refuse_overrun(request, version, owner, file_id, known, exc)
        if complete or _at_length(version, upload):
            upload = await self._finish(request, owner, upload)
            return await self.completed_response(request, version, upload, status=200, location=location)
        status = version.incomplete_append_status
        return Response(status_code=status, headers=self.state_headers(request, version, upload))

    @staticmethod
    def _check_offset(upload: Upload, offset: int) -> None:
        try:
            upload.check_append(offset)
        except e.OffsetMismatch as exc:
            exc.details["providedOffset"] = offset
            raise

    # ---- cancellation --------------------------------------------------------------------------------
    async def delete(self, request: Request, version: InteropVersion, file_id: str) -> Response:
        fields.reject_state_fields(request, version, head=False)
        who = await principal(request)
        upload = await self.tus.load(request, who.owner, file_id)
        if upload.status is Status.CANCELLED:
            raise e.NotFound(f"no upload with id {upload.id!r}", field="id")

        def allowed(current: Upload) -> None:
            # Judged again under the upload's lock: one that finished meanwhile needs files:delete.
            _any_scope(who.scopes, "files:delete" if current.status is Status.COMPLETED else "files:create")

        allowed(upload)
        async with self.tus.inflight(request).take_over(file_id, wait=TAKE_OVER_WAIT):
            await runtime(request).uploads.delete(who.owner, file_id, check=allowed)
        return Response(status_code=204, headers={INTEROP_HEADER: version.header})


def _at_length(version: InteropVersion, upload: Upload) -> bool:
    """Whether this version completes ``upload`` now without being told: it reached its length."""
    return (
        version.completes_at_length
        and upload.status is Status.PENDING
        and upload.size_bytes is not None
        and upload.bytes_received == upload.size_bytes
    )


def _draft_state(upload: Upload) -> dict[str, Any]:
    state = upload.metadata.get("tus")
    return state if isinstance(state, dict) else {}


def _any_scope(scopes: Collection[str], *wanted: str) -> None:
    if not any(scope in scopes for scope in wanted):
        error = e.Forbidden(f"this credential lacks the {wanted[0]} scope", field="scope", scope=wanted[0])
        error.code = "missing_scope"
        raise error
