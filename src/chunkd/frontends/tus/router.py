"""tus 1.0 (https://tus.io/protocols/resumable-upload) over the upload engine, at ``/files`` by
default (``CHUNKD_TUS_PATH``). Extensions: creation, creation-with-upload, creation-defer-length,
expiration, checksum, termination, concatenation.

A tus upload is an engine upload in ``Mode.APPEND`` with ``frontend="tus"``: PATCH is
``service.append``, a deferred Upload-Length is ``service.declare_size``, reaching the length is
``service.complete`` (whole-file MD5, events), DELETE is ``service.delete``, and a final
concatenation is ``service.concatenate``. This module only translates headers and errors; the tus
state it needs (metadata, partial/final) is kept in the upload's ``metadata["tus"]``.

Differences from tusd and @tus/server, on purpose: every request is authenticated and every
HEAD/PATCH/GET/DELETE checks the owner (another owner's upload is a 404); the checksum extension is
implemented; a 412 names the supported versions in ``Tus-Version``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from chunkd.auth.principal import Principal
from chunkd.domain import errors as e
from chunkd.domain.names import UPLOAD_ID_PATTERN
from chunkd.domain.upload import MAX_PARTS, Mode, Status, Upload
from chunkd.frontends.digests import content_digest_checksum, md5_repr_digest
from chunkd.frontends.http import (
    declares_body,
    dialect_route,
    file_response,
    parse_length,
    principal,
    public_base_url,
    runtime,
    takes_file_bytes,
)
from chunkd.frontends.tus.draft import DraftEndpoint
from chunkd.frontends.tus.draft_errors import UnsupportedInteropVersion, render_problem
from chunkd.frontends.tus.draft_versions import InteropVersion, interop_version
from chunkd.frontends.tus.errors import (
    TUS_VERSION,
    UnsupportedMediaType,
    UnsupportedVersion,
    render_error,
)
from chunkd.frontends.tus.headers import (
    CHECKSUM_ALGORITHMS,
    Metadata,
    http_date,
    parse_checksum,
    parse_concat,
    parse_metadata,
)
from chunkd.service.takeover import TAKE_OVER_WAIT, InFlight

__all__ = ["EXTENSIONS", "build_router"]

EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "expiration",
    "checksum",
    "termination",
    "concatenation",
)
OFFSET_STREAM = "application/offset+octet-stream"
FRONTEND = "tus"
_OVERRIDABLE = {"PATCH", "DELETE", "HEAD", "GET", "OPTIONS", "POST"}

FileId = Annotated[str, Path(min_length=1, max_length=64)]


# ---- helpers -------------------------------------------------------------------------------------
def _base_headers() -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store"}


def _plain_http(request: Request) -> bool:
    """A request without any resumable-upload protocol header (a browser, `curl`, a download manager)."""
    return "tus-resumable" not in request.headers and "upload-draft-interop-version" not in request.headers


def _require_version(request: Request) -> None:
    version = request.headers.get("tus-resumable")
    if version is None:
        raise UnsupportedVersion("the Tus-Resumable header is required")
    if version.strip() != TUS_VERSION:
        raise UnsupportedVersion(f"tus version {version.strip()[:20]!r} is not supported; use {TUS_VERSION}")


def _inflight(request: Request) -> InFlight:
    return runtime(request).takeover


def _tus_state(upload: Upload) -> dict[str, Any]:
    state = upload.metadata.get("tus")
    return state if isinstance(state, dict) else {}


async def _load(request: Request, owner: str, file_id: str) -> Upload:
    """The caller's tus upload; anything else (another owner's, or not a tus upload) is a 404."""
    upload = await runtime(request).uploads.get(owner, file_id, with_parts=False)
    if upload.frontend != FRONTEND or upload.mode is not Mode.APPEND:
        raise e.NotFound(f"no upload with id {file_id!r}", field="id")
    return upload


def _check_any_scope(who: Principal, *scopes: str) -> None:
    if not any(scope in who.scopes for scope in scopes):
        error = e.Forbidden(f"this credential lacks the {scopes[0]} scope", field="scope", scope=scopes[0])
        error.code = "missing_scope"
        raise error


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def draft_version(request: Request) -> InteropVersion | None:
    """The IETF draft's interop version when the request speaks the draft; None for tus 1.0.
    A version we do not speak is a 400, unless the request also says ``Tus-Resumable``."""
    raw = request.headers.get("upload-draft-interop-version")
    if raw is None:
        return None
    version = interop_version(raw)
    if version is None and request.headers.get("tus-resumable") is None:
        raise UnsupportedInteropVersion(
            f"Upload-Draft-Interop-Version {raw.strip()[:10]!r} is not supported; this server speaks 3 to 8",
            field="Upload-Draft-Interop-Version",
        )
    return version


def _speaks_draft(request: Request) -> bool:
    raw = request.headers.get("upload-draft-interop-version")
    return raw is not None and (interop_version(raw) is not None or request.headers.get("tus-resumable") is None)


async def render(request: Request, exc: Exception) -> Response | None:
    """Errors in the request's dialect: problem details for the draft, plain text for tus."""
    if _speaks_draft(request):
        return render_problem(request, exc)
    return render_error(exc)


class TusEndpoint:
    """The routes of one mount point (``prefix``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/")
        self._url_id = re.compile(re.escape(self.prefix) + f"/({UPLOAD_ID_PATTERN})/?$")
        self.draft = DraftEndpoint(self)

    # Shared with the draft.
    inflight = staticmethod(_inflight)

    @staticmethod
    async def load(request: Request, owner: str, file_id: str) -> Upload:
        return await _load(request, owner, file_id)

    @staticmethod
    def is_final(upload: Upload) -> bool:
        return _tus_state(upload).get("concat") == "final"

    def location(self, request: Request, upload_id: str) -> str:
        return f"{public_base_url(request)}{self.prefix}/{upload_id}"

    def upload_id_from_url(self, url: str) -> str:
        """The id in a URL we handed out (absolute or a path), for ``Upload-Concat: final``."""
        match = self._url_id.search(urlsplit(url).path)
        if match is None:
            message = f"Upload-Concat names {url[:200]!r}, which is not an upload URL"
            raise e.InvalidInput(message, field="Upload-Concat")
        return match.group(1)

    def upload_headers(self, upload: Upload, *, now_pending: bool) -> dict[str, str]:
        """The headers that describe an upload (HEAD, and POST/PATCH where they apply)."""
        headers = _base_headers()
        state = _tus_state(upload)
        offset = upload.size_bytes if upload.status is Status.COMPLETED else upload.bytes_received
        headers["Upload-Offset"] = str(offset or 0)
        if upload.size_bytes is None:
            headers["Upload-Defer-Length"] = "1"
        else:
            headers["Upload-Length"] = str(upload.size_bytes)
        meta = Metadata.from_stored(state.get("meta") or {})
        if meta.pairs:
            headers["Upload-Metadata"] = meta.header()
        if state.get("concat") == "partial":
            headers["Upload-Concat"] = "partial"
        elif state.get("concat") == "final":
            headers["Upload-Concat"] = "final;" + " ".join(f"{self.prefix}/{i}" for i in state.get("parts", []))
        if now_pending and upload.status is Status.PENDING and upload.expires_at is not None:
            headers["Upload-Expires"] = http_date(upload.expires_at)
        return headers

    # ---- OPTIONS ---------------------------------------------------------------------------------
    async def options(self, request: Request) -> Response:
        """Capabilities; no authentication and no Tus-Resumable needed."""
        headers = _base_headers()
        headers.update(
            {
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": ",".join(EXTENSIONS),
                "Tus-Max-Size": str(runtime(request).uploads.config.max_file_size),
                "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
            }
        )
        # The IETF draft: an OPTIONS on a resource that creates uploads names its limits.
        version = interop_version(request.headers.get("upload-draft-interop-version")) or interop_version("8")
        assert version is not None
        headers["Upload-Limit"] = self.draft.limits(request, version)
        return Response(status_code=204, headers=headers)

    # ---- POST: creation ----------------------------------------------------------------------------
    async def create(self, request: Request) -> Response:
        _require_version(request)
        who = await principal(request, "files:create")
        service = runtime(request).uploads
        concat = parse_concat(request.headers.get("upload-concat"))
        meta = parse_metadata(request.headers.get("upload-metadata"))
        length = parse_length(request.headers.get("upload-length"), "Upload-Length")
        defer = request.headers.get("upload-defer-length")
        if defer is not None and defer.strip() != "1":
            raise e.InvalidInput("Upload-Defer-Length must be 1", field="Upload-Defer-Length")
        with_body = _media_type(request) == OFFSET_STREAM and declares_body(request.headers)
        checksum = parse_checksum(request.headers.get("upload-checksum")) if with_body else None
        filename = meta.text("filename", "name") or "upload"
        mime_type = meta.text("filetype", "type")
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
            headers = _base_headers()
            headers["Location"] = self.location(request, upload.id)
            return Response(status_code=201, headers=headers)

        if (length is None) == (defer is None):
            raise e.InvalidInput("send either Upload-Length or Upload-Defer-Length: 1", field="Upload-Length")
        if concat is not None:
            state["concat"] = "partial"
        # Through an upload link: checked and counted against the link's limits first, and tagged.
        links = runtime(request).links
        tags, mime_type = await links.admit(
            who, filename=filename, size_bytes=length, mime_type=mime_type, size_field="Upload-Length"
        )
        try:
            upload = await service.create(
                who.owner,
                filename=filename,
                size_bytes=length,
                mime_type=mime_type,
                mode=Mode.APPEND,
                frontend=FRONTEND,
                metadata={"tus": state, **tags},
                strict_part_size=False,
            )
        except BaseException:
            await links.release(who, length)
            raise
        headers = _base_headers()
        headers["Location"] = self.location(request, upload.id)
        if with_body:
            content_length = parse_length(request.headers.get("content-length"), "Content-Length")
            try:
                if content_length is not None and length is not None and content_length > length:
                    raise e.TooLarge(f"the body is longer than Upload-Length ({length})", field="Upload-Length")
                async with _inflight(request).take_over(upload.id, wait=TAKE_OVER_WAIT) as writer:
                    upload = await service.append(
                        who.owner, upload.id, 0, writer.guard(request.stream()), checksum=checksum, finish=True
                    )
            except (e.ChecksumMismatch, e.TooLarge):
                # The creation is answered with the error and no Location: drop the new upload.
                await service.delete(who.owner, upload.id)
                raise
            headers["Upload-Offset"] = str(upload.bytes_received)
        if upload.size_bytes is not None and upload.bytes_received == upload.size_bytes:
            upload = await service.complete(who.owner, upload.id)
        if upload.status is Status.PENDING and upload.expires_at is not None:
            headers["Upload-Expires"] = http_date(upload.expires_at)
        return Response(status_code=201, headers=headers)

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
        ids = [self.upload_id_from_url(url) for url in urls]
        seen: set[str] = set()
        for upload_id in ids:
            # The same partial twice is a client bug (and each repeat would link its bytes again).
            if upload_id in seen:
                raise e.InvalidInput(f"Upload-Concat names upload {upload_id} more than once", field="Upload-Concat")
            seen.add(upload_id)
        for upload_id in ids:
            partial = await _load(request, who.owner, upload_id)
            if _tus_state(partial).get("concat") != "partial":
                raise e.InvalidInput(f"upload {upload_id} is not a partial upload", field="Upload-Concat")
            if partial.status is not Status.COMPLETED:
                raise e.InvalidInput(f"partial upload {upload_id} is not finished", field="Upload-Concat")
        state.update(concat="final", parts=ids)
        return await runtime(request).uploads.concatenate(
            who.owner, ids, filename=filename, mime_type=mime_type, frontend=FRONTEND, metadata={"tus": state}
        )

    # ---- HEAD ------------------------------------------------------------------------------------
    async def head(self, request: Request, file_id: str) -> Response:
        if _plain_http(request):
            # Not a tus client (no Tus-Resumable): `curl -I` or a download manager asking for the
            # headers of GET /files/{id} gets exactly those once the file is finished; before
            # that, the request is a tus HEAD without its version (412).
            who = await principal(request)  # GET checks files:read
            if (await _load(request, who.owner, file_id)).status is Status.COMPLETED:
                return await self.get(request, file_id)
        _require_version(request)
        who = await principal(request)
        _check_any_scope(who, "files:create", "files:read")
        upload = await _load(request, who.owner, file_id)
        if upload.status is Status.PENDING:
            # A HEAD is how a client resumes: end a stale PATCH (on any node) first, so the offset
            # answered includes what it received and is the one the next PATCH must send.
            await _inflight(request).end_stale(file_id, wait=TAKE_OVER_WAIT)
            upload = await _load(request, who.owner, file_id)
        if upload.status in (Status.PENDING, Status.EXPIRED):
            upload.ensure_pending(runtime(request).uploads.clock())  # 410 once expired
        elif upload.status is Status.CANCELLED:
            raise e.NotFound(f"no upload with id {file_id!r}", field="id")
        return Response(status_code=200, headers=self.upload_headers(upload, now_pending=True))

    # ---- PATCH -----------------------------------------------------------------------------------
    async def patch(self, request: Request, file_id: str) -> Response:
        _require_version(request)
        who = await principal(request, "files:create")
        if _media_type(request) != OFFSET_STREAM:
            raise UnsupportedMediaType(f"a PATCH body must be sent as Content-Type: {OFFSET_STREAM}")
        offset = parse_length(request.headers.get("upload-offset"), "Upload-Offset")
        if offset is None:
            raise e.InvalidInput("Upload-Offset is required", field="Upload-Offset")
        checksum = parse_checksum(request.headers.get("upload-checksum"))
        if checksum is None:  # RFC 9530, the draft's way of saying the same
            checksum = content_digest_checksum(request.headers.get("content-digest"))
        length = parse_length(request.headers.get("upload-length"), "Upload-Length")
        content_length = parse_length(request.headers.get("content-length"), "Content-Length")
        service = runtime(request).uploads
        has_body = declares_body(request.headers)

        def inspect(upload: Upload) -> None:
            """The tus rules on the row as loaded (under the lock, or before taking over)."""
            if upload.frontend != FRONTEND or upload.mode is not Mode.APPEND:
                raise e.NotFound(f"no upload with id {file_id!r}", field="id")
            if _tus_state(upload).get("concat") == "final":
                raise e.Forbidden("a final upload cannot be patched", field="Upload-Concat")
            if upload.status is Status.COMPLETED and offset == upload.size_bytes and not has_body:
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

        inflight = _inflight(request)
        try:
            if inflight.writing(file_id):
                # Checked before taking over from an in-flight request, so a wrong PATCH cannot end
                # a good one (the only case that costs a second load).
                inspect(await _load(request, who.owner, file_id))
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
            return Response(status_code=204, headers=self.upload_headers(done.upload, now_pending=False))
        headers = _base_headers()
        headers["Upload-Offset"] = str(upload.bytes_received)
        if upload.status is Status.PENDING and upload.expires_at is not None:
            headers["Upload-Expires"] = http_date(upload.expires_at)
        if (digest := md5_repr_digest(upload.md5)) is not None:
            headers["Repr-Digest"] = digest  # RFC 9530, once the file is complete
        return Response(status_code=204, headers=headers)

    # ---- DELETE (termination) ----------------------------------------------------------------------
    async def delete(self, request: Request, file_id: str) -> Response:
        _require_version(request)
        who = await principal(request)
        upload = await _load(request, who.owner, file_id)
        # Ending an unfinished upload is part of uploading; deleting a stored file needs files:delete.
        _check_any_scope(who, "files:delete" if upload.status is Status.COMPLETED else "files:create")
        async with _inflight(request).take_over(file_id, wait=TAKE_OVER_WAIT):
            await runtime(request).uploads.delete(who.owner, file_id)
        return Response(status_code=204, headers=_base_headers())

    # ---- GET (download, not part of tus) -----------------------------------------------------------
    async def get(self, request: Request, file_id: str) -> Response:
        # No Tus-Resumable check: browsers and plain HTTP clients download from here.
        who = await principal(request, "files:read")
        upload = await _load(request, who.owner, file_id)
        if upload.status is not Status.COMPLETED:
            raise e.InvalidState(f"upload {file_id} is not finished; only finished uploads can be downloaded")
        response = await file_response(request, who.owner, file_id)
        response.headers["Tus-Resumable"] = TUS_VERSION
        return response

    # ---- POST with X-HTTP-Method-Override ----------------------------------------------------------
    async def overridden(self, request: Request, file_id: str | None) -> Response:
        method = request.headers.get("x-http-method-override", "POST").strip().upper()
        if method not in _OVERRIDABLE:
            message = f"X-HTTP-Method-Override {method[:20]!r} is not supported"
            raise e.InvalidInput(message, field="X-HTTP-Method-Override")
        if method == "OPTIONS":
            return await self.options(request)
        version = draft_version(request)
        if version is not None:
            return await self.draft_request(request, method, file_id, version)
        if file_id is None:
            if method == "POST":
                return await self.create(request)
        else:
            handlers = {"PATCH": self.patch, "DELETE": self.delete, "HEAD": self.head, "GET": self.get}
            if method in handlers:
                return await handlers[method](request, file_id)
        return _not_allowed()

    async def draft_request(
        self, request: Request, method: str, file_id: str | None, version: InteropVersion
    ) -> Response:
        """A request of the IETF draft: creation by any method with content on the collection;
        HEAD, GET, PATCH and DELETE on an upload."""
        if file_id is None:
            if method in ("POST", "PUT", "PATCH"):
                return await self.draft.create(request, version)
            return _not_allowed()
        if method == "HEAD":
            return await self.draft.head(request, version, file_id)
        if method == "PATCH":
            return await self.draft.append(request, version, file_id)
        if method == "DELETE":
            return await self.draft.delete(request, version, file_id)
        if method == "GET":
            found = await self.draft.get(request, version, file_id)
            return found if found is not None else await self.get(request, file_id)
        return _not_allowed()

    async def dispatch(self, request: Request, file_id: str | None) -> Response:
        """Route a request by its method, to the draft or to tus 1.0."""
        version = draft_version(request)
        if version is not None:
            return await self.draft_request(request, request.method, file_id, version)
        if file_id is None:
            return _not_allowed()
        handlers = {"PATCH": self.patch, "DELETE": self.delete, "HEAD": self.head, "GET": self.get}
        return await handlers[request.method](request, file_id)


class _AlreadyComplete(Exception):
    """A body-less PATCH at the end of a finished upload: answered 204 (a retried last PATCH)."""

    def __init__(self, upload: Upload) -> None:
        super().__init__("the upload is complete")
        self.upload = upload


def _not_allowed() -> Response:
    headers = _base_headers()
    headers["Allow"] = "OPTIONS, POST, HEAD, PATCH, GET, DELETE"
    return Response("method not allowed\n", status_code=405, headers=headers, media_type="text/plain")


def build_router(prefix: str) -> APIRouter:
    """The tus endpoint mounted at ``prefix`` (e.g. ``/files``)."""
    tus = TusEndpoint(prefix)
    router = APIRouter(prefix=tus.prefix, tags=["tus"], route_class=dialect_route(render), include_in_schema=False)

    @router.options("")
    @router.options("/")
    async def options_collection(request: Request) -> Response:
        return await tus.options(request)

    @router.options("/{file_id}")
    async def options_upload(request: Request, file_id: FileId) -> Response:
        return await tus.options(request)

    @router.post("")
    @router.post("/")
    @takes_file_bytes()  # creation-with-upload when it has a body
    async def create(request: Request) -> Response:
        return await tus.overridden(request, None)

    @router.post("/{file_id}")
    @takes_file_bytes()  # PATCH through X-HTTP-Method-Override
    async def post_upload(request: Request, file_id: FileId) -> Response:
        return await tus.overridden(request, file_id)

    @router.api_route("/{file_id}", methods=["HEAD"])
    async def head(request: Request, file_id: FileId) -> Response:
        return await tus.dispatch(request, file_id)

    @router.patch("/{file_id}")
    @takes_file_bytes()
    async def patch(request: Request, file_id: FileId) -> Response:
        return await tus.dispatch(request, file_id)

    @router.delete("/{file_id}")
    async def delete(request: Request, file_id: FileId) -> Response:
        return await tus.dispatch(request, file_id)

    @router.get("/{file_id}")
    async def get(request: Request, file_id: FileId) -> Response:
        return await tus.dispatch(request, file_id)

    # The draft creates uploads with any method that carries content (PUT, PATCH on the collection).
    @router.api_route("", methods=["PUT", "PATCH"])
    @router.api_route("/", methods=["PUT", "PATCH"])
    async def draft_create(request: Request) -> Response:
        return await tus.dispatch(request, None)

    # Other methods: a tus-style 405 (with Tus-Resumable) rather than the app's default.
    @router.api_route("", methods=["GET", "DELETE", "HEAD"])
    @router.api_route("/{file_id}", methods=["PUT"])
    async def not_allowed(request: Request) -> Response:
        return _not_allowed()

    return router
