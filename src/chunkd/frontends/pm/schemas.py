"""JSON shape of the pm API's File object, for the OpenAPI document (``info`` builds it as a dict:
``chunkd.frontends.pm.router``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["PmFile"]


class PmFile(BaseModel):
    """The File object of the API seeds 000 and 001 belong to, plus chunkd's ``status`` and ``id``."""

    uuid: str = Field(description="The file's qquuid.")
    filename: str
    filesize: int = Field(description="Bytes (while unfinished and of unknown size: the bytes received).")
    mimetype: str
    duration: float | None = Field(description="Always null: chunkd does not probe media.")
    url: str | None = Field(description="The file's URL (file_url) once it is complete.")
    thumbnail: str | None = Field(description="Always null.")
    status: Literal["PENDING", "COMPLETED", "CANCELLED", "EXPIRED"]
    id: str = Field(description="The engine's id of the upload (GET /v1/files/{id}).")
