"""Media: a completed upload published as an image or a PDF document under a small integer id
(the media API's ``id``). The bytes stay with the upload; a media record only names them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = ["MediaRecord", "MediaType"]


class MediaType(StrEnum):
    IMAGE = "image"
    DOC = "doc"  # PDF only
    EIMAGE = "eimage"  # an image inserted inline into a text

    @property
    def is_image(self) -> bool:
        return self is not MediaType.DOC


@dataclass(frozen=True)
class MediaRecord:
    id: int
    upload_id: str
    owner: str
    type: MediaType
    width: int | None
    height: int | None
    order: int
    added_at: datetime
    mime_type: str | None = None  # what inspection found the content to be (None: published before it was kept)
