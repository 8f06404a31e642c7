"""Prometheus metrics of one chunkd process, in a registry of its own.

Each app (``create_app``) makes one ``Metrics``; ``GET /metrics`` renders it. A registry per app,
not prometheus_client's global one, so that several apps in one process (tests, embedding) keep
separate counts. A node exposes one set of series: with several nodes, scrape every node and add
them up in PromQL (``sum by (route) (...)``). The workers of ``chunkd serve --workers N`` are one
node: they count in prometheus_client's multi-process mode (``PROMETHEUS_MULTIPROC_DIR``, set by
the supervisor), and any of them renders the sum of all; the ``process_*``/``python_*`` series,
which would describe only the worker that answered, are left out then.

What is counted, and who counts it:

==========================================  ================================================
``chunkd_http_requests_total``              the access-log middleware, once per request
  ``{route, method, status}``               (``route`` is the route template, never the path)
``chunkd_http_request_duration_seconds``    the same middleware (histogram by ``route``)
``chunkd_bytes_received_total{frontend}``   the same middleware, as upload bodies are read
``chunkd_uploads_created_total{frontend}``  the engine's ``created`` event (``on_upload_event``)
``chunkd_uploads_finished_total``           the engine's completed / cancelled / rejected /
  ``{frontend, status}``                    expired / deleted events: one per lifecycle event
                                            the outbox records (a completed upload deleted
                                            later counts under both)
``chunkd_uploads_pending``                  a database count taken at scrape time (so it is
                                            the cluster's total: every node reports the same)
``chunkd_webhook_deliveries_total{result}`` ``Metrics.webhook_delivery(result)``
``chunkd_hook_invocations_total``           ``Metrics.hook_invocation(hook, result)``
  ``{hook, result}``
``chunkd_media_inspections_total``          ``Metrics.media_inspection(kind, outcome, seconds)``,
  ``{kind, outcome}``                       called by the inspection pool for each file
``chunkd_media_inspection_duration_seconds``  the same call: a worker's time (histogram by ``kind``)
``chunkd_media_inspections_waiting``        ``Metrics.media_inspection_occupancy(waiting,
``chunkd_media_inspections_running``        running)``, at each change of the pool's queue
==========================================  ================================================

The functions for other modules (webhook delivery, blocking hooks, virus scanning, media
inspection) are ``webhook_delivery``, ``hook_invocation``, ``media_inspection`` and
``media_inspection_occupancy``; they are cheap and never raise for an unknown label
value (it is counted as ``other``, so label cardinality stays bounded whatever a caller passes).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from chunkd.domain.upload import Upload
from chunkd.service.inspection import OUTCOMES as INSPECTION_OUTCOMES

__all__ = [
    "CONTENT_TYPE",
    "FINISH_EVENTS",
    "FRONTENDS",
    "HOOKS",
    "HOOK_RESULTS",
    "INSPECTION_KINDS",
    "INSPECTION_OUTCOMES",
    "WEBHOOK_RESULTS",
    "Metrics",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Known label values; anything else is counted as "other" (bounded cardinality).
FRONTENDS = ("native", "tus", "pm", "media", "assets")
# ``rejected``: cancelled by a pre-finish check that refused the content for good (the virus scan).
FINISH_EVENTS = ("completed", "cancelled", "rejected", "expired", "deleted")
#: ``result`` of one webhook delivery attempt: the receiver answered 2xx (``delivered``), answered
#: something else (``failed``), or could not be reached / timed out (``error``).
WEBHOOK_RESULTS = ("delivered", "failed", "error")
#: Blocking hooks and built-in checks (``clamav``: the virus scan run as a pre-finish check).
HOOKS = ("pre-create", "pre-finish", "pre-download", "clamav")
#: ``result`` of one hook call: the hook let the request go on (``accepted``), refused it
#: (``rejected``), or failed (``error``: timeout, bad answer, unreachable).
HOOK_RESULTS = ("accepted", "rejected", "error")
OTHER = "other"
#: ``kind`` of a media inspection (the outcomes are the inspection pool's own, ``INSPECTION_OUTCOMES``).
INSPECTION_KINDS = ("image", "pdf")

# Request durations from 1 ms to 5 min: metadata calls take milliseconds, a part of hundreds of
# MiB over a slow link takes minutes.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


# A worker's time for one file: a PNG's header takes about a millisecond, a hostile PDF up to the
# timeout (CHUNKD_MEDIA_INSPECT_TIMEOUT_SECONDS, 10 s by default).
INSPECTION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _known(value: str, known: Iterable[str]) -> str:
    return value if value in known else OTHER


class Metrics:
    """Every metric of one app, and the calls that change them."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # What /metrics renders: this registry, or every worker's counts (multi-process mode).
        self.exposed = r
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if shared:
            from prometheus_client.multiprocess import MultiProcessCollector

            self.exposed = CollectorRegistry()
            MultiProcessCollector(self.exposed, path=shared)  # type: ignore[no-untyped-call]
            process_metrics = False
        self.http_requests = Counter(
            "chunkd_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "chunkd_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response, by route template.",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.bytes_received = Counter(
            "chunkd_bytes_received",
            "Request body bytes of uploads (parts, chunks, PATCHes) read, by frontend.",
            ["frontend"],
            registry=r,
        )
        self.uploads_created = Counter(
            "chunkd_uploads_created", "Uploads created, by frontend.", ["frontend"], registry=r
        )
        self.uploads_finished = Counter(
            "chunkd_uploads_finished",
            "Uploads that reached an end: completed, cancelled, rejected, expired or deleted, by frontend.",
            ["frontend", "status"],
            registry=r,
        )
        self.uploads_pending = Gauge(
            "chunkd_uploads_pending",
            "PENDING uploads in the database at scrape time (all nodes together).",
            registry=r,
            multiprocess_mode="mostrecent",  # workers: the one that scraped last
        )
        self.webhook_deliveries = Counter(
            "chunkd_webhook_deliveries", "Webhook delivery attempts, by result.", ["result"], registry=r
        )
        self.hook_invocations = Counter(
            "chunkd_hook_invocations", "Blocking hook calls, by hook and result.", ["hook", "result"], registry=r
        )
        self.media_inspections = Counter(
            "chunkd_media_inspections",
            "Media files inspected (images, PDFs), by kind and outcome.",
            ["kind", "outcome"],
            registry=r,
        )
        self.media_inspection_duration = Histogram(
            "chunkd_media_inspection_duration_seconds",
            "Time an inspection worker spent on one file, by kind (queue wait not included).",
            ["kind"],
            buckets=INSPECTION_BUCKETS,
            registry=r,
        )
        self.media_inspections_waiting = Gauge(
            "chunkd_media_inspections_waiting",
            "Media files waiting for an inspection worker (the queue CHUNKD_MEDIA_INSPECT_QUEUE bounds).",
            registry=r,
            multiprocess_mode="livesum",  # workers: each one's queue, added up
        )
        self.media_inspections_running = Gauge(
            "chunkd_media_inspections_running",
            "Media files an inspection worker is working on now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        if process_metrics:
            # The standard process_*/python_* series (CPU, memory, fds, GC), for this registry.
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        # Series that exist from the start (at 0), so rate() and absent() behave from the first scrape.
        for result in WEBHOOK_RESULTS:
            self.webhook_deliveries.labels(result)
        for frontend in FRONTENDS:
            self.uploads_created.labels(frontend)
            self.bytes_received.labels(frontend)
            for status in FINISH_EVENTS:
                self.uploads_finished.labels(frontend, status)
        for kind in INSPECTION_KINDS:
            self.media_inspection_duration.labels(kind)
            for outcome in INSPECTION_OUTCOMES:
                self.media_inspections.labels(kind, outcome)
        self._byte_counters = {f: self.bytes_received.labels(f) for f in (*FRONTENDS, OTHER)}
        # Children of the per-request series, cached: ``labels()`` validates and locks on each call.
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}

    # ---- for the HTTP middleware ----------------------------------------------------------
    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request (``route``: the template, from a bounded set)."""
        key = (route, method, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.http_requests.labels(route, method, str(status))
        counter.inc()
        histogram = self._duration_children.get(route)
        if histogram is None:
            histogram = self._duration_children[route] = self.http_duration.labels(route)
        histogram.observe(seconds)

    def body_bytes(self, frontend: str, count: int) -> None:
        """``count`` bytes of an upload body read for ``frontend``."""
        self._byte_counters.get(frontend, self._byte_counters[OTHER]).inc(count)

    # ---- for the engine's events ----------------------------------------------------------
    async def on_upload_event(self, event: str, upload: Upload) -> None:
        """Listener for ``UploadService.subscribe``: counts creations and ends of uploads."""
        frontend = _known(upload.frontend, FRONTENDS)
        if event == "created":
            self.uploads_created.labels(frontend).inc()
        elif event in FINISH_EVENTS:
            self.uploads_finished.labels(frontend, event).inc()

    # ---- for webhooks and hooks -------------------------------------------------------------
    def webhook_delivery(self, result: str) -> None:
        """Count one webhook delivery attempt; ``result`` is one of ``WEBHOOK_RESULTS``."""
        self.webhook_deliveries.labels(_known(result, WEBHOOK_RESULTS)).inc()

    def hook_invocation(self, hook: str, result: str) -> None:
        """Count one call of a blocking hook; ``hook`` one of ``HOOKS``, ``result`` one of ``HOOK_RESULTS``."""
        self.hook_invocations.labels(_known(hook, HOOKS), _known(result, HOOK_RESULTS)).inc()

    # ---- for media inspection ---------------------------------------------------------------
    def media_inspection(self, kind: str, outcome: str, seconds: float | None) -> None:
        """One file inspected: ``kind`` one of ``INSPECTION_KINDS``, ``outcome`` one of
        ``INSPECTION_OUTCOMES``, ``seconds`` a worker's time (None: it never reached a worker)."""
        kind = _known(kind, INSPECTION_KINDS)
        self.media_inspections.labels(kind, _known(outcome, INSPECTION_OUTCOMES)).inc()
        if seconds is not None:
            self.media_inspection_duration.labels(kind).observe(seconds)

    def media_inspection_occupancy(self, waiting: int, running: int) -> None:
        """The inspection pool's jobs waiting for a worker and running, after a change."""
        self.media_inspections_waiting.set(waiting)
        self.media_inspections_running.set(running)

    # ---- exposition -----------------------------------------------------------------------
    def render(self, *, pending: int | None) -> bytes:
        """The registry in Prometheus text format; ``pending``: the count of PENDING uploads just
        read from the database (None: the database did not answer; the gauge keeps its last value)."""
        if pending is not None:
            self.uploads_pending.set(pending)
        return generate_latest(self.exposed)
