"""``/v1/webhooks``: an owner's webhook endpoints (scope ``webhooks:admin``): registered, changed
(URL, event types, enabled) and deleted, their delivery log, redelivery and recovery on request, and
secret rotation. Errors in the native API's shape."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.responses import Response

from chunkd.domain.errors import InvalidInput
from chunkd.domain.events import isotime
from chunkd.frontends.http import dialect_route, principal, runtime
from chunkd.frontends.native.errors import render_error
from chunkd.frontends.native.schemas import ErrorResponse
from chunkd.ports.webhooks import Delivery, Endpoint
from chunkd.service.webhooks import WebhookService

__all__ = ["webhooks_router"]

SCOPE = "webhooks:admin"


async def _render(_: Request, exc: Exception) -> Response | None:
    return render_error(exc)


ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 429)}
webhooks_router = APIRouter(
    prefix="/v1/webhooks", tags=["webhooks"], route_class=dialect_route(_render), responses=ERRORS
)

EndpointId = Annotated[str, Path(min_length=1, max_length=64, description="Webhook endpoint id.")]


class CreateWebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: StrictStr = Field(min_length=1, max_length=2048, description="http(s) URL that receives the events.")
    events: list[StrictStr] | None = Field(
        None, max_length=16, description="Event types to send (e.g. upload.completed); default: all."
    )


class ChangeWebhookRequest(BaseModel):
    # A misspelt field would otherwise change nothing and answer 200.
    model_config = ConfigDict(extra="forbid")

    url: StrictStr | None = Field(None, min_length=1, max_length=2048, description="A new http(s) URL.")
    events: list[StrictStr] | None = Field(
        None, max_length=16, description="The event types to send from now on; null: all of them."
    )
    enabled: StrictBool | None = Field(
        None,
        description="true: enable a disabled endpoint (its waiting deliveries are tried at once); "
        "false: stop sending to it (events meanwhile are not kept for it).",
    )


class RecoverRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime = Field(
        description="RFC 3339 time with its offset: the failed deliveries made since then are sent again."
    )


class RecoverAnswer(BaseModel):
    recovered: int = Field(description="How many events are sent again (new deliveries, same webhook-id).")


class WebhookObject(BaseModel):
    id: str
    url: str
    events: list[str] | None
    createdAt: str | None
    failingSince: str | None
    disabledAt: str | None
    disabledReason: Literal["failing", "gone", "owner"] | None = Field(
        None,
        description="Why it is disabled: failing (every attempt failed for the configured time), gone (its "
        "receiver answered 410 Gone), owner (disabled with PATCH); null while enabled.",
    )
    secret: str | None = Field(
        None, description="The signing secret (whsec_…); returned once, at creation and at each rotation."
    )
    previousSecretExpiresAt: str | None = Field(
        None,
        description="Until when the secret replaced by the last rotation still signs deliveries, beside the "
        "current one; null when none does.",
    )


class WebhookList(BaseModel):
    data: list[WebhookObject]


class DeliveryObject(BaseModel):
    id: str
    eventId: str
    status: str
    attempts: int
    createdAt: str | None
    nextAttemptAt: str | None
    lastAttemptAt: str | None
    deliveredAt: str | None
    responseStatus: int | None
    lastError: str | None


class DeliveryList(BaseModel):
    data: list[DeliveryObject]


def _service(request: Request) -> WebhookService:
    return runtime(request).webhooks


def _endpoint_view(endpoint: Endpoint, *, with_secret: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": list(endpoint.event_types) if endpoint.event_types is not None else None,
        "createdAt": isotime(endpoint.created_at),
        "failingSince": isotime(endpoint.failing_since),
        "disabledAt": isotime(endpoint.disabled_at),
        "disabledReason": endpoint.disabled_reason.value if endpoint.disabled_reason is not None else None,
        "previousSecretExpiresAt": isotime(endpoint.previous_secret_until),
    }
    if with_secret:
        view["secret"] = endpoint.secret
    return view


def _delivery_view(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "eventId": delivery.event_id,
        "status": delivery.status.value,
        "attempts": delivery.attempts,
        "createdAt": isotime(delivery.created_at),
        "nextAttemptAt": isotime(delivery.next_attempt_at) if delivery.status.value == "pending" else None,
        "lastAttemptAt": isotime(delivery.last_attempt_at),
        "deliveredAt": isotime(delivery.delivered_at),
        "responseStatus": delivery.response_status,
        "lastError": delivery.last_error,
    }


@webhooks_router.post("", status_code=201, response_model=WebhookObject, summary="Register a webhook endpoint")
async def create_webhook(request: Request, body: CreateWebhookRequest) -> dict[str, Any]:
    """The endpoint receives this owner's events only, signed per the Standard Webhooks spec with
    the secret in this response (shown once)."""
    who = await principal(request, SCOPE)
    endpoint = await _service(request).register(who.owner, body.url, body.events)
    return _endpoint_view(endpoint, with_secret=True)


@webhooks_router.get("", response_model=WebhookList, summary="List your webhook endpoints (without secrets)")
async def list_webhooks(request: Request) -> dict[str, Any]:
    who = await principal(request, SCOPE)
    return {"data": [_endpoint_view(e) for e in await _service(request).list_endpoints(who.owner)]}


@webhooks_router.get("/{endpoint_id}", response_model=WebhookObject, summary="Get a webhook endpoint")
async def get_webhook(request: Request, endpoint_id: EndpointId) -> dict[str, Any]:
    who = await principal(request, SCOPE)
    return _endpoint_view(await _service(request).get(who.owner, endpoint_id))


@webhooks_router.patch("/{endpoint_id}", response_model=WebhookObject, summary="Change a webhook endpoint")
async def change_webhook(request: Request, endpoint_id: EndpointId, body: ChangeWebhookRequest) -> dict[str, Any]:
    """Only the fields sent change; the id, the secret and the delivery log stay."""
    who = await principal(request, SCOPE)
    sent = body.model_fields_set
    for name in ("url", "enabled"):
        if name in sent and getattr(body, name) is None:
            raise InvalidInput(f"{name} may be left out but not null", field=name)
    endpoint = await _service(request).change(
        who.owner,
        endpoint_id,
        url=body.url,
        event_types=body.events,
        every_event="events" in sent and body.events is None,
        enabled=body.enabled,
    )
    return _endpoint_view(endpoint)


@webhooks_router.post(
    "/{endpoint_id}/secret/rotate", response_model=WebhookObject, summary="Rotate a webhook endpoint's secret"
)
async def rotate_webhook_secret(request: Request, endpoint_id: EndpointId) -> dict[str, Any]:
    """A new signing secret, in this response only. For 24 hours each delivery carries a signature
    by the new secret and one by the old (``webhook-signature: v1,… v1,…``; any Standard Webhooks
    library accepts either), so the receiver can switch to the new one without rejecting any."""
    who = await principal(request, SCOPE)
    return _endpoint_view(await _service(request).rotate_secret(who.owner, endpoint_id), with_secret=True)


@webhooks_router.delete("/{endpoint_id}", status_code=204, summary="Delete a webhook endpoint and its log")
async def delete_webhook(request: Request, endpoint_id: EndpointId) -> Response:
    who = await principal(request, SCOPE)
    await _service(request).delete(who.owner, endpoint_id)
    return Response(status_code=204)


@webhooks_router.get("/{endpoint_id}/deliveries", response_model=DeliveryList, summary="The endpoint's delivery log")
async def list_deliveries(
    request: Request,
    endpoint_id: EndpointId,
    limit: Annotated[int, Query(ge=1, le=500, description="Most deliveries returned, newest first.")] = 100,
) -> dict[str, Any]:
    who = await principal(request, SCOPE)
    deliveries = await _service(request).deliveries(who.owner, endpoint_id, limit)
    return {"data": [_delivery_view(d) for d in deliveries]}


@webhooks_router.post(
    "/{endpoint_id}/recover",
    status_code=202,
    response_model=RecoverAnswer,
    summary="Send again every event whose delivery failed for good since a time",
)
async def recover_deliveries(request: Request, endpoint_id: EndpointId, body: RecoverRequest) -> dict[str, Any]:
    """After a receiver was down for longer than the retry window: each event whose delivery to this
    endpoint was made since ``since`` and failed for good is sent again, once, as a new delivery
    with the same ``webhook-id``; one delivered or pending meanwhile is not."""
    who = await principal(request, SCOPE)
    return {"recovered": await _service(request).recover(who.owner, endpoint_id, body.since)}


@webhooks_router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=DeliveryObject,
    summary="Send a delivery's event again (same webhook-id), as a new delivery",
)
async def retry_delivery(
    request: Request,
    endpoint_id: EndpointId,
    delivery_id: Annotated[str, Path(min_length=1, max_length=64, description="Delivery id.")],
) -> dict[str, Any]:
    who = await principal(request, SCOPE)
    return _delivery_view(await _service(request).redeliver(who.owner, endpoint_id, delivery_id))
