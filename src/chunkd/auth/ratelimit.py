"""Rate limits by category (read, write, bytes) per principal, on the ``limits`` library: counters in
memory by default, in Redis when several nodes must share one budget. No HTTP here; the middleware
in ``chunkd.frontends.guards.ratelimit`` decides the category and the identity of each request."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.storage import storage_from_string

__all__ = ["CATEGORIES", "Decision", "RateLimits", "parse_rate_limits"]

log = logging.getLogger("chunkd.ratelimit")

CATEGORIES = ("read", "write", "upload", "bytes")
_STRATEGIES: dict[str, type[RateLimiter]] = {
    "moving-window": MovingWindowRateLimiter,
    "fixed-window": FixedWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}


def parse_rate_limits(spec: str) -> dict[str, list[RateLimitItem]]:
    """``"read=1200/minute;write=20/second,600/minute"`` → limits by category (ValueError if malformed)."""
    table: dict[str, list[RateLimitItem]] = {}
    for entry in spec.split(";"):
        if not entry.strip():
            continue
        category, sep, limits = entry.partition("=")
        category = category.strip().lower()
        if not sep or category not in CATEGORIES:
            raise ValueError(f"rate limit {entry.strip()!r}: expected <{'|'.join(CATEGORIES)}>=<limit>[,<limit>]")
        table[category] = parse_many(limits.strip())
    return table


@dataclass(frozen=True)
class Decision:
    """The outcome of one hit: allowed or not, and the figures for the RateLimit-* headers."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # seconds until the window frees room
    window: int  # seconds the limit counts over
    description: str

    @property
    def retry_after(self) -> int:
        return max(1, self.reset_after)


class RateLimits:
    def __init__(self, spec: str, *, strategy: str = "moving-window", storage_url: str | None = None) -> None:
        self.table = parse_rate_limits(spec)
        self.storage: Storage
        if storage_url:
            # limits picks its async Redis client by the "async+" scheme prefix.
            url = storage_url if storage_url.startswith("async+") else f"async+{storage_url}"
            storage = storage_from_string(url)
            assert isinstance(storage, Storage)  # the async+ scheme always gives an async storage
            self.storage = storage
        else:
            self.storage = MemoryStorage()
        self.limiter = _STRATEGIES[strategy](self.storage)

    def applies(self, category: str) -> bool:
        return category in self.table

    def largest(self, category: str) -> int | None:
        """The most any single hit of ``category`` can cost and still pass (for 'too large' answers)."""
        items = self.table.get(category)
        return min(item.amount for item in items) if items else None

    async def hit(self, category: str, identity: str, cost: int = 1) -> Decision | None:
        """Count one request (or ``cost`` units) of ``identity`` in ``category``; None when the
        category has no limit or the counter store is unreachable (fail open: an outage of Redis
        must not take uploads down with it; it is logged)."""
        items = self.table.get(category)
        if not items:
            return None
        try:
            binding: Decision | None = None
            for item in items:
                allowed = await self.limiter.hit(item, category, identity, cost=cost)
                decision = await self._decision(item, category, identity, allowed=allowed)
                if not allowed:
                    return decision
                if binding is None or decision.remaining < binding.remaining:
                    binding = decision
            return binding
        except Exception:
            log.warning("rate-limit store unavailable; request allowed", exc_info=True)
            return None

    async def would_refuse(self, category: str, identity: str, cost: int = 1) -> Decision | None:
        """The refusing decision if ``cost`` units of ``identity`` would not fit in ``category``
        now, without counting them; None when they fit (or there is no limit, or the store is
        unreachable)."""
        items = self.table.get(category)
        if not items:
            return None
        try:
            for item in items:
                if not await self.limiter.test(item, category, identity, cost=cost):
                    return await self._decision(item, category, identity, allowed=False)
        except Exception:
            log.warning("rate-limit store unavailable; request allowed", exc_info=True)
        return None

    async def _decision(self, item: RateLimitItem, category: str, identity: str, *, allowed: bool) -> Decision:
        """The decision on ``item`` with the figures of its window as they stand."""
        stats = await self.limiter.get_window_stats(item, category, identity)
        return Decision(
            allowed=allowed,
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_after=max(0, math.ceil(stats.reset_time - time.time())),
            window=item.get_expiry(),
            description=str(item),
        )

    async def reset(self) -> None:
        await self.storage.reset()
