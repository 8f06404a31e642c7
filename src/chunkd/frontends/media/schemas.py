"""JSON shapes of the media API's answers, for the OpenAPI document (the routes build them as
dicts: ``chunkd.frontends.media.router``). Seed 002 names the Media schema; the chunk answer is
django-chunked-upload's."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["Media", "MediaChunk"]


class MediaChunk(BaseModel):
    upload_id: str = Field(description="Send it with every later chunk, then to complete.")
    offset: int = Field(description="Bytes received so far: where the next chunk starts.")
    expires: str = Field(description="When the upload expires if no chunk comes before.")


class Media(BaseModel):
    """Seed 002's Media: every field is always present (``title``, ``description``, ``url`` and
    ``embed`` are null for an uploaded file)."""

    id: int
    added_at: str
    type: Literal["image", "doc", "eimage"]
    title: str | None
    description: str | None
    url: str | None
    image: str | None = Field(
        description="The file's URL, signed: it works without credentials until it expires. Null for a credential"
        " without files:read (the URL would read what it may not)."
    )
    image_width: int | None = Field(description="Pixels; a document's first page in points.")
    image_height: int | None = Field(description="Pixels; a document's first page in points.")
    order: int
    embed: str | None
