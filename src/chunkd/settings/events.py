"""What chunkd tells and asks others: webhooks (events and their delivery), the blocking hook
service and the virus scanner."""

from __future__ import annotations

import base64
import binascii
from typing import Literal, Self

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator, model_validator

from chunkd.service.delivery import DeliveryPolicy
from chunkd.settings.units import http_url

__all__ = ["DELIVERY", "EventSettings"]

# The delivery worker's defaults are written once, in DeliveryPolicy; the webhook settings take
# their defaults from there (the descriptions say the value).
DELIVERY = DeliveryPolicy()


class EventSettings(BaseModel):
    """The webhook, hook and virus-scan settings."""

    # ---- events and webhooks ----
    webhook_urls: str = Field(
        "",
        description="Comma-separated operator-wide webhook URLs; each receives every owner's events. Empty: none.",
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="Signing secret of the operator-wide webhooks, in the Standard Webhooks form whsec_<base64> "
        "(at least 24 bytes); required when webhook_urls is set.",
    )
    webhook_previous_secret: SecretStr | None = Field(
        None,
        description="While the operator-wide webhooks switch to a new webhook_secret: the one it replaces, in the "
        "same form. Each delivery then carries a signature by each (webhook-signature: v1,… v1,…), so a receiver "
        "verifies it with either; unset it once every receiver has the new secret.",
    )
    webhook_timeout_seconds: float = Field(
        DELIVERY.timeout, gt=0, description="Time allowed for one webhook request (connect + answer), in seconds (10)."
    )
    webhook_retry_base_seconds: float = Field(
        DELIVERY.retry_base,
        gt=0,
        description="Delay before the first retry of a failed delivery; doubled on each retry (seconds, default 5).",
    )
    webhook_retry_max_delay_seconds: float = Field(
        DELIVERY.retry_max_delay,
        gt=0,
        description="Longest delay between two attempts of one delivery, in seconds (1 hour).",
    )
    webhook_retry_window_seconds: float = Field(
        DELIVERY.retry_window,
        gt=0,
        description="How long a failing delivery is retried after its event, in seconds (24 hours); then it is "
        "marked failed (it can still be redelivered on request).",
    )
    webhook_disable_after_seconds: float = Field(
        DELIVERY.disable_after,
        gt=0,
        description="An endpoint whose deliveries have all failed for this long is disabled, in seconds (5 days). "
        "Operator endpoints are re-enabled at the next start.",
    )
    webhook_poll_seconds: float = Field(
        DELIVERY.poll,
        gt=0,
        description="How often each node looks for events and deliveries that are due, in seconds (default 2; "
        "events written by the node itself are picked up at once).",
    )
    webhook_concurrency: int = Field(
        DELIVERY.concurrency,
        ge=1,
        description="Deliveries one node sends to one endpoint at the same time (default 8); each endpoint's are "
        "sent without waiting for any other endpoint's.",
    )
    webhook_max_in_flight: int = Field(
        DELIVERY.in_flight,
        ge=1,
        description="Deliveries one node holds at once over every endpoint, being sent or claimed and waiting for "
        "their endpoint's turn (default 100; each send is one connection).",
    )
    event_retention_days: float = Field(
        30.0,
        ge=0,
        description="Days the lifecycle events and their webhook deliveries (the endpoints' delivery logs) are kept "
        "once every delivery is final (default 30; 0: kept for ever). The reaper forgets older ones.",
    )
    webhook_block_private: bool = Field(
        DELIVERY.block_private,
        description="Refuse owner-registered webhook URLs that resolve to loopback, private, link-local or other "
        "non-public addresses (server-side request forgery; default on). Operator URLs are trusted.",
    )

    # ---- blocking hooks and virus scanning ----
    hook_url: str | None = Field(
        None,
        description="URL of the blocking hook service, called (JSON POST) before an upload is created (pre-create), "
        "finished (pre-finish) and downloaded (pre-download); see docs/operations.md. Unset: no hooks.",
    )
    hook_timeout_seconds: float = Field(5.0, gt=0, description="Time allowed for one hook call, in seconds.")
    hook_failure: Literal["reject", "allow"] = Field(
        "reject",
        description="When the hook cannot be reached, times out or answers badly: reject the request (retryable, "
        "code hook_unavailable) or allow it as if there were no hook.",
    )
    hook_secret: SecretStr | None = Field(
        None,
        description="Signing secret of the hook calls, in the Standard Webhooks form whsec_<base64> (at least 24 "
        "bytes): each call then carries webhook-id, webhook-timestamp and webhook-signature, so the hook service "
        "can tell chunkd's calls from anyone else's. Unset: calls are not signed.",
    )
    clamd: str | None = Field(
        None,
        description="ClamAV clamd to scan every upload before it completes: a Unix socket path (/run/clamav/"
        "clamd.ctl) or host:port. Unset: no scan.",
    )
    clamd_timeout_seconds: float = Field(
        120.0, gt=0, description="Time allowed for scanning one file, in seconds (the whole stream and the verdict)."
    )
    clamd_failure: Literal["reject", "allow"] = Field(
        "reject",
        description="When clamd is down or gives no verdict (e.g. a file over its StreamMaxLength): refuse the "
        "complete (retryable, code scan_unavailable) or complete the upload unscanned.",
    )

    @field_validator("hook_url")
    @classmethod
    def _hook_url_is_http(cls, value: str | None) -> str | None:
        # Checked at start: a wrong one showed only at the first hook call, failing every upload.
        return http_url(value)

    @field_validator("clamd")
    @classmethod
    def _clamd_address(cls, value: str | None) -> str | None:
        # A socket path, or host:port (an IPv6 host in brackets); a wrong one showed only at the first
        # complete (every one refused, scan_unavailable).
        if value and not value.startswith("/"):
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{value[:100]!r} is neither a Unix socket path (/…) nor host:port")
        return value

    @field_validator("webhook_secret", "webhook_previous_secret", "hook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None:
            name = f"CHUNKD_{(info.field_name or '').upper()}"
            text = value.get_secret_value()
            try:
                raw = base64.b64decode(text.removeprefix("whsec_"), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"{name} must be whsec_ followed by base64") from None
            if not text.startswith("whsec_") or len(raw) < 24:
                raise ValueError(f"{name} must be whsec_<base64 of at least 24 bytes>")
        return value

    @model_validator(mode="after")
    def _webhook_urls_need_secret(self) -> Self:
        if self.webhook_url_list() and self.webhook_secret is None:
            raise ValueError("CHUNKD_WEBHOOK_URLS needs CHUNKD_WEBHOOK_SECRET (whsec_<base64>)")
        return self

    def webhook_url_list(self) -> list[str]:
        return [u.strip() for u in self.webhook_urls.split(",") if u.strip()]

    def delivery_policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(
            timeout=self.webhook_timeout_seconds,
            retry_base=self.webhook_retry_base_seconds,
            retry_max_delay=self.webhook_retry_max_delay_seconds,
            retry_window=self.webhook_retry_window_seconds,
            disable_after=self.webhook_disable_after_seconds,
            poll=self.webhook_poll_seconds,
            concurrency=self.webhook_concurrency,
            in_flight=self.webhook_max_in_flight,
            block_private=self.webhook_block_private,
        )
