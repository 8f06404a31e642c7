"""The options ``chunkd serve`` hands uvicorn follow the settings as documented."""

from __future__ import annotations

from pathlib import Path

from chunkd.server.run import _uvicorn_options
from chunkd.settings import Settings


def test_a_fractional_keep_alive_timeout_is_kept(tmp_path: Path) -> None:
    """CHUNKD_KEEP_ALIVE_TIMEOUT_SECONDS is in seconds, fractions allowed: 0.5 became 0, which
    closes every connection as soon as its response is sent (keep-alive off)."""
    options = _uvicorn_options(Settings(data_dir=tmp_path, keep_alive_timeout_seconds=0.5))
    assert options["timeout_keep_alive"] == 0.5
    assert _uvicorn_options(Settings(data_dir=tmp_path, keep_alive_timeout_seconds=2.9))["timeout_keep_alive"] == 2.9
