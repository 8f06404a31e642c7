"""Every setting of chunkd, with unit and default. Each one can be given as an environment
variable ``CHUNKD_<NAME>`` (e.g. ``CHUNKD_DATA_DIR``) or, for a few, a ``chunkd serve`` option."""

from __future__ import annotations

import base64
import binascii
import re
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chunkd.service.config import EngineConfig
from chunkd.service.delivery import DeliveryPolicy
from chunkd.service.inspection import InspectionLimits
from chunkd.service.media import MediaLimits

__all__ = ["Settings"]

MiB = 1024 * 1024
# The engine's and the delivery worker's defaults are written once, in their own dataclasses; the
# settings below that configure them take their defaults from these (the descriptions say the value).
ENGINE = EngineConfig()
DELIVERY = DeliveryPolicy()


def _decode_secret(text: str) -> bytes:
    """Hex (64+ digits) or standard/URL-safe base64 of at least 32 bytes."""
    text = text.strip()
    raw: bytes | None = None
    if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", text):
        raw = bytes.fromhex(text)
    else:
        with suppress(binascii.Error, ValueError):
            raw = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    if raw is None:
        raise ValueError("CHUNKD_SECRET must be hex or base64")
    if len(raw) < 32:
        raise ValueError("CHUNKD_SECRET must hold at least 32 bytes (e.g. `openssl rand -hex 32`)")
    return raw


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHUNKD_", extra="ignore")

    # ---- where things live ----
    data_dir: Path = Field(Path("./chunkd-data"), description="Directory for the SQLite database, bytes and secrets.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the metadata database; default: SQLite at <data_dir>/chunkd.db."
    )
    storage: Literal["local", "s3"] = Field("local", description="Where bytes go: local disk or S3-compatible.")
    fsync: bool = Field(True, description="fsync parts before acknowledging them (turn off only for tests).")
    min_free_bytes: int = Field(
        64 * MiB,
        ge=0,
        description="Local storage: bytes kept free on the blob volume; new upload bytes are refused with 507 below "
        "it, so the metadata database always has room to commit (0: off).",
    )
    migrate_on_start: bool = Field(True, description="Apply database migrations when the server starts.")
    secret: SecretStr | None = Field(
        None,
        description="Server secret (URL signatures, tokens) as hex or base64, at least 32 bytes; overrides "
        "<data_dir>/secret.key. Every node of a cluster needs the same one.",
    )
    lock_connections: int = Field(
        50, ge=1, description="PostgreSQL only: most connections held for per-upload advisory locks at once."
    )

    # ---- server ----
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, description="TCP port to listen on.")
    server: Literal["uvicorn", "granian"] = Field("uvicorn", description="ASGI server used by `chunkd serve`.")
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest request head (request line + headers), in bytes; past it the server answers 431 "
        "and closes (uvicorn: exact; granian: its read buffer, at least 8 KiB).",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Seconds a connection has to send a complete request head (from its first byte, or from "
        "the connection's start); past it: 408 and close (granian: whole milliseconds, at most 60 s).",
    )
    keep_alive_timeout_seconds: float = Field(
        30.0,
        ge=0,
        description="Seconds an idle keep-alive connection stays open between requests (granian: 0 "
        "turns keep-alive off, any other value keeps its own default).",
    )
    limit_concurrency: int | None = Field(
        1000,
        ge=1,
        description="Most connections plus requests in flight at once per process; past it new requests get "
        "503 (uvicorn), or wait (granian's backpressure). Keep it under the open-files limit (`ulimit -n`). "
        "Unset: unlimited.",
    )
    informational_responses: bool = Field(
        True,
        description="Let routes send informational (1xx) responses, e.g. the resumable-upload draft's 104 "
        "(uvicorn only). Turn off behind a proxy that takes an upstream 1xx for the final response "
        "(nginx 1.22 does).",
    )
    public_url: str | None = Field(
        None, description="Base URL clients reach the server at (for upload URLs); default: taken from the request."
    )
    bootstrap_admin_key: bool = Field(
        True,
        description="On first start with no API keys, create an admin key and write it to "
        "<data_dir>/bootstrap-admin-key (mode 0600; the log shows the path, never the key).",
    )

    tus_path: str = Field(
        "/files",
        pattern=r"^(/[A-Za-z0-9._~-]+)+$",
        description="URL path of the tus 1.0 endpoint (CHUNKD_TUS_PATH).",
    )
    # The IETF resumable-upload draft, spoken at tus_path (docs/tus.md); announced in Upload-Limit.
    resumable_max_append_bytes: int | None = Field(
        None,
        ge=1,
        description="Most bytes one draft creation or append request may carry (max-append-size); unset: no limit.",
    )
    resumable_min_append_bytes: int = Field(
        0,
        ge=0,
        description="Fewest bytes an append that does not complete the upload must carry (min-append-size); "
        "default 0 (no minimum).",
    )
    resumable_progress_bytes: int = Field(
        64 * MiB,
        ge=0,
        description="A draft request body is committed every this many bytes and a 104 with the durable "
        "Upload-Offset sent (interop 5+, when the server can send informational responses); 0: one commit "
        "per request, no progress responses. Default 64 MiB.",
    )

    # ---- operations ----
    access_log: bool = Field(
        True, description="Write one access-log line per request to stdout (logger `chunkd.access`)."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Access-log line format: `text` (logfmt key=value pairs) or `json` (JSON lines)."
    )
    readyz_timeout_seconds: float = Field(
        2.0, gt=0, description="How long GET /readyz waits for the database and for the storage, in seconds."
    )

    # ---- uploads ----
    part_size: int = Field(
        ENGINE.default_part_size, description="Default part size in bytes for new uploads (default 8 MiB)."
    )
    min_part_size: int = Field(
        ENGINE.min_part_size, description="Smallest part size a client may ask for, in bytes (default 256 KiB)."
    )
    max_part_size: int = Field(
        ENGINE.max_part_size, description="Largest part size a client may ask for, in bytes (default 5 GiB)."
    )
    max_file_size: int = Field(ENGINE.max_file_size, description="Largest file accepted, in bytes (default 5 TiB).")
    upload_ttl_seconds: float = Field(
        ENGINE.ttl.total_seconds(),
        description="Idle time after which a PENDING upload expires, in seconds (default 86400: 24 hours); each "
        "part pushes it forward.",
    )
    reaper_interval_seconds: float = Field(
        60.0, description="How often the server looks for expired uploads, in seconds (default 60)."
    )
    lock_timeout_seconds: float = Field(
        ENGINE.lock_timeout, description="How long an operation waits for an upload's lock, in seconds (default 30)."
    )

    # ---- per-owner quotas (unset, the default: unlimited) ----
    max_pending_uploads: int | None = Field(
        ENGINE.max_pending_uploads, description="Most PENDING uploads one owner may hold."
    )
    max_pending_bytes: int | None = Field(
        ENGINE.max_pending_bytes, description="Most bytes one owner's PENDING uploads may declare."
    )
    max_stored_bytes: int | None = Field(
        ENGINE.max_stored_bytes, description="Most bytes one owner may store (completed + pending)."
    )

    # ---- access tokens (JWT) ----
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = Field(
        "HS256",
        description="Signature algorithm of access tokens; the only one accepted (pinned, so `alg: none` and "
        "HS/RS confusion fail). HS256 signs with a key derived from <data_dir>/secret.key.",
    )
    jwt_private_key_file: Path | None = Field(
        None, description="PEM private key (RS256/ES256) chunkd signs its own tokens with; its public half verifies."
    )
    jwt_public_key_file: Path | None = Field(
        None, description="PEM public key (RS256/ES256) that verifies tokens issued elsewhere."
    )
    jwt_jwks_file: Path | None = Field(
        None, description="JWKS JSON file of an identity provider; tokens are verified by the key their `kid` names."
    )
    jwt_issuer: str = Field("chunkd", description="`iss` of tokens chunkd issues, and the only `iss` accepted.")
    jwt_audience: str = Field("chunkd", description="`aud` of tokens chunkd issues, and the `aud` required.")
    jwt_ttl_seconds: int = Field(900, ge=1, description="Lifetime of the access tokens chunkd issues, in seconds.")
    jwt_leeway_seconds: int = Field(30, ge=0, description="Clock skew tolerated on `exp`/`nbf`/`iat`, in seconds.")

    # ---- upload links ----
    upload_link_ttl_seconds: int = Field(
        7 * 24 * 3600, ge=1, description="Lifetime of an upload link created without `expiresIn`, in seconds (7 days)."
    )
    upload_link_max_ttl_seconds: int = Field(
        90 * 24 * 3600, ge=1, description="Longest `expiresIn` an upload link may be given, in seconds (90 days)."
    )

    # ---- abuse protection ----
    rate_limits: str = Field(
        # Sized so one well-behaved client at full speed is never throttled: 1,000 small files a minute
        # through create + part + complete is 2,000 writes; many small parts or PATCHes a second are uploads.
        "read=12000/minute;write=6000/minute;upload=60000/minute",
        description="Per-principal limits by category in the `limits` library's notation, `category=limit[,limit]` "
        "separated by ';'. Categories: read (GET, HEAD, OPTIONS), write, upload (requests with a body to the "
        "routes that take file bytes: parts, chunks, PATCHes; counted as write when not given), and optionally "
        "bytes (body bytes of uploads as they are read, e.g. bytes=10737418240/hour). Empty: no rate limits.",
    )
    rate_limit_strategy: Literal["moving-window", "fixed-window", "sliding-window-counter"] = Field(
        "moving-window", description="How windows are counted (the `limits` library's strategies)."
    )
    redis_url: str | None = Field(
        None, description="redis://host:port/db shared by every node for rate-limit counters; default: in memory."
    )
    trusted_proxies: str = Field(
        "", description="Comma-separated proxy addresses whose X-Forwarded-For names the client (rate-limit keys)."
    )
    cors_origins: str = Field(
        "", description="Comma-separated origins allowed to call the API from a browser ('*' for any); empty: none."
    )
    cors_allow_credentials: bool = Field(
        False, description="Send Access-Control-Allow-Credentials (cookies/HTTP auth); refused together with '*'."
    )
    body_idle_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="A request body that sends nothing for this long is cut off (slowloris); "
        "bytes already durable stay.",
    )
    min_body_rate_bytes_per_second: int = Field(
        1024,
        ge=0,
        description="Slowest request body accepted, in bytes per second, averaged over "
        "min_body_rate_window_seconds of waiting for the client (time the server spends writing is not "
        "counted); a slower body is cut with 408, bytes already durable stay. 0: no minimum.",
    )
    min_body_rate_window_seconds: float = Field(
        30.0, gt=0, description="Window (seconds of waiting for the body) the minimum body rate is averaged over."
    )
    min_body_rate_grace_seconds: float = Field(
        30.0,
        ge=0,
        description="Seconds of waiting for a body before the minimum rate is first checked (slow starts).",
    )
    max_form_body_bytes: int = Field(
        1 * MiB, ge=1, description="Largest JSON or url-encoded request body, in bytes (byte uploads excluded)."
    )

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> Settings:
        if self.cors_allow_credentials and "*" in self.cors_origin_list():
            raise ValueError("cors_origins '*' cannot be combined with cors_allow_credentials")
        return self

    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    # ---- media API (/api/v2/media; "MB" read as MiB, as S3 and Django count sizes) ----
    media_max_image_bytes: int = Field(5 * MiB, description="Largest image (type image or eimage), in bytes (5 MiB).")
    media_max_document_bytes: int = Field(50 * MiB, description="Largest document (type doc, PDF), in bytes (50 MiB).")
    media_max_chunk_bytes: int = Field(
        204_800, description="Largest chunk one media upload request may carry, in bytes."
    )
    media_url_ttl_seconds: float = Field(
        3600.0, description="Lifetime of the signed file URL in a Media object's image field (usable in <img>)."
    )
    media_max_image_pixels: int = Field(
        89_478_485, description="Images with more pixels are refused as decompression bombs (Pillow's default)."
    )
    # Inspection (Pillow, pypdf) parses hostile files: it runs in worker processes of its own with
    # these limits (chunkd.service.inspection); passing one refuses the file with a 400.
    media_inspect_workers: int = Field(
        2, ge=1, le=64, description="Worker processes that inspect images and PDFs (more wait their turn)."
    )
    media_inspect_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Wall time one inspection may take, in seconds; past it the worker is killed and the file "
        "refused. Its CPU time is capped at this, rounded up, plus one second.",
    )
    media_inspect_memory_bytes: int = Field(
        512 * MiB,
        ge=128 * MiB,
        description="Address space of an inspection worker, in bytes (512 MiB; the interpreter and parsers take "
        "about 60 MiB of it).",
    )
    media_max_pdf_pages: int = Field(
        10_000, ge=1, description="PDFs with more pages are refused (a page tree is walked page by page)."
    )

    # ---- asset API (/asset) ----
    asset_part_size: int = Field(
        100 * MiB, description="Part size of multipart assets in bytes; files up to this size take one PUT (100 MiB)."
    )
    asset_url_ttl_seconds: float = Field(
        3600.0, description="Lifetime of the signed upload URLs handed out for assets."
    )

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
        DELIVERY.concurrency, ge=1, description="Deliveries one node sends at the same time (default 8)."
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

    @field_validator("webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            text = value.get_secret_value()
            try:
                raw = base64.b64decode(text.removeprefix("whsec_"), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("CHUNKD_WEBHOOK_SECRET must be whsec_ followed by base64") from None
            if not text.startswith("whsec_") or len(raw) < 24:
                raise ValueError("CHUNKD_WEBHOOK_SECRET must be whsec_<base64 of at least 24 bytes>")
        return value

    @model_validator(mode="after")
    def _webhook_urls_need_secret(self) -> Settings:
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
            block_private=self.webhook_block_private,
        )

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _decode_secret(value.get_secret_value())
        return value

    def secret_bytes(self) -> bytes:
        """The decoded ``secret`` (only call when it is set)."""
        assert self.secret is not None
        return _decode_secret(self.secret.get_secret_value())

    # ---- S3-compatible storage (CHUNKD_STORAGE=s3) ----
    s3_endpoint: str | None = Field(
        None, description="S3 endpoint URL (e.g. http://127.0.0.1:7480); default: AWS's endpoint for the region."
    )
    s3_bucket: str | None = Field(None, description="Bucket holding every object chunkd writes (must exist).")
    s3_region: str = Field("us-east-1", description="Region used to sign requests.")
    s3_access_key: str | None = Field(
        None, description="Access key id; unset: the standard AWS credential chain (env, profile, instance role)."
    )
    s3_secret_key: str | None = Field(None, description="Secret access key (with s3_access_key).")
    s3_prefix: str = Field("", description="Key prefix for all objects, e.g. 'chunkd/' (empty: bucket root).")
    s3_presigned_downloads: bool = Field(
        False, description="Redirect downloads (307) to a presigned S3 GET instead of streaming them through chunkd."
    )
    s3_presign_seconds: int = Field(300, description="Lifetime of a presigned download URL, in seconds.")
    s3_max_connections: int = Field(32, description="HTTP connections (and worker threads) to S3 per process.")

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'chunkd.db').resolve()}"

    def media_limits(self) -> MediaLimits:
        return MediaLimits(
            image_bytes=self.media_max_image_bytes,
            document_bytes=self.media_max_document_bytes,
            chunk_bytes=self.media_max_chunk_bytes,
        )

    def inspection_limits(self) -> InspectionLimits:
        return InspectionLimits(
            workers=self.media_inspect_workers,
            timeout_seconds=self.media_inspect_timeout_seconds,
            memory_bytes=self.media_inspect_memory_bytes,
            max_pdf_pages=self.media_max_pdf_pages,
            max_image_pixels=self.media_max_image_pixels,
        )

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            default_part_size=self.part_size,
            min_part_size=self.min_part_size,
            max_part_size=self.max_part_size,
            max_file_size=self.max_file_size,
            ttl=timedelta(seconds=self.upload_ttl_seconds),
            lock_timeout=self.lock_timeout_seconds,
            max_pending_uploads=self.max_pending_uploads,
            max_pending_bytes=self.max_pending_bytes,
            max_stored_bytes=self.max_stored_bytes,
        )
