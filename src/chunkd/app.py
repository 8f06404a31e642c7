"""``create_app(settings)``: builds the runtime on start-up, mounts every frontend, runs the reaper."""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chunkd.domain.errors import StorageError
from chunkd.frontends.assets.errors import refusal_response as asset_refusal
from chunkd.frontends.assets.router import router as assets_router
from chunkd.frontends.guards import install_guards
from chunkd.frontends.http.routes import DirectRoutes
from chunkd.frontends.media.errors import refusal_response as media_refusal
from chunkd.frontends.media.router import router as media_router
from chunkd.frontends.native.auth import keys_router, seed_token_router, token_router
from chunkd.frontends.native.errors import install_error_handlers
from chunkd.frontends.native.router import router as native_router
from chunkd.frontends.native.usage import usage_router
from chunkd.frontends.native.webhooks import webhooks_router
from chunkd.frontends.openapi import install_openapi
from chunkd.frontends.pm.errors import refusal_response as pm_refusal
from chunkd.frontends.pm.router import BASE as PM_BASE
from chunkd.frontends.pm.router import router as pm_router
from chunkd.frontends.refusals import register_dialect
from chunkd.frontends.tus import build_router as build_tus_router
from chunkd.frontends.tus.draft_errors import register_draft_refusals
from chunkd.frontends.tus.errors import refusal_response as tus_refusal
from chunkd.frontends.web.links import router as links_router
from chunkd.frontends.web.router import router as web_router
from chunkd.memory import limit_malloc_arenas, tune_collector
from chunkd.metrics import Metrics
from chunkd.observability.access import AccessLog, configure_access_logger
from chunkd.observability.docs import install_docs
from chunkd.observability.logformat import json_line
from chunkd.observability.routes import router as operations_router
from chunkd.runtime import Runtime, bootstrap_admin_key, open_runtime, write_bootstrap_key
from chunkd.service.virusscan import clamd_problem
from chunkd.service.waiting import until_set
from chunkd.settings import Settings

__all__ = ["ChunkdApp", "create_app"]

log = logging.getLogger("chunkd")
# How long the shutdown waits for cancelled requests to finish their clean-up before it closes the stores.
REQUEST_DRAIN_SECONDS = 10.0
CLAMD_PING_SECONDS = 2.0  # a start does not wait longer on an unreachable scanner
HISTORY_EVERY_SECONDS = 3600.0  # how often the reaper forgets events past their retention
startup_log = logging.getLogger("chunkd.startup")  # shown by `chunkd serve` (server/run.py:log_config)

try:
    VERSION = version("chunkd")
except PackageNotFoundError:  # running from a source tree
    VERSION = "0.0.0"


class SecurityHeaders:
    """``X-Content-Type-Options: nosniff`` on every response, so no uploaded byte is ever
    sniffed into something a browser would run."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-content-type-options" for k, _ in headers):
                    headers.append((b"x-content-type-options", b"nosniff"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ChunkdApp(FastAPI):
    """FastAPI with the access log wrapped around the whole middleware stack, Starlette's error
    middleware included, so that a request that ends in a 500 is logged and counted too."""

    access_log: AccessLog | None = None

    def build_middleware_stack(self) -> ASGIApp:
        # Built at the first request, when every route is in: plain routes are called directly.
        if not isinstance(self.router.middleware_stack, DirectRoutes):
            self.router.middleware_stack = DirectRoutes(self.router, self.router.middleware_stack)
        stack = super().build_middleware_stack()
        if self.access_log is None:
            return stack
        self.access_log.app = stack
        return self.access_log


def _frontend_prefixes(settings: Settings) -> dict[str, str]:
    """Route-template prefix → frontend name (the ``frontend`` label of the bytes counter)."""
    return {
        "/v1/files": "native",
        settings.tus_path: "tus",
        "/api/v2/pm": "pm",
        "/api/v2/media": "media",
        "/asset": "assets",
    }


async def _reap_until(runtime: Runtime, stopping: asyncio.Event) -> None:
    """Expire idle uploads every ``reaper_interval_seconds``, remove orphaned blobs every
    ``orphan_sweep_interval_seconds`` (the first time at start: a crash's leftovers) and forget
    events past ``event_retention_days`` every ``HISTORY_EVERY_SECONDS``, until
    ``stopping`` is set; a sweep that has begun ends its batch first (cancelled inside a
    transaction, a database driver's connection can be left waiting for ever, as the delivery
    worker's once was)."""
    settings = runtime.settings
    interval, orphans_every = settings.reaper_interval_seconds, settings.orphan_sweep_interval_seconds
    orphans_due = history_due = time.monotonic()
    retention = timedelta(days=settings.event_retention_days)

    async def expire() -> None:
        while await runtime.uploads.expire_due(limit=200) == 200 and not stopping.is_set():
            pass

    async def sweep_orphans() -> None:
        if removed := await runtime.uploads.sweep_orphans(settings.orphan_grace_seconds):
            # Bytes removed from the store: always said (the server's log shows warnings).
            log.warning("removed %d orphaned blob(s) no upload record points at", removed)

    async def forget_events() -> None:
        if forgotten := await runtime.webhooks.forget_old_events(retention):
            log.info(
                "forgot %d event(s) older than %g days, with their deliveries", forgotten, settings.event_retention_days
            )

    while not stopping.is_set():
        await _logged("expiry sweep", expire)
        if orphans_every and time.monotonic() >= orphans_due and not stopping.is_set():
            orphans_due = time.monotonic() + orphans_every
            await _logged("orphaned-blob sweep", sweep_orphans)
        if retention and time.monotonic() >= history_due and not stopping.is_set():
            history_due = time.monotonic() + HISTORY_EVERY_SECONDS
            await _logged("event history clean-up", forget_events)
        await until_set(stopping, interval)


async def _logged(what: str, job: Callable[[], Awaitable[None]]) -> None:
    """One of the reaper's jobs; a failure is logged and the reaper goes on: the database or
    storage away is one line a run, no traceback; any other error (transient) with its traceback."""
    try:
        await job()
    except StorageError as exc:
        log.warning("%s failed: %s", what, exc)
    except Exception:
        log.exception("%s failed", what)


async def _say_whether_clamd_answers(settings: Settings) -> None:
    """The start says whether the virus scanner answers: set to the wrong place (or not started), it
    would otherwise show only when the first completion is refused. Not a reason to refuse the start:
    clamd may come up after chunkd, and completions wait for it (409 ``scan_unavailable``)."""
    assert settings.clamd is not None
    problem = await clamd_problem(settings.clamd, min(settings.clamd_timeout_seconds, CLAMD_PING_SECONDS))
    if problem is None:
        startup_log.info("virus scan: clamd at %s answers", settings.clamd)
    else:
        startup_log.warning(
            "virus scan: clamd at %s does not answer (%s); completions are %s until it does",
            settings.clamd,
            problem,
            "let through unscanned" if settings.clamd_failure == "allow" else "refused (409 scan_unavailable)",
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    limit_malloc_arenas()  # before any worker thread exists (see chunkd.memory)
    # The media-type table is read from /etc/mime.types on first use: on a server out of file
    # descriptors, the first upload's name guess was a 500 ("Too many open files"), not the 503
    # any other request gets. Read now, while descriptors are plentiful.
    mimetypes.init()
    metrics = Metrics()  # one registry per app (see chunkd.metrics)
    if settings.access_log:
        configure_access_logger()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await open_runtime(settings, metrics=metrics)
        app.state.chunkd = runtime
        startup_log.info(
            "storage %s, capabilities: %s",
            settings.storage,
            ", ".join(runtime.uploads.caps.names()) or "none beyond the required interface",
        )
        if settings.clamd:
            await _say_whether_clamd_answers(settings)
        if settings.bootstrap_admin_key:
            token = await bootstrap_admin_key(runtime)
            if token:
                where = write_bootstrap_key(settings.data_dir, token)
                created = (
                    f"chunkd: created an admin API key; it is in {where.resolve()} (readable by this user only): "
                    "store it elsewhere and delete the file"
                )
                if settings.log_format == "json":
                    created = json_line("WARNING", startup_log.name, created)
                print(created, file=sys.stderr, flush=True)
        # Operator endpoints follow the settings (CHUNKD_WEBHOOK_URLS) at every start.
        await runtime.webhooks.repo.sync_operator_endpoints(settings.webhook_url_list(), runtime.uploads.clock())
        stop_reaping = asyncio.Event()
        reaper = asyncio.create_task(_reap_until(runtime, stop_reaping))
        delivery = asyncio.create_task(runtime.delivery.run_forever())
        tune_collector()
        try:
            yield
        finally:
            # Requests the server cancelled at the end of its shutdown grace still run their
            # clean-up (releasing locks, aborting writers): the stores and locks close after it.
            requests = app.access_log if isinstance(app, ChunkdApp) else None
            if requests is not None and not await requests.drained(REQUEST_DRAIN_SECONDS):
                log.warning("closing with %d request(s) still in flight", requests.active)
            # Both background tasks end what they are doing (a delivery round is bounded by the
            # delivery timeout; an expiry batch never waits for a lock) rather than being cancelled
            # inside a database transaction; the cancel below only ends one that overruns that.
            stop_reaping.set()
            runtime.delivery.stop()
            await asyncio.wait({reaper, delivery}, timeout=runtime.delivery.policy.timeout + 5)
            for task in (reaper, delivery):
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except Exception:  # a database call cut short by the cancellation: shut down anyway
                    log.exception("background task failed while stopping")
            await runtime.close()

    app = ChunkdApp(
        title="chunkd",
        version=VERSION,
        summary="Resumable, chunked, checksummed uploads onto your own storage.",
        lifespan=lifespan,
        docs_url=None,  # install_docs serves both pages with local assets instead of a CDN's
        redoc_url=None,
    )
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(native_router)
    app.include_router(usage_router)
    app.include_router(token_router)
    app.include_router(seed_token_router)
    app.include_router(keys_router)
    app.include_router(webhooks_router)
    app.include_router(build_tus_router(settings.tus_path))
    app.include_router(media_router)
    app.include_router(assets_router)
    app.include_router(pm_router)
    app.include_router(links_router)
    app.include_router(web_router)

    app.include_router(operations_router)
    # Refusals made by the shared guards before a route runs, in the dialect of the path.
    register_draft_refusals(app, settings.tus_path)  # the IETF draft shares tus's path: first
    register_dialect(app, settings.tus_path, tus_refusal)
    register_dialect(app, media_router.prefix, media_refusal)
    register_dialect(app, assets_router.prefix, asset_refusal)
    register_dialect(app, PM_BASE, pm_refusal)
    register_dialect(app, seed_token_router.prefix, asset_refusal)  # seed 003's token route

    # HEAD too (RFC 9110 §9.3.2): load balancers probe with it, and FastAPI adds none to a GET.
    @app.api_route("/healthz", methods=["GET", "HEAD"], include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness only: the process answers (readiness, with dependencies: /readyz)."""
        return {"status": "ok"}

    install_openapi(app)
    install_docs(app, title="chunkd")
    install_guards(app, settings)
    app.add_middleware(SecurityHeaders)
    # Outside everything, Starlette's error middleware included (see ChunkdApp).
    app.access_log = AccessLog(
        app.router,  # replaced by the built stack in ChunkdApp.build_middleware_stack
        metrics=metrics,
        frontends=_frontend_prefixes(settings),
        log_format=settings.log_format,
        enabled=settings.access_log,
    )
    return app
