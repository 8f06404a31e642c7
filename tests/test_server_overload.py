"""The log of a process at its concurrency limit: a line when refusals begin, then at most one a
minute with the count (uvicorn wrote one per refused request)."""

from __future__ import annotations

import logging

import pytest

from chunkd.server.overload import REPORT_EVERY_SECONDS, UVICORN_LINE, OverloadLog


def test_refusals_are_counted_into_a_line_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    counter = OverloadLog()
    with caplog.at_level(logging.WARNING, logger="chunkd.server"):
        for _ in range(5):
            counter.refused()
        assert len(caplog.records) == 1 and "at the concurrency limit" in caplog.text
        assert counter.last_line is not None
        counter.last_line -= REPORT_EVERY_SECONDS  # a minute on, as the clock would have it
        counter.refused()
    assert len(caplog.records) == 2
    assert caplog.records[1].getMessage().startswith("5 requests answered 503")  # 4 since the line, and this one


def test_uvicorns_own_line_per_refusal_is_dropped() -> None:
    counter = OverloadLog()
    record = logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, UVICORN_LINE, None, None)
    other = logging.LogRecord(
        "uvicorn.error", logging.WARNING, __file__, 1, "Invalid HTTP request received.", None, None
    )
    assert not counter.filter(record) and counter.filter(other)
