"""tus ``checksum-trailer``: a PATCH whose ``Upload-Checksum`` arrives as an HTTP trailer, after
the last chunk of a chunked body, rather than as a header.

ASGI has no message for request trailers, so this needs an ASGI server that passes them: chunkd's
own uvicorn protocol offers the ``http.request.trailers`` extension (``chunkd.server.protocol``)
and fills it before the app receives the end of the body. Under any other server (granian, or an
in-process test client) the extension is absent: the capability is not announced, and a PATCH
that announces the trailer is refused before a byte is read (its checksum could not be verified).

The client announces the trailer with ``Trailer: Upload-Checksum`` (RFC 9110 §6.6.2); a trailer sent
without that announcement is ignored. The algorithm is named only in the trailer, so the body is
hashed with every supported algorithm as it arrives (md5, sha1, sha256, crc32: only requests that
announce a checksum trailer pay for that).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from chunkd.domain.checksum import StreamHasher, new_stream_hasher
from chunkd.domain.errors import InvalidInput
from chunkd.frontends.digests import content_digest_checksum
from chunkd.frontends.http import field_value
from chunkd.frontends.tus.headers import CHECKSUM_ALGORITHMS, parse_checksum

__all__ = [
    "TRAILERS",
    "BodyChecksum",
    "TrailerChecksum",
    "announces_checksum_trailer",
    "body_checksum",
    "reads_trailers",
]

TRAILERS = "http.request.trailers"  # the extension's name (chunkd.server.protocol.TRAILERS)


def reads_trailers(request: Request) -> bool:
    """True when the ASGI server running this request passes request trailers to the app."""
    return TRAILERS in request.scope.get("extensions", {})


def announces_checksum_trailer(request: Request) -> bool:
    """True when the request's ``Trailer`` header names ``Upload-Checksum``."""
    announced = ",".join(request.headers.getlist("trailer"))
    return "upload-checksum" in {name.strip().lower() for name in announced.split(",")}


class TrailerChecksum:
    """A ``StreamHasher`` over a body whose expected checksum is its ``Upload-Checksum`` trailer:
    ``digest`` is the body's digest in the algorithm the trailer names, ``expected`` the digest
    it carries. Both raise ``InvalidInput`` (400, nothing of the request kept) when the trailer is
    missing or malformed. Read them only once the body has ended."""

    def __init__(self, request: Request) -> None:
        if not reads_trailers(request):
            raise InvalidInput(
                "this server cannot read request trailers; send Upload-Checksum as a request header",
                field="Upload-Checksum",
            )
        self._extension: dict[str, Any] = request.scope["extensions"][TRAILERS]
        self._hashers = {algorithm: new_stream_hasher(algorithm) for algorithm in CHECKSUM_ALGORITHMS}

    def update(self, data: bytes, /) -> None:
        for hasher in self._hashers.values():
            hasher.update(data)

    def _trailer(self) -> tuple[str, bytes]:
        fields: list[tuple[bytes, bytes]] | None = self._extension.get("headers")
        if fields is None:
            raise InvalidInput("the body ended without its trailer section", field="Upload-Checksum")
        values = [value for name, value in fields if name == b"upload-checksum"]
        if len(values) != 1:
            raise InvalidInput(
                "send exactly one Upload-Checksum trailer (announced in Trailer)", field="Upload-Checksum"
            )
        text = values[0].decode("latin-1")
        parsed: tuple[StreamHasher, bytes, str] | None = parse_checksum(text)
        assert parsed is not None
        return text.strip().split(" ")[0].lower(), parsed[1]

    def digest(self) -> bytes:
        algorithm, _ = self._trailer()
        return self._hashers[algorithm].digest()

    def expected(self) -> bytes:
        return self._trailer()[1]


# A body's checksum: the hasher it streams through, and the digest expected (or, for a trailer, a
# callable that gives it once the body has ended).
BodyChecksum = tuple[StreamHasher, bytes | Callable[[], bytes], str]


def body_checksum(request: Request) -> BodyChecksum | None:
    """The checksum a tus request with a body asks to be verified, a PATCH or a creation with
    upload alike ("all semantics of PATCH apply"): ``Upload-Checksum``, else RFC 9530's
    ``Content-Digest`` (the draft's way of saying the same), else an announced trailer."""
    checksum: BodyChecksum | None = parse_checksum(field_value(request, "upload-checksum"))
    if checksum is None:
        checksum = content_digest_checksum(request.headers.get("content-digest"))
    if checksum is None and announces_checksum_trailer(request):
        trailer = TrailerChecksum(request)
        checksum = (trailer, trailer.expected, "Upload-Checksum")
    return checksum
