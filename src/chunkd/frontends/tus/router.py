"""tus 1.0 (https://tus.io/protocols/resumable-upload) over the upload engine, at ``/files`` by
default (``CHUNKD_TUS_PATH``). Extensions: creation, creation-with-upload, creation-defer-length,
expiration, checksum, termination, concatenation.

A tus upload is an engine upload in ``Mode.APPEND`` with ``frontend="tus"``: PATCH is
``service.append``, a deferred Upload-Length is ``service.declare_size``, reaching the length is
``service.complete`` (whole-file MD5, events), DELETE is ``service.delete``, and a final
concatenation is ``service.concatenate``. The frontend only translates headers and errors; the tus
state it needs (metadata, partial/final) is kept in the upload's ``metadata["tus"]``.

This module routes requests (tus 1.0 or the IETF draft, by their headers) to the handler groups:
``creation`` (POST, concatenation), ``transfer`` (HEAD, PATCH, DELETE, GET), ``capabilities``
(OPTIONS), and ``draft`` (the IETF draft); ``resource`` holds what they share.

Differences from tusd and @tus/server, on purpose: every request is authenticated and every
HEAD/PATCH/GET/DELETE checks the owner (another owner's upload is a 404); the checksum extension is
implemented; a 412 names the supported versions in ``Tus-Version``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from chunkd.domain import errors as e
from chunkd.frontends.http import dialect_route, field_value, takes_file_bytes
from chunkd.frontends.tus.capabilities import EXTENSIONS, capability_headers
from chunkd.frontends.tus.creation import Creation
from chunkd.frontends.tus.draft import DraftEndpoint
from chunkd.frontends.tus.draft_errors import UnsupportedInteropVersion, answering_version, render_problem
from chunkd.frontends.tus.draft_versions import NEWEST, PARTIAL_UPLOAD, SPOKEN, InteropVersion, interop_version
from chunkd.frontends.tus.errors import render_error
from chunkd.frontends.tus.resource import OFFSET_STREAM, not_allowed
from chunkd.frontends.tus.transfer import Transfer

__all__ = ["EXTENSIONS", "TusEndpoint", "build_router"]

_OVERRIDABLE = {"PATCH", "DELETE", "HEAD", "GET", "OPTIONS", "POST"}

FileId = Annotated[str, Path(min_length=1, max_length=64)]


def draft_version(request: Request) -> InteropVersion | None:
    """The IETF draft's interop version when the request speaks the draft; None for tus 1.0.
    A version we do not speak is a 400, unless the request also says ``Tus-Resumable``."""
    version = answering_version(request)
    if version is NEWEST:  # named, or standing in for a version this server does not speak
        raw = field_value(request, "upload-draft-interop-version") or ""
        if interop_version(raw) is None:
            raise UnsupportedInteropVersion(
                f"Upload-Draft-Interop-Version {raw.strip()[:10]!r} is not supported; this server speaks {SPOKEN}",
                field="Upload-Draft-Interop-Version",
            )
    return version


async def render(request: Request, exc: Exception) -> Response | None:
    """Errors in the request's dialect: problem details for the draft, plain text for tus."""
    if answering_version(request) is not None:
        return render_problem(request, exc)
    return render_error(exc)


class TusEndpoint(Creation, Transfer):
    """The routes of one mount point (``prefix``)."""

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.draft = DraftEndpoint(self)

    async def options(self, request: Request) -> Response:
        """Capabilities; no authentication and no Tus-Resumable needed."""
        headers = capability_headers(request)
        # The IETF draft: an OPTIONS on a resource that creates uploads names its limits.
        version = interop_version(field_value(request, "upload-draft-interop-version")) or NEWEST
        headers["Upload-Limit"] = self.draft.limits(request, version)
        # RFC 5789's Accept-Patch: what a PATCH here may carry. Drafts -10 and -11 (interop 8)
        # require application/partial-upload in it (the editor's copy dropped the rule again).
        headers["Accept-Patch"] = f"{PARTIAL_UPLOAD}, {OFFSET_STREAM}"
        return Response(status_code=204, headers=headers)

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
        return not_allowed()

    async def draft_request(
        self, request: Request, method: str, file_id: str | None, version: InteropVersion
    ) -> Response:
        """A request of the IETF draft: creation by any method with content on the collection;
        HEAD, GET, PATCH and DELETE on an upload."""
        if file_id is None:
            if method in ("POST", "PUT", "PATCH"):
                return await self.draft.create(request, version)
            return not_allowed()
        if method == "HEAD":
            return await self.draft.head(request, version, file_id)
        if method == "PATCH":
            return await self.draft.append(request, version, file_id)
        if method == "DELETE":
            return await self.draft.delete(request, version, file_id)
        if method == "GET":
            return await self.draft.get(request, version, file_id, download=self.get)
        return not_allowed()

    async def dispatch(self, request: Request, file_id: str | None) -> Response:
        """Route a request by its method, to the draft or to tus 1.0."""
        version = draft_version(request)
        if version is not None:
            return await self.draft_request(request, request.method, file_id, version)
        if file_id is None:
            return not_allowed()
        handlers = {"PATCH": self.patch, "DELETE": self.delete, "HEAD": self.head, "GET": self.get}
        return await handlers[request.method](request, file_id)


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
    @takes_file_bytes()  # its content is the upload's first bytes
    async def draft_create(request: Request) -> Response:
        return await tus.dispatch(request, None)

    # Other methods: a tus-style 405 (with Tus-Resumable) rather than the app's default.
    @router.api_route("", methods=["GET", "DELETE", "HEAD"])
    @router.api_route("/{file_id}", methods=["PUT"])
    async def other_method(request: Request) -> Response:
        return not_allowed()

    return router
