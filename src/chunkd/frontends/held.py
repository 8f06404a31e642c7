"""Bytes a frontend holds in memory for a request: a form's file part sent before the fields that
say where it goes (Fine Uploader forms in the seed's table order, a media chunk whose upload_id
follows it). Each request's hold is bounded by its own chunk limit; all of them together share one
budget per process, so memory does not grow with the number of such requests in flight. Past it a
request is refused with a retryable 429 (Retry-After) in its dialect's shape."""

from __future__ import annotations

from chunkd.domain.errors import RateLimited

__all__ = ["HELD_TOTAL_BYTES", "HeldBytes", "held_now"]

# What the requests of this process may hold at once, all together (a single request may still hold
# its own limit when that is larger).
HELD_TOTAL_BYTES = 32 * 1024 * 1024
_held_now = 0


def held_now() -> int:
    """The bytes every request of this process holds at the moment."""
    return _held_now


class HeldBytes:
    """One request's share of the budget: ``take`` counts bytes in (or refuses them), ``release``
    gives all of them back however the request ends (call it in a ``finally``)."""

    def __init__(self, refusal: str, field: str) -> None:
        self.refusal = refusal
        self.field = field
        self.size = 0

    def take(self, size: int, *, limit: int) -> None:
        """Count ``size`` more bytes of a hold allowed ``limit`` bytes on its own, or raise
        ``RateLimited`` when the process holds too much already (nothing is counted then)."""
        global _held_now
        if _held_now + size > max(HELD_TOTAL_BYTES, limit):
            raise RateLimited(self.refusal, field=self.field)
        _held_now += size
        self.size += size

    def release(self) -> None:
        global _held_now
        _held_now -= self.size
        self.size = 0
