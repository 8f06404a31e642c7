"""The cold paths of an upload repository on a raw driver: listings, usage and gc queries, run rarely,
delegated to the SQLAlchemy repository over the same database (``cold``). The hot statements stay the
raw repository's own (``sqlite/uploads.py``, ``postgres/uploads.py``)."""

from __future__ import annotations

from datetime import datetime

from chunkd.backends.repository.sqlalchemy.uploads import SqlUploadRepository
from chunkd.domain.upload import Status, Upload

__all__ = ["ColdPaths"]


class ColdPaths:
    """Mixed into a raw-driver upload repository that sets ``self.cold``."""

    cold: SqlUploadRepository

    async def list_uploads(
        self, owner: str, *, status: Status | None, limit: int, before: tuple[datetime, str] | None
    ) -> list[Upload]:
        return await self.cold.list_uploads(owner, status=status, limit=limit, before=before)

    async def list_expirable(self, now: datetime, limit: int) -> list[str]:
        return await self.cold.list_expirable(now, limit)

    async def usage(self, owner: str) -> tuple[int, int, int]:
        return await self.cold.usage(owner)

    async def all_ids(self) -> set[str]:
        return await self.cold.all_ids()

    async def live_blobs(self) -> dict[str, set[str]]:
        return await self.cold.live_blobs()

    async def pending_expiring_after(self, moment: datetime) -> set[str]:
        return await self.cold.pending_expiring_after(moment)

    async def completed_ids(self) -> set[str]:
        return await self.cold.completed_ids()

    async def database_id(self) -> str:
        return await self.cold.database_id()

    async def newest_write(self) -> datetime | None:
        return await self.cold.newest_write()

    async def count_pending(self) -> int:
        return await self.cold.count_pending()
