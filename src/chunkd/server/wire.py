"""HTTP/1.1 as bytes, for what chunkd's protocol writes itself (refusals, informational
responses) and reads of a request's head (its body's framing, whether a proxy relayed it)."""

from __future__ import annotations

import http
from collections.abc import Iterable

__all__ = ["body_framing", "plain_response", "proxied", "status_line"]


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


_EXTRA_REASONS = {104: b"Upload Resumption Supported"}  # not (yet) in http.HTTPStatus


def status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _EXTRA_REASONS.get(status) or _reason(status))


def plain_response(status: int, text: str) -> bytes:
    body = text.encode()
    return (
        status_line(status)
        + b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        + body
    )


def body_framing(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The header that frames a request's body (llhttp checked it), or None when it has none."""
    fields = dict(headers)
    if b"transfer-encoding" in fields:
        return b"transfer-encoding: chunked"  # a request's last coding is chunked, else llhttp refused it
    length = fields.get(b"content-length", b"0").strip()
    return None if int(length) == 0 else b"content-length: " + length


# Request headers a proxy adds on its way (nginx's sample config sets X-Forwarded-For).
_PROXY_HEADERS = frozenset({b"x-forwarded-for", b"forwarded", b"via"})


def proxied(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request came through a proxy, by the headers proxies add. Not every proxy relays
    an upstream 1xx: nginx 1.22 takes the draft's 104 for the final response and relays the rest
    of the connection as its body, so a draft client's creation stalled until the body timeout
    (408 after 60 s) and the next request on its connection waited out the keep-alive (30 s). A
    client that sends such a header itself only goes without 1xx responses."""
    return any(name in _PROXY_HEADERS for name, _ in headers)
