"""Part geometry: how a file of a given size is cut into numbered parts."""

from __future__ import annotations

from chunkd.domain.errors import InvalidInput
from chunkd.domain.upload import MAX_PARTS, Mode

__all__ = ["MAX_PARTS", "choose_part_size", "part_count"]


def part_count(size_bytes: int, part_size: int) -> int:
    return -(-size_bytes // part_size)


def choose_part_size(
    size_bytes: int | None,
    requested: int | None,
    *,
    default: int,
    minimum: int,
    maximum: int,
    mode: Mode,
    strict: bool = True,
    ceiling: int | None = None,
) -> int:
    """The part size of a new upload: ``requested`` (within ``minimum``..``maximum`` when
    ``strict``) or ``default``, grown when needed so a PARTS upload never has more than
    ``MAX_PARTS`` parts; a requested size that would give more is refused naming the smallest
    that works. No part size passes ``ceiling`` (the largest file), strict or not: such a part
    could never be filled."""
    part_size = requested
    if part_size is None:
        part_size = default
        if size_bytes is not None and part_count(size_bytes, part_size) > MAX_PARTS:
            part_size = part_count(size_bytes, MAX_PARTS)
    if strict and not minimum <= part_size <= maximum:
        raise InvalidInput(f"partSize must be between {minimum} and {maximum} bytes", field="partSize")
    if part_size <= 0:
        raise InvalidInput("partSize must be positive", field="partSize")
    if ceiling is not None and part_size > max(ceiling, maximum):
        raise InvalidInput(f"partSize must be at most {max(ceiling, maximum)} bytes", field="partSize")
    if mode is Mode.PARTS and size_bytes is not None and part_count(size_bytes, part_size) > MAX_PARTS:
        raise InvalidInput(
            f"partSize gives more than {MAX_PARTS} parts; use at least {part_count(size_bytes, MAX_PARTS)} bytes",
            field="partSize",
        )
    return part_size
