"""The engine's own settings (built from ``chunkd.settings.Settings`` by the runtime)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

__all__ = ["EngineConfig"]


@dataclass(frozen=True)
class EngineConfig:
    default_part_size: int = 8 * 1024 * 1024
    min_part_size: int = 256 * 1024
    max_part_size: int = 5 * 1024**3
    max_file_size: int = 5 * 1024**4
    ttl: timedelta = timedelta(hours=24)
    lock_timeout: float = 30.0
    # Per-owner quotas; None means unlimited.
    max_pending_uploads: int | None = None
    max_pending_bytes: int | None = None
    max_stored_bytes: int | None = None

    @property
    def heartbeat_every(self) -> float:
        return max(0.05, min(30.0, self.ttl.total_seconds() / 4))
