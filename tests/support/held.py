"""An async method held at its start until the test lets it go: the request that calls it is under
way there, and the test acts in between (no sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

__all__ = ["Held"]


class Held:
    """``target.name`` replaced for the test: its callers set ``reached`` and wait for ``gate``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> None:
        self.reached = asyncio.Event()
        self.gate = asyncio.Event()
        real: Callable[..., Awaitable[Any]] = getattr(target, name)

        async def held(*args: Any, **kwargs: Any) -> Any:
            self.reached.set()
            await self.gate.wait()
            return await real(*args, **kwargs)

        monkeypatch.setattr(target, name, held)
