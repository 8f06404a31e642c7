"""The delivery worker's endpoint lanes over a real SQLite store: each endpoint's deliveries are
sent up to ``concurrency`` at a time without waiting for any other endpoint's sends (a round waited
for its slowest send, so one endpoint hanging held every other one's deliveries up to the timeout),
claims stay batched (a claim per ended send cost most of the throughput), and deliveries claimed
but not started when the worker stops are released for the next node or start."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from chunkd.backends.repository.sqlalchemy.tables import webhook_deliveries as D
from chunkd.domain.events import Event, EventType
from chunkd.ports.metadata import MetadataStore
from chunkd.ports.webhooks import ClaimedDelivery, DeliveryStatus, DisabledReason, Endpoint, WebhookRepository
from chunkd.service.delivery import DeliveryPolicy, DeliveryWorker
from tests.support.uploads import make_upload
from tests.support.waiting import until

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(seconds=1)


async def add_endpoint(metadata: MetadataStore, endpoint_id: str, owner: str) -> None:
    url = f"https://{endpoint_id}.example/"
    await metadata.webhooks.add_endpoint(Endpoint(endpoint_id, owner, url, "whsec_c2VjcmV0", None, T0, None, None))


async def event_of(metadata: MetadataStore, owner: str) -> None:
    upload = make_upload(10, 10, owner=owner)
    await metadata.uploads.create(upload, [Event.for_upload(EventType.UPLOAD_CREATED, upload, T0)])


def worker(repo: WebhookRepository, transport: httpx.MockTransport, **policy: Any) -> DeliveryWorker:
    return DeliveryWorker(
        repo,
        DeliveryPolicy(block_private=False, **policy),
        operator_secret=None,
        clock=lambda: NOW,
        transport=transport,
    )


async def statuses(metadata: MetadataStore, endpoint_id: str) -> list[tuple[str, int]]:
    return [(d.status, d.attempts) for d in await metadata.webhooks.list_deliveries(endpoint_id, 100)]


async def test_a_hanging_endpoint_does_not_hold_back_another_ones_deliveries(metadata: MetadataStore) -> None:
    """Bob's receiver answers only once alice's has received her event, which is written while
    bob's delivery is in flight. A round waited for its slowest send: alice's event waited for
    bob's attempt to end, which it did only at the timeout (a failed attempt)."""
    bob_waiting, alice_received = asyncio.Event(), asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "we_bob.example":
            bob_waiting.set()
            await alice_received.wait()
        else:
            alice_received.set()
        return httpx.Response(204)

    await add_endpoint(metadata, "we_bob", "bob")
    await add_endpoint(metadata, "we_alice", "alice")
    delivery = worker(metadata.webhooks, httpx.MockTransport(answer), timeout=10, poll=3600)
    await event_of(metadata, "bob")
    running = asyncio.create_task(delivery.run_forever())
    try:
        await until(bob_waiting.is_set, 30, "bob's delivery in flight")
        await event_of(metadata, "alice")
        delivery.wake()  # as the app does after writing an event
        await until(alice_received.is_set, 30, "alice's delivery")
        delivered = [(DeliveryStatus.DELIVERED, 1)]

        async def both_recorded() -> bool:
            return await statuses(metadata, "we_bob") == await statuses(metadata, "we_alice") == delivered

        await until(both_recorded, 30, "both deliveries recorded")  # bob's answered, not timed out
    finally:
        delivery.stop()
        await running
        await delivery.close()


class CountingClaims:
    """The real repository, with its claims counted."""

    def __init__(self, repo: WebhookRepository) -> None:
        self.repo = repo
        self.claims = 0

    async def claim(self, now: datetime, lease_until: datetime, limit: int, **limits: Any) -> list[ClaimedDelivery]:
        self.claims += 1
        return await self.repo.claim(now, lease_until, limit, **limits)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.repo, name)


async def test_an_endpoints_sends_are_bounded_and_its_claims_batched(metadata: MetadataStore) -> None:
    """40 deliveries to one endpoint, ``concurrency`` 4: never more than 4 in flight, and each claim
    takes a batch as the lane runs low (about 40 / 4 claims, not one per send)."""
    in_flight, most = 0, 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        for _ in range(5):  # let the other sends in flight come in meanwhile
            await asyncio.sleep(0)
        in_flight -= 1
        return httpx.Response(204)

    await add_endpoint(metadata, "we_alice", "alice")
    for _ in range(40):
        await event_of(metadata, "alice")
    repo = CountingClaims(metadata.webhooks)
    delivery = worker(repo, httpx.MockTransport(answer), concurrency=4, poll=3600)  # type: ignore[arg-type]
    running = asyncio.create_task(delivery.run_forever())
    try:

        async def all_delivered() -> bool:
            return Counter(await statuses(metadata, "we_alice")) == {(DeliveryStatus.DELIVERED, 1): 40}

        await until(all_delivered, 60, "every delivery")
    finally:
        delivery.stop()
        await running
        await delivery.close()
    assert most == 4
    assert repo.claims <= 40 // 4 + 2, repo.claims


async def test_deliveries_claimed_and_not_started_are_released_at_stop(metadata: MetadataStore) -> None:
    """``concurrency`` 1: the endpoint's second delivery waits in its lane behind the first, which is
    in flight when the worker stops. The first ends (stop waits for it); the second, never sent, is
    free for anyone to claim at once, not only when its lease runs out."""
    first_in_flight, let_go = asyncio.Event(), asyncio.Event()
    sent: list[httpx.Request] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        first_in_flight.set()
        await let_go.wait()
        return httpx.Response(204)

    await add_endpoint(metadata, "we_alice", "alice")
    await event_of(metadata, "alice")
    await event_of(metadata, "alice")
    delivery = worker(metadata.webhooks, httpx.MockTransport(answer), concurrency=1, poll=3600)
    running = asyncio.create_task(delivery.run_forever())
    await until(first_in_flight.is_set, 30, "the first delivery in flight")
    delivery.stop()
    let_go.set()
    await running
    await delivery.close()
    assert len(sent) == 1
    assert sorted(await statuses(metadata, "we_alice")) == [(DeliveryStatus.DELIVERED, 1), (DeliveryStatus.PENDING, 0)]
    [released] = await metadata.webhooks.claim(NOW, NOW + timedelta(seconds=30), 10)
    assert released.delivery.attempts == 0


async def test_a_receiver_that_answers_410_gets_none_of_the_deliveries_waiting_for_it(
    metadata: MetadataStore,
) -> None:
    """``concurrency`` 2, four deliveries: the first is answered at once, so the lane claims two
    more while the second is in flight, and the fourth waits behind the third. The second and third
    are answered 410 Gone, which disables the endpoint: the fourth is released, not sent (it was
    sent, and answered 410 again). It waits, pending, for the endpoint to be enabled."""
    sent: list[httpx.Request] = []
    third_arrived = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if len(sent) == 1:
            return httpx.Response(204)
        if len(sent) == 3:  # the fourth is in the lane now
            third_arrived.set()
        await third_arrived.wait()
        return httpx.Response(410)

    await add_endpoint(metadata, "we_alice", "alice")
    for _ in range(4):
        await event_of(metadata, "alice")
    delivery = worker(metadata.webhooks, httpx.MockTransport(answer), concurrency=2, poll=3600)
    running = asyncio.create_task(delivery.run_forever())
    engine = metadata.webhooks.engine  # type: ignore[attr-defined]

    async def settled() -> bool:
        endpoint = await metadata.webhooks.get_endpoint("we_alice", None)
        async with engine.connect() as conn:
            leased = (await conn.execute(select(func.count()).where(D.c.lease_until.is_not(None)))).scalar_one()
        return endpoint is not None and endpoint.disabled_reason == DisabledReason.GONE and leased == 0

    try:
        await until(settled, 30, "the endpoint disabled and no delivery leased")
    finally:
        delivery.stop()
        await running
        await delivery.close()
    assert len(sent) == 3
    assert sorted(await statuses(metadata, "we_alice")) == [
        (DeliveryStatus.DELIVERED, 1),
        (DeliveryStatus.PENDING, 0),
        (DeliveryStatus.PENDING, 1),
        (DeliveryStatus.PENDING, 1),
    ]
