"""WebhookRepository over SQLAlchemy Core (SQLite and PostgreSQL).

Claims are single ``UPDATE … WHERE id IN (the due rows, LIMIT n) RETURNING`` statements. On
PostgreSQL the due rows come from a materialized CTE (``WITH due AS MATERIALIZED (SELECT … FOR
UPDATE SKIP LOCKED)``, evaluated once), so concurrent nodes each take different rows, never wait on
each other, and a batch never exceeds its limit. On SQLite they are a plain subquery: the statement
holds the database's write lock for its duration, which serialises claimers the same way, and a
statement that began with ``WITH`` would not be in its transaction at all (Python's ``sqlite3``
opens a transaction only before a statement that *begins* with INSERT, UPDATE, DELETE or REPLACE:
a dispatch's ``WITH … UPDATE events`` committed on its own, and a crash before its deliveries were
written lost those events)."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.sql import Select

from chunkd.backends.repository.sqlalchemy.base import RowMap, SqlStore
from chunkd.backends.repository.sqlalchemy.tables import events, webhook_deliveries, webhook_endpoints
from chunkd.ports.webhooks import (
    ClaimedDelivery,
    Delivery,
    DeliveryStatus,
    DisabledReason,
    Dispatched,
    Endpoint,
    EndpointChanges,
    new_delivery_id,
)

__all__ = ["SqlWebhookRepository", "operator_endpoint_id"]

D = webhook_deliveries
E = webhook_endpoints


def operator_endpoint_id(url: str) -> str:
    """Stable per URL, so every node (and every restart) agrees on an operator endpoint's id."""
    return "whop_" + hashlib.sha256(url.encode()).hexdigest()[:24]


# Event types are a JSON list (a tuple in the record).
ENDPOINT_LOADS: dict[str, Any] = {
    "event_types": lambda value: None if value is None else tuple(value),
    "disabled_reason": lambda value: None if value is None else DisabledReason(value),
}
ENDPOINTS = RowMap(
    Endpoint,
    load=ENDPOINT_LOADS,
    dump={
        "event_types": lambda value: None if value is None else list(value),
        "disabled_reason": lambda value: None if value is None else value.value,
    },
)
DELIVERIES = RowMap(Delivery, load={"status": DeliveryStatus}, dump={"status": lambda value: value.value})
# The endpoint's columns as ``claim`` selects them beside a delivery's (whose own ``id``,
# ``owner`` … would otherwise clash).
CLAIMED_ENDPOINTS = RowMap(
    Endpoint,
    columns={"id": "endpoint_id", "created_at": "endpoint_created_at"},
    load=ENDPOINT_LOADS,
)


def _matches(endpoint: Endpoint, owner: str, event_type: str) -> bool:
    if endpoint.owner is not None and endpoint.owner != owner:
        return False  # an owner's endpoint only ever receives that owner's events
    return endpoint.event_types is None or event_type in endpoint.event_types


class SqlWebhookRepository(SqlStore):
    """Webhook endpoints, their deliveries, and the outbox's fan-out."""

    def _taken_once(self, query: Select[Any], name: str, *, of: Table | None = None) -> Select[Any]:
        """The rows of ``query`` for an ``IN``, taken once per statement. On PostgreSQL from a CTE
        evaluated once, its rows locked and the rows others hold skipped: as a plain subquery,
        PostgreSQL may rescan it for each row it updates, and a rescan skips the rows this very
        statement has just updated, so a ``LIMIT`` of 1 took two events (seen once in a full run).
        Elsewhere ``query`` itself (see the module docstring for why not a CTE on SQLite)."""
        if self.dialect == "postgresql":
            locked = query.with_for_update(of=of, skip_locked=True)
            return select(*locked.cte(name).prefix_with("MATERIALIZED", dialect="postgresql").c)
        return query

    # ---- endpoints ------------------------------------------------------------------------
    async def sync_operator_endpoints(self, urls: Sequence[str], now: datetime) -> None:
        wanted = {operator_endpoint_id(url): url for url in urls}
        async with self.transaction() as conn:
            await conn.execute(
                delete(E).where(E.c.owner.is_(None), E.c.id.not_in(list(wanted)) if wanted else E.c.owner.is_(None))
            )
            for endpoint_id, url in wanted.items():
                # Several nodes start at once: the first insert wins, the others find it there.
                await conn.execute(
                    self.insert(E)
                    .values(id=endpoint_id, owner=None, url=url, secret=None, event_types=None, created_at=now)
                    .on_conflict_do_nothing(index_elements=[E.c.id])
                )
            if wanted:
                await conn.execute(
                    update(E)
                    .where(E.c.id.in_(list(wanted)), E.c.disabled_at.is_not(None))
                    .values(disabled_at=None, disabled_reason=None, failing_since=None)
                )

    async def add_endpoint(self, endpoint: Endpoint) -> None:
        await self.run(insert(E).values(**ENDPOINTS.to_row(endpoint)))

    async def list_endpoints(self, owner: str) -> list[Endpoint]:
        query = select(E).where(E.c.owner == owner).order_by(E.c.created_at, E.c.id)
        return await self.all(query, ENDPOINTS.from_row)

    async def get_endpoint(self, endpoint_id: str, owner: str | None) -> Endpoint | None:
        query = select(E).where(E.c.id == endpoint_id)
        if owner is not None:
            query = query.where(E.c.owner == owner)
        return await self.first(query, ENDPOINTS.from_row)

    async def delete_endpoint(self, endpoint_id: str, owner: str) -> bool:
        async with self.transaction() as conn:
            await conn.execute(
                delete(D).where(
                    D.c.endpoint_id == endpoint_id,
                    D.c.endpoint_id.in_(select(E.c.id).where(E.c.id == endpoint_id, E.c.owner == owner)),
                )
            )
            result = await conn.execute(delete(E).where(E.c.id == endpoint_id, E.c.owner == owner))
            return bool(result.rowcount)

    async def rotate_secret(
        self, endpoint_id: str, owner: str, secret: str, previous_until: datetime
    ) -> Endpoint | None:
        mine = and_(E.c.id == endpoint_id, E.c.owner == owner)
        async with self.transaction() as conn:
            await conn.execute(
                update(E)
                .where(mine)
                .values(previous_secret=E.c.secret, previous_secret_until=previous_until, secret=secret)
            )
            row = (await conn.execute(select(E).where(mine))).first()
        return None if row is None else ENDPOINTS.from_row(row)

    async def update_endpoint(
        self, endpoint_id: str, owner: str, changes: EndpointChanges, now: datetime
    ) -> Endpoint | None:
        values: dict[str, Any] = {}
        if changes.url is not None:
            values["url"] = changes.url
        if changes.event_types is not None:
            values["event_types"] = list(changes.event_types) or None
        if changes.enabled is True:
            values.update(disabled_at=None, disabled_reason=None, failing_since=None)
        mine = and_(E.c.id == endpoint_id, E.c.owner == owner)
        async with self.transaction() as conn:
            if values:
                await conn.execute(update(E).where(mine).values(**values))
            if changes.enabled is False:  # a second disabling keeps the first one's time and reason
                await conn.execute(
                    update(E)
                    .where(mine, E.c.disabled_at.is_(None))
                    .values(disabled_at=now, disabled_reason=DisabledReason.OWNER.value)
                )
            row = (await conn.execute(select(E).where(mine))).first()
            if row is None:
                return None
            if changes.enabled is True:
                # What waited while it was disabled (or backed off far) is tried at once: an owner
                # enables an endpoint again because its receiver is back.
                await conn.execute(
                    update(D)
                    .where(
                        D.c.endpoint_id == endpoint_id,
                        D.c.status == DeliveryStatus.PENDING.value,
                        D.c.next_attempt_at > now,
                    )
                    .values(next_attempt_at=now)
                )
        return ENDPOINTS.from_row(row)

    # ---- outbox fan-out and claims --------------------------------------------------------
    async def dispatch(self, now: datetime, limit: int) -> Dispatched:
        due = self._taken_once(
            select(events.c.seq).where(events.c.dispatched.is_(False)).order_by(events.c.seq).limit(limit), "due"
        )
        async with self.transaction() as conn:
            taken = (
                await conn.execute(
                    update(events)
                    .where(events.c.seq.in_(due), events.c.dispatched.is_(False))
                    .values(dispatched=True)
                    .returning(events.c.id, events.c.owner, events.c.type)
                )
            ).all()
            if not taken:
                return Dispatched(0, 0)
            # A disabled operator endpoint gets its deliveries too, to wait until a restart enables
            # it again (they were lost: at least once, whatever its state). An owner's disabled
            # endpoint does not: its owner disabled it, or was told (its ``disabledAt``) that it
            # failed for days, and enables it again when the receiver is back.
            kept = or_(E.c.disabled_at.is_(None), E.c.owner.is_(None))
            endpoints = [ENDPOINTS.from_row(r) for r in await conn.execute(select(E).where(kept))]
            rows = [
                {
                    "id": new_delivery_id(),
                    "endpoint_id": endpoint.id,
                    "event_id": event_id,
                    "status": DeliveryStatus.PENDING.value,
                    "attempts": 0,
                    "created_at": now,
                    "next_attempt_at": now,
                }
                for event_id, owner, event_type in taken
                for endpoint in endpoints
                if _matches(endpoint, owner, event_type)
            ]
            if rows:
                await conn.execute(insert(D), rows)
        return Dispatched(len(taken), len(rows))

    async def claim(
        self,
        now: datetime,
        lease_until: datetime,
        limit: int,
        *,
        per_endpoint: int | None = None,
        skip_endpoints: Collection[str] = (),
    ) -> list[ClaimedDelivery]:
        free = and_(
            D.c.status == DeliveryStatus.PENDING.value,
            D.c.next_attempt_at <= now,
            or_(D.c.lease_until.is_(None), D.c.lease_until < now),
        )
        if skip_endpoints:
            free = and_(free, D.c.endpoint_id.not_in(list(skip_endpoints)))
        # The owners take turns (each one's oldest due delivery, then each one's second…): oldest
        # first alone gave one owner's backlog (many events, endpoints that answer slowly or not at
        # all, so each round lasts the timeout) every batch, and every other owner's deliveries
        # waited behind all of it. Turns are counted per owner of the event, so an operator
        # endpoint's deliveries share them too. The turns rank every due delivery: a claim of 8
        # over a backlog of 20,000 due ones took 75-150 ms on SQLite (7 ms oldest first) and
        # 153 ms on PostgreSQL (49 ms) (2026-12-02); a backlog that large is a receiver down for long.
        # With ``per_endpoint`` the turns rank only each endpoint's oldest: one sort of every due
        # delivery by endpoint, and the owners' sort over the few left (88 ms against 124 ms for
        # the owners' turns alone over 20,000 due, SQLite, 2026-12-03; 206 ms with both over all).
        oldest_first = (D.c.next_attempt_at, D.c.id)
        places = (
            select(D.c.id, D.c.event_id, D.c.next_attempt_at)
            .join(E, E.c.id == D.c.endpoint_id)
            .where(free, E.c.disabled_at.is_(None))
        )
        if per_endpoint is not None:
            places = places.add_columns(
                func.row_number().over(partition_by=D.c.endpoint_id, order_by=oldest_first).label("place")
            )
        due_rows = places.subquery("places")
        heads = select(
            due_rows.c.id,
            due_rows.c.next_attempt_at,
            func.row_number()
            .over(partition_by=events.c.owner, order_by=(due_rows.c.next_attempt_at, due_rows.c.id))
            .label("turn"),
        ).join(events, events.c.id == due_rows.c.event_id)
        if per_endpoint is not None:
            heads = heads.where(due_rows.c.place <= per_endpoint)
        turns = heads.subquery("turns")
        candidates = (
            select(D.c.id)
            .join(turns, turns.c.id == D.c.id)
            .order_by(turns.c.turn, turns.c.next_attempt_at, turns.c.id)
            .limit(limit)
        )
        due = self._taken_once(candidates, "due", of=D)
        async with self.transaction() as conn:
            ids = [
                r[0]
                for r in await conn.execute(
                    update(D).where(D.c.id.in_(due), free).values(lease_until=lease_until).returning(D.c.id)
                )
            ]
            if not ids:
                return []
            rows = await conn.execute(
                select(
                    D,
                    E.c.owner,
                    E.c.url,
                    E.c.secret,
                    E.c.event_types,
                    E.c.failing_since,
                    E.c.disabled_at,
                    E.c.disabled_reason,
                    E.c.previous_secret,
                    E.c.previous_secret_until,
                    E.c.created_at.label("endpoint_created_at"),
                    events.c.payload,
                    events.c.created_at.label("event_at"),
                )
                .join(E, E.c.id == D.c.endpoint_id)
                .join(events, events.c.id == D.c.event_id)
                .where(D.c.id.in_(ids))
            )
            return [
                ClaimedDelivery(
                    DELIVERIES.from_row(row),
                    CLAIMED_ENDPOINTS.from_row(row),
                    dict(row._mapping["payload"]),
                    row._mapping["event_at"],
                )
                for row in rows
            ]

    async def release(self, delivery_ids: Collection[str]) -> None:
        if delivery_ids:
            await self.run(
                update(D)
                .where(D.c.id.in_(list(delivery_ids)), D.c.status == DeliveryStatus.PENDING.value)
                .values(lease_until=None)
            )

    async def record_success(self, delivery_id: str, now: datetime, response_status: int) -> None:
        async with self.transaction() as conn:
            endpoint_id = (
                await conn.execute(
                    update(D)
                    # A pending delivery only: an outcome recorded late (this node's lease ran out
                    # meanwhile, another node sent it again and recorded that) never overwrites a
                    # final one (a failure recorded late turned a delivered one into a retry).
                    .where(D.c.id == delivery_id, D.c.status == DeliveryStatus.PENDING.value)
                    .values(
                        status=DeliveryStatus.DELIVERED.value,
                        attempts=D.c.attempts + 1,
                        last_attempt_at=now,
                        delivered_at=now,
                        response_status=response_status,
                        last_error=None,
                        lease_until=None,
                    )
                    .returning(D.c.endpoint_id)
                )
            ).scalar()
            if endpoint_id is not None:
                await conn.execute(
                    update(E).where(E.c.id == endpoint_id, E.c.failing_since.is_not(None)).values(failing_since=None)
                )

    async def record_failure(
        self,
        delivery_id: str,
        now: datetime,
        *,
        response_status: int | None,
        error: str,
        retry_at: datetime | None,
        disable_after_seconds: float,
        gone: bool = False,
    ) -> bool:
        async with self.transaction() as conn:
            endpoint_id = (
                await conn.execute(
                    update(D)
                    .where(D.c.id == delivery_id, D.c.status == DeliveryStatus.PENDING.value)  # as above
                    .values(
                        status=(DeliveryStatus.PENDING if retry_at is not None else DeliveryStatus.FAILED).value,
                        attempts=D.c.attempts + 1,
                        last_attempt_at=now,
                        next_attempt_at=retry_at if retry_at is not None else D.c.next_attempt_at,
                        response_status=response_status,
                        last_error=error[:500],
                        lease_until=None,
                    )
                    .returning(D.c.endpoint_id)
                )
            ).scalar()
            if endpoint_id is None:
                return False
            await conn.execute(
                update(E).where(E.c.id == endpoint_id, E.c.failing_since.is_(None)).values(failing_since=now)
            )
            if gone:  # the receiver said it wants no more: at once, whatever the streak
                reason, long_enough = DisabledReason.GONE, E.c.id == endpoint_id
            else:
                reason = DisabledReason.FAILING
                long_enough = E.c.failing_since <= now - timedelta(seconds=disable_after_seconds)
            disabled = await conn.execute(
                update(E)
                .where(E.c.id == endpoint_id, E.c.disabled_at.is_(None), long_enough)
                .values(disabled_at=now, disabled_reason=reason.value)
            )
            return bool(disabled.rowcount)

    async def recover(self, endpoint_id: str, since: datetime, now: datetime, limit: int) -> int:
        async with self.transaction() as conn:
            settled = select(D.c.event_id).where(
                D.c.endpoint_id == endpoint_id,
                D.c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.DELIVERED.value]),
            )
            failed = (
                select(D.c.event_id, func.min(D.c.created_at).label("first_made"))
                .where(
                    D.c.endpoint_id == endpoint_id,
                    D.c.status == DeliveryStatus.FAILED.value,
                    D.c.created_at >= since,
                    D.c.event_id.not_in(settled),
                )
                .group_by(D.c.event_id)
                .order_by("first_made", D.c.event_id)
                .limit(limit)
            )
            event_ids = [r[0] for r in await conn.execute(failed)]
            if event_ids:
                await conn.execute(
                    insert(D),
                    [
                        {
                            "id": new_delivery_id(),
                            "endpoint_id": endpoint_id,
                            "event_id": event_id,
                            "status": DeliveryStatus.PENDING.value,
                            "attempts": 0,
                            "created_at": now,
                            "next_attempt_at": now,
                        }
                        for event_id in event_ids
                    ],
                )
        return len(event_ids)

    async def prune(self, before: datetime, limit: int) -> int:
        pending = select(D.c.id).where(D.c.event_id == events.c.id, D.c.status == DeliveryStatus.PENDING.value)
        old = (
            select(events.c.id)
            .where(events.c.created_at < before, events.c.dispatched.is_(True), ~pending.exists())
            .order_by(events.c.created_at)
            .limit(limit)
        )
        async with self.transaction() as conn:
            gone = [r[0] for r in await conn.execute(old)]
            if gone:
                await conn.execute(delete(D).where(D.c.event_id.in_(gone)))
                await conn.execute(delete(events).where(events.c.id.in_(gone)))
        return len(gone)

    async def list_deliveries(self, endpoint_id: str, limit: int) -> list[Delivery]:
        query = (
            select(D).where(D.c.endpoint_id == endpoint_id).order_by(D.c.created_at.desc(), D.c.id.desc()).limit(limit)
        )
        return await self.all(query, DELIVERIES.from_row)

    async def redeliver(self, endpoint_id: str, delivery_id: str, now: datetime, new_id: str) -> Delivery | None:
        async with self.transaction() as conn:
            event_id = (
                await conn.execute(select(D.c.event_id).where(D.c.id == delivery_id, D.c.endpoint_id == endpoint_id))
            ).scalar()
            if event_id is None:
                return None
            await conn.execute(
                insert(D).values(
                    id=new_id,
                    endpoint_id=endpoint_id,
                    event_id=event_id,
                    status=DeliveryStatus.PENDING.value,
                    attempts=0,
                    created_at=now,
                    next_attempt_at=now,
                )
            )
            row = (await conn.execute(select(D).where(D.c.id == new_id))).one()
        return DELIVERIES.from_row(row)
