"""tus requests on one upload: offset retrieval (``HEAD``), appending (``PATCH``), termination
(``DELETE``) and, beside the protocol, downloading a finished upload (``GET``)."""

from __future__ import annotations

import contextlib

from fastapi import Request
from starlette.responses import Response

from chunkd.domain import errors as e
from chunkd.domain.metadata import CONCATENATION
from chunkd.domain.upload import Mode, Status, Upload
from chunkd.frontends.digests import repr_digest_of
from chunkd.frontends.http import field_value, file_response, parse_length, principal, runtime
from chunkd.frontends.tus.checksum_trailer import body_checksum
from chunkd.frontends.tus.errors import TUS_VERSION, UnsupportedMediaType
from chunkd.frontends.tus.headers import http_date
from chunkd.frontends.tus.resource import (
    FRONTEND,
    OFFSET_STREAM,
    TusResource,
    base_headers,
    check_any_scope,
    media_type,
    plain_http,
    require_version,
    tus_state,
)
from chunkd.service.hooks import ContentRejected
from chunkd.service.takeover import TAKE_OVER_WAIT

__all__ = ["Transfer"]


class Transfer(TusResource):
    """``HEAD``, ``PATCH``, ``DELETE`` and ``GET`` on an upload."""

    async def head(self, request: Request, file_id: str) -> Response:
        if plain_http(request):
            # Not a tus client (no Tus-Resumable): `curl -I` or a download manager asking for the
            # headers of GET /files/{id} gets exactly those once the file is finished; before
            # that, the request is a tus HEAD without its version (412).
            who = await principal(request)  # GET checks files:read
            if (await self.load(request, who.owner, file_id)).status is Status.COMPLETED:
                return await self.get(request, file_id)
        require_version(request)
        who = await principal(request)
        check_any_scope(who, "files:create", "files:read")
        upload = await self.load(request, who.owner, file_id)
        if upload.status is Status.PENDING and "files:create" in who.scopes:
            # A HEAD is how a client resumes: end a stale PATCH (on any node) first, so the offset
            # answered includes what it received and is the one the next PATCH must send. Only a
            # credential that may write does: a read-only one's HEAD ended its owner's PATCH.
            await self.inflight(request).end_stale(file_id, wait=TAKE_OVER_WAIT)
            upload = await self.load(request, who.owner, file_id)
            if not self.is_final(upload) and upload.bytes_received == upload.size_bytes:
                # Full but not finished: its bytes were saved and the finish did not follow (a
                # crash between the two writes, a pre-finish hook down). An Upload-Offset equal to
                # Upload-Length tells a tus client it is done (tus-js-client sends nothing more),
                # so it is finished here. A failure that may pass (the hook still down, 423, which
                # a client retries) or that discarded the upload is answered; a hook's refusal
                # (its "not yet") was the filling PATCH's answer, and the state is answered as before.
                try:
                    upload = await runtime(request).uploads.complete(who.owner, file_id)
                except (e.Busy, e.StorageError, ContentRejected):
                    raise
                except e.ChunkdError:
                    upload = await self.load(request, who.owner, file_id)
        final_length = None
        if self.is_final(upload):
            upload, final_length = await self._settle_final(request, upload)
        if upload.status in (Status.PENDING, Status.EXPIRED):
            upload.ensure_pending(runtime(request).uploads.clock())  # 410 once expired
        elif upload.status is Status.CANCELLED:
            raise e.NotFound(f"no upload with id {file_id!r}", field="id")
        headers = self.upload_headers(request, upload, now_pending=True, final_length=final_length)
        return Response(status_code=200, headers=headers)

    async def _settle_final(self, request: Request, upload: Upload) -> tuple[Upload, int | None]:
        """A final upload: completed if its partials are all finished (normally done already by
        the PATCH that finished the last one; this covers a node that stopped in between), and its
        length if it is known. One whose partial went away before finishing is gone (410)."""
        service = runtime(request).uploads
        if upload.status is Status.PENDING:
            with contextlib.suppress(e.Busy):  # someone is completing it right now
                upload = await service.finish_concatenation(upload.owner, upload.id)
        failed = upload.metadata.get(CONCATENATION, {}).get("failed")
        if upload.status is Status.CANCELLED and failed:
            raise e.Expired(f"the final upload cannot be completed: {failed}")
        if upload.status is not Status.PENDING or upload.size_bytes is not None:
            return upload, None
        lengths = []
        for partial_id in tus_state(upload).get("parts", []):
            with contextlib.suppress(e.NotFound):
                lengths.append((await self.load(request, upload.owner, partial_id)).size_bytes)
        known = len(lengths) == len(tus_state(upload).get("parts", [])) and None not in lengths
        return upload, sum(n for n in lengths if n is not None) if known else None

    async def patch(self, request: Request, file_id: str) -> Response:
        require_version(request)
        who = await principal(request, "files:create")
        if media_type(request) != OFFSET_STREAM:
            raise UnsupportedMediaType(f"a PATCH body must be sent as Content-Type: {OFFSET_STREAM}")
        offset = parse_length(field_value(request, "upload-offset"), "Upload-Offset")
        if offset is None:
            raise e.InvalidInput("Upload-Offset is required", field="Upload-Offset")
        checksum = body_checksum(request)
        length = parse_length(field_value(request, "upload-length"), "Upload-Length")
        content_length = parse_length(request.headers.get("content-length"), "Content-Length")
        service = runtime(request).uploads

        def inspect(upload: Upload) -> None:
            """The tus rules on the row as loaded (under the lock, or before taking over)."""
            if upload.frontend != FRONTEND or upload.mode is not Mode.APPEND:
                raise e.NotFound(f"no upload with id {file_id!r}", field="id")
            if tus_state(upload).get("concat") == "final":
                raise e.Forbidden("a final upload cannot be patched", field="Upload-Concat")
            if upload.status is Status.COMPLETED and offset == upload.size_bytes:
                # A PATCH at the end of a finished upload is a success that adds nothing, as tusd
                # answers it: 204 with the final offset, any body left unread (the stored bytes
                # never change). Any other offset stays a 409, as in tusd.
                raise _AlreadyComplete(upload)
            upload.ensure_pending(service.clock())
            upload.check_append(offset)
            if length is not None and upload.size_bytes is not None and length != upload.size_bytes:
                raise e.InvalidInput(f"Upload-Length is already {upload.size_bytes}", field="Upload-Length")
            if length is not None and length < offset:
                raise e.InvalidInput(f"Upload-Length is below the {offset} bytes received", field="Upload-Length")
            size = length if length is not None else upload.size_bytes
            if size is not None and content_length is not None and offset + content_length > size:
                raise e.TooLarge(f"the body goes past Upload-Length ({size} bytes)", field="Content-Length")

        inflight = self.inflight(request)
        try:
            if inflight.writing(file_id):
                # Checked before taking over from an in-flight request, so a wrong PATCH cannot end
                # a good one (the only case that costs a second load).
                inspect(await self.load(request, who.owner, file_id))
            async with inflight.take_over(file_id, wait=TAKE_OVER_WAIT) as writer:
                upload = await service.append(
                    who.owner,
                    file_id,
                    offset,
                    writer.guard(request.stream()),
                    checksum=checksum,
                    lock_timeout=TAKE_OVER_WAIT,
                    finish=True,
                    inspect=inspect,
                    declare_length=length,
                )
        except _AlreadyComplete as done:
            return Response(status_code=204, headers=self.upload_headers(request, done.upload, now_pending=False))
        headers = base_headers()
        headers["Upload-Offset"] = str(upload.bytes_received)
        if upload.status is Status.PENDING and upload.expires_at is not None:
            headers["Upload-Expires"] = http_date(upload.expires_at)
        if (digest := repr_digest_of(upload.md5, upload.crc64)) is not None:
            headers["Repr-Digest"] = digest  # RFC 9530, once the file is complete
        return Response(status_code=204, headers=headers)

    async def delete(self, request: Request, file_id: str) -> Response:
        require_version(request)
        who = await principal(request)
        upload = await self.load(request, who.owner, file_id)

        def allowed(current: Upload) -> None:
            # Ending an unfinished upload is part of uploading; deleting a stored file needs
            # files:delete. Judged again under the upload's lock, on the status it is deleted in.
            check_any_scope(who, "files:delete" if current.status is Status.COMPLETED else "files:create")

        allowed(upload)
        async with self.inflight(request).take_over(file_id, wait=TAKE_OVER_WAIT):
            await runtime(request).uploads.delete(who.owner, file_id, check=allowed)
        return Response(status_code=204, headers=base_headers())

    async def get(self, request: Request, file_id: str) -> Response:
        """A download, not part of tus: no Tus-Resumable check, so browsers and plain HTTP clients
        download from here."""
        who = await principal(request, "files:read")
        upload = await self.load(request, who.owner, file_id)
        if self.is_final(upload):
            upload, _ = await self._settle_final(request, upload)
        if upload.status in (Status.PENDING, Status.EXPIRED):
            upload.ensure_pending(runtime(request).uploads.clock())  # expired: 410, as HEAD says
        if upload.status is not Status.COMPLETED:
            raise e.InvalidState(f"upload {file_id} is not finished; only finished uploads can be downloaded")
        response = await file_response(request, who.owner, file_id)
        response.headers["Tus-Resumable"] = TUS_VERSION
        return response


class _AlreadyComplete(Exception):
    """A PATCH at the end of a finished upload: answered 204, nothing of its body read."""

    def __init__(self, upload: Upload) -> None:
        super().__init__("the upload is complete")
        self.upload = upload
