"""Who may do what, and how much: access tokens (JWT), rate limits, CORS and the request-body
guards."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, Field, field_validator, model_validator

from chunkd.settings.units import MiB

__all__ = ["AccessSettings"]


class AccessSettings(BaseModel):
    """The token, rate-limit, CORS and body-guard settings."""

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

    # ---- abuse protection ----
    rate_limits: str = Field(
        # Sized so one well-behaved client at full speed is never throttled: 600 small files a second
        # (what @tus/server sustains here) through create + part + complete is 72,000 writes a minute;
        # parts and PATCHes count as uploads. Abuse is bounded by quotas and body guards, not these.
        "read=120000/minute;write=120000/minute;upload=120000/minute",
        description="Per-principal limits by category in the `limits` library's notation, `category=limit[,limit]` "
        "separated by ';'. Categories: read (GET, HEAD, OPTIONS), write, upload (requests with a body to the "
        "routes that take file bytes: parts, chunks, PATCHes; counted as write when not given), and optionally "
        "bytes (body bytes of uploads as they are read, e.g. bytes=10737418240/hour). Empty: no rate limits.",
    )
    auth_failure_limit: str = Field(
        "600/minute",
        description="Failed authentications (unknown, revoked or expired API keys, wrong secrets, bad link tokens) "
        "one client address may make, per node, in the `limits` library's notation (e.g. 600/minute). Past it, "
        "a request from that address whose credentials would need a database lookup (an API key not held in "
        "the key cache, a link token) gets 429 without one, until the window frees room; credentials memory can "
        "answer (a key in use, an access token) still pass. Empty: no limit.",
    )
    rate_limit_strategy: Literal["moving-window", "fixed-window", "sliding-window-counter"] = Field(
        "moving-window", description="How windows are counted (the `limits` library's strategies)."
    )
    redis_url: str | None = Field(
        None, description="redis://host:port/db shared by every node for rate-limit counters; default: in memory."
    )
    trusted_proxies: str = Field(
        "",
        description="Comma-separated proxy addresses or networks (10.0.0.0/8; '*': any peer) whose X-Forwarded-For "
        "names the client (rate-limit keys, the access log) and whose X-Forwarded-Proto the scheme of the URLs "
        "handed out; empty: no one's.",
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

    @field_validator("rate_limits")
    @classmethod
    def _rate_limits_parse(cls, value: str) -> str:
        # Checked at start: the guard made from it at the first request failed every request (a
        # 500, /healthz included) for as long as the server ran.
        from chunkd.auth.ratelimit import parse_rate_limits  # the one parser (here, settings load without it)

        parse_rate_limits(value)
        return value

    @field_validator("auth_failure_limit")
    @classmethod
    def _auth_failure_limit_parses(cls, value: str) -> str:
        from limits import parse_many

        if value.strip():
            parse_many(value)  # ValueError names what is wrong
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies_are_addresses(cls, value: str) -> str:
        # Addresses or networks, as uvicorn's forwarded_allow_ips takes them ("*": any peer).
        for entry in (e.strip() for e in value.split(",")):
            if entry and entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"trusted_proxies: {entry[:100]!r} is not an IP address or network") from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            scheme, sep, rest = value.strip().removeprefix("async+").partition("://")
            if not sep or not rest or not scheme.startswith(("redis", "valkey")):
                raise ValueError(f"redis_url {value[:100]!r} is not a redis:// (or rediss://, redis+unix://, ...) URL")
        return value

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> Self:
        if self.cors_allow_credentials and "*" in self.cors_origin_list():
            raise ValueError("cors_origins '*' cannot be combined with cors_allow_credentials")
        return self

    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]
