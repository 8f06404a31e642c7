"""The in-memory moving window behind the default rate limits, with the clock given explicitly:
a hit passes while the units of the last window plus its cost fit, units free as the window moves
past them, and the figures for the RateLimit-* headers follow."""

from __future__ import annotations

import pytest
from limits import parse

from chunkd.auth.ratelimit import MovingWindows, RateLimits


def test_units_fit_until_the_window_is_full_and_free_as_it_moves() -> None:
    windows = MovingWindows()
    item = parse("4/2 second")
    assert [windows.hit(item, "read", "alice", 1, 100.0 + i * 0.1) for i in range(5)] == [True] * 4 + [False]
    left, reset = windows.stats(item, "read", "alice", 100.45)
    assert left == 0 and reset == pytest.approx(102.0, abs=0.002)  # counted in slots of 1/1000 window
    assert windows.hit(item, "read", "bob", 1, 100.5)  # another identity has its own window
    assert not windows.hit(item, "read", "alice", 1, 101.99)
    assert windows.hit(item, "read", "alice", 1, 102.01)  # the first unit (t=100.0) has left the window
    assert not windows.hit(item, "read", "alice", 1, 102.05)
    assert windows.hit(item, "read", "alice", 1, 102.11)


def test_costs_count_as_that_many_units() -> None:
    windows = MovingWindows()
    item = parse("1500/minute")
    assert windows.hit(item, "bytes", "alice", 1000, 10.0)
    assert not windows.test(item, "bytes", "alice", 501, 11.0)
    assert windows.test(item, "bytes", "alice", 500, 11.0)
    assert not windows.hit(item, "bytes", "alice", 1000, 11.0)
    assert windows.stats(item, "bytes", "alice", 11.0)[0] == 500
    assert windows.hit(item, "bytes", "alice", 1000, 70.1)


def test_a_window_holds_at_most_a_thousand_entries() -> None:
    windows = MovingWindows()
    item = parse("60000/minute")
    for i in range(50_000):
        assert windows.hit(item, "upload", "alice", 1, 1000.0 + i * 0.001)
    (window,) = windows.windows.values()
    assert window.total == 50_000 and len(window.entries) <= 1000


async def test_the_default_strategy_in_memory_uses_it() -> None:
    limits = RateLimits("read=2/minute")
    assert limits.local is not None
    first, second, third = [await limits.hit("read", "alice") for _ in range(3)]
    assert first is not None and first.allowed and first.remaining == 1
    assert second is not None and second.allowed and second.remaining == 0
    assert third is not None and not third.allowed and 59 <= third.retry_after <= 60
    assert RateLimits("read=2/minute", strategy="fixed-window").local is None
