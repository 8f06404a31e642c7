"""Which URLs chunkd may send a request to on an owner's behalf (webhooks): http(s) only, and —
unless the operator allows it — only hosts whose every address is public, so an owner cannot make
the server call its own loopback, the private network or a cloud metadata address (SSRF).

The address checked is the address called: ``Pinned`` sends the request to it (the name stays in
``Host`` and in TLS's SNI and certificate check), so a name that resolves to a public address for
the check and to a private one a moment later (DNS rebinding) reaches nothing it should not."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx

from chunkd.domain.errors import InvalidInput

__all__ = ["Pinned", "check_public_destination", "check_url_shape", "resolve"]


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
    # What the HTTP client will refuse to send to (a control character, a host IDNA cannot
    # encode: "a..b", a label over 63 characters) is refused here: such an endpoint's every
    # delivery failed before it was sent, and an unexpected error class let it jam the queue.
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise InvalidInput("url must not contain spaces or control characters", field=field)
    try:
        parts.hostname.encode("idna")
        httpx.URL(url)
    except (UnicodeError, httpx.InvalidURL):
        raise InvalidInput("url is not a valid URL", field=field) from None


async def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (OSError when it does not)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def check_public_destination(url: str, *, field: str = "url") -> str:
    """Refuse ``url`` unless its host resolves, and only to globally routable addresses; returns the
    first of them (the one to call, see ``Pinned``). Checked when an endpoint is registered and again
    before each delivery (a name can be re-pointed later)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = await resolve(host, port)
    except (OSError, UnicodeError):  # UnicodeError: a name IDNA cannot encode
        raise InvalidInput(f"the host {host!r} of url does not resolve", field=field) from None
    if not addresses:
        raise InvalidInput(f"the host {host!r} of url does not resolve", field=field)
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if not all(_public(each) for each in (address, *_embedded_ipv4(address))):
            raise InvalidInput(
                f"url resolves to {address}, which is not a public address; webhooks may only call public hosts",
                field=field,
            )
    return addresses[0]


# IPv6 prefixes whose last 32 bits are an IPv4 address a translator reaches (RFC 6052's NAT64
# prefixes; the deprecated IPv4-compatible ::a.b.c.d; SIIT's IPv4-translated ::ffff:0:a.b.c.d):
# ipaddress counts them as global whatever address they carry (64:ff9b::10.0.0.1, say).
_CARRY_IPV4_IN_LOW_BITS = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
)

# Ranges Python 3.11's is_global still counts as global that no webhook receiver lives in: the
# IETF protocol assignments (192.0.0.0/24) and the retired 6to4 relay anycast (192.88.99.0/24).
_NOT_RECEIVERS = (ipaddress.IPv4Network("192.0.0.0/24"), ipaddress.IPv4Network("192.88.99.0/24"))


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A unicast address routable on the public internet (multicast, IPv6 site-local and reserved
    ranges are global to ipaddress, and were accepted)."""
    if not address.is_global or address.is_multicast or address.is_reserved:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        return not address.is_site_local
    return not any(address in network for network in _NOT_RECEIVERS)


def _embedded_ipv4(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to (mapped, 6to4, NAT64, IPv4-compatible)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if any(address in network for network in _CARRY_IPV4_IN_LOW_BITS):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


class Pinned:
    """A request for ``url`` sent to ``address``: the URL to send to, and the headers and httpx
    extensions that keep the name for the server (``Host``) and for TLS (SNI, certificate check)."""

    def __init__(self, url: str, address: str) -> None:
        parts = urlsplit(url)
        name = parts.hostname or ""
        literal = f"[{address}]" if ":" in address else address
        netloc = f"{literal}:{parts.port}" if parts.port is not None else literal
        self.url = parts._replace(netloc=netloc).geturl()
        host = f"[{name}]" if ":" in name else name
        # Connection: close, because httpx pools connections by the URL's address: a connection
        # kept for one name (and its certificate) must not carry a request for another name there.
        self.headers = {"Host": f"{host}:{parts.port}" if parts.port is not None else host, "Connection": "close"}
        self.extensions: dict[str, Any] = {"sni_hostname": name} if parts.scheme == "https" else {}
