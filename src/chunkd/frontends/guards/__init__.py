"""ASGI middleware shared by every frontend, applied to the whole app so that routes added by any
frontend (native, tus, seed APIs, web) get them without asking: CORS, rate limits, and the request
body guard (size caps and the slow-client idle timeout), and before them all the request-target and
Host check.

Order, outermost first: Host and request-target → CORS (preflights answered without credentials; CORS
headers also on 429s) → rate limits (after authentication, keyed by owner or client address) → body guard → the app."""

from __future__ import annotations

from fastapi import FastAPI

from chunkd.frontends.guards.body import BodyGuard
from chunkd.frontends.guards.cors import install_cors
from chunkd.frontends.guards.ratelimit import RateLimitMiddleware, category_for
from chunkd.frontends.guards.target import RequestTargetGuard
from chunkd.frontends.native.errors import refusal_response
from chunkd.settings import Settings

__all__ = ["BodyGuard", "RateLimitMiddleware", "RequestTargetGuard", "category_for", "install_guards"]


def install_guards(app: FastAPI, settings: Settings) -> None:
    """Add the shared middleware to ``app`` (innermost first, as Starlette stacks them)."""
    app.add_middleware(
        BodyGuard,
        idle_timeout=settings.body_idle_timeout_seconds,
        max_form_bytes=settings.max_form_body_bytes,
        min_rate=settings.min_body_rate_bytes_per_second,
        rate_window=settings.min_body_rate_window_seconds,
        rate_grace=settings.min_body_rate_grace_seconds,
    )
    if settings.rate_limits.strip():
        app.add_middleware(RateLimitMiddleware, settings=settings, default_renderer=refusal_response)
    install_cors(app, settings)
    app.add_middleware(RequestTargetGuard)
