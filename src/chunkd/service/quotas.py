"""Per-owner quotas, checked before bytes are accepted: pending uploads, bytes held by pending
uploads, and bytes stored in all. Each refusal names its limit."""

from __future__ import annotations

from dataclasses import dataclass

from chunkd.domain.errors import QuotaExceeded
from chunkd.ports.repository import UploadRepository
from chunkd.service.config import EngineConfig

__all__ = ["Usage", "byte_room", "check_new_upload", "usage_of"]


@dataclass(frozen=True)
class Usage:
    """What an owner holds, counted as the quotas count it, beside those quotas (None: no limit)."""

    pending_uploads: int
    pending_bytes: int  # declared sizes of PENDING uploads (bytes received, where not declared yet)
    stored_bytes: int  # sizes of COMPLETED files
    max_pending_uploads: int | None
    max_pending_bytes: int | None
    max_stored_bytes: int | None


async def usage_of(repo: UploadRepository, cfg: EngineConfig, owner: str) -> Usage:
    pending, pending_bytes, stored = await repo.usage(owner)
    return Usage(pending, pending_bytes, stored, cfg.max_pending_uploads, cfg.max_pending_bytes, cfg.max_stored_bytes)


def _byte_limits(cfg: EngineConfig, pending_bytes: int, stored: int) -> list[tuple[int, QuotaExceeded]]:
    """(bytes still allowed, the error past them) for each byte quota that is set."""
    limits: list[tuple[int, QuotaExceeded]] = []
    if cfg.max_pending_bytes is not None:
        limits.append(
            (
                cfg.max_pending_bytes - pending_bytes,
                QuotaExceeded(
                    f"pending uploads may hold at most {cfg.max_pending_bytes} bytes",
                    limit="max_pending_bytes",
                    maxPendingBytes=cfg.max_pending_bytes,
                ),
            )
        )
    if cfg.max_stored_bytes is not None:
        limits.append(
            (
                cfg.max_stored_bytes - stored - pending_bytes,
                QuotaExceeded(
                    f"stored files may total at most {cfg.max_stored_bytes} bytes",
                    limit="max_stored_bytes",
                    maxStoredBytes=cfg.max_stored_bytes,
                ),
            )
        )
    return limits


async def check_new_upload(usage: UploadRepository, cfg: EngineConfig, owner: str, size_bytes: int | None) -> None:
    """Refuse a new upload of ``size_bytes`` (None: not yet known) that would pass a quota."""
    if not cfg.has_quotas:
        return
    pending, pending_bytes, stored = await usage.usage(owner)
    if cfg.max_pending_uploads is not None and pending >= cfg.max_pending_uploads:
        raise QuotaExceeded(
            f"at most {cfg.max_pending_uploads} uploads may be pending at once",
            limit="max_pending_uploads",
            maxPendingUploads=cfg.max_pending_uploads,
        )
    for room, error in _byte_limits(cfg, pending_bytes, stored):
        if (size_bytes or 0) > room:
            raise error


async def byte_room(usage: UploadRepository, cfg: EngineConfig, owner: str) -> tuple[int, QuotaExceeded] | None:
    """How many more bytes ``owner`` may hold before a byte quota is passed, and the error to
    raise then; None without byte quotas."""
    if cfg.max_pending_bytes is None and cfg.max_stored_bytes is None:
        return None
    _, pending_bytes, stored = await usage.usage(owner)
    room, error = min(_byte_limits(cfg, pending_bytes, stored), key=lambda item: item[0])
    return max(0, room), error
