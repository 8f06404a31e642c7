"""Waiting on a condition in tests (never on a bare sleep)."""

from __future__ import annotations

import asyncio
import inspect
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


async def until(condition: Callable[[], Any], timeout: float = 120, what: str = "condition") -> Any:
    """``wait_for`` for in-process async tests: the event loop runs on between looks. ``condition``
    may be a coroutine function (a look at the database, say)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
