"""``Idempotency-Key`` on ``POST /v1/files`` (draft-ietf-httpapi-idempotency-key-header): a create
sent again after its answer was lost (a network error, a proxy's 5xx) names the upload the first
one made instead of making another, which would only wait to expire. The key is the upload's client
reference (unique per owner, like Fine Uploader's qquuid), so it lives as long as the upload."""

from __future__ import annotations

from starlette.requests import Request

from chunkd.auth.principal import Principal
from chunkd.domain import errors as e
from chunkd.domain.metadata import LINK_METADATA_KEY, PURPOSE_METADATA_KEY
from chunkd.domain.names import check_client_ref, clean_filename
from chunkd.domain.upload import Upload
from chunkd.frontends.native.schemas import CreateFileRequest

__all__ = ["HEADER", "idempotency_key", "same_request"]

HEADER = "Idempotency-Key"


def idempotency_key(request: Request) -> str | None:
    """The request's key, or None: the draft's quoted string, or the bare token other APIs take."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    check_client_ref(key, field=HEADER, name=HEADER)  # the key is the upload's client reference
    return key


def same_request(earlier: Upload, who: Principal, body: CreateFileRequest, md5: str | None) -> Upload:
    """``earlier`` (the upload the key made) when this request is the one that made it; a key sent
    again with another file, or by an upload link that did not make it, is refused, and nothing is
    made (the draft's 422; here a 400 naming the header, as any refused field)."""
    made_by = earlier.metadata.get(LINK_METADATA_KEY)
    if (
        made_by != who.upload_link
        or earlier.filename != clean_filename(body.filename)
        or earlier.size_bytes != body.sizeBytes
        or (body.partSize is not None and earlier.part_size != body.partSize)
        or (md5 is not None and earlier.declared_md5 != md5)
        or earlier.metadata.get(PURPOSE_METADATA_KEY) != body.purpose
    ):
        raise e.InvalidInput(f"this {HEADER} was already used for another request", field=HEADER)
    return earlier
