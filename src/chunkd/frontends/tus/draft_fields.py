"""The IETF resumable-upload draft's request fields, read and checked: the structured-field items
(``Upload-Offset``, ``Upload-Length``, the completion field), the body's framing and metadata, and
the rules that tie them together (the length indicators agree, the append-size limits, the fields
a HEAD or DELETE must not carry)."""

from __future__ import annotations

from email.message import EmailMessage

import http_sf
from starlette.requests import Request

from chunkd.domain import errors as e
from chunkd.frontends.http import field_value
from chunkd.frontends.tus.draft_errors import BelowAppendMinimum, InconsistentLength
from chunkd.frontends.tus.draft_versions import InteropVersion
from chunkd.settings import Settings

__all__ = [
    "check_append_size",
    "completion",
    "declared_length",
    "filename",
    "media_type",
    "reject_state_fields",
    "sf_boolean",
    "sf_integer",
]


def _sf_item(request: Request, name: str) -> object | None:
    """The bare item of an Item header, or None when absent or not a valid Item ("other values
    MUST cause the entire header field to be ignored")."""
    raw = field_value(request, name)
    if raw is None:
        return None
    try:
        value = http_sf.parse(raw.encode("latin-1"), tltype="item")
    except (http_sf.StructuredFieldError, UnicodeEncodeError):
        return None
    return value[0] if isinstance(value, tuple) else value


def sf_integer(request: Request, name: str) -> int | None:
    """A non-negative structured-field Integer header; None when absent or not one."""
    value = _sf_item(request, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def sf_boolean(request: Request, name: str) -> bool | None:
    """A structured-field Boolean header; None when absent or not one."""
    value = _sf_item(request, name)
    return value if isinstance(value, bool) else None


def media_type(request: Request) -> str:
    """The request's media type, lower-cased, without parameters ("" when there is none)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def filename(request: Request) -> str | None:
    """The ``filename`` of ``Content-Disposition`` (``filename*`` per RFC 8187 preferred)."""
    raw = request.headers.get("content-disposition")
    if not raw:
        return None
    message = EmailMessage()
    try:
        message["content-disposition"] = raw
        name = message.get_filename()
    except (ValueError, TypeError, IndexError):
        return None
    return name or None


def completion(request: Request, version: InteropVersion, *, append: bool = False) -> bool:
    """The request's completion field: whether this request ends the upload. Required on a
    creation, and on an append from version 7 (draft -06: "The request MUST include the
    Upload-Complete header field"). Before, an append may leave it out: in version 3 that ends the
    upload (draft -01: complete on a request "with the Upload-Incomplete header being omitted or
    set to false"); in versions 4-6 it does not (drafts -02 to -05: "the last part of the upload
    has a Upload-Complete field value set to true", and their append example, which does not
    complete, carries none). A field that is present but not a boolean is a 400, not taken as
    absent: a malformed ``Upload-Incomplete`` must not complete an upload."""
    name = version.complete_field
    value = sf_boolean(request, name)
    if value is None:
        if append and version.number <= 6 and field_value(request, name) is None:
            return version.number == 3
        raise e.InvalidInput(f"{name} is required and must be a structured-field boolean (?0 or ?1)", field=name)
    return value if version.number != 3 else not value


def reject_state_fields(request: Request, version: InteropVersion, *, head: bool) -> None:
    """Versions 3–6: a HEAD (``head``) or DELETE must carry neither ``Upload-Offset`` nor the
    completion field (nor, on a HEAD in version 6, ``Upload-Length``): a 400 naming it."""
    if not version.forbids_state_fields_on_head_and_delete:
        return
    names = ["Upload-Offset", version.complete_field]
    if head and version.forbids_length_on_head:
        names.append("Upload-Length")
    for name in names:
        if request.headers.get(name) is not None:
            raise e.InvalidInput(f"this request must not carry {name}", field=name)


def declared_length(
    request: Request, complete: bool, offset: int, recorded: int | None, length_of_content: int | None
) -> int | None:
    """The upload's length from this request (``Upload-Length``, or ``Content-Length`` when the
    request completes the upload), checked against the length recorded before."""
    indicated: list[int] = []
    upload_length = sf_integer(request, "Upload-Length")
    if upload_length is not None:
        indicated.append(upload_length)
    if complete and length_of_content is not None:
        indicated.append(offset + length_of_content)
    if recorded is not None:
        indicated.append(recorded)
    if len(set(indicated)) > 1:
        raise InconsistentLength(
            "Upload-Length, Content-Length and the length recorded before do not agree", field="Upload-Length"
        )
    if indicated and indicated[0] < offset:
        raise InconsistentLength(f"the length is below the offset {offset}", field="Upload-Length")
    return indicated[0] if indicated else None


def check_append_size(settings: Settings, complete: bool, length_of_content: int | None, creation: bool) -> None:
    """``max-append-size`` (413) and ``min-append-size`` (400; a creation without content and a
    completing request are exempt) against the request's ``Content-Length``."""
    if length_of_content is None:
        return
    most = settings.resumable_max_append_bytes
    if most is not None and length_of_content > most:
        raise e.TooLarge(f"a request may carry at most {most} bytes (max-append-size)", field="Content-Length")
    least = settings.resumable_min_append_bytes
    empty_creation = creation and length_of_content == 0
    if least and length_of_content < least and not complete and not empty_creation:
        raise BelowAppendMinimum(
            f"a request that does not complete the upload must carry at least {least} bytes (min-append-size)",
            field="Content-Length",
        )
