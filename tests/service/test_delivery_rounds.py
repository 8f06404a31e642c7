"""The delivery worker's rounds over a real SQLite store: a round woken by this process's own events
looks for due deliveries only when its dispatch made some (with no endpoint registered, a completed
upload costs one dispatch and nothing more); a polling round always looks, so deliveries made by
another node, and retries, are still sent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from chunkd.domain.errors import StorageError
from chunkd.domain.events import Event, EventType
from chunkd.ports.metadata import MetadataStore
from chunkd.ports.webhooks import ClaimedDelivery, Dispatched, Endpoint, WebhookRepository
from chunkd.service.delivery import DeliveryPolicy, DeliveryWorker
from tests.support.uploads import make_upload

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class CountingClaims:
    """The real repository, with its claims counted."""

    def __init__(self, repo: WebhookRepository) -> None:
        self.repo = repo
        self.claims = 0

    async def dispatch(self, now: datetime, limit: int) -> Dispatched:
        return await self.repo.dispatch(now, limit)

    async def claim(self, now: datetime, lease_until: datetime, limit: int, **limits: Any) -> list[ClaimedDelivery]:
        self.claims += 1
        return await self.repo.claim(now, lease_until, limit, **limits)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.repo, name)


async def add_endpoint(metadata: MetadataStore) -> None:
    """Alice's endpoint for every event type."""
    await metadata.webhooks.add_endpoint(
        Endpoint("we_1", "alice", "https://hooks.example/", "whsec_c2VjcmV0", None, T0, None, None)
    )


async def completed_upload(metadata: MetadataStore) -> None:
    upload = make_upload(10, 10, owner="alice")
    await metadata.uploads.create(upload, [Event.for_upload(EventType.UPLOAD_COMPLETED, upload, T0)])


def worker(repo: CountingClaims, received: list[httpx.Request], *, poll: float = 2.0) -> DeliveryWorker:
    def answer(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(204)

    policy = DeliveryPolicy(block_private=False, poll=poll)
    return DeliveryWorker(
        repo,  # type: ignore[arg-type]  # the real repository behind a counter
        policy,
        operator_secret=None,
        clock=lambda: T0 + timedelta(seconds=1),
        transport=httpx.MockTransport(answer),
    )


async def test_a_woken_round_without_deliveries_claims_nothing(metadata: MetadataStore) -> None:
    repo, received = CountingClaims(metadata.webhooks), list[httpx.Request]()
    delivery = worker(repo, received)
    await completed_upload(metadata)
    assert await delivery.run_once(claim_anyway=False) == 0
    assert repo.claims == 0
    assert await metadata.webhooks.dispatch(T0, 10) == (0, 0)  # the event was dispatched all the same
    await delivery.close()


async def test_a_woken_round_sends_what_its_dispatch_made(metadata: MetadataStore) -> None:
    repo, received = CountingClaims(metadata.webhooks), list[httpx.Request]()
    delivery = worker(repo, received)
    await add_endpoint(metadata)
    await completed_upload(metadata)
    assert await delivery.run_once(claim_anyway=False) == 1
    assert [str(r.url) for r in received] == ["https://hooks.example/"]
    await delivery.close()


async def test_a_polling_round_sends_deliveries_made_elsewhere(metadata: MetadataStore) -> None:
    repo, received = CountingClaims(metadata.webhooks), list[httpx.Request]()
    delivery = worker(repo, received)
    await add_endpoint(metadata)
    await completed_upload(metadata)
    assert await metadata.webhooks.dispatch(T0, 10) == (1, 1)  # another node's dispatch
    assert await delivery.run_once(claim_anyway=False) == 0
    assert await delivery.run_once() == 1
    assert len(received) == 1
    await delivery.close()


async def test_stop_ends_the_loop_without_cancelling_a_round(metadata: MetadataStore) -> None:
    # Shutdown asks the worker to stop; it ends between rounds (here: while gathering events after a
    # wake-up) instead of being cancelled inside a database transaction.
    repo, received = CountingClaims(metadata.webhooks), list[httpx.Request]()
    delivery = worker(repo, received)
    running = asyncio.create_task(delivery.run_forever())
    await completed_upload(metadata)
    delivery.wake()
    await asyncio.sleep(0)
    delivery.stop()
    done, _ = await asyncio.wait({running}, timeout=30)
    assert running in done and running.exception() is None
    await delivery.close()


async def test_a_redelivery_wake_up_claims_at_once(metadata: MetadataStore) -> None:
    # Polling every hour: only the wake-up that says a delivery is due can send it.
    repo, received = CountingClaims(metadata.webhooks), list[httpx.Request]()
    delivery = worker(repo, received, poll=3600)
    await add_endpoint(metadata)
    running = asyncio.create_task(delivery.run_forever())
    while repo.claims == 0:  # the first round (at start) has looked
        await asyncio.sleep(0.01)
    await completed_upload(metadata)
    assert await metadata.webhooks.dispatch(T0, 10) == (1, 1)  # made due without this worker's dispatch
    delivery.wake(due=True)
    while not received:
        await asyncio.sleep(0.01)
    assert [str(r.url) for r in received] == ["https://hooks.example/"]
    delivery.stop()
    await running
    await delivery.close()


class EndlessBody(httpx.AsyncByteStream):
    """An answer body that sends one byte and then nothing, never ending: what an endpoint trickling
    a byte now and then looks like (httpx's timeout bounds each read, so it never ends either)."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"{"
        await asyncio.Event().wait()


def endless_worker(
    metadata: MetadataStore, answer: Callable[[httpx.Request], Awaitable[httpx.Response]], timeout: float = 0.2
) -> DeliveryWorker:
    return DeliveryWorker(
        metadata.webhooks,
        DeliveryPolicy(block_private=False, timeout=timeout),
        operator_secret=None,
        clock=lambda: T0 + timedelta(seconds=1),
        transport=httpx.MockTransport(answer),
    )


async def test_a_2xx_whose_body_never_ends_is_delivered_without_reading_it(metadata: MetadataStore) -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=EndlessBody())

    # Its headers must arrive within the deadline: 0.2 s was a wall-clock bet on a loaded machine
    # (a body read in full would still hang until the deadline and fail the test).
    delivery = endless_worker(metadata, answer, timeout=10)
    await add_endpoint(metadata)
    await completed_upload(metadata)
    # (wait_for only turns a hang into a failure.)
    assert await asyncio.wait_for(delivery.run_once(), 30) == 1
    [logged] = await metadata.webhooks.list_deliveries("we_1", 10)
    assert (logged.status, logged.attempts, logged.response_status) == ("delivered", 1, 200)
    await delivery.close()


async def test_an_endpoint_that_never_answers_fails_the_attempt_at_the_timeout(metadata: MetadataStore) -> None:
    # The mock transport applies no httpx timeout at all: it stands for an endpoint that trickles its
    # status line and headers, which never trips httpx's per-read timeout either.
    async def answer(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    delivery = endless_worker(metadata, answer)
    await add_endpoint(metadata)
    await completed_upload(metadata)
    assert await asyncio.wait_for(delivery.run_once(), 30) == 1
    [logged] = await metadata.webhooks.list_deliveries("we_1", 10)
    assert (logged.status, logged.attempts, logged.response_status) == ("pending", 1, None)
    assert logged.last_error == "no answer within 0.2 s"  # and it will be tried again
    await delivery.close()


async def test_an_attempt_that_fails_in_an_unforeseen_way_is_recorded_as_failed(metadata: MetadataStore) -> None:
    """An endpoint stored before its URL was checked as strictly as now (a control character in it):
    the HTTP client refuses to build the request (httpx.InvalidURL, which is no HTTPError). The
    attempt is recorded as failed and retried later like any other; it was left pending with no
    attempt counted, first in the queue at every round, holding back every other owner's events."""
    sent: list[httpx.Request] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)

    delivery = endless_worker(metadata, answer)
    await metadata.webhooks.add_endpoint(
        Endpoint("we_1", "alice", "https://hooks.example/\x00x", "whsec_c2VjcmV0", None, T0, None, None)
    )
    await completed_upload(metadata)
    assert await asyncio.wait_for(delivery.run_once(), 30) == 1
    [logged] = await metadata.webhooks.list_deliveries("we_1", 10)
    assert (logged.status, logged.attempts) == ("pending", 1) and "InvalidURL" in (logged.last_error or "")
    assert sent == []
    await delivery.close()


async def test_a_delivery_goes_to_the_address_that_was_checked(
    metadata: MetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DNS rebinding: the name resolves to a public address for the check, then to loopback. The
    # request must be sent to the address checked (the name kept for Host and TLS), so resolving
    # the name again — as the transport would — can never reach the loopback.
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    async def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example", 443)
        return next(answers)

    monkeypatch.setattr("chunkd.service.destinations.resolve", resolve)
    received: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(204)

    delivery = DeliveryWorker(
        metadata.webhooks,
        DeliveryPolicy(block_private=True),
        operator_secret=None,
        clock=lambda: T0 + timedelta(seconds=1),
        transport=httpx.MockTransport(answer),
    )
    await add_endpoint(metadata)
    await completed_upload(metadata)
    assert await delivery.run_once() == 1
    [request] = received
    assert str(request.url) == "https://93.184.216.34/"
    assert request.headers["Host"] == "hooks.example"
    assert request.extensions["sni_hostname"] == "hooks.example"  # the certificate is checked for the name
    await delivery.close()


class FailingDispatch(CountingClaims):
    """The real repository, whose dispatch fails as the database's outage does while ``down``."""

    def __init__(self, repo: WebhookRepository) -> None:
        super().__init__(repo)
        self.down = True
        self.rounds = 0

    async def dispatch(self, now: datetime, limit: int) -> Dispatched:
        self.rounds += 1
        if self.down:
            raise StorageError("the metadata database is unreachable; try again shortly")
        return await self.repo.dispatch(now, limit)


async def test_an_outage_is_logged_once_not_every_round(
    metadata: MetadataStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Rounds run every ``poll`` seconds; through a database outage each failed with a traceback (one
    every two seconds by default). Now the outage is one warning, and its end one info line."""
    repo, received = FailingDispatch(metadata.webhooks), list[httpx.Request]()
    delivery = worker(repo, received, poll=0.01)
    caplog.set_level(logging.DEBUG, logger="chunkd.service.delivery")
    running = asyncio.create_task(delivery.run_forever())
    try:
        while repo.rounds < 5:
            await asyncio.sleep(0.01)
        repo.down = False
        while repo.rounds < 10:  # five more rounds, the first of them back to normal
            await asyncio.sleep(0.01)
    finally:
        delivery.stop()
        await running
        await delivery.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage(), warnings
    assert warnings[0].exc_info is None
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == ["webhook delivery resumed"]


@pytest.mark.parametrize(
    ("status", "retry_after", "at_least"),
    [
        (503, "600", 600),  # delay-seconds, past the 5-10 s backoff of a first failure
        (429, "Thu, 01 Jan 2026 00:30:01 GMT", 1800),  # an HTTP-date, 30 min after the clock's T0 + 1 s
        (429, "999999999", 3600),  # no longer than the longest delay
        (500, "600", 0),  # only a 429 or a 503 asks
        (503, "soon", 0),
    ],
)
async def test_a_retry_waits_as_long_as_the_receiver_asks(
    metadata: MetadataStore, status: int, retry_after: str, at_least: float
) -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"Retry-After": retry_after})

    delivery = endless_worker(metadata, answer)
    await add_endpoint(metadata)
    await completed_upload(metadata)
    assert await asyncio.wait_for(delivery.run_once(), 30) == 1
    [logged] = await metadata.webhooks.list_deliveries("we_1", 10)
    assert logged.status == "pending" and logged.response_status == status
    waited = (logged.next_attempt_at - (T0 + timedelta(seconds=1))).total_seconds()
    first_backoff = DeliveryPolicy().retry_base
    assert max(at_least, first_backoff * 0.9) <= waited <= max(at_least, first_backoff * 1.1), waited
    await delivery.close()


class FailingRecord:
    """The real repository, whose next ``record_success`` meets a database outage."""

    def __init__(self, repo: WebhookRepository) -> None:
        self.repo = repo
        self.fail_next = False

    async def record_success(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail_next:
            self.fail_next = False
            raise StorageError("the metadata database is unreachable; try again shortly")
        return await self.repo.record_success(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.repo, name)


async def test_each_attempt_is_counted_once_by_its_outcome(metadata: MetadataStore) -> None:
    """``chunkd_webhook_deliveries_total{result}`` counts attempts: a 2xx ``delivered``, another
    status (410 Gone too) ``failed``, no answer ``error``. A 2xx whose recording met a database
    outage was sent and answered all the same (it is sent again later): it went uncounted."""
    answers: list[int | None] = [204, 500, None, 204, 410]  # None: the connection is refused
    seen: list[int | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        status = answers.pop(0)
        seen.append(status)
        if status is None:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(status)

    repo = FailingRecord(metadata.webhooks)
    delivery = DeliveryWorker(
        repo,  # type: ignore[arg-type]  # the real repository behind a fault
        DeliveryPolicy(block_private=False),
        operator_secret=None,
        clock=lambda: T0 + timedelta(seconds=1),
        transport=httpx.MockTransport(answer),
    )
    counted: list[str] = []
    delivery.count = counted.append
    await add_endpoint(metadata)
    for attempt in range(5):
        await completed_upload(metadata)
        repo.fail_next = attempt == 3
        if repo.fail_next:  # the round fails for want of its database, the attempt made all the same
            with pytest.raises(StorageError):
                await delivery.run_once()
        else:
            assert await delivery.run_once() == 1
    assert seen == [204, 500, None, 204, 410]
    assert counted == ["delivered", "failed", "error", "delivered", "failed"]
    [endpoint] = [e for e in await metadata.webhooks.list_endpoints("alice") if e.id == "we_1"]
    assert endpoint.disabled_reason == "gone"
    await delivery.close()
