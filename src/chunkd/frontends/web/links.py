"""``/v1/upload-links``: an owner (scope links:admin) makes a URL through which a partner without
an account uploads into the owner's files, within limits; see ``chunkd.auth.links`` for what a
link's token may do. The ``url`` opens the upload page (``/#link=<token>``: a fragment, which
browsers never send to a server), and it is shown once, in the answer to the creation: only a hash
of the token's secret is kept."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response

from chunkd.auth.keys import api_key_of
from chunkd.auth.links import LINK_SCOPES
from chunkd.auth.principal import refuse_escalation
from chunkd.frontends.http import dialect_route, isotime, principal, public_base_url, runtime
from chunkd.frontends.native.errors import render_error
from chunkd.frontends.native.schemas import ErrorResponse
from chunkd.ports.links import UploadLinkRecord

__all__ = ["router"]


async def _render(_: Request, exc: Exception) -> Response | None:
    return render_error(exc)


ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 429)}


class CreateUploadLinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expiresIn: StrictInt | None = Field(
        None, ge=1, description="Seconds until the link expires (default 7 days; at most 90 by default)."
    )
    maxBytes: StrictInt | None = Field(
        None, ge=1, le=2**53 - 1, description="Most bytes in all, counted by the declared sizes of uploads created."
    )
    maxFiles: StrictInt | None = Field(None, ge=1, le=1_000_000, description="Most uploads the link may create.")
    allowedMimeTypes: list[Annotated[StrictStr, Field(max_length=255)]] | None = Field(
        None, max_length=50, description="Media types accepted (`image/png`, `image/*`); default: any."
    )
    note: StrictStr | None = Field(None, max_length=1024, description="Shown to the partner on the upload page.")


class UploadLink(BaseModel):
    id: str
    url: str | None = Field(description="The link to hand out (its token included); only in the creation's answer.")
    expiresAt: str
    maxBytes: int | None
    maxFiles: int | None
    filesUploaded: int = Field(description="Uploads created through the link.")
    bytesUploaded: int = Field(description="Bytes declared by the uploads created through the link.")
    allowedMimeTypes: list[str] | None
    note: str | None
    createdAt: str
    revokedAt: str | None
    keyId: str | None = Field(
        description="The API key the link was made with: revoking that key ends the link too (null for a link made "
        "with an identity provider's token)."
    )


class UploadLinkList(BaseModel):
    data: list[UploadLink]


def _view(record: UploadLinkRecord, url: str | None = None) -> dict[str, Any]:
    return {
        "id": record.id,
        "url": url,
        "expiresAt": isotime(record.expires_at),
        "maxBytes": record.max_bytes,
        "maxFiles": record.max_files,
        "filesUploaded": record.files_uploaded,
        "bytesUploaded": record.bytes_uploaded,
        "allowedMimeTypes": None if record.allowed_mime_types is None else list(record.allowed_mime_types),
        "note": record.note,
        "createdAt": isotime(record.created_at),
        "revokedAt": isotime(record.revoked_at),
        "keyId": record.key_id,
    }


router = APIRouter(
    prefix="/v1/upload-links", tags=["upload links"], route_class=dialect_route(_render), responses=ERRORS
)
LinkId = Annotated[str, Path(min_length=1, max_length=64, description="Upload link id.")]


class _LinkIdConvertor(Convertor[str]):
    """Only a link id (32 hex digits) matches ``{link_id:linkid}``: so ``/v1/upload-links/current``
    is never also taken for a link id (its 405 would name methods it does not have)."""

    regex = "[0-9a-f]{32}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("linkid", _LinkIdConvertor())


@router.post("", status_code=201, response_model=UploadLink, summary="Create an upload link")
async def create_link(request: Request, body: CreateUploadLinkRequest) -> dict[str, Any]:
    """Uploads made through the link land in your files, tagged with ``uploadLink``. Required
    scopes: links:admin, and files:create, which the link's token carries (as with API keys, a
    credential never grants a scope it lacks). The ``url`` is in this answer only. The link is
    bound to the API key of the credential that makes it (``keyId``): revoking that key ends it."""
    who = await principal(request, "links:admin")
    refuse_escalation(who, LINK_SCOPES, granting="an upload link", field="scope")
    rt = runtime(request)
    record, token = await rt.links.create(
        who.owner,
        expires_in=body.expiresIn,
        max_bytes=body.maxBytes,
        max_files=body.maxFiles,
        allowed_mime_types=body.allowedMimeTypes,
        note=body.note,
        key_id=api_key_of(who),
    )
    return _view(record, f"{public_base_url(request)}/#link={token}")


@router.get("", response_model=UploadLinkList, summary="List your upload links (revoked ones too), newest first")
async def list_links(
    request: Request, limit: Annotated[int, Query(ge=1, le=1000, description="Most links returned.")] = 100
) -> dict[str, Any]:
    who = await principal(request, "links:admin")
    return {"data": [_view(r) for r in await runtime(request).links.list(who.owner, limit)]}


@router.get("/current", response_model=UploadLink, summary="The upload link whose token is presented")
async def current_link(request: Request) -> dict[str, Any]:
    """For a link's token (the upload page shows the partner the link's note and limits). The
    owner's key id (``keyId``) is the owner's business, not the partner's: it is null here."""
    who = await principal(request)
    return {**_view(await runtime(request).links.current(who)), "keyId": None}


@router.get("/{link_id:linkid}", response_model=UploadLink, summary="Get an upload link")
async def get_link(request: Request, link_id: LinkId) -> dict[str, Any]:
    """A revoked (deleted) link answers 404; the list still shows it, with ``revokedAt``."""
    who = await principal(request, "links:admin")
    return _view(await runtime(request).links.get(who.owner, link_id, revoked=False))


@router.delete("/{link_id:linkid}", response_model=UploadLink, summary="Revoke an upload link at once")
async def revoke_link(request: Request, link_id: LinkId) -> dict[str, Any]:
    """The link's token is refused from its next request on, also for uploads in progress through
    it. Answers the revoked link (``revokedAt`` set); revoking again changes nothing."""
    who = await principal(request, "links:admin")
    return _view(await runtime(request).links.revoke(who.owner, link_id))
