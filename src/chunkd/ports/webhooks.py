"""Where webhook endpoints and their deliveries live, and the claim protocol that lets several nodes
deliver the outbox without sending one delivery twice at once."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

__all__ = [
    "ClaimedDelivery",
    "Delivery",
    "DeliveryStatus",
    "DisabledReason",
    "Dispatched",
    "Endpoint",
    "EndpointChanges",
    "WebhookRepository",
    "new_delivery_id",
]


def new_delivery_id() -> str:
    return "dlv_" + secrets.token_hex(16)


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its next attempt (or being attempted under a lease)
    DELIVERED = "delivered"  # a 2xx answer was received
    FAILED = "failed"  # given up: the retry window passed, or the endpoint was disabled or deleted


class DisabledReason(StrEnum):
    """Why an endpoint is disabled (``disabledReason`` in its object)."""

    FAILING = "failing"  # its attempts all failed for CHUNKD_WEBHOOK_DISABLE_AFTER_SECONDS
    GONE = "gone"  # its receiver answered 410 Gone: no longer wants these webhooks (Standard Webhooks)
    OWNER = "owner"  # its owner disabled it (PATCH with "enabled": false)


@dataclass(frozen=True)
class Endpoint:
    """A webhook destination. ``owner`` None: operator-wide (gets every owner's events, signed with
    the operator's secret); ``event_types`` None: every type."""

    id: str
    owner: str | None
    url: str
    secret: str | None
    event_types: tuple[str, ...] | None
    created_at: datetime
    failing_since: datetime | None
    disabled_at: datetime | None
    disabled_reason: DisabledReason | None = None  # set exactly when ``disabled_at`` is
    # The secret the last rotation replaced, which still signs (beside ``secret``) until then.
    previous_secret: str | None = None
    previous_secret_until: datetime | None = None

    def signing_secrets(self, now: datetime) -> list[str]:
        """The owner's secrets that sign a message sent at ``now``: the current one, and the
        previous one while its grace lasts (empty for an operator endpoint)."""
        keys = [self.secret] if self.secret is not None else []
        if self.previous_secret is not None and self.previous_secret_until and now < self.previous_secret_until:
            keys.append(self.previous_secret)
        return keys


@dataclass(frozen=True)
class EndpointChanges:
    """What an owner changes in an endpoint; each field None leaves it as it is. ``event_types``
    ``()`` means every type (as None does at registration). ``enabled`` True clears a disabling
    (and the failure streak that led to it) and makes its waiting deliveries due at once; False
    disables it as the failures would."""

    url: str | None = None
    event_types: tuple[str, ...] | None = None
    enabled: bool | None = None


@dataclass(frozen=True)
class Delivery:
    """One event to one endpoint: its attempts so far and their outcome (the delivery log)."""

    id: str
    endpoint_id: str
    event_id: str
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    response_status: int | None
    last_error: str | None


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery this node holds the lease of, with what it needs to send it."""

    delivery: Delivery
    endpoint: Endpoint
    payload: dict[str, Any]
    event_timestamp: datetime


class Dispatched(NamedTuple):
    """What one ``dispatch`` did: outbox events taken, and pending deliveries made of them."""

    events: int
    deliveries: int


class WebhookRepository(Protocol):
    """Endpoints, deliveries and the outbox's fan-out. Every method is its own transaction."""

    async def sync_operator_endpoints(self, urls: Sequence[str], now: datetime) -> None:
        """Make the operator-wide endpoints exactly ``urls`` (re-enabling them: the settings rule)."""

    async def add_endpoint(self, endpoint: Endpoint) -> None: ...

    async def list_endpoints(self, owner: str) -> list[Endpoint]: ...

    async def get_endpoint(self, endpoint_id: str, owner: str | None) -> Endpoint | None:
        """Scoped to ``owner`` unless None (internal callers)."""

    async def rotate_secret(
        self, endpoint_id: str, owner: str, secret: str, previous_until: datetime
    ) -> Endpoint | None:
        """Make ``secret`` the owner's endpoint's secret, the one it replaces signing beside it until
        ``previous_until``; the endpoint as it is now, or None if the owner has no such endpoint."""

    async def delete_endpoint(self, endpoint_id: str, owner: str) -> bool:
        """Forget an owner's endpoint and its delivery log; True if it existed."""

    async def update_endpoint(
        self, endpoint_id: str, owner: str, changes: EndpointChanges, now: datetime
    ) -> Endpoint | None:
        """Apply ``changes`` to an owner's endpoint in one transaction; the endpoint as it is now,
        or None if the owner has no such endpoint."""

    async def dispatch(self, now: datetime, limit: int) -> Dispatched:
        """Turn up to ``limit`` undispatched outbox events into one pending delivery per matching,
        enabled endpoint, and mark them dispatched, atomically (each event by exactly one node)."""

    async def claim(
        self,
        now: datetime,
        lease_until: datetime,
        limit: int,
        *,
        per_endpoint: int | None = None,
        skip_endpoints: Collection[str] = (),
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` due pending deliveries (no live lease held by anyone, endpoint
        enabled) until ``lease_until``; another node skips them meanwhile. The owners take turns
        (each one's oldest, then each one's second…); at most ``per_endpoint`` of one endpoint
        (its oldest; None: no limit), and none of ``skip_endpoints``."""

    async def release(self, delivery_ids: Collection[str]) -> None:
        """Give up the leases of claimed deliveries not sent (still pending), so that any node may
        claim them at once instead of when the leases run out."""

    async def record_success(self, delivery_id: str, now: datetime, response_status: int) -> None: ...

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
        """Note a failed attempt; retry at ``retry_at`` or give up (None). The endpoint is disabled
        once it has been failing without a success for ``disable_after_seconds``, or at once when
        ``gone`` (its receiver answered 410); True if this call disabled it."""

    async def list_deliveries(self, endpoint_id: str, limit: int) -> list[Delivery]:
        """The endpoint's deliveries, newest first."""

    async def redeliver(self, endpoint_id: str, delivery_id: str, now: datetime, new_id: str) -> Delivery | None:
        """A new pending delivery of the same event to the same endpoint, due now (None: no such
        delivery of that endpoint)."""

    async def recover(self, endpoint_id: str, since: datetime, now: datetime, limit: int) -> int:
        """A new pending delivery, due now, of each event (up to ``limit``, oldest first) whose
        delivery to the endpoint made since ``since`` failed for good and that has none delivered or
        pending there; returns how many were made (fewer than ``limit``: no more to recover)."""

    async def prune(self, before: datetime, limit: int) -> int:
        """Forget up to ``limit`` dispatched events made before ``before`` whose deliveries are all
        final (delivered or failed), with those deliveries; returns how many events went. An event
        not dispatched yet, or with a delivery still pending, stays."""
