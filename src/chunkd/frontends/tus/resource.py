"""What every tus request handler shares: the protocol's constants and header rules, loading the
caller's tus upload, and describing an upload in tus headers (``TusResource``, the base of the
endpoint's handler groups)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from starlette.responses import Response

from chunkd.auth.principal import Principal
from chunkd.domain import errors as e
from chunkd.domain.names import UPLOAD_ID_PATTERN
from chunkd.domain.upload import Mode, Status, Upload
from chunkd.frontends.http import public_base_url, runtime
from chunkd.frontends.tus.errors import TUS_VERSION, UnsupportedVersion
from chunkd.frontends.tus.headers import Metadata, http_date
from chunkd.service.takeover import InFlight

__all__ = [
    "FRONTEND",
    "OFFSET_STREAM",
    "TusResource",
    "base_headers",
    "check_any_scope",
    "media_type",
    "not_allowed",
    "plain_http",
    "require_version",
    "tus_state",
]

OFFSET_STREAM = "application/offset+octet-stream"
FRONTEND = "tus"


def base_headers() -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store"}


def plain_http(request: Request) -> bool:
    """A request without any resumable-upload protocol header (a browser, `curl`, a download manager)."""
    return "tus-resumable" not in request.headers and "upload-draft-interop-version" not in request.headers


def require_version(request: Request) -> None:
    version = request.headers.get("tus-resumable")
    if version is None:
        raise UnsupportedVersion("the Tus-Resumable header is required")
    if version.strip() != TUS_VERSION:
        raise UnsupportedVersion(f"tus version {version.strip()[:20]!r} is not supported; use {TUS_VERSION}")


def tus_state(upload: Upload) -> dict[str, Any]:
    """The tus state kept with the upload (``metadata["tus"]``: metadata pairs, partial/final)."""
    state = upload.metadata.get("tus")
    return state if isinstance(state, dict) else {}


def check_any_scope(who: Principal, *scopes: str) -> None:
    if not any(scope in who.scopes for scope in scopes):
        error = e.Forbidden(f"this credential lacks the {scopes[0]} scope", field="scope", scope=scopes[0])
        error.code = "missing_scope"
        raise error


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def not_allowed() -> Response:
    headers = base_headers()
    headers["Allow"] = "OPTIONS, POST, HEAD, PATCH, GET, DELETE"
    return Response("method not allowed\n", status_code=405, headers=headers, media_type="text/plain")


class TusResource:
    """The tus uploads under one mount point (``prefix``): their URLs and how they are described."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/")
        self._path_id = re.compile(f"(.*){re.escape(self.prefix)}/({UPLOAD_ID_PATTERN})/?")

    @staticmethod
    def inflight(request: Request) -> InFlight:
        """The process's registry of requests streaming into uploads (for taking over stale ones)."""
        return runtime(request).takeover

    @staticmethod
    async def load(request: Request, owner: str, file_id: str) -> Upload:
        """The caller's tus upload; anything else (another owner's, or not a tus upload) is a 404."""
        upload = await runtime(request).uploads.get(owner, file_id, with_parts=False)
        if upload.frontend != FRONTEND or upload.mode is not Mode.APPEND:
            raise e.NotFound(f"no upload with id {file_id!r}", field="id")
        return upload

    @staticmethod
    def is_final(upload: Upload) -> bool:
        return tus_state(upload).get("concat") == "final"

    def location(self, request: Request, upload_id: str) -> str:
        return f"{public_base_url(request)}{self.prefix}/{upload_id}"

    def upload_id_from_url(self, request: Request, url: str) -> str:
        """The id in an upload URL of this mount point, for ``Upload-Concat: final``: absolute
        (http or https), or its path, and nothing else: the path is ``{prefix}/{id}``, or the
        public URL's path before it (behind a proxy). Anything looser once let
        ``final;/files/A,/files/B`` (a comma for the space) stand for B alone."""
        base_path = urlsplit(public_base_url(request)).path.rstrip("/")
        try:
            parts = urlsplit(url)
        except ValueError:  # "http://[::1/files/x": a broken IPv6 host
            parts = None
        match = None
        if parts is not None and parts.scheme in ("", "http", "https") and not (parts.query or parts.fragment):
            match = self._path_id.fullmatch(parts.path)
        if match is None or match.group(1) not in ("", base_path):
            message = f"Upload-Concat names {url[:200]!r}, which is not an upload URL of {self.prefix}/"
            raise e.InvalidInput(message, field="Upload-Concat")
        return match.group(2)

    def upload_headers(
        self, request: Request, upload: Upload, *, now_pending: bool, final_length: int | None = None
    ) -> dict[str, str]:
        """The headers that describe an upload (HEAD, and POST/PATCH where they apply). A final
        upload still waiting for its partials has no ``Upload-Offset`` (tus concatenation-unfinished)
        and an ``Upload-Length`` only once its partials' lengths are all known (``final_length``);
        it names its partials by the URLs they were created with (their ``Location``)."""
        headers = base_headers()
        state = tus_state(upload)
        waiting = state.get("concat") == "final" and upload.status is Status.PENDING
        if not waiting:
            offset = upload.size_bytes if upload.status is Status.COMPLETED else upload.bytes_received
            headers["Upload-Offset"] = str(offset or 0)
        length = upload.size_bytes if upload.size_bytes is not None else final_length
        if length is not None:
            headers["Upload-Length"] = str(length)
        elif not waiting:
            headers["Upload-Defer-Length"] = "1"
        meta = Metadata.from_stored(state.get("meta") or {})
        if meta.pairs:
            headers["Upload-Metadata"] = meta.header()
        if state.get("concat") == "partial":
            headers["Upload-Concat"] = "partial"
        elif state.get("concat") == "final":
            urls = (self.location(request, i) for i in state.get("parts", []))
            headers["Upload-Concat"] = "final;" + " ".join(urls)
        if now_pending and upload.status is Status.PENDING and upload.expires_at is not None:
            headers["Upload-Expires"] = http_date(upload.expires_at)
        return headers
