"""Mutual exclusion per upload (invariant 2: one writer per upload)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

__all__ = ["LockManager"]


class LockManager(Protocol):
    def hold(self, upload_id: str, *, timeout: float) -> AbstractAsyncContextManager[None]:
        """Hold the upload's lock; raise ``Busy`` if it cannot be had within ``timeout`` seconds
        (0 means try once). Exclusive across tasks, processes and — where the backend allows —
        nodes."""

    async def close(self) -> None: ...
