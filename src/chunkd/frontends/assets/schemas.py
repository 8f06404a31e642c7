"""JSON shapes of the asset API's answers, for the OpenAPI document (the routes build them as
dicts: ``chunkd.frontends.assets.router``). Seed 003 types every field of its result a string."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["AssetObject", "AssetPartUrl", "AssetResult"]


class AssetResult(BaseModel):
    """Seed 003's 200 answer (``""`` for a field the asset has none of, never null)."""

    fileId: str
    filename: str
    action: str = Field(description="complete or cancel, as asked.")
    originalFileId: str
    uploadId: str
    s3Key: str
    status: str = Field(description='"success".')


class AssetPartUrl(BaseModel):
    partNumber: int
    uploadUrl: str = Field(description="PUT the part here (signed; no credentials needed); answered with its ETag.")


class AssetObject(BaseModel):
    """A created asset: ``uploadUrl`` for one of up to one part, else ``uploadId`` and the parts."""

    fileId: str
    filename: str
    filesize: int
    originalFileId: str | None
    s3Key: str
    multipart: bool
    expiresAt: str
    uploadUrl: str | None = Field(None, description="Single PUT of the whole asset, which completes it.")
    uploadMethod: str | None = None
    uploadId: str | None = Field(None, description="To send with POST /asset/complete.")
    partSize: int | None = None
    partCount: int | None = None
    parts: list[AssetPartUrl] | None = None
