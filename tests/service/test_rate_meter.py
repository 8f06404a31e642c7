"""The body guard's rate meter: bytes per second of waiting, over a sliding window, after a grace."""

from __future__ import annotations

from chunkd.frontends.guards.body import RateMeter


def test_trickle_is_too_slow_only_after_the_grace() -> None:
    meter = RateMeter(min_rate=1000, window=5, grace=3)
    for _ in range(2):
        meter.add(1.0, 10)
        assert not meter.too_slow()  # 2 s of waiting: within the grace
    meter.add(1.0, 10)
    assert meter.too_slow()


def test_fast_body_and_time_not_spent_waiting_pass() -> None:
    meter = RateMeter(min_rate=1000, window=5, grace=0)
    for _ in range(100):
        meter.add(0.01, 65536)  # the client is quick; the route's own time is never added
        assert not meter.too_slow()


def test_window_forgets_an_early_burst() -> None:
    meter = RateMeter(min_rate=1000, window=5, grace=0)
    meter.add(0.1, 10_000_000)  # a fast start...
    for _ in range(4):
        meter.add(1.0, 1)
        assert not meter.too_slow()
    for _ in range(3):
        meter.add(1.0, 1)  # ... then only a trickle for a whole window
    assert meter.too_slow()


def test_slow_stretch_averaged_with_a_fast_one_passes() -> None:
    meter = RateMeter(min_rate=1000, window=10, grace=0)
    meter.add(4.0, 1)  # a pause of 4 s
    meter.add(0.5, 20_000)  # then a burst: 20 KB in the last 4.5 s of waiting
    assert not meter.too_slow()
