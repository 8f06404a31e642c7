"""Request bodies as the service takes them (async iterators of bytes), for tests that call the
service directly."""

from __future__ import annotations

from collections.abc import AsyncIterator

__all__ = ["body"]


async def body(*chunks: bytes, fail_after: bool = False) -> AsyncIterator[bytes]:
    """``chunks`` one after the other; then, with ``fail_after``, the client goes away."""
    for chunk in chunks:
        yield chunk
    if fail_after:
        raise ConnectionResetError("client went away")
