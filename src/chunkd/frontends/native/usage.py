"""``GET /v1/usage``: what an owner holds, counted as the quotas count it, beside those quotas, so a
client can see the room left before an upload is refused (``quota_exceeded``). Scope files:read; an
upload link's token is refused (what the owner holds is not the partner's business)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from chunkd.frontends.http import dialect_route, principal, runtime
from chunkd.frontends.native.errors import render_error
from chunkd.frontends.native.schemas import ErrorResponse

__all__ = ["usage_router"]


async def _render(_: Request, exc: Exception) -> Response | None:
    return render_error(exc)


usage_router = APIRouter(
    prefix="/v1/usage",
    tags=["files"],
    route_class=dialect_route(_render),
    responses={status: {"model": ErrorResponse} for status in (401, 403, 429)},
)


class Limits(BaseModel):
    maxPendingUploads: int | None = Field(description="CHUNKD_MAX_PENDING_UPLOADS; null: no limit.")
    maxPendingBytes: int | None = Field(description="CHUNKD_MAX_PENDING_BYTES; null: no limit.")
    maxStoredBytes: int | None = Field(
        description="CHUNKD_MAX_STORED_BYTES, counting completed files and pending uploads together; null: no limit."
    )


class UsageObject(BaseModel):
    pendingUploads: int = Field(description="Uploads still PENDING.")
    pendingBytes: int = Field(
        description="Bytes declared by PENDING uploads (those received, for an upload whose size is not declared yet)."
    )
    storedBytes: int = Field(description="Bytes of COMPLETED files.")
    limits: Limits


@usage_router.get("", response_model=UsageObject, summary="What you hold, and your quotas")
async def get_usage(request: Request) -> dict[str, Any]:
    who = await principal(request, "files:read")
    usage = await runtime(request).uploads.usage(who.owner)
    return {
        "pendingUploads": usage.pending_uploads,
        "pendingBytes": usage.pending_bytes,
        "storedBytes": usage.stored_bytes,
        "limits": {
            "maxPendingUploads": usage.max_pending_uploads,
            "maxPendingBytes": usage.max_pending_bytes,
            "maxStoredBytes": usage.max_stored_bytes,
        },
    }
