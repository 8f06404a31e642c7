"""Which URLs chunkd may send a request to on an owner's behalf (webhooks): http(s) only, and —
unless the operator allows it — only hosts whose every address is public, so an owner cannot make
the server call its own loopback, the private network or a cloud metadata address (SSRF)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from chunkd.domain.errors import InvalidInput

__all__ = ["check_public_destination", "check_url_shape"]


def check_url_shape(url: str, *, field: str = "url") -> None:
    """An absolute http(s) URL with a host and no credentials in it."""
    if len(url) > 2048:
        raise InvalidInput("url must be at most 2048 characters", field=field)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInput("url is not a valid URL", field=field) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url must be an absolute http:// or https:// URL", field=field)
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("url must not carry credentials", field=field)
    del port


async def check_public_destination(url: str, *, field: str = "url") -> None:
    """Refuse ``url`` unless its host resolves, and only to globally routable addresses. Checked when
    an endpoint is registered and again before each delivery (a name can be re-pointed later)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise InvalidInput(f"the host {host!r} of url does not resolve", field=field) from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        mapped = getattr(address, "ipv4_mapped", None)
        if not (mapped or address).is_global:
            raise InvalidInput(
                f"url resolves to {address}, which is not a public address; webhooks may only call public hosts",
                field=field,
            )
