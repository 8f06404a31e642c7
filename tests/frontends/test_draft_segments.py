"""``Segments``: a request body cut into consecutive bodies of at most N bytes, read lazily."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chunkd.frontends.tus.draft_progress import Segments


async def body(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def cut(size: int, *chunks: bytes) -> list[bytes]:
    segments = Segments(body(*chunks), size)
    out = []
    while (segment := segments.next()) is not None:
        out.append(b"".join([part async for part in segment]))
    return out


@pytest.mark.parametrize(
    ("size", "chunks", "expected"),
    [
        (4, [b"abcdefghij"], [b"abcd", b"efgh", b"ij"]),
        (4, [b"ab", b"cd", b"ef"], [b"abcd", b"ef"]),
        (4, [b"abcd"], [b"abcd", b""]),  # ends on a boundary: one last, empty segment
        (4, [], [b""]),
        (3, [b"a", b"", b"bcdefg", b"h"], [b"abc", b"def", b"gh"]),
    ],
)
async def test_segments(size: int, chunks: list[bytes], expected: list[bytes]) -> None:
    assert await cut(size, *chunks) == expected


async def test_a_segment_does_not_read_before_it_is_iterated() -> None:
    reads: list[int] = []

    async def counted() -> AsyncIterator[bytes]:
        for n in range(3):
            reads.append(n)
            yield b"xx"

    segments = Segments(counted(), 2)
    first = segments.next()
    assert first is not None and reads == []
    assert [part async for part in first] == [b"xx"]
    assert reads == [0]
