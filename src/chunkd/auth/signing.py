"""Short-lived signed URLs: a browser or partner can PUT to a part or upload URL without holding
the API key. The signature binds method, path and expiry with HMAC-SHA256 under the server
secret, so it cannot be moved to another upload, part or method, nor extended."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from chunkd.domain.errors import Forbidden

__all__ = ["UrlSigner"]


class UrlSigner:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, method: str, path: str, expires: int) -> str:
        message = f"{method.upper()}\n{path}\n{expires}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, method: str, path: str, ttl_seconds: float) -> dict[str, str]:
        expires = int(time.time() + ttl_seconds)
        return {"expires": str(expires), "signature": self._mac(method, path, expires)}

    def verify(self, method: str, path: str, expires: str | None, signature: str | None) -> None:
        if not expires or not signature:
            raise Forbidden("missing URL signature", field="signature")
        try:
            when = int(expires)
        except ValueError:
            raise Forbidden("invalid URL signature", field="expires") from None
        # bytes: compare_digest refuses non-ASCII str with a TypeError (a 500 for a hostile signature).
        if not hmac.compare_digest(self._mac(method, path, when).encode(), signature.encode()):
            raise Forbidden("invalid URL signature", field="signature")
        if when < time.time():
            raise Forbidden("the signed URL has expired", field="expires")
