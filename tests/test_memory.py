"""The malloc arena cap is applied on glibc (the machines chunkd is built and tested on)."""

from __future__ import annotations

import platform

import pytest

from chunkd.memory import limit_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_arena_cap_is_applied() -> None:
    assert limit_malloc_arenas(2) is True
