"""Units the settings are written in, and the form of the URLs they take."""

from urllib.parse import urlsplit

__all__ = ["MiB", "http_url"]

MiB = 1024 * 1024


def http_url(value: str | None, *, base: bool = False) -> str | None:
    """``value`` when it is an http(s) URL with a host (``base``: nothing after its path either, as a
    base the server's own paths are put after); ValueError otherwise. None and "" pass (unset)."""
    if value:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or (base and (parts.query or parts.fragment)):
            form = "an http(s)://host[:port][/path] URL" if base else "an http(s) URL"
            raise ValueError(f"{value[:100]!r} is not {form}")
    return value
