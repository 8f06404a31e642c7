"""Rate limits by category (read, write, bytes) per principal, on the ``limits`` library: counters in
memory by default, in Redis when several nodes must share one budget. No HTTP here; the middleware
in ``chunkd.frontends.guards.ratelimit`` decides the category and the identity of each request."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
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

# A shared counter store (Redis) that does not answer within STORE_TIMEOUT seconds lets the request
# through uncounted, as one that refuses connections does; it is then left alone for
# STORE_RETRY_AFTER seconds, so an outage costs one such wait per interval, not one per request.
# A count is two or three round trips of well under a millisecond on a healthy store; the bound
# is wide so that a busy event loop's own lag is not taken for an outage. Without a bound, a store
# that hangs with its socket open (a stopped process, a paused VM) held every request forever.
STORE_TIMEOUT = 2.0
STORE_RETRY_AFTER = 5.0
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


class _Window:
    """One moving window of one limit and one identity: the units taken, oldest first, in slots of
    ``1/SLOTS`` of the window (so it holds at most ``SLOTS`` entries whatever the limit)."""

    SLOTS = 1000
    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[list[float]] = deque()  # [slot end, units]
        self.total = 0

    def expire(self, now: float, window: float) -> None:
        entries = self.entries
        while entries and entries[0][0] <= now - window:
            self.total -= int(entries.popleft()[1])


class MovingWindows:
    """The moving-window strategy in this process's memory, as a plain synchronous structure.

    Why not ``limits``' ``MemoryStorage`` with its ``MovingWindowRateLimiter`` (used for Redis and
    the other strategies): per request it took an ``asyncio.Lock``, created a task that expires
    entries in a worker thread (a thread hop per request), and stored one list entry per unit at the
    list's head (an O(limit) move per hit: 60,000 entries for ``upload=60000/minute``). Here a hit
    is a few deque operations. Semantics are the same: a hit of ``cost`` units passes when the
    units taken in the last ``window`` seconds plus ``cost`` stay within the limit; units are
    counted in slots of 1/1000 of the window, so a unit may be held up to that much longer (never
    shorter)."""

    def __init__(self) -> None:
        self.windows: dict[tuple[str, int, int, str], _Window] = {}
        self._hits = 0

    def _window(self, item: RateLimitItem, category: str, identity: str, now: float) -> tuple[_Window, float]:
        span = float(item.get_expiry())
        key = (category, item.amount, int(span), identity)
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = _Window()
        window.expire(now, span)
        return window, span

    def hit(self, item: RateLimitItem, category: str, identity: str, cost: int, now: float) -> bool:
        self._hits += 1
        if self._hits % 10_000 == 0:
            self._sweep(now)
        window, span = self._window(item, category, identity, now)
        if window.total + cost > item.amount:
            return False
        granule = span / _Window.SLOTS
        slot = now - now % granule + granule  # the slot's end: a unit is held at least the whole window
        entries = window.entries
        if entries and entries[-1][0] == slot:
            entries[-1][1] += cost
        else:
            entries.append([slot, cost])
        window.total += cost
        return True

    def test(self, item: RateLimitItem, category: str, identity: str, cost: int, now: float) -> bool:
        window, _ = self._window(item, category, identity, now)
        return window.total + cost <= item.amount

    def stats(self, item: RateLimitItem, category: str, identity: str, now: float) -> tuple[int, float]:
        """(units left, when the oldest unit taken frees: epoch seconds)."""
        window, span = self._window(item, category, identity, now)
        # Reported from the oldest slot's start (the nominal time), held until its end: a ceil of
        # the slot's end would round a full window up to one second more than the window.
        oldest = window.entries[0][0] - span / _Window.SLOTS if window.entries else now
        return item.amount - window.total, oldest + span

    def _sweep(self, now: float) -> None:
        """Forget identities whose windows are empty (memory stays bounded by active identities)."""
        for key in [k for k, w in self.windows.items() if not w.entries or w.entries[-1][0] <= now - k[2]]:
            del self.windows[key]

    def clear(self) -> None:
        self.windows.clear()


class RateLimits:
    def __init__(self, spec: str, *, strategy: str = "moving-window", storage_url: str | None = None) -> None:
        self.table = parse_rate_limits(spec)
        self.storage: Storage
        # The default (in memory, moving window) runs without the library's async storage.
        self.local = MovingWindows() if not storage_url and strategy == "moving-window" else None
        if storage_url:
            # limits picks its async Redis client by the "async+" scheme prefix.
            url = storage_url if storage_url.startswith("async+") else f"async+{storage_url}"
            storage = storage_from_string(url)
            assert isinstance(storage, Storage)  # the async+ scheme always gives an async storage
            self.storage = storage
        else:
            self.storage = MemoryStorage()
        self.limiter = _STRATEGIES[strategy](self.storage)
        self._store_back_at = 0.0  # monotonic time until which the store is not asked (after a failure)
        self._store_down = False  # the last time it was asked, it failed

    async def _from_store(self, ask: Callable[[], Awaitable[Decision | None]]) -> Decision | None:
        """``ask()`` of the shared store, or None (the request let through uncounted) while it is
        resting after a failure, or when it fails or takes longer than STORE_TIMEOUT: it is then
        not asked for STORE_RETRY_AFTER seconds. The outage is logged when it begins and ends."""
        if time.monotonic() < self._store_back_at:
            return None
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                decision = await ask()
        except Exception as exc:  # TimeoutError included
            self._store_back_at = time.monotonic() + STORE_RETRY_AFTER
            # A dependency down, not a fault: one line with its cause when the outage begins (it is
            # asked again every STORE_RETRY_AFTER s while it lasts), and one when it is over.
            log.log(
                logging.DEBUG if self._store_down else logging.WARNING,
                "rate-limit store unavailable (%s); requests allowed uncounted, asking it again every %.0f s",
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                STORE_RETRY_AFTER,
            )
            self._store_down = True
            return None
        if self._store_down:
            self._store_down = False
            log.info("rate-limit store answering again; requests are counted")
        return decision

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
        if self.local is not None:
            return self._hit_local(items, category, identity, cost)

        async def count() -> Decision | None:
            binding: Decision | None = None
            for item in items:
                allowed = await self.limiter.hit(item, category, identity, cost=cost)
                decision = await self._decision(item, category, identity, allowed=allowed)
                if not allowed:
                    return decision
                if binding is None or decision.remaining < binding.remaining:
                    binding = decision
            return binding

        return await self._from_store(count)

    def _hit_local(self, items: list[RateLimitItem], category: str, identity: str, cost: int) -> Decision | None:
        assert self.local is not None
        now = time.time()
        binding: Decision | None = None
        for item in items:
            allowed = self.local.hit(item, category, identity, cost, now)
            decision = self._local_decision(item, category, identity, allowed, now)
            if not allowed:
                return decision
            if binding is None or decision.remaining < binding.remaining:
                binding = decision
        return binding

    def _local_decision(self, item: RateLimitItem, category: str, identity: str, allowed: bool, now: float) -> Decision:
        assert self.local is not None
        remaining, reset_time = self.local.stats(item, category, identity, now)
        return Decision(
            allowed=allowed,
            limit=item.amount,
            remaining=max(0, remaining),
            reset_after=max(0, math.ceil(reset_time - now)),
            window=item.get_expiry(),
            description=str(item),
        )

    async def would_refuse(self, category: str, identity: str, cost: int = 1) -> Decision | None:
        """The refusing decision if ``cost`` units of ``identity`` would not fit in ``category``
        now, without counting them; None when they fit (or there is no limit, or the store is
        unreachable)."""
        items = self.table.get(category)
        if not items:
            return None
        if self.local is not None:
            now = time.time()
            for item in items:
                if not self.local.test(item, category, identity, cost, now):
                    return self._local_decision(item, category, identity, False, now)
            return None

        async def refusal() -> Decision | None:
            for item in items:
                if not await self.limiter.test(item, category, identity, cost=cost):
                    return await self._decision(item, category, identity, allowed=False)
            return None

        return await self._from_store(refusal)

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
        if self.local is not None:
            self.local.clear()
        await self.storage.reset()
