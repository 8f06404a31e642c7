"""Errors of the IETF resumable-upload draft as problem details (RFC 9457,
``application/problem+json``), with the draft's own problem types where the request's interop
version defines them (``mismatching-upload-offset``, ``completed-upload``,
``inconsistent-upload-length``) and the draft's state fields (``Upload-Offset``, the completion
field) where the draft asks for them."""

from __future__ import annotations

import json
from collections.abc import Callable, MutableMapping
from functools import partial
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import Response

from chunkd.domain import errors as e
from chunkd.frontends.http import error_headers, field_value, validation_error
from chunkd.frontends.refusals import Refusal, register_dialect
from chunkd.frontends.tus.draft_versions import (
    INTEROP_VERSIONS,
    NEWEST,
    InteropVersion,
    interop_version,
)
from chunkd.frontends.tus.errors import UnsupportedMediaType
from chunkd.frontends.tus.inflight import UploadInterrupted

__all__ = [
    "BelowAppendMinimum",
    "CompletedUpload",
    "InconsistentLength",
    "LengthExceeded",
    "UnsupportedInteropVersion",
    "length_overrun",
    "problem",
    "register_draft_refusals",
    "render_problem",
]

PROBLEM_JSON = "application/problem+json"


class InconsistentLength(e.InvalidInput):
    """Two indications of the upload's length disagree (``Upload-Length``, ``Content-Length`` with
    the upload completed, the length recorded before)."""

    code = "inconsistent_upload_length"


class CompletedUpload(e.InvalidInput):
    """An append to an upload that is already complete."""

    code = "completed_upload"


class LengthExceeded(e.InvalidInput):
    """A body that would take the offset past the upload's length (a 400 from version 6 on)."""

    code = "upload_length_exceeded"


def length_overrun(version: InteropVersion, message: str) -> e.ChunkdError:
    """The error for a body past the upload's length: ``LengthExceeded`` (400) where the version
    asks for a 400 (6 and later), else ``TooLarge`` (413)."""
    if version.length_overrun_is_400:
        return LengthExceeded(message, field="Upload-Length")
    return e.TooLarge(message, field="Upload-Length")


class BelowAppendMinimum(e.InvalidInput):
    """A request that does not complete the upload carries less than ``min-append-size``."""


class UnsupportedInteropVersion(e.InvalidInput):
    """``Upload-Draft-Interop-Version`` names a version this server does not speak."""

    code = "unsupported_interop_version"


# Most specific first.
_STATUS: list[tuple[type[Exception], int, str | None]] = [
    (UploadInterrupted, 400, None),
    (InconsistentLength, 400, "inconsistent-upload-length"),
    (CompletedUpload, 400, "completed-upload"),
    (LengthExceeded, 400, None),
    (e.OffsetMismatch, 409, "mismatching-upload-offset"),
    (e.ChecksumMismatch, 400, None),
    (e.TooLarge, 413, None),
    (e.InvalidInput, 400, None),
    (e.NotFound, 404, None),
    (e.Expired, 404, None),  # an expired upload resource is no longer active: 404, as the draft says
    (e.Busy, 423, None),
    (e.Conflict, 409, None),
    (e.Unauthenticated, 401, None),
    (e.Forbidden, 403, None),
    (e.QuotaExceeded, 403, None),
    (e.RateLimited, 429, None),
    (e.StorageFull, 507, None),
    (e.StorageError, 503, None),
    (UnsupportedMediaType, 415, None),
]


def problem(
    version: InteropVersion,
    status: int,
    title: str,
    *,
    kind: str | None = None,
    headers: dict[str, str] | None = None,
    **members: Any,
) -> Response:
    """A problem-details response; ``kind`` names one of the draft's problem types (used only if
    ``version`` defines it, else the type is ``about:blank``)."""
    body: dict[str, Any] = {"type": (version.problem_type(kind) if kind else None) or "about:blank", "title": title}
    body["status"] = status
    body.update(members)
    response = Response(json.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)
    response.headers["Upload-Draft-Interop-Version"] = version.header
    response.headers["Cache-Control"] = "no-store"
    return response


def _not_complete(request: Request, version: InteropVersion, exc: Exception | None = None) -> dict[str, str]:
    """The completion field on the answer to a failed creation or append. From version 7 it says
    whether *this request* completed the upload: false ("any response, successful or not, MUST
    include the Upload-Complete header field with a false value"). Before, it says whether the
    upload is complete (drafts -01 to -05: "indicating whether the corresponding upload is
    considered complete"): true on the refusal of an append to a completed upload."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return {}
    upload_complete = isinstance(exc, CompletedUpload) and version.number <= 6
    return {version.complete_field: version.complete_value(upload_complete)}


def _refusal_problem(version: InteropVersion, refusal: Refusal, headers: dict[str, str] | None = None) -> Response:
    """A shared guard's refusal (rate limits, the body guard) as a problem, naming its field."""
    members: dict[str, Any] = {"detail": refusal.message, "code": refusal.code}
    if refusal.field is not None:
        members["field"] = refusal.field
    return problem(version, refusal.status_code, refusal.message, headers=headers, **members)


def answering_version(request: Request) -> InteropVersion | None:
    """The interop version a request at the tus mount point is answered in: the one it names; the
    newest when it names one this server does not speak (its 400 is the draft's), unless it also
    says ``Tus-Resumable`` (then it is tus 1.0); None when it names none (tus 1.0)."""
    raw = field_value(request, "upload-draft-interop-version")
    if raw is None:
        return None
    version = interop_version(raw)
    if version is None and request.headers.get("tus-resumable") is None:
        return NEWEST
    return version


def register_draft_refusals(app: Any, prefix: str) -> None:
    """The refusals a guard makes before a route runs, for draft requests at ``prefix``: problem
    details in the version the request is answered in (register before tus's plain text there)."""
    renderers = {number: partial(_refusal_problem, version) for number, version in INTEROP_VERSIONS.items()}

    def choose(scope: MutableMapping[str, Any]) -> Callable[[Refusal], Response] | None:
        version = answering_version(Request(scope))
        return None if version is None else renderers[version.number]

    register_dialect(app, prefix, choose=choose)


def render_problem(request: Request, exc: Exception) -> Response | None:
    """The draft's answer to ``exc`` for ``request``; None for errors that are not ours."""
    version = answering_version(request) or NEWEST
    if isinstance(exc, Refusal):  # a guard's, raised while the body was read (the bytes budget, a slow body)
        return _refusal_problem(version, exc, {**_not_complete(request, version), **(exc.headers or {})})
    if isinstance(exc, RequestValidationError):  # a path parameter (the id) out of bounds
        field, message = validation_error(exc.errors())
        return problem(
            version,
            400,
            message,
            headers=_not_complete(request, version),
            detail=message,
            code=e.InvalidInput.code,
            field=field,
        )
    if isinstance(exc, e.InvalidState) and exc.details.get("uploadStatus") == "CANCELLED":
        return problem(version, 404, "the upload was cancelled", headers=_not_complete(request, version))
    found = next((entry for entry in _STATUS if isinstance(exc, entry[0])), None)
    if found is None:
        return None
    _, status, name = found
    if status == 423:
        status = version.busy_status
    headers = _not_complete(request, version, exc)
    members: dict[str, Any] = {}
    if isinstance(exc, e.ChunkdError):
        members["detail"] = exc.message
        members["code"] = exc.code
        if exc.field is not None:
            members["field"] = exc.field
    else:
        members["detail"] = str(exc)
    if isinstance(exc, e.OffsetMismatch):
        expected = exc.details.get("expectedOffset")
        if isinstance(expected, int):
            headers["Upload-Offset"] = str(expected)
            members["expected-offset"] = expected
        provided = exc.details.get("providedOffset")
        if isinstance(provided, int):
            members["provided-offset"] = provided
    offset = getattr(request.state, "draft_offset", None)
    if "Upload-Offset" not in headers and isinstance(offset, int) and status != 404:
        # Versions 3-6: every response for an active upload carries its offset, failures too.
        headers["Upload-Offset"] = str(offset)
    headers.update(error_headers(exc, status))  # the challenge, Retry-After (shared by every dialect)
    limits = getattr(request.state, "upload_limit", None)
    if (status == 413 or isinstance(exc, BelowAppendMinimum)) and isinstance(limits, str):
        # "When a request is rejected because limits were violated, the response SHOULD include
        # the Upload-Limit header field carrying all limits" (-12).
        headers["Upload-Limit"] = limits
    title = {
        "mismatching-upload-offset": "offset from request does not match offset of resource",
        "completed-upload": "upload is already completed",
        "inconsistent-upload-length": "inconsistent length values for upload",
    }.get(name or "", members["detail"])
    return problem(version, status, title, kind=name, headers=headers, **members)
