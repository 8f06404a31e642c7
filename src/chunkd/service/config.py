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
    # How far behind the bytes received a part's answer may leave the whole-file hash frontier:
    # parts that arrived ahead of it are hashed by a background run while the client sends more,
    # and only a commit that finds the run further behind than this waits for it to catch up. So
    # ``complete`` waits for at most this much hashing (~0.1 s per 64 MiB on one core). Answering
    # each such part only once the run had passed it held the client's connection idle meanwhile:
    # 256 MiB, 4 parts in flight, two alternating pairs of three: 8 MiB parts 240–272 → 273–341 MiB/s,
    # 1 MiB parts 98–172 → 162–195 MiB/s (2026-12-01; docs/benchmarks.md, thirteenth session).
    hash_lag_bytes: int = 64 * 1024 * 1024
    # Per-owner quotas; None means unlimited.
    max_pending_uploads: int | None = None
    max_pending_bytes: int | None = None
    max_stored_bytes: int | None = None

    @property
    def has_quotas(self) -> bool:
        return (
            self.max_pending_uploads is not None
            or self.max_pending_bytes is not None
            or self.max_stored_bytes is not None
        )

    @property
    def heartbeat_every(self) -> float:
        return max(0.05, min(30.0, self.ttl.total_seconds() / 4))
