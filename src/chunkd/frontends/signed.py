"""Signed URLs in every frontend: building them for an upload, and finding the upload a signed
request acts on.

A signed request carries no credentials, so the owner it acts for can only come from the upload
its path names. The upload is looked up by its id alone, and the signature is then checked
against that upload *and its owner* (``Grant``): a URL made for another upload, part, method or
owner does not verify. Everything after that goes through the owner-scoped service calls, as for
a request with credentials.

A URL is bound to the API key behind the credential that asked for it (the key itself, or the
key a chunkd token was issued for), and answers only while that key stands: revoking a key ends
its URLs as it ends its tokens, on every node within the key cache's second. A URL asked for with
an identity provider's token names no key and lives until its expiry."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query
from starlette.requests import Request

from chunkd.auth.keys import api_key_of, is_key_id, key_gone, key_stands
from chunkd.auth.principal import Principal
from chunkd.auth.signing import Grant
from chunkd.domain.errors import Forbidden
from chunkd.domain.upload import Upload
from chunkd.frontends.http import public_base_url, runtime

__all__ = ["SigningKey", "signed_upload", "signed_url", "url_lifetime"]

# The ``key_id`` query parameter of a signed URL (its shape is checked by ``signed_upload``).
SigningKey = Annotated[str | None, Query(max_length=64, description="The API key the signed URL is bound to")]


def _signing_key(request: Request) -> str:
    """The id of the API key a URL made for this request is bound to ("" for none)."""
    who: Principal | None = getattr(request.state, "principal", None)
    if who is None or who.via == "link":  # an upload link's token is never given a URL
        return ""
    return api_key_of(who) or ""  # none for an identity provider's token


def signed_url(
    request: Request, grant: Grant, ttl_seconds: float, *, extra: str = "", outlives_credential: bool = False
) -> str:
    """The absolute URL of ``grant.path`` with ``extra`` query parameters (already encoded,
    ``a=b&``) and the grant's signature, bound to the key of the request's credential. It expires
    no later than that credential (an access token, a key that expires), as a URL presigned with
    temporary credentials does: a 15-minute token cannot hand out a day-long grant; unless
    ``outlives_credential`` (a URL that can never be asked for again)."""
    rt = runtime(request)
    ttl = ttl_seconds if outlives_credential else url_lifetime(request, ttl_seconds)
    query = rt.signer.sign(replace(grant, key_id=_signing_key(request)), ttl)
    signed = "&".join(f"{name}={value}" for name, value in query.items())
    return f"{public_base_url(request)}{grant.path}?{extra}{signed}"


def url_lifetime(request: Request, ttl_seconds: float) -> float:
    """``ttl_seconds``, or less: what is left of the request's credential when it expires sooner."""
    who: Principal | None = getattr(request.state, "principal", None)
    if who is None or who.expires_at is None:
        return ttl_seconds
    return max(0.0, min(ttl_seconds, (who.expires_at - datetime.now(UTC)).total_seconds()))


async def signed_upload(
    request: Request,
    method: str,
    path: str,
    upload_id: str,
    expires: str | None,
    signature: str | None,
    key_id: str | None = None,
) -> Upload | None:
    """The upload a signed ``method`` on ``path`` acts on, once its signature is verified for that
    upload, owner and key, and the key still stands (``Forbidden`` otherwise); None when no upload
    has this id (the caller answers its own 404). A URL with no signature at all is refused before
    anything is looked up."""
    rt = runtime(request)
    rt.signer.check_present(expires, signature)
    if key_id is not None and not is_key_id(key_id):
        raise Forbidden("invalid URL signature", field="key_id")
    bound = key_id or ""
    found = await rt.uploads.get_signed(
        upload_id, lambda found: rt.signer.verify(Grant(method, path, found.id, found.owner, bound), expires, signature)
    )
    if found is not None and bound:
        key = await rt.keys.repo.get_key(bound)  # the key cache: a revocation is seen within 1 s
        if not key_stands(key, found.owner):
            raise Forbidden(f"the API key this URL was made with {key_gone(key)}", field="key_id")
    return found
