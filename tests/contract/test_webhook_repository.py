"""The webhook repository port's contract, run against every backend in
``conftest.REPOSITORY_BACKENDS``: endpoints, the outbox's fan-out into deliveries, leases, and the
delivery log."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from chunkd.domain.events import Event, EventType
from chunkd.ports.metadata import MetadataStore
from chunkd.ports.webhooks import ClaimedDelivery, DeliveryStatus, DisabledReason, Endpoint, EndpointChanges
from tests.support.uploads import make_upload

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
S = timedelta(seconds=1)


def endpoint(endpoint_id: str, owner: str | None = "alice", types: tuple[str, ...] | None = None) -> Endpoint:
    return Endpoint(endpoint_id, owner, f"https://{endpoint_id}.test/", "secret", types, T0, None, None)


async def created_upload(metadata: MetadataStore, owner: str = "alice") -> str:
    upload = make_upload(10, 10, owner=owner)
    await metadata.uploads.create(upload, [Event.for_upload(EventType.UPLOAD_CREATED, upload, T0)])
    return upload.id


async def two_claimed(metadata: MetadataStore) -> list[ClaimedDelivery]:
    """Two of alice's uploads made, their events dispatched to one endpoint (``we_all``) and claimed at T0."""
    await metadata.webhooks.add_endpoint(endpoint("we_all"))
    await created_upload(metadata)
    await created_upload(metadata)
    await metadata.webhooks.dispatch(T0, 10)
    return await metadata.webhooks.claim(T0, T0 + S, 10)


async def test_endpoints_are_scoped_by_owner(metadata: MetadataStore) -> None:
    hooks = metadata.webhooks
    mine, theirs = endpoint("we_a", types=("upload.completed",)), endpoint("we_b", "bob")
    await hooks.add_endpoint(mine)
    await hooks.add_endpoint(theirs)
    assert await hooks.list_endpoints("alice") == [mine]
    assert await hooks.get_endpoint("we_a", "alice") == mine
    assert await hooks.get_endpoint("we_a", "bob") is None
    assert await hooks.get_endpoint("we_a", None) == mine
    assert await hooks.delete_endpoint("we_a", "bob") is False
    assert await hooks.delete_endpoint("we_a", "alice") is True
    assert await hooks.get_endpoint("we_a", None) is None


async def test_operator_endpoints_follow_the_settings(metadata: MetadataStore) -> None:
    hooks = metadata.webhooks
    await hooks.sync_operator_endpoints(["https://a.test/", "https://b.test/"], T0)
    await hooks.sync_operator_endpoints(["https://b.test/"], T0)  # a restart with one URL fewer
    upload_id = await created_upload(metadata, "carol")
    assert (await hooks.dispatch(T0, 10)).events == 1
    claimed = await hooks.claim(T0, T0 + S, 10)
    assert [(c.endpoint.url, c.endpoint.owner, c.delivery.event_id) for c in claimed] == [
        ("https://b.test/", None, claimed[0].delivery.event_id)
    ]
    assert claimed[0].payload["data"]["id"] == upload_id


async def test_events_for_a_disabled_operator_endpoint_wait_for_it(metadata: MetadataStore) -> None:
    """At least once, also while an operator endpoint is disabled: the event's delivery is made,
    not claimed while the endpoint is disabled, and sent once a restart enables it again (it was
    never made: the event was lost). An owner's disabled endpoint gets none (its owner enables it
    again with PATCH)."""
    hooks = metadata.webhooks
    await hooks.sync_operator_endpoints(["https://ops.test/"], T0)
    await hooks.add_endpoint(endpoint("we_owner"))
    await created_upload(metadata)
    await hooks.dispatch(T0, 10)
    for claimed in await hooks.claim(T0, T0 + S, 10):  # both fail, and again a minute on: disabled
        await hooks.record_failure(
            claimed.delivery.id, T0, response_status=500, error="boom", retry_at=T0 + S, disable_after_seconds=60
        )
    for claimed in await hooks.claim(T0 + S, T0 + 2 * S, 10):
        disabled = await hooks.record_failure(
            claimed.delivery.id,
            T0 + 61 * S,
            response_status=500,
            error="boom",
            retry_at=T0 + 62 * S,
            disable_after_seconds=60,
        )
        assert disabled
    await created_upload(metadata)
    assert await hooks.dispatch(T0 + 70 * S, 10) == (1, 1)  # for the operator endpoint only
    assert await hooks.claim(T0 + 80 * S, T0 + 81 * S, 10) == []  # disabled: they wait
    await hooks.sync_operator_endpoints(["https://ops.test/"], T0 + 90 * S)  # a restart enables it
    claimed = await hooks.claim(T0 + 90 * S, T0 + 91 * S, 10)
    assert {c.endpoint.url for c in claimed} == {"https://ops.test/"} and len(claimed) == 2
    assert len(await hooks.list_deliveries("we_owner", 10)) == 1  # the first event's only


async def test_dispatch_fans_out_to_matching_endpoints_once(metadata: MetadataStore) -> None:
    hooks = metadata.webhooks
    await hooks.add_endpoint(endpoint("we_all"))
    await hooks.add_endpoint(endpoint("we_done", types=("upload.completed",)))
    await hooks.add_endpoint(endpoint("we_bob", "bob"))
    await created_upload(metadata)
    await created_upload(metadata)
    # at most ``limit`` events; each a delivery for we_all only (created events, alice's)
    assert await hooks.dispatch(T0, 1) == (1, 1)
    assert await hooks.dispatch(T0, 10) == (1, 1)
    assert await hooks.dispatch(T0, 10) == (0, 0)  # each event once
    deliveries = await hooks.list_deliveries("we_all", 10)
    assert len(deliveries) == 2 and {d.status for d in deliveries} == {DeliveryStatus.PENDING}
    assert await hooks.list_deliveries("we_done", 10) == [] and await hooks.list_deliveries("we_bob", 10) == []


async def test_claims_lease_and_concurrent_claimers_split_the_work(metadata: MetadataStore) -> None:
    hooks = metadata.webhooks
    await hooks.add_endpoint(endpoint("we_all"))
    for _ in range(4):
        await created_upload(metadata)
    await hooks.dispatch(T0, 10)
    batches = await asyncio.gather(*(hooks.claim(T0, T0 + 30 * S, 2) for _ in range(3)))
    ids = [c.delivery.id for batch in batches for c in batch]
    assert len(ids) == 4 and len(set(ids)) == 4  # nobody gets a delivery another holds
    assert await hooks.claim(T0 + S, T0 + 30 * S, 10) == []  # leased
    assert len(await hooks.claim(T0 + 31 * S, T0 + 60 * S, 10)) == 4  # the leases ran out


async def test_success_failure_disable_and_redeliver(metadata: MetadataStore) -> None:
    hooks = metadata.webhooks
    first, second = await two_claimed(metadata)
    await hooks.record_success(first.delivery.id, T0, 204)
    disabled = await hooks.record_failure(
        second.delivery.id, T0, response_status=500, error="boom", retry_at=T0 + 10 * S, disable_after_seconds=60
    )
    assert disabled is False
    assert await hooks.claim(T0 + 5 * S, T0 + 6 * S, 10) == []  # not due yet
    retried = await hooks.claim(T0 + 10 * S, T0 + 11 * S, 10)
    assert [c.delivery.id for c in retried] == [second.delivery.id] and retried[0].delivery.attempts == 1
    disabled = await hooks.record_failure(
        second.delivery.id, T0 + 61 * S, response_status=None, error="x" * 900, retry_at=None, disable_after_seconds=60
    )
    assert disabled is True
    log = {d.id: d for d in await hooks.list_deliveries("we_all", 10)}
    assert (log[first.delivery.id].status, log[first.delivery.id].response_status) == (DeliveryStatus.DELIVERED, 204)
    failed = log[second.delivery.id]
    assert (failed.status, failed.attempts, len(failed.last_error or "")) == (DeliveryStatus.FAILED, 2, 500)
    found = await hooks.get_endpoint("we_all", None)
    assert found is not None and found.disabled_at == T0 + 61 * S and found.failing_since == T0
    assert found.disabled_reason == DisabledReason.FAILING
    again = await hooks.redeliver("we_all", first.delivery.id, T0 + 70 * S, "dlv_again")
    assert again is not None and (again.id, again.event_id, again.status) == (
        "dlv_again",
        first.delivery.event_id,
        DeliveryStatus.PENDING,
    )
    assert await hooks.redeliver("we_other", first.delivery.id, T0, "dlv_no") is None


async def test_a_gone_receiver_disables_its_endpoint_at_once(metadata: MetadataStore) -> None:
    """A 410 disables the endpoint on its first failure (no streak needed), with its reason; its
    pending deliveries are not claimed while it is disabled; enabling it clears the reason, and a
    disabling by the owner says so."""
    hooks = metadata.webhooks
    first, second = await two_claimed(metadata)
    disabled = await hooks.record_failure(
        first.delivery.id,
        T0,
        response_status=410,
        error="HTTP 410",
        retry_at=T0 + S,
        disable_after_seconds=86400,
        gone=True,
    )
    assert disabled is True
    found = await hooks.get_endpoint("we_all", "alice")
    assert found is not None and (found.disabled_at, found.disabled_reason) == (T0, DisabledReason.GONE)
    assert (
        await hooks.record_failure(
            second.delivery.id,
            T0,
            response_status=410,
            error="HTTP 410",
            retry_at=T0 + S,
            disable_after_seconds=1,
            gone=True,
        )
        is False
    )  # already disabled: the first reason stays
    assert await hooks.claim(T0 + 10 * S, T0 + 11 * S, 10) == []  # both wait
    enabled = await hooks.update_endpoint("we_all", "alice", EndpointChanges(enabled=True), T0 + 20 * S)
    assert enabled is not None and (enabled.disabled_at, enabled.disabled_reason) == (None, None)
    assert len(await hooks.claim(T0 + 20 * S, T0 + 21 * S, 10)) == 2
    off = await hooks.update_endpoint("we_all", "alice", EndpointChanges(enabled=False), T0 + 30 * S)
    assert off is not None and (off.disabled_at, off.disabled_reason) == (T0 + 30 * S, DisabledReason.OWNER)
    assert [e.disabled_reason for e in await hooks.list_endpoints("alice")] == [DisabledReason.OWNER]


async def test_an_outcome_recorded_late_never_overwrites_a_final_one(metadata: MetadataStore) -> None:
    """A node whose lease ran out while it sent (or recorded) a delivery: another node claimed it,
    sent it and recorded the outcome. The first node's outcome, recorded late, changes nothing."""
    hooks = metadata.webhooks
    first, second = await two_claimed(metadata)
    assert [c.delivery.id for c in await hooks.claim(T0 + 2 * S, T0 + 3 * S, 10)] == [
        first.delivery.id,
        second.delivery.id,
    ]  # the leases ran out: claimed again, as another node would
    await hooks.record_success(first.delivery.id, T0 + 2 * S, 200)
    await hooks.record_failure(
        second.delivery.id, T0 + 2 * S, response_status=None, error="gone", retry_at=None, disable_after_seconds=60
    )
    # The first claimer's outcomes, late: a failure of the delivered one, a success of the failed one.
    await hooks.record_failure(
        first.delivery.id, T0 + 4 * S, response_status=500, error="late", retry_at=T0 + 9 * S, disable_after_seconds=60
    )
    await hooks.record_success(second.delivery.id, T0 + 4 * S, 204)
    log = {d.id: d for d in await hooks.list_deliveries("we_all", 10)}
    assert (log[first.delivery.id].status, log[first.delivery.id].attempts) == (DeliveryStatus.DELIVERED, 1)
    assert (log[second.delivery.id].status, log[second.delivery.id].last_error) == (DeliveryStatus.FAILED, "gone")
    assert await hooks.claim(T0 + 10 * S, T0 + 11 * S, 10) == []  # nothing sent a third time


async def test_a_batch_never_takes_more_than_its_limit_whatever_the_plan(metadata: MetadataStore) -> None:
    """PostgreSQL may rescan an ``IN (subquery)`` for each row it updates; a rescan with ``SKIP
    LOCKED`` skips the rows the statement has just updated, so a plain subquery could take more
    than its ``LIMIT`` (a full run once saw ``dispatch(limit=1)`` take two events). Here the planner
    is steered to a rescanning nested loop; a batch still takes at most its limit."""
    hooks = metadata.webhooks
    engine = getattr(hooks, "engine", None)
    if engine is not None and engine.dialect.name == "postgresql":
        async with engine.begin() as conn:
            name = (await conn.execute(text("SELECT current_database()"))).scalar_one()
            for setting in ("enable_hashjoin", "enable_mergejoin", "enable_material", "enable_hashagg"):
                await conn.execute(text(f'ALTER DATABASE "{name}" SET {setting} = off'))
        await engine.dispose()  # new connections take the settings
    await hooks.add_endpoint(endpoint("we_all"))
    for _ in range(3):
        await created_upload(metadata)
    assert await hooks.dispatch(T0, 1) == (1, 1)
    assert await hooks.dispatch(T0, 10) == (2, 2)
    assert len(await hooks.claim(T0, T0 + S, 1)) == 1
    assert len(await hooks.claim(T0, T0 + S, 10)) == 2


async def test_a_dispatch_whose_deliveries_cannot_be_written_leaves_its_events_for_later(
    metadata: MetadataStore,
) -> None:
    """The events a dispatch marks and the deliveries it writes for them are one transaction: if
    the deliveries cannot be written (here a trigger refuses them; in life, a crash between the
    two), the events stay undispatched and the next dispatch takes them. On SQLite the marking
    statement once began with ``WITH``, which Python's sqlite3 runs outside the transaction: it
    committed alone, and a kill -9 at the wrong moment lost every event it had marked."""
    hooks = metadata.webhooks
    engine = hooks.engine  # type: ignore[attr-defined]
    postgres = engine.dialect.name == "postgresql"
    refuse = (
        [
            "CREATE FUNCTION refuse_deliveries() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$ "
            "LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_deliveries BEFORE INSERT ON webhook_deliveries "
            "FOR EACH ROW EXECUTE FUNCTION refuse_deliveries()",
        ]
        if postgres
        else [
            "CREATE TRIGGER refuse_deliveries BEFORE INSERT ON webhook_deliveries "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ]
    )
    allow = (
        ["DROP TRIGGER refuse_deliveries ON webhook_deliveries", "DROP FUNCTION refuse_deliveries()"]
        if postgres
        else ["DROP TRIGGER refuse_deliveries"]
    )
    await hooks.add_endpoint(endpoint("we_all"))
    await created_upload(metadata)
    async with engine.begin() as conn:
        for statement in refuse:
            await conn.execute(text(statement))
    try:
        with pytest.raises(Exception, match="refused"):
            await hooks.dispatch(T0, 10)
    finally:
        async with engine.begin() as conn:
            for statement in allow:
                await conn.execute(text(statement))
    assert await hooks.dispatch(T0, 10) == (1, 1)
    assert len(await hooks.list_deliveries("we_all", 10)) == 1


async def test_one_owners_backlog_does_not_hold_back_another_owners_deliveries(metadata: MetadataStore) -> None:
    """A batch takes the owners' due deliveries in turns (each owner's first, then each one's
    second…), not all of the oldest first: one owner's backlog (an endpoint that answers slowly
    or not at all, its many events) took every batch, and another owner's delivery waited behind
    all of it (a round lasts up to the webhook timeout; 10 of bob's events to 5 slow endpoints
    held alice's back 36 s)."""
    hooks = metadata.webhooks
    for number in range(5):
        await hooks.add_endpoint(endpoint(f"we_bob{number}", "bob"))
    await hooks.add_endpoint(endpoint("we_alice"))
    for _ in range(4):
        await created_upload(metadata, "bob")
    await hooks.dispatch(T0, 10)  # bob's 20 deliveries, due first
    await created_upload(metadata, "alice")
    await hooks.dispatch(T0 + S, 10)
    claimed = await hooks.claim(T0 + 2 * S, T0 + 30 * S, 8)
    assert len(claimed) == 8
    assert [c.endpoint.id for c in claimed].count("we_alice") == 1
    # The rest are bob's, oldest first; what is left is claimed later.
    assert len(await hooks.claim(T0 + 3 * S, T0 + 30 * S, 100)) == 13


async def test_old_events_with_final_deliveries_are_forgotten_with_them(metadata: MetadataStore) -> None:
    """The outbox and the delivery logs are kept for the retention, not for ever: an event older than
    it goes with its deliveries once they are all final. One with a delivery still pending, one not
    dispatched yet, and a newer one stay."""
    hooks = metadata.webhooks
    await hooks.add_endpoint(endpoint("we_all"))
    day = timedelta(days=1)

    async def event_at(when: datetime) -> str:
        upload = make_upload(10, 10)
        await metadata.uploads.create(upload, [Event.for_upload(EventType.UPLOAD_CREATED, upload, when)])
        return upload.id

    uploads = [await event_at(when) for when in (T0, T0, T0, T0 + 40 * day)]
    await hooks.dispatch(T0 + 40 * day, 10)
    claimed = {c.payload["data"]["id"]: c for c in await hooks.claim(T0 + 40 * day, T0 + 40 * day + S, 10)}
    # Delivered, failed for good, still retrying; and a new one, delivered.
    delivered, failed, retrying, new = (claimed[upload_id] for upload_id in uploads)
    for done in (delivered, new):
        await hooks.record_success(done.delivery.id, T0 + 40 * day, 204)
    await hooks.record_failure(
        failed.delivery.id, T0 + 40 * day, response_status=500, error="no", retry_at=None, disable_after_seconds=1e9
    )
    await hooks.record_failure(
        retrying.delivery.id, T0, response_status=500, error="no", retry_at=T0 + 50 * day, disable_after_seconds=1e9
    )
    await event_at(T0)  # old, and not dispatched yet
    assert await hooks.prune(T0 + 30 * day, 1) == 1  # a batch at a time
    assert await hooks.prune(T0 + 30 * day, 10) == 1
    assert await hooks.prune(T0 + 30 * day, 10) == 0
    log = {d.id for d in await hooks.list_deliveries("we_all", 10)}
    assert log == {retrying.delivery.id, new.delivery.id}
    assert (await hooks.dispatch(T0 + 40 * day, 10)).events == 1  # the undispatched one is still there
    again = await hooks.redeliver("we_all", new.delivery.id, T0 + 41 * day, "dlv_again")
    assert again is not None and again.event_id == new.delivery.event_id


async def test_a_claim_takes_each_endpoints_oldest_few_and_skips_those_named(metadata: MetadataStore) -> None:
    """What the delivery worker's endpoint lanes claim: at most ``per_endpoint`` of each endpoint's
    due deliveries (its oldest), none of ``skip_endpoints`` (lanes already full); and a delivery
    released (claimed, never sent: its worker stopped) is free for the next claim at once."""
    hooks = metadata.webhooks
    for endpoint_id, owner in (("we_a", "alice"), ("we_b", "alice"), ("we_c", "bob")):
        await hooks.add_endpoint(endpoint(endpoint_id, owner))
    for step in range(3):  # one event at a time: each endpoint's deliveries are due one after another
        await created_upload(metadata)
        if step < 2:
            await created_upload(metadata, "bob")
        await hooks.dispatch(T0 + step * S, 10)
    now, lease = T0 + 10 * S, T0 + 40 * S
    claimed = await hooks.claim(now, lease, 10, per_endpoint=2, skip_endpoints=["we_b"])
    assert sorted(c.endpoint.id for c in claimed) == ["we_a", "we_a", "we_c", "we_c"]
    oldest_two = sorted(d.id for d in (await hooks.list_deliveries("we_a", 10))[1:])  # newest first
    assert sorted(c.delivery.id for c in claimed if c.endpoint.id == "we_a") == oldest_two
    await hooks.release([c.delivery.id for c in claimed if c.endpoint.id == "we_a"])
    again = await hooks.claim(now, lease, 10, per_endpoint=3)
    assert sorted(c.endpoint.id for c in again) == ["we_a"] * 3 + ["we_b"] * 3  # we_c's two are still leased


async def test_a_rotation_keeps_the_replaced_secret_beside_the_new_one(metadata: MetadataStore) -> None:
    """The owner's endpoint takes the new secret, the one it replaces kept with the end of its grace,
    and both reach the worker with a claimed delivery; another owner's rotation finds nothing."""
    hooks = metadata.webhooks
    await hooks.add_endpoint(endpoint("we_all"))
    assert await hooks.rotate_secret("we_all", "bob", "whsec_bobs", T0 + S) is None
    rotated = await hooks.rotate_secret("we_all", "alice", "whsec_new", T0 + 60 * S)
    assert rotated is not None
    assert (rotated.secret, rotated.previous_secret, rotated.previous_secret_until) == (
        "whsec_new",
        "secret",
        T0 + 60 * S,
    )
    await created_upload(metadata)
    await hooks.dispatch(T0, 10)
    [claimed] = await hooks.claim(T0, T0 + S, 10)
    assert claimed.endpoint == rotated


async def test_recovery_sends_again_each_event_that_failed_for_good_once(metadata: MetadataStore) -> None:
    """Events whose delivery failed for good since the time asked get one new pending delivery each
    (a batch at a time, oldest first); an event delivered, or pending again, meanwhile does not, nor
    one whose delivery was made before that time, nor any other endpoint's."""
    hooks = metadata.webhooks
    await hooks.add_endpoint(endpoint("we_all"))
    await hooks.add_endpoint(endpoint("we_other"))
    for step in range(5):
        await created_upload(metadata)
        await hooks.dispatch(T0 + step * S, 10)
    mine = sorted(
        (c for c in await hooks.claim(T0 + 10 * S, T0 + 11 * S, 20) if c.endpoint.id == "we_all"),
        key=lambda c: c.delivery.created_at,
    )
    for claimed in mine:  # all five fail for good
        await hooks.record_failure(
            claimed.delivery.id,
            T0 + 10 * S,
            response_status=500,
            error="down",
            retry_at=None,
            disable_after_seconds=1e9,
        )
    too_old, delivered_since, pending_again, *recoverable = mine
    again = await hooks.redeliver("we_all", delivered_since.delivery.id, T0 + 20 * S, "dlv_done")
    assert again is not None
    [done] = await hooks.claim(T0 + 20 * S, T0 + 21 * S, 10, skip_endpoints=["we_other"])
    await hooks.record_success(done.delivery.id, T0 + 20 * S, 204)
    assert await hooks.redeliver("we_all", pending_again.delivery.id, T0 + 20 * S, "dlv_pending") is not None

    since = T0 + S  # after the first event's delivery was made
    assert await hooks.recover("we_all", since, T0 + 30 * S, 1) == 1  # a batch at a time
    assert await hooks.recover("we_all", since, T0 + 30 * S, 10) == 1
    assert await hooks.recover("we_all", since, T0 + 30 * S, 10) == 0  # each once
    made = [d for d in await hooks.list_deliveries("we_all", 20) if d.created_at == T0 + 30 * S]
    assert sorted(d.event_id for d in made) == sorted(c.delivery.event_id for c in recoverable)
    assert {(d.status, d.attempts, d.next_attempt_at) for d in made} == {(DeliveryStatus.PENDING, 0, T0 + 30 * S)}
    assert too_old.delivery.event_id not in {d.event_id for d in made}
    assert all(d.created_at != T0 + 30 * S for d in await hooks.list_deliveries("we_other", 20))
