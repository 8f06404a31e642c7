"""Signed URLs in every frontend: building them for an upload, and finding the upload a signed
request acts on.

A signed request carries no credentials, so the owner it acts for can only come from the upload
its path names. The upload is looked up by its id alone, and the signature is then checked
against that upload *and its owner* (``Grant``): a URL made for another upload, part, method or
owner does not verify. Everything after that goes through the owner-scoped service calls, as for
a request with credentials."""

from __future__ import annotations

from starlette.requests import Request

from chunkd.auth.signing import Grant
from chunkd.domain.upload import Upload
from chunkd.frontends.http import public_base_url, runtime

__all__ = ["signed_upload", "signed_url"]


def signed_url(request: Request, grant: Grant, ttl_seconds: float, *, extra: str = "") -> str:
    """The absolute URL of ``grant.path`` with ``extra`` query parameters (already encoded,
    ``a=b&``) and the grant's signature."""
    rt = runtime(request)
    query = rt.signer.sign(grant, ttl_seconds)
    return f"{public_base_url(request)}{grant.path}?{extra}expires={query['expires']}&signature={query['signature']}"


async def signed_upload(
    request: Request, method: str, path: str, upload_id: str, expires: str | None, signature: str | None
) -> Upload | None:
    """The upload a signed ``method`` on ``path`` acts on, once its signature is verified for that
    upload and owner (``Forbidden`` otherwise); None when no upload has this id (the caller answers
    its own 404). A URL with no signature at all is refused before anything is looked up."""
    rt = runtime(request)
    rt.signer.check_present(expires, signature)
    return await rt.uploads.get_signed(
        upload_id, lambda found: rt.signer.verify(Grant(method, path, found.id, found.owner), expires, signature)
    )
