"""tus creation (``POST``): a new upload, with its first bytes (creation-with-upload), its length
deferred (creation-defer-length), as a partial upload, or as the final concatenation of partials
(concatenation)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from starlette.responses import Response

from chunkd.auth.principal import Principal
from chunkd.domain import errors as e
from chunkd.domain.metadata import CONCATENATION_SOURCE
from chunkd.domain.upload import MAX_PARTS, Mode, Status, Upload
from chunkd.frontends.http import declares_body, field_value, parse_length, principal, runtime
from chunkd.frontends.tus.checksum_trailer import BodyChecksum, body_checksum
from chunkd.frontends.tus.headers import http_date, parse_concat, parse_metadata
from chunkd.frontends.tus.naming import file_name, file_type
from chunkd.frontends.tus.resource import (
    FRONTEND,
    OFFSET_STREAM,
    TusResource,
    base_headers,
    media_type,
    require_version,
    tus_state,
)
from chunkd.service.takeover import TAKE_OVER_WAIT

__all__ = ["ONE_WRITE_BODY", "Creation"]

# A creation-with-upload whose body is at most this long is stored in one write with its bytes,
# once they are durable: one commit per file instead of two. 64 KiB files, one client
# (compare.py small-tus-1, three alternating pairs, 2026-11-30): 82 → 102 files/s, server CPU
# 8.2 → 6.6 ms per file; with 16 clients, whose writes group commit already shares, no change.
# A longer body is stored first (while it streams in), so an upload whose bytes take long to
# arrive is in the database meanwhile (quotas, listings and the blob sweeper see it).
ONE_WRITE_BODY = 1024 * 1024


class Creation(TusResource):
    """``POST`` on the collection."""

    async def create(self, request: Request) -> Response:
        require_version(request)
        who = await principal(request, "files:create")
        service = runtime(request).uploads
        concat = parse_concat(field_value(request, "upload-concat"))
        meta = parse_metadata(field_value(request, "upload-metadata"))
        length = parse_length(field_value(request, "upload-length"), "Upload-Length")
        defer = field_value(request, "upload-defer-length")
        if defer is not None and defer.strip() != "1":
            raise e.InvalidInput("Upload-Defer-Length must be 1", field="Upload-Defer-Length")
        with_upload = media_type(request) == OFFSET_STREAM  # creation-with-upload, maybe of no bytes
        with_body = with_upload and declares_body(request.headers)
        checksum = body_checksum(request) if with_body else None
        filename = file_name(*meta.values("filename", "name"))
        mime_type = file_type(*meta.values("filetype", "type"))
        state: dict[str, Any] = {"meta": meta.stored()}

        if who.upload_link is not None and concat is not None:
            raise e.Forbidden("an upload link cannot concatenate uploads", field="Upload-Concat")
        if concat is not None and concat.final:
            if length is not None or defer is not None:
                raise e.InvalidInput(
                    "a final upload takes its length from its partial uploads; send no Upload-Length",
                    field="Upload-Length",
                )
            if with_body:
                raise e.InvalidInput("a final upload takes no body", field="Upload-Concat")
            upload = await self._concatenate(request, who, concat.urls, filename, mime_type, state)
            headers = base_headers()
            headers["Location"] = self.location(request, upload.id)
            if upload.status is Status.PENDING and upload.expires_at is not None:  # waiting on its partials
                headers["Upload-Expires"] = http_date(upload.expires_at)
            return Response(status_code=201, headers=headers)

        if (length is None) == (defer is None):
            raise e.InvalidInput("send either Upload-Length or Upload-Defer-Length: 1", field="Upload-Length")
        extra: dict[str, Any] = {}
        if concat is not None:
            state["concat"] = "partial"
            extra[CONCATENATION_SOURCE] = True  # a final may name it before it is finished
        content_length = parse_length(request.headers.get("content-length"), "Content-Length") if with_body else None
        if content_length is not None and length is not None and content_length > length:
            raise e.TooLarge(f"the body is longer than Upload-Length ({length})", field="Upload-Length")
        # With quotas, the upload is stored at once, in the owner's quota turn (see
        # ``quota_turn``); otherwise its row is written with its first bytes, or while they stream.
        stored_now = service.config.has_quotas
        # Through an upload link: checked and counted against the link's limits first, and tagged.
        links = runtime(request).links
        async with links.admitted(
            who, filename=filename, size_bytes=length, mime_type=mime_type, size_field="Upload-Length"
        ) as (tags, mime_type):
            upload = await (service.create if stored_now else service.new)(
                who.owner,
                filename=filename,
                size_bytes=length,
                mime_type=mime_type,
                mode=Mode.APPEND,
                frontend=FRONTEND,
                metadata={"tus": state, **extra, **tags},
                strict_part_size=False,
            )
        created = upload

        async def store() -> None:
            if stored_now:
                return
            try:
                await service.store_new(created)
            except BaseException:
                await links.release(who, length)
                raise

        headers = base_headers()
        headers["Location"] = self.location(request, upload.id)
        if not with_body:
            await store()
            if with_upload:  # an empty body is still answered with its offset ("MUST include")
                headers["Upload-Offset"] = "0"
        else:
            if content_length is not None and content_length <= ONE_WRITE_BODY and not stored_now:
                upload = await self._create_with_body(request, who, upload, checksum, length)
            else:
                upload = await self._create_then_append(request, who, upload, checksum, store, length)
            headers["Upload-Offset"] = str(upload.bytes_received)
        if upload.status is Status.PENDING and upload.bytes_received == upload.size_bytes:
            # A zero-length upload (the append that fills one completes it in the same write).
            upload = await service.complete(who.owner, upload.id)
        if upload.status is Status.PENDING and upload.expires_at is not None:
            headers["Upload-Expires"] = http_date(upload.expires_at)
        return Response(status_code=201, headers=headers)

    async def _create_with_body(
        self,
        request: Request,
        who: Principal,
        upload: Upload,
        checksum: BodyChecksum | None,
        length: int | None,
    ) -> Upload:
        """A short body: the upload is stored by the append's own write, with the bytes (one
        commit instead of two), or not at all when the body is refused."""
        service = runtime(request).uploads
        try:
            return await self._first_bytes(request, who, upload, checksum, store_created=True)
        except BaseException:
            # Stored only if the append got as far as its write (a body cut short keeps its bytes).
            with contextlib.suppress(Exception):
                try:
                    await service.get(who.owner, upload.id, with_parts=False)
                except e.NotFound:
                    await runtime(request).links.release(who, length)
            raise

    async def _create_then_append(
        self,
        request: Request,
        who: Principal,
        upload: Upload,
        checksum: BodyChecksum | None,
        store: Callable[[], Awaitable[None]],
        length: int | None,
    ) -> Upload:
        """A long body (or one of unknown length): the upload is stored while its first bytes
        stream in, so the two syncs overlap, and a body that takes long is never of an upload
        the database does not know yet. The append waits for the row before it writes."""
        stored = asyncio.ensure_future(store())
        try:
            try:
                return await self._first_bytes(request, who, upload, checksum, stored=stored)
            finally:
                await stored  # on every way out: its error (the database's) is the one to report
        except (e.ChecksumMismatch, e.TooLarge, e.QuotaExceeded, e.StorageError) as exc:
            # The creation is answered with the error and no Location, so its client can never
            # reach the upload: drop it (none of these keeps any of the body's bytes), and
            # neither a quota nor an upload link counts it any more. A storage fault left it
            # PENDING and counted, and the client's retry met its own quota.
            try:
                await runtime(request).uploads.delete(who.owner, upload.id)
            except e.NotFound:
                pass  # never stored
            except e.StorageError:
                raise exc from None  # the database is down too: the upload expires in time
            await runtime(request).links.release(who, length)
            raise

    async def _first_bytes(
        self,
        request: Request,
        who: Principal,
        upload: Upload,
        checksum: BodyChecksum | None,
        *,
        store_created: bool = False,
        stored: Awaitable[None] | None = None,
    ) -> Upload:
        """The creation's body appended to the upload it has just made (no one else knows its id
        yet: it is not loaded again), finishing it when the body fills it."""
        async with self.inflight(request).take_over(upload.id, wait=TAKE_OVER_WAIT) as writer:
            return await runtime(request).uploads.append(
                who.owner,
                upload.id,
                0,
                writer.guard(request.stream()),
                checksum=checksum,
                # As every other append waits: no one else writes a new upload, but on PostgreSQL
                # its lock is asked for on a lock connection shared with other uploads' statements.
                lock_timeout=TAKE_OVER_WAIT,
                finish=True,
                created=upload,
                stored=stored,
                store_created=store_created,
            )

    async def _concatenate(
        self,
        request: Request,
        who: Principal,
        urls: tuple[str, ...],
        filename: str,
        mime_type: str | None,
        state: dict[str, Any],
    ) -> Upload:
        if len(urls) > MAX_PARTS:
            message = f"Upload-Concat names {len(urls)} partial uploads; at most {MAX_PARTS} can be concatenated"
            raise e.InvalidInput(message, field="Upload-Concat")
        ids = [self.upload_id_from_url(request, url) for url in urls]
        now = runtime(request).uploads.clock()
        # A partial may be named more than once (its bytes then appear once per mention, as the
        # concatenation extension allows); each is checked once.
        for upload_id in dict.fromkeys(ids):
            partial = await self.load(request, who.owner, upload_id)
            if tus_state(partial).get("concat") != "partial":
                raise e.InvalidInput(f"upload {upload_id} is not a partial upload", field="Upload-Concat")
            if partial.past_expiry(now):
                raise e.InvalidInput(f"partial upload {upload_id} has expired", field="Upload-Concat")
            if partial.status in (Status.CANCELLED, Status.EXPIRED):
                message = f"partial upload {upload_id} is {partial.status.value.lower()}"
                raise e.InvalidInput(message, field="Upload-Concat")
            if partial.status is Status.PENDING and not partial.metadata.get(CONCATENATION_SOURCE):
                # Made before unfinished partials could be concatenated: it must finish first.
                raise e.InvalidInput(f"partial upload {upload_id} is not finished", field="Upload-Concat")
        state.update(concat="final", parts=ids)
        try:
            return await runtime(request).uploads.concatenate(
                who.owner,
                ids,
                filename=filename,
                mime_type=mime_type,
                frontend=FRONTEND,
                metadata={"tus": state},
                unfinished=True,  # concatenation-unfinished: completed when the last partial finishes
            )
        except e.TooLarge as exc:
            # The engine names the length it was given (Upload-Length to tus); a final's client sent
            # none: the length is its partials' sum, which Upload-Concat names.
            message = exc.message.replace("sizeBytes", "the partial uploads' total length")
            raise e.TooLarge(message, field="Upload-Concat", **exc.details) from exc
