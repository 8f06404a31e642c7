"""Where upload metadata lives: sessions and their parts."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Protocol

from chunkd.domain.events import Event
from chunkd.domain.upload import Part, Status, Upload

__all__ = ["UploadRepository"]


class UploadRepository(Protocol):
    """Persistence of the Upload aggregate. Every method is its own transaction."""

    async def create(self, upload: Upload, events: Sequence[Event] = (), parts: Sequence[Part] = ()) -> None:
        """Insert a new upload, with its first ``parts``; raises ``Conflict`` if (owner, frontend,
        client_ref) already exists. ``events`` go to the outbox in the same transaction (as for
        every method taking them)."""

    async def get(
        self,
        upload_id: str,
        owner: str | None = None,
        *,
        parts_from: int | Callable[[Upload], int | None] | None = 1,
        part_numbers: Iterable[int] = (),
    ) -> Upload | None:
        """The upload, scoped to ``owner`` unless None (internal callers only), with its parts
        numbered ≥ ``parts_from`` (None: no parts) and those in ``part_numbers``. A callable
        ``parts_from`` is given the upload row first, so a caller can pick its parts by the row's
        current state in one round trip."""

    async def find_by_client_ref(self, owner: str, frontend: str, client_ref: str) -> Upload | None:
        """An upload a frontend knows by the client's own id (e.g. Fine Uploader's qquuid), without
        its parts (looked up on every chunk; the use cases load what they need by id)."""

    async def save(
        self,
        upload: Upload,
        changed_parts: Sequence[Part] = (),
        removed_parts: Sequence[int] = (),
        events: Sequence[Event] = (),
    ) -> None:
        """Write the upload row and the given part rows atomically."""

    async def touch(self, upload_id: str, expires_at: datetime) -> None:
        """Push a PENDING upload's ``expires_at`` forward (a heartbeat while bytes stream in)."""

    async def list_uploads(
        self, owner: str, *, status: Status | None, limit: int, before: tuple[datetime, str] | None
    ) -> list[Upload]:
        """The owner's uploads (without parts), newest first, strictly before the ``before`` key."""

    async def list_expirable(self, now: datetime, limit: int) -> list[str]:
        """Ids of PENDING uploads whose ``expires_at`` has passed."""

    async def expire(self, upload_id: str, now: datetime, events: Sequence[Event] = ()) -> bool:
        """Mark one upload EXPIRED if it is still PENDING and past ``expires_at``, forgetting its
        part rows in the same transaction; True if it was."""

    async def delete_upload(self, upload_id: str, events: Sequence[Event] = ()) -> None:
        """Forget an upload and its parts."""

    async def usage(self, owner: str) -> tuple[int, int, int]:
        """(PENDING uploads, bytes declared by PENDING uploads, bytes of COMPLETED uploads) of an owner."""

    async def all_ids(self) -> set[str]:
        """Every upload id known."""

    async def live_blobs(self) -> dict[str, set[str]]:
        """Blob refs of every upload that still holds bytes (PENDING or COMPLETED), by upload id
        (``chunkd gc`` frees every other blob)."""

    async def pending_expiring_after(self, moment: datetime) -> set[str]:
        """Ids of the PENDING uploads whose ``expires_at`` lies after ``moment``: every commit and
        the heartbeat of a body still arriving push it to now + TTL, so these were written to
        lately (``sweep_orphans`` spares their unrecorded blobs)."""

    async def completed_ids(self) -> set[str]:
        """Ids of the COMPLETED uploads (``chunkd gc``: a store may free what their completion
        left behind, never what a PENDING upload's parts still need)."""

    async def database_id(self) -> str:
        """This database's id, made with it (a blob store names the database it belongs to)."""

    async def newest_write(self) -> datetime | None:
        """When an upload was last written (its newest ``updated_at``); None with no upload. A
        database restored from a backup says when the backup was taken: what the store holds from
        after that is not an orphan of its (see ``sweep_orphans``)."""

    async def count_pending(self) -> int:
        """PENDING uploads of every owner (the ``chunkd_uploads_pending`` gauge)."""

    async def ping(self) -> None:
        """A trivial query (readiness): raises when the metadata store cannot answer."""

    async def close(self) -> None: ...
