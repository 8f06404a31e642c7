"""Webhook endpoints registered by owners: register (with a generated signing secret, shown once),
list, change (its URL, its event types, enabled or not), delete, read the delivery log, ask for a
redelivery. Delivery itself is
``chunkd.service.delivery``."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from chunkd.domain.errors import InvalidInput, NotFound
from chunkd.domain.events import EventType
from chunkd.ports.locks import LockManager
from chunkd.ports.webhooks import Delivery, Endpoint, EndpointChanges, WebhookRepository, new_delivery_id
from chunkd.service.destinations import check_public_destination, check_url_shape

__all__ = [
    "MAX_ENDPOINTS_PER_OWNER",
    "PREVIOUS_SECRET_GRACE",
    "WebhookService",
    "new_endpoint_id",
    "new_signing_secret",
]

MAX_ENDPOINTS_PER_OWNER = 20
# How long a rotated-out secret still signs beside the new one (Svix's 24 hours): time for the
# receiver to take the new secret without rejecting a delivery in between.
PREVIOUS_SECRET_GRACE = timedelta(hours=24)
EVENT_TYPES = frozenset(t.value for t in EventType)


def new_endpoint_id() -> str:
    return "wh_" + secrets.token_hex(16)


def new_signing_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _may_exist(endpoint_id: str) -> bool:
    """Whether ``endpoint_id`` could be one of ours (``wh_`` + 32 hex digits, ``whop_`` + 24); a
    longer one is never looked up."""
    return len(endpoint_id) <= 40


def _no_endpoint(endpoint_id: str) -> NotFound:
    return NotFound(f"no webhook endpoint with id {endpoint_id!r}", field="id")


def _event_types(event_types: Sequence[str]) -> tuple[str, ...]:
    unknown = sorted(set(event_types) - EVENT_TYPES)
    if unknown or not event_types:
        raise InvalidInput(
            f"events must be a non-empty list of {', '.join(sorted(EVENT_TYPES))}; unknown: {unknown}",
            field="events",
        )
    return tuple(sorted(set(event_types)))


class WebhookService:
    def __init__(
        self,
        repo: WebhookRepository,
        clock: Callable[[], datetime],
        *,
        block_private: bool,
        locks: LockManager,
        lock_timeout: float,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.repo = repo
        self.clock = clock
        self.block_private = block_private
        self.locks = locks
        self.lock_timeout = lock_timeout
        self.wake = wake

    async def register(self, owner: str, url: str, event_types: Sequence[str] | None) -> Endpoint:
        """A new endpoint for ``owner``'s events (all types when ``event_types`` is None). The
        returned endpoint carries its secret; it is not shown again."""
        await self._check_url(url)
        types = None if event_types is None else _event_types(event_types)
        # The count and the new row under one lock on the owner (on every node): 30 parallel
        # registrations each counted the same endpoints and all passed the cap.
        async with self.locks.hold(f"webhooks:{owner}", timeout=self.lock_timeout):
            if len(await self.repo.list_endpoints(owner)) >= MAX_ENDPOINTS_PER_OWNER:
                raise InvalidInput(f"at most {MAX_ENDPOINTS_PER_OWNER} webhook endpoints per owner", field="url")
            endpoint = Endpoint(
                id=new_endpoint_id(),
                owner=owner,
                url=url,
                secret=new_signing_secret(),
                event_types=types,
                created_at=self.clock(),
                failing_since=None,
                disabled_at=None,
            )
            await self.repo.add_endpoint(endpoint)
        return endpoint

    async def forget_old_events(self, retention: timedelta, *, batch: int = 1000) -> int:
        """Forget the events older than ``retention`` whose deliveries are all final, with those
        deliveries (the endpoints' delivery logs), in batches; returns how many events went. The
        outbox and the logs otherwise grew by every lifecycle event for ever."""
        before = self.clock() - retention
        forgotten = 0
        while (gone := await self.repo.prune(before, batch)) > 0:
            forgotten += gone
            if gone < batch:
                break
        return forgotten

    async def _check_url(self, url: str) -> None:
        check_url_shape(url)
        if self.block_private:
            await check_public_destination(url)

    async def change(
        self,
        owner: str,
        endpoint_id: str,
        *,
        url: str | None = None,
        event_types: Sequence[str] | None = None,
        every_event: bool = False,
        enabled: bool | None = None,
    ) -> Endpoint:
        """Change an endpoint in place, keeping its id, secret and delivery log: a new ``url``
        (checked as at registration), ``event_types`` (or ``every_event``), ``enabled`` again
        (its waiting deliveries are tried at once) or not."""
        if url is not None:
            await self._check_url(url)
        types = () if every_event else None if event_types is None else _event_types(event_types)
        changes = EndpointChanges(url=url, event_types=types, enabled=enabled)
        endpoint = None
        if _may_exist(endpoint_id):
            endpoint = await self.repo.update_endpoint(endpoint_id, owner, changes, self.clock())
        if endpoint is None:
            raise _no_endpoint(endpoint_id)
        if enabled:
            self.wake()
        return endpoint

    async def list_endpoints(self, owner: str) -> list[Endpoint]:
        return await self.repo.list_endpoints(owner)

    async def get(self, owner: str, endpoint_id: str) -> Endpoint:
        endpoint = await self.repo.get_endpoint(endpoint_id, owner) if _may_exist(endpoint_id) else None
        if endpoint is None:
            raise _no_endpoint(endpoint_id)
        return endpoint

    async def rotate_secret(self, owner: str, endpoint_id: str) -> Endpoint:
        """A new signing secret for an endpoint (returned with it, shown this once). Deliveries
        carry a signature by each secret for ``PREVIOUS_SECRET_GRACE``, then by the new one only; a
        second rotation meanwhile ends the first one's grace."""
        endpoint = None
        if _may_exist(endpoint_id):
            until = self.clock() + PREVIOUS_SECRET_GRACE
            endpoint = await self.repo.rotate_secret(endpoint_id, owner, new_signing_secret(), until)
        if endpoint is None:
            raise _no_endpoint(endpoint_id)
        return endpoint

    async def delete(self, owner: str, endpoint_id: str) -> None:
        if not _may_exist(endpoint_id) or not await self.repo.delete_endpoint(endpoint_id, owner):
            raise _no_endpoint(endpoint_id)

    async def deliveries(self, owner: str, endpoint_id: str, limit: int = 100) -> list[Delivery]:
        endpoint = await self.get(owner, endpoint_id)
        return await self.repo.list_deliveries(endpoint.id, limit)

    async def recover(self, owner: str, endpoint_id: str, since: datetime, *, batch: int = 1000) -> int:
        """Send again every event whose delivery to the endpoint, made since ``since``, failed for good
        (the retry window passed: a receiver down for longer), each once, as new deliveries with the
        same ``webhook-id``; an event delivered or pending there meanwhile is left alone. Returns how
        many; one redelivery at a time (and a log that lists 500) was all there was."""
        endpoint = await self.get(owner, endpoint_id)
        recovered = 0
        while (made := await self.repo.recover(endpoint.id, since, self.clock(), batch)) > 0:
            recovered += made
            if made < batch:
                break
        if recovered:
            self.wake()
        return recovered

    async def redeliver(self, owner: str, endpoint_id: str, delivery_id: str) -> Delivery:
        """Send a delivery's event again to its endpoint (same event id), as a new delivery."""
        endpoint = await self.get(owner, endpoint_id)
        delivery = await self.repo.redeliver(endpoint.id, delivery_id, self.clock(), new_delivery_id())
        if delivery is None:
            raise NotFound(f"no delivery with id {delivery_id!r} for this endpoint", field="delivery_id")
        self.wake()
        return delivery
