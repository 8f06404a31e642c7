"""Waiting for a background task's signal with a time limit."""

from __future__ import annotations

import asyncio

__all__ = ["until_set"]


async def until_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` have passed; True if it was set.
    asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that arrives
    as its timeout fires, and the app's shutdown would then wait for the waiting loop forever."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
