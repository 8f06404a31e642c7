"""tus requests several tests send alike."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import httpx

__all__ = ["append_in_slices"]


async def append_in_slices(
    client: httpx.AsyncClient, url: str, data: bytes, sizes: Iterable[int], headers: Mapping[str, str]
) -> None:
    """Send ``data`` to the tus upload at ``url`` as one PATCH per size in ``sizes``, in order, each
    of which must be taken (204). ``headers``: the credential and ``Tus-Resumable``."""
    offset = 0
    for size in sizes:
        patched = await client.patch(
            url,
            content=data[offset : offset + size],
            headers={**headers, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
        )
        assert patched.status_code == 204, patched.text
        offset += size
