"""Short-lived signed URLs: a browser or partner can PUT to a part or upload URL, or GET a media
file, without holding the API key.

The signature is an HMAC-SHA256 under the server secret over exactly what the URL authorises
(a ``Grant``): the method, the path (which names the upload, part or media id), the upload behind
it, the owner of that upload, the API key whose credential asked for it, and the expiry. So a URL
cannot be moved to another upload, part, method, owner or key, nor extended, and a URL whose id has
come to name something else (another owner's media, say) no longer verifies. The key is named in
the URL (``key_id``) so that revoking it ends its URLs too, as deleting an S3 access key ends the
URLs presigned with it (``chunkd.frontends.signed`` checks it). The fields are JSON-encoded before signing so that no
choice of values can make two different grants sign the same message."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from chunkd.domain.errors import Forbidden

__all__ = ["Grant", "UrlSigner"]


@dataclass(frozen=True)
class Grant:
    """What one signed URL authorises: ``method`` on ``path``, acting on ``upload_id`` of ``owner``,
    for as long as the API key ``key_id`` stands ("": bound to no key, e.g. a URL asked for with an
    identity provider's token)."""

    method: str
    path: str
    upload_id: str
    owner: str
    key_id: str = ""

    def message(self, expires: int) -> bytes:
        fields: list[str | int] = [self.method.upper(), self.path, self.upload_id, self.owner, expires]
        if self.key_id:  # appended only when bound: URLs made before keys were bound still verify
            fields.append(self.key_id)
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()


class UrlSigner:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, grant: Grant, expires: int) -> str:
        digest = hmac.new(self._secret, grant.message(expires), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, grant: Grant, ttl_seconds: float) -> dict[str, str]:
        """The query parameters of a URL for ``grant``: ``expires``, ``key_id`` when it is bound to
        a key, and ``signature``."""
        expires = int(time.time() + ttl_seconds)
        query = {"expires": str(expires)}
        if grant.key_id:
            query["key_id"] = grant.key_id
        query["signature"] = self._mac(grant, expires)
        return query

    @staticmethod
    def check_present(expires: str | None, signature: str | None) -> None:
        """Refuse a URL that carries no signature at all (before anything is looked up)."""
        if not expires or not signature:
            raise Forbidden("missing URL signature", field="signature")

    def verify(self, grant: Grant, expires: str | None, signature: str | None) -> None:
        """Raise ``Forbidden`` unless ``signature`` was made for exactly ``grant`` and ``expires``
        and has not expired."""
        self.check_present(expires, signature)
        assert expires is not None and signature is not None
        # Exactly as it was signed: decimal digits, no sign, space or leading zero ("+17…", " 17…"
        # and "017…" name the same time, but a URL is honoured only in the form it was made in).
        if not (expires.isascii() and expires.isdigit() and str(int(expires)) == expires):
            raise Forbidden("invalid URL signature", field="expires")
        when = int(expires)
        # bytes: compare_digest refuses non-ASCII str with a TypeError (a 500 for a hostile signature).
        if not hmac.compare_digest(self._mac(grant, when).encode(), signature.encode()):
            raise Forbidden("invalid URL signature", field="signature")
        if when < time.time():
            raise Forbidden("the signed URL has expired", field="expires")
