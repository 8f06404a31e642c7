"""What each interop version of "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload)
asks for, read from the published drafts and the editor's copy:

====  ==========  ==========================================================================
 3    -01         ``Upload-Incomplete`` (?1 = more to come) instead of ``Upload-Complete``;
                  HEAD and DELETE must carry neither ``Upload-Offset`` nor the completion field
 4    -02         ``Upload-Complete`` replaces ``Upload-Incomplete``
 5    -03         104 progress responses with ``Upload-Offset`` while a body arrives
 6    -04, -05    PATCH bodies must be ``application/partial-upload``; problem types
                  ``mismatching-upload-offset`` and ``completed-upload``; ``Upload-Limit``
                  (lifetime key ``expires``); ``Upload-Length``; digests (RFC 9530)
 7    -06..-08    ``expires`` renamed ``max-age``; ``inconsistent-upload-length``; the
                  restriction on HEAD/DELETE headers gone
 8    -09..       ``Upload-Limit`` required on 104, creation and HEAD responses;
                  the 104 must name the interop version
====  ==========  ==========================================================================

Every version uses the status code 104 for "Upload Resumption Supported". Headers a version does
not define (``Upload-Limit`` before 6, say) are still sent: a client ignores fields it does not
know, and a version-3 client is as well served by the limits as a version-8 one.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["INTEROP_HEADER", "INTEROP_VERSIONS", "PARTIAL_UPLOAD", "InteropVersion", "interop_version"]

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
        """Versions 3–5: a HEAD or DELETE carrying ``Upload-Offset`` or the completion field is a 400."""
        return self.number <= 5

    @property
    def forbids_length_on_head(self) -> bool:
        """Version 6 adds ``Upload-Length`` to the fields a HEAD must not carry."""
        return self.number == 6

    def problem_type(self, name: str) -> str | None:
        """The draft's problem type URI for ``name`` if this version defines it, else None."""
        since = {"mismatching-upload-offset": 6, "completed-upload": 6, "inconsistent-upload-length": 7}
        first = since.get(name)
        return PROBLEM_BASE + name if first is not None and self.number >= first else None


INTEROP_VERSIONS = {n: InteropVersion(n) for n in range(3, 9)}


def interop_version(value: str | None) -> InteropVersion | None:
    """The version a request names in ``Upload-Draft-Interop-Version`` (an Integer), or None when
    it names none we speak."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 3:
        return None
    return INTEROP_VERSIONS.get(int(text))
