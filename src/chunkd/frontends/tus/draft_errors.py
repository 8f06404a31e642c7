"""Errors of the IETF resumable-upload draft as problem details (RFC 9457,
``application/problem+json``), with the draft's own problem types where the request's interop
version defines them (``mismatching-upload-offset``, ``completed-upload``,
``inconsistent-upload-length``) and the draft's state fields (``Upload-Offset``, the completion
field) where the draft asks for them."""

from __future__ import annotations

import json
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import Response

from chunkd.domain import errors as e
from chunkd.frontends.http import StatusTable, error_headers
from chunkd.frontends.tus.draft_versions import INTEROP_VERSIONS, InteropVersion, interop_version
from chunkd.frontends.tus.errors import UnsupportedMediaType
from chunkd.frontends.tus.inflight import UploadInterrupted

__all__ = [
    "CompletedUpload",
    "InconsistentLength",
    "UnsupportedInteropVersion",
    "problem",
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


class UnsupportedInteropVersion(e.InvalidInput):
    """``Upload-Draft-Interop-Version`` names a version this server does not speak."""

    code = "unsupported_interop_version"


# The draft's own statuses, before the shared ones (most specific first).
_STATUS = StatusTable(
    (UploadInterrupted, 400),
    (e.OffsetMismatch, 409),
    (e.Expired, 404),  # an expired upload resource is no longer active: 404, as the draft says
    (e.Busy, 423),
    (UnsupportedMediaType, 415),
)
# The draft's problem types (each a 400 or 409 by the table above).
_PROBLEM_TYPES: tuple[tuple[type[Exception], str], ...] = (
    (InconsistentLength, "inconsistent-upload-length"),
    (CompletedUpload, "completed-upload"),
    (e.OffsetMismatch, "mismatching-upload-offset"),
)


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


def render_problem(request: Request, exc: Exception) -> Response | None:
    """The draft's answer to ``exc`` for ``request``; None for errors that are not ours."""
    version = interop_version(request.headers.get("upload-draft-interop-version")) or INTEROP_VERSIONS[8]
    if isinstance(exc, RequestValidationError):
        return problem(version, 400, "invalid request")
    if isinstance(exc, e.InvalidState) and exc.details.get("uploadStatus") == "CANCELLED":
        return problem(version, 404, "the upload was cancelled")
    status = _STATUS.status(exc)
    if status is None:
        return None
    name = next((kind_name for kind, kind_name in _PROBLEM_TYPES if isinstance(exc, kind)), None)
    headers = error_headers(exc, status)
    members: dict[str, Any] = {}
    if isinstance(exc, e.ChunkdError):
        members["detail"] = exc.message
        members["code"] = exc.code
        if exc.field is not None:
            members["field"] = exc.field
    else:
        members["detail"] = str(exc)
    if isinstance(exc, e.ChecksumMismatch) and request.headers.get("content-digest") is not None:
        members["detail"] = "the request content does not match Content-Digest"
        members["field"] = "Content-Digest"
    if isinstance(exc, e.OffsetMismatch):
        expected = exc.details.get("expectedOffset")
        if isinstance(expected, int):
            headers["Upload-Offset"] = str(expected)
            members["expected-offset"] = expected
        provided = exc.details.get("providedOffset")
        if isinstance(provided, int):
            members["provided-offset"] = provided
        headers[version.complete_field] = version.complete_value(False)
    elif isinstance(exc, CompletedUpload | InconsistentLength):
        headers[version.complete_field] = version.complete_value(False)
    limits = getattr(request.state, "upload_limit", None)
    if status == 413 and isinstance(limits, str):
        headers["Upload-Limit"] = limits
    title = {
        "mismatching-upload-offset": "offset from request does not match offset of resource",
        "completed-upload": "upload is already completed",
        "inconsistent-upload-length": "inconsistent length values for upload",
    }.get(name or "", members["detail"])
    return problem(version, status, title, kind=name, headers=headers, **members)
