"""Writing events to the outbox inside a caller's transaction (invariant 9: an event is committed
exactly when the state change it reports is)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from chunkd.backends.repository.sqlalchemy.tables import events as events_table
from chunkd.domain.events import Event

__all__ = ["write_events"]


async def write_events(conn: AsyncConnection, events: Sequence[Event]) -> None:
    """Insert ``events`` on ``conn`` (in its open transaction); nothing when there are none."""
    if not events:
        return
    await conn.execute(
        insert(events_table),
        [
            {
                "id": event.id,
                "type": event.type,
                "owner": event.owner,
                "upload_id": event.upload_id,
                "created_at": event.timestamp,
                "payload": event.payload(),
                "dispatched": False,
            }
            for event in events
        ],
    )
