"""What each interop version of "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload)
asks for, read from the published drafts and the editor's copy:

====  ==========  ==========================================================================
 3    -01         ``Upload-Incomplete`` (?1 = more to come) instead of ``Upload-Complete``;
                  HEAD and DELETE must carry neither ``Upload-Offset`` nor the completion
                  field (400); every response for an active upload carries ``Upload-Offset``;
                  an append that leaves the upload incomplete is a ``201``
 4    -02         ``Upload-Complete`` replaces ``Upload-Incomplete``
 5    -03         104 progress responses with ``Upload-Offset`` (never decreasing) while a
                  body arrives; HEAD may answer 200 or 204
 6    -04, -05    PATCH bodies must be ``application/partial-upload``; problem types
                  ``mismatching-upload-offset`` and ``completed-upload``; ``Upload-Limit``
                  (lifetime key ``expires``); ``Upload-Length`` (which a HEAD must not carry
                  either); a body past the length is a 400; an append to a completed upload
                  is a 400; digests (RFC 9530)
 7    -06..-08    ``expires`` renamed ``max-age``; ``inconsistent-upload-length``; the
                  restriction on HEAD/DELETE fields gone; any response to a request that did
                  not complete the upload carries ``Upload-Complete: ?0``; an incomplete
                  append may answer any 2xx; a body past the length also makes the upload
                  unusable (-08)
 8    -09..-12    ``Upload-Limit`` required on the 104, on an incomplete creation's response
                  and on HEAD; a repeated completing append may replay the final response;
                  a 104 does not replace a ``100 Continue``; GET on an upload answers like HEAD;
                  -12 (still interop 8) removed the ``completed-upload`` problem type, which
                  -11 only allowed ("can use"), so it is not sent; a successful HEAD or GET
                  carries the upload's state fields and ``Upload-Limit`` (a GET of a finished
                  upload included); ``Upload-Limit`` on a refusal for a limit
====  ==========  ==========================================================================

-12 kept interop version 8: its source says "The current interop version is 8" and its change log,
unlike those of the drafts that raised it, has no "Increase the draft interop version". chunkd
once took -12 for a version 9; no draft up to -12 defines 9, and a request naming it (or any
version of -13 and later, whose texts were not at hand) is refused without a 104, as the draft asks
of a mismatching version. No widely used client sends more than 6 (tus-js-client 4 and 5 send 5
or 6; Apple's URLSession 6).

Every version uses the status code 104 for "Upload Resumption Supported". Headers a version does
not define (``Upload-Limit`` before 6, say) are still sent: a client ignores fields it does not
know, and a version-3 client is as well served by the limits as a version-8 one.
"""

from __future__ import annotations

from dataclasses import dataclass

import http_sf

__all__ = [
    "INTEROP_HEADER",
    "INTEROP_VERSIONS",
    "NEWEST",
    "PARTIAL_UPLOAD",
    "SPOKEN",
    "InteropVersion",
    "interop_version",
]

INTEROP_HEADER = "Upload-Draft-Interop-Version"
PARTIAL_UPLOAD = "application/partial-upload"
PROBLEM_BASE = "https://iana.org/assignments/http-problem-types#"


@dataclass(frozen=True)
class InteropVersion:
    number: int

    @property
    def header(self) -> str:
        return str(self.number)

    @property
    def complete_field(self) -> str:
        """The name of the completion field: ``Upload-Incomplete`` (inverted) in version 3."""
        return "Upload-Incomplete" if self.number == 3 else "Upload-Complete"

    def complete_value(self, complete: bool) -> str:
        """The completion field's value for ``complete`` (version 3 says it the other way round)."""
        return "?0" if complete == (self.number == 3) else "?1"

    @property
    def progress_responses(self) -> bool:
        """104 responses with ``Upload-Offset`` while the body arrives (from version 5)."""
        return self.number >= 5

    @property
    def requires_partial_upload_type(self) -> bool:
        """PATCH bodies must be ``application/partial-upload`` (from version 6)."""
        return self.number >= 6

    @property
    def lifetime_key(self) -> str:
        """The ``Upload-Limit`` key of the remaining lifetime: ``expires`` until 6, ``max-age`` since 7."""
        return "max-age" if self.number >= 7 else "expires"

    @property
    def forbids_state_fields_on_head_and_delete(self) -> bool:
        """Versions 3–6: a HEAD or DELETE carrying ``Upload-Offset`` or the completion field is a 400."""
        return self.number <= 6

    @property
    def forbids_length_on_head(self) -> bool:
        """Version 6 adds ``Upload-Length`` to the fields a HEAD must not carry."""
        return self.number == 6

    @property
    def incomplete_append_status(self) -> int:
        """The status of an append that leaves the upload incomplete: ``201 (Created)`` up to
        version 6 (a MUST of drafts -01 to -05), any 2xx since (chunkd answers 204)."""
        return 201 if self.number <= 6 else 204

    @property
    def length_overrun_is_400(self) -> bool:
        """A body past the upload's length is a 400 from version 6 on (chunkd answers 413 before)."""
        return self.number >= 6

    @property
    def invalidates_on_length_overrun(self) -> bool:
        """From version 7 (draft -08) a body past the length also makes the upload unusable."""
        return self.number >= 7

    @property
    def replays_final_response(self) -> bool:
        """Version 8 lets a repeated completing append on a completed upload replay the final
        response; before, an append to a completed upload must be rejected."""
        return self.number >= 8

    @property
    def bytes_to_completed_is_inconsistent_length(self) -> bool:
        """Version 8 (drafts -10, -11): bytes appended to a completed upload are an inconsistent
        length failure, not a ``completed-upload``."""
        return self.number >= 8

    @property
    def completes_at_length(self) -> bool:
        """Up to 6, reaching a declared ``Upload-Length`` completes the upload, as tusd (which
        speaks 3 to 6) does: tus-js-client's draft modes (interop 5 and 6) read a stream without
        knowing which slice is its last, so they send every request with ``Upload-Complete: ?0``
        and report success once the offset reaches the length; the upload was left unfinished
        until it expired. From 7 a request must say whether it completes the upload."""
        return self.number <= 6

    @property
    def busy_status(self) -> int:
        """The status for an upload another request still writes: ``423 (Locked)``, as tus says,
        until 7; 503 (with ``Retry-After``) from 8. No draft names a status for it, and from -09
        a client "SHOULD NOT attempt to retry or resume the upload" after a 4xx whose semantics do
        not invite it, but may resume after a 5xx: the upload stays the client's to finish."""
        return 503 if self.number >= 8 else 423

    def problem_type(self, name: str) -> str | None:
        """The draft's problem type URI for ``name`` if this version defines it, else None."""
        defined = {
            "mismatching-upload-offset": range(6, 100),
            "completed-upload": range(6, 8),  # optional in -11, removed in -12 (both interop 8)
            "inconsistent-upload-length": range(7, 100),
        }
        return PROBLEM_BASE + name if self.number in defined.get(name, ()) else None


INTEROP_VERSIONS = {n: InteropVersion(n) for n in range(3, 9)}
NEWEST = INTEROP_VERSIONS[max(INTEROP_VERSIONS)]
SPOKEN = f"{min(INTEROP_VERSIONS)} to {NEWEST.number}"


def interop_version(value: str | None) -> InteropVersion | None:
    """The version a request names in ``Upload-Draft-Interop-Version`` (an Integer), or None when
    it names none we speak."""
    if value is None:
        return None
    text = value.strip()
    # ASCII digits only: str.isdigit also accepts "²" (Latin-1, so a header may carry it), which
    # int() refuses (a 500, on the public OPTIONS too).
    if text.isascii() and text.isdigit() and len(text) <= 3:
        return INTEROP_VERSIONS.get(int(text))
    # Otherwise a structured-field Integer may still carry parameters ("8;x=1"), which name the
    # same version.
    try:
        item = http_sf.parse(text.encode("latin-1"), tltype="item")
    except (http_sf.StructuredFieldError, UnicodeEncodeError):
        return None
    number = item[0] if isinstance(item, tuple) else item
    if isinstance(number, bool) or not isinstance(number, int):
        return None
    return INTEROP_VERSIONS.get(number)
