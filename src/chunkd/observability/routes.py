"""``GET /metrics`` (Prometheus text format, scope ``metrics:read``) and ``GET /readyz``."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from chunkd.domain.errors import StorageError
from chunkd.frontends.http import dialect_route, principal, runtime
from chunkd.frontends.native.errors import render_error
from chunkd.metrics import CONTENT_TYPE, Metrics

__all__ = ["router"]

log = logging.getLogger("chunkd.metrics")


async def _render(_: Request, exc: Exception) -> Response | None:
    return render_error(exc)


router = APIRouter(tags=["operations"], route_class=dialect_route(_render))


@router.get(
    "/metrics",
    summary="Prometheus metrics of this node (scope metrics:read)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text exposition format."}},
)
async def metrics(request: Request) -> Response:
    """Counters and histograms of this process (each node exposes its own: scrape every node),
    and the number of PENDING uploads in the database."""
    await principal(request, "metrics:read")
    rt = runtime(request)
    try:
        pending: int | None = await rt.repo.count_pending()
    except StorageError as exc:
        # The database is away: still expose the counters; one line per scrape, no traceback
        # (every scrape interval, for as long as the outage lasts).
        log.warning("metrics: counting pending uploads failed: %s", exc)
        pending = None
    except Exception:  # not an outage: a fault, with its traceback
        log.warning("metrics: counting pending uploads failed", exc_info=True)
        pending = None
    registry: Metrics = rt.metrics
    return Response(registry.render(pending=pending), media_type=CONTENT_TYPE)


@router.api_route(
    "/readyz",
    methods=["GET", "HEAD"],  # HEAD too (RFC 9110 §9.3.2), as load balancers probe
    summary="Readiness: the database and the storage answer",
    include_in_schema=False,
)
async def readyz(request: Request) -> JSONResponse:
    """200 when the database and the storage both answer; 503 naming the part that does not.
    Unauthenticated and not rate limited (for load balancers and orchestrators)."""
    checks = await runtime(request).readiness.check()
    failing = sorted(name for name, result in checks.items() if result != "ok")
    body = {"status": "unavailable" if failing else "ok", "failing": failing, "checks": checks}
    return JSONResponse(body, status_code=503 if failing else 200, headers={"Cache-Control": "no-store"})
