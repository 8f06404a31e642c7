"""The keys the engine itself keeps in ``Upload.metadata`` beside a client's own.

Each grants or records something, so a hook's answer may neither replace nor add them
(``ENGINE_KEYS``), and a client never sets one through a dialect's metadata."""

from __future__ import annotations

__all__ = [
    "CONCATENATION",
    "CONCATENATION_SOURCE",
    "ENGINE_KEYS",
    "INSPECTION_REFUSED",
    "LINK_METADATA_KEY",
    "PRE_FINISH",
    "PURPOSE_METADATA_KEY",
    "REJECTED",
    "VIRUS_SCAN",
]

# The upload link an upload was made through: that link, and no other, may act on it.
LINK_METADATA_KEY = "uploadLink"
# The Files API's ``purpose``, as the client gave it.
PURPOSE_METADATA_KEY = "purpose"
# A tus concatenation until it completes: {"sources": [ids], "waiting": True}, or once it failed
# {"sources": [ids], "waiting": False, "failed": reason}.
CONCATENATION = "concatenation"
# Flag of an upload that a concatenation may name before it is finished.
CONCATENATION_SOURCE = "concatenationSource"
# {"pdf"|"image": reason} for each kind of media inspection that refused these bytes.
INSPECTION_REFUSED = "inspectionRefused"
# The virus scan's verdict on a completed upload.
VIRUS_SCAN = "virusScan"
# The pre-finish hook's result, returned again on every repeated complete.
PRE_FINISH = "preFinish"
# Why a completion was refused for the upload's content (a hook or a scan).
REJECTED = "rejected"

# Keys the engine reads that an upload may not have yet, so "a hook never replaces a key" does not
# cover them: a pre-create hook may not add them either (one echoing a client's fields must not
# grant an upload link access, say).
ENGINE_KEYS = frozenset(
    {
        LINK_METADATA_KEY,
        CONCATENATION,
        CONCATENATION_SOURCE,
        VIRUS_SCAN,
        INSPECTION_REFUSED,
        PRE_FINISH,
        REJECTED,
    }
)
