"""JSON shapes of the Files API (camelCase, as in the Lightfield files API it follows)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

__all__ = [
    "CompleteRequest",
    "CreateFileRequest",
    "DownloadUrl",
    "ErrorBody",
    "ErrorResponse",
    "FileCompleteResponse",
    "FileCompletedResponse",
    "FileList",
    "FileObject",
    "PartObject",
]

MD5_PATTERN = r"^[0-9a-fA-F]{32}$"
# The Lightfield files API this one follows takes an optional ``purpose`` at creation; its values are
# the application's own (OpenAI's Uploads API, of the same shape, uses short words: "batch", "vision").
PURPOSE_MAX_LENGTH = 100
StatusLiteral = Literal["PENDING", "COMPLETED", "CANCELLED", "EXPIRED"]


class CreateFileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: StrictStr = Field(min_length=1, max_length=1024, description="Original file name.")
    sizeBytes: StrictInt = Field(ge=0, le=2**53 - 1, description="Size of the whole file in bytes.")
    mimeType: StrictStr | None = Field(None, max_length=255, description="Media type; guessed from the name if absent.")
    md5: StrictStr | None = Field(
        None, pattern=MD5_PATTERN, description="MD5 hex digest of the whole file, checked at completion."
    )
    partSize: StrictInt | None = Field(None, ge=1, le=2**53 - 1, description="Bytes per part (default 8 MiB).")
    purpose: StrictStr | None = Field(
        None,
        min_length=1,
        max_length=PURPOSE_MAX_LENGTH,
        description="What the file is for, as the application names it (kept and shown, never interpreted).",
    )


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    md5: StrictStr | None = Field(
        None, pattern=MD5_PATTERN, description="Optional MD5 hex digest of the uploaded file."
    )


class PartObject(BaseModel):
    partNumber: int
    sizeBytes: int
    etag: str | None = Field(
        description="The part's checksum, quoted, to compare (never to parse): its MD5 when it was sent with"
        " Content-MD5, else its CRC-64/NVME (16 hex digits; on an S3 store, the store's MD5 ETag); null for bytes"
        " appended through tus or media."
    )


class FileCompleteResponse(BaseModel):
    id: str
    completedAt: str | None
    createdAt: str
    expiresAt: str | None
    filename: str
    mimeType: str
    sizeBytes: int
    status: StatusLiteral


class DownloadUrl(BaseModel):
    url: str = Field(
        description="GET it, with no credentials, to download the file (attachment Content-Disposition); bound to "
        "this file, its owner and the API key that asked for it."
    )
    expiresIn: int = Field(description="Seconds until the URL stops working (a download begun before goes on).")


class FileCompletedResponse(FileCompleteResponse):
    """The answer to a complete: the file, plus what the pre-finish hook returned for it (only when a
    hook ran), the same on every repeated complete."""

    preFinish: Any = Field(None, description="The pre-finish hook's result, when a hook returned one.")


class FileObject(FileCompleteResponse):
    partSize: int
    partCount: int = Field(
        description="Parts of the file (numbered uploads); for appended uploads (tus, media chunks) the parts stored."
    )
    bytesReceived: int
    md5: str | None = Field(None, description="MD5 hex digest of the file, once COMPLETED.")
    crc64nvme: str | None = Field(
        None, description="CRC-64/NVME of the file once COMPLETED, base64 of 8 big-endian bytes (as S3 reports it)."
    )
    uploadUrl: str | None = Field(None, description="PUT the whole body here (signed; no credentials needed).")
    uploadMethod: Literal["PUT"] | None = None
    uploadHeaders: dict[str, str] | None = None
    parts: list[PartObject] | None = Field(None, description="Parts received so far (single-file views only).")
    uploadLink: str | None = Field(None, description="Id of the upload link the file was uploaded through, if any.")
    purpose: str | None = Field(None, description="The purpose given at creation, if any.")


class FileList(BaseModel):
    data: list[FileObject]
    nextCursor: str | None


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
