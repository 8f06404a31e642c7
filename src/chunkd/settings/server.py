"""How ``chunkd serve`` listens and answers: address, request-head and connection limits, the tus
endpoint and the IETF draft's append limits, the access log and readiness."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from chunkd.settings.units import MiB, http_url

__all__ = ["ServerSettings"]


class ServerSettings(BaseModel):
    """The server and operations settings."""

    @model_validator(mode="after")
    def _workers_need_uvicorn(self) -> ServerSettings:
        # The processes of --workers share take-over requests and metrics through chunkd's own
        # supervisor, which runs uvicorn; granian's workers would not.
        if self.workers > 1 and self.server != "uvicorn":
            raise ValueError("workers: more than one server process needs server=uvicorn")
        return self

    # ---- server ----
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, description="TCP port to listen on.")
    server: Literal["uvicorn", "granian"] = Field("uvicorn", description="ASGI server used by `chunkd serve`.")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Server processes sharing the listening socket (uvicorn only). More than one uses more "
        "cores for many concurrent uploads; each process costs its own memory (~100 MiB), and rate-limit "
        "counters are kept per process unless CHUNKD_REDIS_URL names a shared store.",
    )
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
    send_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="A response (a download) whose client takes less than min_body_rate_bytes_per_second "
        "(at least one byte) over this many seconds is cut off: a client that stops reading held its "
        "connection slot and a few MiB of memory for ever (uvicorn only).",
    )
    shutdown_grace_seconds: float = Field(
        30.0,
        ge=0,
        description="After SIGTERM, seconds requests still in flight may take to finish before their "
        "connections are closed (uvicorn; bytes already durable stay). A trickling upload held shutdown "
        "for as long as it lasted.",
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
        "503 with Retry-After: 1 (uvicorn), or wait (granian's backpressure). Keep it under the open-files "
        "limit (`ulimit -n`). Unset: unlimited.",
    )
    informational_responses: bool | Literal["auto"] = Field(
        "auto",
        description="Let routes send informational (1xx) responses, e.g. the resumable-upload draft's 104 "
        "(uvicorn only): `auto` to requests that came through no proxy (none of X-Forwarded-For, Forwarded "
        "or Via), as nginx 1.22 takes an upstream 1xx for the final response; `true` always (behind a proxy "
        "that relays 1xx responses); `false` never.",
    )
    public_url: str | None = Field(
        None,
        description="Base URL clients reach the server at (for upload URLs), http(s)://host[:port][/path]; default: "
        "taken from the request.",
    )

    @field_validator("public_url")
    @classmethod
    def _public_url_is_http(cls, value: str | None) -> str | None:
        # Anything else became the start of every upload URL handed out ("not a url/v1/files/…").
        return http_url(value, base=True)

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
