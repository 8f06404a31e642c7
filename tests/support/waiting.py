"""Waiting on a condition in synchronous end-to-end tests (never on a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(condition: Callable[[], Any], timeout: float = 120, what: str = "condition") -> Any:
    """The first truthy value of ``condition``, looked at every 20 ms; ``AssertionError`` naming
    ``what`` once ``timeout`` seconds pass without one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
