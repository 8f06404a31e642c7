"""Delivering the outbox to webhook endpoints, at least once, from a background task of each server
process (never from a request).

Each round: outbox events not yet dispatched become one pending delivery per matching endpoint
(atomically, by exactly one node); then due deliveries are leased by this node (no other node sends
them while the lease lasts; a node that dies loses its lease when it runs out, and another node —
or the same one restarted — sends the delivery again) and sent in their endpoint's lane, up to
``policy.concurrency`` at a time, whatever the other endpoints' sends are doing. Messages are signed
per the Standard Webhooks spec: ``webhook-id`` is the event's id (the same on every attempt and
redelivery, so receivers can deduplicate), ``webhook-timestamp`` the attempt's Unix time and
``webhook-signature`` ``v1,<base64 HMAC-SHA256>``. A failed attempt is retried with exponential
backoff (no sooner than a 429's or 503's ``Retry-After`` asks) until the retry window has passed;
an endpoint failing for long is disabled, and one whose receiver answers 410 Gone at once (the
spec's "no longer interested": its pending deliveries wait until its owner enables it again)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import partial

import httpx
from standardwebhooks import Webhook

from chunkd.domain.errors import InvalidInput, StorageError
from chunkd.ports.webhooks import ClaimedDelivery, WebhookRepository
from chunkd.service.destinations import Pinned, check_public_destination
from chunkd.service.tls import outgoing_tls
from chunkd.service.waiting import until_set

__all__ = ["DeliveryPolicy", "DeliveryWorker", "count_delivery", "retry_after"]

log = logging.getLogger(__name__)


def count_delivery(result: str) -> None:
    """Where a delivery attempt's outcome goes (``delivered``; ``failed``: a non-2xx answer;
    ``error``: no answer). The runtime points ``DeliveryWorker.count`` at
    ``Metrics.webhook_delivery`` (``chunkd_webhook_deliveries_total{result}``)."""


@dataclass(frozen=True)
class DeliveryPolicy:
    timeout: float = 10.0
    retry_base: float = 5.0
    retry_max_delay: float = 3600.0
    retry_window: float = 86400.0
    disable_after: float = 5 * 86400.0
    poll: float = 2.0
    # After a wake-up, how long to let further events gather before a round: a round is a dispatch and
    # a claim transaction whatever it finds, and one per completed upload cost 64 KiB tus uploads
    # ~6 ms of event-loop CPU each (bench/request_cost.py tus-small, 2026-11-30).
    coalesce: float = 0.25
    # Sends in flight to one endpoint from one node; and deliveries one node holds at once over every
    # endpoint (claimed, waiting for their endpoint's turn or being sent): each send is a connection.
    concurrency: int = 8
    in_flight: int = 100
    block_private: bool = True

    def retry_at(self, claimed: ClaimedDelivery, now: datetime, *, not_before: float = 0.0) -> datetime | None:
        """When to try again after a failed attempt, or None once the window has passed. Delays
        double from ``retry_base`` up to ``retry_max_delay``, with ±10 % jitter so that many
        deliveries failing together do not all come back at once; never sooner than
        ``not_before`` seconds (the receiver's ``Retry-After``), up to ``retry_max_delay``, unless
        that is past the window: then once more at its end. A receiver asking for a pause (a 429,
        a 503 while it is maintained) asks for later, not for never: its wait past the window
        made the delivery fail at once, with most of the window left."""
        attempts = claimed.delivery.attempts  # before this one
        delay = min(self.retry_base * 2 ** min(attempts, 40), self.retry_max_delay) * random.uniform(0.9, 1.1)
        end = claimed.delivery.created_at + timedelta(seconds=self.retry_window)
        if now + timedelta(seconds=delay) > end:
            return None
        return min(now + timedelta(seconds=max(delay, min(not_before, self.retry_max_delay))), end)


def retry_after(status: int, value: str | None, now: datetime) -> float:
    """The seconds a 429 or 503 answer's ``Retry-After`` (delay-seconds or an HTTP-date, RFC 9110
    10.2.3) asks the sender to wait; 0 for any other answer, or a value that is neither."""
    if status not in (429, 503) or not value:
        return 0.0
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:  # "-0000" in an RFC 5322 date; HTTP-dates are GMT
        return 0.0
    return max(0.0, (when - now).total_seconds())


class _Lane:
    """One endpoint's deliveries on this node: claimed ones wait here, oldest first, and are sent
    up to ``policy.concurrency`` at a time, whatever every other endpoint's sends are doing."""

    def __init__(self) -> None:
        self.waiting: deque[tuple[ClaimedDelivery, datetime]] = deque()  # with its lease's end
        self.sending = 0
        self.more = False  # its last claim took all it could: more of its deliveries may be due

    @property
    def load(self) -> int:
        return len(self.waiting) + self.sending


class DeliveryWorker:
    def __init__(
        self,
        repo: WebhookRepository,
        policy: DeliveryPolicy,
        *,
        operator_secret: str | None,
        clock: Callable[[], datetime],
        transport: httpx.AsyncBaseTransport | None = None,
        operator_previous_secret: str | None = None,
    ) -> None:
        self.repo = repo
        self.policy = policy
        # The operator endpoints' secret, and the one it replaces while their receivers switch
        # (CHUNKD_WEBHOOK_PREVIOUS_SECRET): both sign, as an owner's rotation does for 24 hours.
        self.operator_secrets: list[str] = []
        if operator_secret is not None:
            self.operator_secrets = [operator_secret, *([operator_previous_secret] if operator_previous_secret else [])]
        self.clock = clock
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._claim_due = False
        self._asked = False  # wake() was called since the last round
        self._freed = False  # a send ended where more may be due since the last round
        self._lanes: dict[str, _Lane] = {}  # by endpoint id
        self._held = 0  # claimed and not yet sent to the end, over every lane (at most policy.in_flight)
        self._full = False  # the last claim took as many as there was room for: more may be due
        self._sending: set[asyncio.Task[None]] = set()
        self._outage = False  # the last round failed for want of its database
        self.count: Callable[[str], None] = count_delivery
        # No redirects (a 3xx is a failed attempt: the endpoint must name its final URL) and no
        # proxy settings from the environment. httpx's timeout bounds each read and write, not the
        # whole exchange (an endpoint trickling its answer a byte at a time would never time out):
        # ``send`` puts one deadline of ``policy.timeout`` on the attempt as a whole. The pool has
        # room for every send in flight: a send waiting for a connection would spend its deadline.
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(policy.timeout),
            limits=httpx.Limits(max_connections=policy.in_flight, max_keepalive_connections=20),
            follow_redirects=False,
            trust_env=False,
            verify=outgoing_tls(),
            transport=transport,
            headers={"User-Agent": "chunkd-webhooks"},
        )

    def wake(self, *, due: bool = False) -> None:
        """Look for work now: an event was just written by this process, or (``due``) a delivery
        was made due directly (a redelivery asked for), which the next round must claim."""
        if due:
            self._claim_due = True
        self._asked = True
        self._wakeup.set()

    def stop(self) -> None:
        """Let ``run_forever`` return once its round (if one is running) and the sends in flight
        have ended (each bounded by the timeout): cancelling it in the middle of a database
        transaction can leave the driver's connection waiting forever. Deliveries claimed and not
        started yet are released for the next node (or start) to send."""
        self._stopping.set()
        self._wakeup.set()

    def _lease(self) -> tuple[datetime, datetime]:
        """Now, and the end of a lease taken now: long enough to wait for its endpoint's sends
        ahead of it (a lane holds less than twice ``concurrency``, so at most one timeout), for its
        own request (bounded by the timeout) and for recording its outcome. A node that dies
        holding it delays that delivery by at most this much."""
        now = self.clock()
        return now, now + timedelta(seconds=2 * self.policy.timeout + 10)

    async def _dispatch(self) -> int:
        """Every waiting event made into deliveries; how many deliveries were made."""
        made = 0
        while True:
            dispatched = await self.repo.dispatch(self.clock(), 200)
            made += dispatched.deliveries
            if dispatched.events < 200:
                return made

    async def run_forever(self) -> None:
        """Deliver until ``stop``. A round dispatches the waiting events and claims due deliveries
        into their endpoints' lanes, where they are sent without waiting for the round or for each
        other: a round waited for its slowest send, so one endpoint hanging to the timeout held
        every delivery due meanwhile (other endpoints', other owners'). Claims stay batched (each
        one ranks every due delivery, ~100 ms over a backlog of 20,000): an endpoint's lane is
        claimed for again, up to ``concurrency`` at once, only when it has fewer than that left.
        Measured (SQLite, a local receiver, one endpoint, 2026-12-03, rounds → lanes): a backlog of
        2,000 due 81 and 64 → 82 and 75 deliveries/s; of 20,000 due 29 and 25 → 42 and 42/s; one
        endpoint hanging to a 3 s timeout beside a fast one: the fast one's 40 took 28 s → 1 s."""
        dispatch = claim_anyway = True  # the first round looks for everything
        try:
            while not self._stopping.is_set():
                self._wakeup.clear()
                self._asked = self._freed = False
                try:
                    made = await self._dispatch() if dispatch else 0
                    if (made or claim_anyway) and not self._stopping.is_set():
                        await self._claim_into_lanes()
                    if self._outage:
                        log.info("webhook delivery resumed")
                        self._outage = False
                except StorageError as exc:  # keep delivering once the database is back
                    self._storage_failed(exc)
                except Exception:  # keep delivering after any other transient error
                    log.exception("webhook delivery round failed")
                dispatch, claim_anyway = await self._next()
        finally:
            await self._drain()

    async def _next(self) -> tuple[bool, bool]:
        """Wait for what starts the next round, and say what it does (dispatch, claim whatever the
        dispatch made): ``wake`` (after ``coalesce``: a dispatch, and a claim if a delivery was
        made due or a lane has room for more), a send ended leaving room where more is due (a
        claim), ``poll`` seconds passed (both), or ``stop``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.poll
        while not self._stopping.is_set():
            if self._asked:
                await until_set(self._stopping, self.policy.coalesce)
                claim, self._claim_due = self._claim_due or self._room_for_more(), False
                return True, claim
            if self._freed:
                # Looked at again now: a claim begun since may have filled that room already, and a
                # claim that finds every lane busy still ranks every due delivery.
                self._freed = False
                if self._room_for_more():
                    return False, True
            self._wakeup.clear()
            if not await until_set(self._wakeup, deadline - loop.time()):
                return True, True
        return False, False

    def _storage_failed(self, exc: StorageError) -> None:
        # A round every ``poll`` seconds through an outage: one warning for it, not a traceback
        # every two seconds.
        log.log(logging.DEBUG if self._outage else logging.WARNING, "webhook delivery round failed: %s", exc)
        self._outage = True

    async def _claim_into_lanes(self) -> None:
        """Claim due deliveries for the lanes with room (fewer than ``concurrency`` held), up to
        ``concurrency`` each and ``in_flight`` in all, and start sending them."""
        room = self.policy.in_flight - self._held
        if room <= 0:
            self._full = True
            return
        busy = [endpoint for endpoint, lane in self._lanes.items() if lane.load >= self.policy.concurrency]
        now, lease = self._lease()
        claimed = await self.repo.claim(now, lease, room, per_endpoint=self.policy.concurrency, skip_endpoints=busy)
        self._full = len(claimed) == room
        taken = Counter(c.endpoint.id for c in claimed)
        for each in claimed:
            self._lanes.setdefault(each.endpoint.id, _Lane()).waiting.append((each, lease))
        self._held += len(claimed)
        for endpoint in set(self._lanes) - set(busy):
            lane = self._lanes[endpoint]
            lane.more = taken[endpoint] >= self.policy.concurrency
            self._pump(endpoint, lane)

    def _room_for_more(self) -> bool:
        """Whether a claim would find room where more may be due: a lane whose last claim took all
        it could holds fewer than ``concurrency`` now, or the last claim filled every slot and a
        batch's worth has come free since."""
        if self._full and self.policy.in_flight - self._held >= min(self.policy.concurrency, self.policy.in_flight):
            return True
        return any(lane.more and lane.load < self.policy.concurrency for lane in self._lanes.values())

    def _pump(self, endpoint: str, lane: _Lane) -> None:
        """Start the lane's waiting deliveries it has room for; forget a lane left with nothing."""
        while lane.waiting and lane.sending < self.policy.concurrency and not self._stopping.is_set():
            claimed, lease = lane.waiting.popleft()
            lane.sending += 1
            task = asyncio.create_task(self._send_in_lane(claimed, lease, lane))
            self._sending.add(task)
            task.add_done_callback(partial(self._sent, endpoint=endpoint, lane=lane))
        if not lane.load and not lane.more and self._lanes.get(endpoint) is lane:
            del self._lanes[endpoint]

    def _sent(self, task: asyncio.Task[None], endpoint: str, lane: _Lane) -> None:
        self._sending.discard(task)
        lane.sending -= 1
        self._held -= 1
        if (lane.more and lane.load < self.policy.concurrency) or self._room_for_more():
            self._freed = True  # the claimer looks again
            self._wakeup.set()
        self._pump(endpoint, lane)

    async def _send_in_lane(self, claimed: ClaimedDelivery, lease: datetime, lane: _Lane) -> None:
        """``send``, its failures logged as a round's are (a send runs on its own). When it leaves
        the endpoint disabled, the lane's waiting deliveries are released unsent: a receiver that
        answered 410 Gone got every one of them (up to twice ``concurrency``), each a 410 again."""
        try:
            if lease - self.clock() < timedelta(seconds=self.policy.timeout + 5):
                # Waited so long (a stalled process) that its lease may run out while it is sent,
                # and another node send it too: left to whoever claims it next.
                return
            if await self.send(claimed) and lane.waiting:
                unsent = [waiting.delivery.id for waiting, _ in lane.waiting]
                lane.waiting.clear()
                lane.more = False
                self._held -= len(unsent)
                await self.repo.release(unsent)  # they wait, pending, until the endpoint is enabled
            if self._outage:
                log.info("webhook delivery resumed")
                self._outage = False
        except StorageError as exc:  # the lease runs out and the delivery is tried again
            self._storage_failed(exc)
        except Exception:
            log.exception("webhook delivery of %s failed", claimed.delivery.id)

    async def _drain(self) -> None:
        """At stop: the deliveries not started yet released, the sends in flight (each bounded by
        the timeout) awaited; cancelled, they are cancelled."""
        waiting = [claimed.delivery.id for lane in self._lanes.values() for claimed, _ in lane.waiting]
        for lane in self._lanes.values():
            lane.waiting.clear()
        try:
            if waiting:
                try:
                    await self.repo.release(waiting)
                except Exception:  # their leases run out instead
                    log.warning("could not release %d claimed webhook deliveries at stop", len(waiting))
            while self._sending:
                await asyncio.wait(set(self._sending))
        finally:
            for task in self._sending:
                task.cancel()

    async def run_once(self, *, claim_anyway: bool = True) -> int:
        """One round, its sends awaited: dispatch every waiting event, then send one batch of due
        deliveries (up to ``concurrency`` per endpoint). Returns how many deliveries were
        attempted. ``claim_anyway=False`` (a round woken by this process's own events) looks for
        due deliveries only if the dispatch made some: deliveries made by other nodes, and
        retries, are found by the rounds that poll."""
        made = await self._dispatch()
        if (not made and not claim_anyway) or self._stopping.is_set():
            return 0
        now, lease = self._lease()
        claimed = await self.repo.claim(now, lease, self.policy.in_flight, per_endpoint=self.policy.concurrency)
        if claimed:
            await asyncio.gather(*(self.send(c) for c in claimed))
        return len(claimed)

    def _secrets(self, claimed: ClaimedDelivery, now: datetime) -> list[str]:
        if claimed.endpoint.owner is None:
            return self.operator_secrets
        return claimed.endpoint.signing_secrets(now)

    async def send(self, claimed: ClaimedDelivery) -> bool:
        """One attempt of one leased delivery, and its outcome recorded. True when the endpoint is
        to get no more for now: its receiver answered 410 Gone, or this failure disabled it."""
        delivery = claimed.delivery
        status: int | None = None
        error = ""
        wait = 0.0  # what the receiver asked for before the next attempt
        gone = False  # 410: the receiver wants no more deliveries
        delivered = False  # the receiver answered 2xx
        try:
            if not self._secrets(claimed, self.clock()):
                raise RuntimeError("no signing secret for this endpoint (CHUNKD_WEBHOOK_SECRET unset)")
            # One deadline for the whole attempt (address check, connect, send, answer), so an
            # endpoint that hangs or trickles holds neither the round nor its lease past it.
            async with asyncio.timeout(self.policy.timeout):
                target: Pinned | None = None
                if claimed.endpoint.owner is not None and self.policy.block_private:
                    # Sent to the address just checked, not to whatever the name resolves to next.
                    target = Pinned(claimed.endpoint.url, await check_public_destination(claimed.endpoint.url))
                body = json.dumps(claimed.payload, separators=(",", ":"), ensure_ascii=False)
                sent_at = self.clock()
                # One signature per secret, space-separated (the spec's form for rotations): a
                # receiver still on the previous secret verifies one, one on the new the other.
                signature = " ".join(
                    Webhook(secret).sign(delivery.event_id, sent_at, body) for secret in self._secrets(claimed, sent_at)
                )
                request = self.client.build_request(
                    "POST",
                    target.url if target else claimed.endpoint.url,
                    content=body.encode(),
                    headers={
                        **(target.headers if target else {}),
                        "Content-Type": "application/json",
                        "webhook-id": delivery.event_id,
                        "webhook-timestamp": str(int(sent_at.timestamp())),
                        "webhook-signature": signature,
                    },
                    extensions=target.extensions if target else None,
                )
                # Only the status counts: the answer's body is never read (nor held in memory).
                response = await self.client.send(request, stream=True)
                await response.aclose()
            status = response.status_code
            delivered = 200 <= status < 300
            if not delivered:
                error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
                gone = status == 410
                if gone:
                    error += " (the receiver is gone: the endpoint is disabled)"
                wait = retry_after(status, response.headers.get("retry-after"), self.clock())
        except InvalidInput as exc:
            error = exc.message
        except TimeoutError:
            error = f"no answer within {self.policy.timeout:g} s"
        except Exception as exc:  # any failure of the attempt is the attempt's outcome
            # Recorded like any failed attempt, whatever its class: an error not foreseen here
            # (httpx.InvalidURL, which is no HTTPError) left the delivery pending with no attempt
            # counted, first in the queue at every round, and held every other owner's events.
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        # Counted before it is recorded: the attempt was made even when the database does not take
        # its outcome now (a StorageError: the lease runs out, and the delivery is tried and counted again).
        if delivered and status is not None:
            self.count("delivered")
            await self.repo.record_success(delivery.id, self.clock(), status)
            return False
        self.count("failed" if status is not None else "error")
        now = self.clock()
        retry_at = self.policy.retry_at(claimed, now, not_before=wait)
        disabled = await self.repo.record_failure(
            delivery.id,
            now,
            response_status=status,
            error=error,
            retry_at=retry_at,
            disable_after_seconds=self.policy.disable_after,
            gone=gone,
        )
        if disabled and gone:
            log.warning(
                "webhook endpoint %s (owner %s) disabled: its receiver answered 410 Gone",
                claimed.endpoint.id,
                claimed.endpoint.owner or "operator",
            )
        elif disabled:
            log.warning("webhook endpoint %s disabled after failing since long", claimed.endpoint.id)
        return gone or disabled

    async def close(self) -> None:
        await self.client.aclose()
