"""GET /metrics after a scripted workload: exact counts, parsed with prometheus_client's own parser."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from chunkd.app import create_app
from chunkd.backends.repository.sqlalchemy.tables import events
from chunkd.domain.upload import Upload
from chunkd.metrics import FINISH_EVENTS, FRONTENDS, INSPECTION_KINDS, INSPECTION_OUTCOMES, Metrics
from chunkd.service.hooks import ContentRejected, rejection
from chunkd.settings import Settings
from tests.conftest import Api
from tests.support.postgres import PostgresServer, find_pg_bin

TUS = {"Tus-Resumable": "1.0.0"}


async def scrape(api: Api, key: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``{(sample name, labels): value}`` of one scrape."""
    response = await api.client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_a_scripted_workload_exactly(api: Api) -> None:
    _, ops_key = await api.runtime.keys.create("ops", "metrics:read")
    auth = api.auth("alice")
    c = api.client
    before = await scrape(api, ops_key)
    assert value(before, "chunkd_uploads_pending") == 0
    assert value(before, "chunkd_uploads_created_total", frontend="native") == 0

    # Three native uploads of 10 bytes in parts of 4 (4 + 4 + 2): one completed, one cancelled, one left pending.
    data = b"0123456789"
    ids = []
    for _ in range(3):
        created = await c.post("/v1/files", json={"filename": "a.bin", "sizeBytes": 10, "partSize": 4}, headers=auth)
        assert created.status_code == 201
        ids.append(created.json()["id"])
    done, cancelled, pending = ids
    for number, chunk in enumerate((data[0:4], data[4:8], data[8:10]), start=1):
        assert (await c.put(f"/v1/files/{done}/parts/{number}", content=chunk, headers=auth)).status_code == 200
    assert (await c.put(f"/v1/files/{pending}/parts/1", content=data[:4], headers=auth)).status_code == 200
    md5 = hashlib.md5(data).hexdigest()
    assert (await c.post(f"/v1/files/{done}/complete", json={"md5": md5}, headers=auth)).status_code == 200
    assert (await c.post(f"/v1/files/{cancelled}/cancel", headers=auth)).status_code == 200
    missing = "A" * 22
    assert (await c.get(f"/v1/files/{missing}", headers=auth)).status_code == 404
    assert (await c.get("/no/such/route/at/all")).status_code == 404
    # A tus upload of 7 bytes in two PATCHes, then deleted.
    tus = await c.post("/files", headers={**TUS, **auth, "Upload-Length": "7"})
    assert tus.status_code == 201
    tus_id = tus.headers["location"].rsplit("/", 1)[1]
    octets = {**TUS, **auth, "Content-Type": "application/offset+octet-stream"}
    for offset, chunk in ((0, b"abc"), (3, b"defg")):
        patched = await c.patch(f"/files/{tus_id}", content=chunk, headers={**octets, "Upload-Offset": str(offset)})
        assert patched.status_code == 204
    assert (await c.delete(f"/files/{tus_id}", headers={**TUS, **auth})).status_code == 204

    after = await scrape(api, ops_key)
    requests = "chunkd_http_requests_total"
    part = "/v1/files/{file_id}/parts/{part_number}"
    assert value(after, requests, route="/v1/files", method="POST", status="201") == 3
    assert value(after, requests, route=part, method="PUT", status="200") == 4
    assert value(after, requests, route="/v1/files/{file_id}/complete", method="POST", status="200") == 1
    assert value(after, requests, route="/v1/files/{file_id}/cancel", method="POST", status="200") == 1
    # Route templates, never raw paths: the missing id is not a label value; unknown paths share one.
    assert value(after, requests, route="/v1/files/{file_id}", method="GET", status="404") == 1
    assert value(after, requests, route="unmatched", method="GET", status="404") == 1
    assert value(after, requests, route="/files/{file_id}", method="PATCH", status="204") == 2
    assert value(after, requests, route="/metrics", method="GET", status="200") == 1  # the first scrape
    assert not any(missing in str(labels) or tus_id in str(labels) for _, labels in after)
    assert value(after, "chunkd_http_request_duration_seconds_count", route=part) == 4
    assert value(after, "chunkd_http_request_duration_seconds_bucket", route=part, le="+Inf") == 4

    # Upload body bytes only (the JSON bodies of create and complete are not file bytes).
    assert value(after, "chunkd_bytes_received_total", frontend="native") == 10 + 4
    assert value(after, "chunkd_bytes_received_total", frontend="tus") == 7
    assert value(after, "chunkd_uploads_created_total", frontend="native") == 3
    assert value(after, "chunkd_uploads_created_total", frontend="tus") == 1
    finished = "chunkd_uploads_finished_total"
    assert value(after, finished, frontend="native", status="completed") == 1
    assert value(after, finished, frontend="native", status="cancelled") == 1
    assert value(after, finished, frontend="tus", status="completed") == 1  # its last PATCH finished it
    assert value(after, finished, frontend="tus", status="deleted") == 1
    assert value(after, "chunkd_uploads_pending") == 1

    # Expiry is counted too (the reaper's work, run here by hand with the clock moved on).
    later = datetime.now(UTC) + api.runtime.uploads.config.ttl * 2
    api.runtime.uploads.clock = lambda: later
    assert await api.runtime.uploads.expire_due() == 1
    expired = await scrape(api, ops_key)
    assert value(expired, finished, frontend="native", status="expired") == 1
    assert value(expired, "chunkd_uploads_pending") == 0


async def test_metrics_need_the_metrics_read_scope(api: Api) -> None:
    anonymous = await api.client.get("/metrics")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"]
    files_only = await api.client.get("/metrics", headers=api.auth("alice"))
    assert files_only.status_code == 403 and "metrics:read" in files_only.json()["error"]["message"]
    _, ops_key = await api.runtime.keys.create("ops", "metrics:read")
    # metrics:read grants nothing else.
    assert (await api.client.get("/v1/files", headers={"Authorization": f"Bearer {ops_key}"})).status_code == 403


async def test_webhook_and_hook_counters_keep_label_values_bounded(api: Api) -> None:
    metrics = api.runtime.metrics
    metrics.webhook_delivery("delivered")
    metrics.webhook_delivery("delivered")
    metrics.webhook_delivery("teapot")  # not a known result: counted as "other"
    metrics.hook_invocation("pre-create", "rejected")
    metrics.hook_invocation("made-up-hook", "accepted")
    _, ops_key = await api.runtime.keys.create("ops", "metrics:read")
    samples = await scrape(api, ops_key)
    assert value(samples, "chunkd_webhook_deliveries_total", result="delivered") == 2
    assert value(samples, "chunkd_webhook_deliveries_total", result="failed") == 0
    assert value(samples, "chunkd_webhook_deliveries_total", result="other") == 1
    assert value(samples, "chunkd_hook_invocations_total", hook="pre-create", result="rejected") == 1
    assert value(samples, "chunkd_hook_invocations_total", hook="other", result="accepted") == 1
    assert not any("teapot" in str(labels) or "made-up" in str(labels) for _, labels in samples)


async def test_each_app_has_its_own_registry(settings: Settings, tmp_path: Path) -> None:
    first, second = create_app(settings), create_app(settings.model_copy(update={"data_dir": tmp_path / "other"}))
    a: Metrics = first.state.metrics
    b: Metrics = second.state.metrics
    a.webhook_delivery("delivered")
    assert a.registry is not b.registry
    assert b'chunkd_webhook_deliveries_total{result="delivered"} 1.0' in a.render(pending=None)
    assert b'chunkd_webhook_deliveries_total{result="delivered"} 0.0' in b.render(pending=None)


class _RefusingFinish:
    """Blocking checks that let uploads be created and refuse every finish with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def pre_create(self, upload: Upload) -> None:
        return None

    async def pre_finish(self, upload: Upload) -> None:
        raise self.error

    async def pre_download(self, upload: Upload) -> None:
        return None


async def outbox_types(api: Api) -> Counter[str]:
    async with api.runtime.repo.engine.connect() as conn:
        return Counter((await conn.execute(select(events.c.type))).scalars())


async def test_every_end_in_the_outbox_is_counted_once(api: Api) -> None:
    """``chunkd_uploads_finished_total`` counts what the outbox records: an upload the virus scan
    rejected (cancelled, ``upload.rejected``) was not counted at all, nor was a tus concatenation
    refused at its creation (cancelled or rejected, then removed: ``upload.deleted``)."""
    _, ops_key = await api.runtime.keys.create("ops", "metrics:read")
    c, auth = api.client, api.auth()
    partial = await c.post("/files", headers={**TUS, **auth, "Upload-Length": "3", "Upload-Concat": "partial"})
    partial_id = partial.headers["location"].rsplit("/", 1)[1]
    octets = {**TUS, **auth, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    assert (await c.patch(f"/files/{partial_id}", content=b"abc", headers=octets)).status_code == 204
    made = await c.post("/v1/files", json={"filename": "a.bin", "sizeBytes": 3}, headers=auth)
    file_id = made.json()["id"]
    assert (await c.put(f"/v1/files/{file_id}/parts/1", content=b"abc", headers=auth)).status_code == 200

    virus = ContentRejected("the file contains a virus (X)", reason="virus", signature="X")
    api.runtime.uploads.hooks = _RefusingFinish(virus)
    assert (await c.post(f"/v1/files/{file_id}/complete", headers=auth)).status_code == 400
    final = {**TUS, **auth, "Upload-Concat": f"final;/files/{partial_id}"}
    assert (await c.post("/files", headers=final)).status_code == 400  # rejected, then removed
    api.runtime.uploads.hooks = _RefusingFinish(rejection(403, "not today"))
    assert (await c.post("/files", headers=final)).status_code == 403  # cancelled, then removed

    recorded = await outbox_types(api)
    assert recorded == {
        "upload.created": 4,
        "upload.completed": 1,
        "upload.rejected": 2,
        "upload.cancelled": 1,
        "upload.deleted": 2,
    }
    samples = await scrape(api, ops_key)
    finished = "chunkd_uploads_finished_total"
    assert value(samples, "chunkd_uploads_created_total", frontend="tus") == 3
    assert value(samples, "chunkd_uploads_created_total", frontend="native") == 1
    assert value(samples, finished, frontend="tus", status="completed") == 1
    assert value(samples, finished, frontend="native", status="rejected") == 1
    assert value(samples, finished, frontend="tus", status="rejected") == 1
    assert value(samples, finished, frontend="tus", status="cancelled") == 1
    assert value(samples, finished, frontend="tus", status="deleted") == 2
    counted = sum(v for (name, _), v in samples.items() if name == finished)
    assert counted == sum(n for kind, n in recorded.items() if kind not in ("upload.created", "upload.completed")) + 1
    assert value(samples, "chunkd_uploads_pending") == 0


async def test_a_scrape_while_the_database_is_down_says_so_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The counters are still exposed and the pending gauge keeps its value; the outage is one
    warning per scrape, not a traceback every scrape interval (it is not a fault of chunkd's)."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (scripts/services/postgres.sh installs it)")
    server = PostgresServer(bin_dir).start()
    try:
        settings = Settings(
            data_dir=tmp_path / "data", database_url=server.url(), bootstrap_admin_key=False, fsync=False
        )
        app = create_app(settings.model_copy(update={"database_timeout_seconds": 5}))
        async with app.router.lifespan_context(app):
            _, ops_key = await app.state.chunkd.keys.create("ops", "metrics:read")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                auth = {"Authorization": f"Bearer {ops_key}"}
                assert (await client.get("/metrics", headers=auth)).status_code == 200  # the key is now cached
                server.stop()
                with caplog.at_level(logging.WARNING, logger="chunkd.metrics"):
                    scraped = await client.get("/metrics", headers=auth)
                assert scraped.status_code == 200 and "chunkd_uploads_pending 0.0" in scraped.text
                [record] = [r for r in caplog.records if r.name == "chunkd.metrics"]
                assert record.levelno == logging.WARNING and record.exc_info is None
                assert "unreachable" in record.getMessage()
    finally:
        server.stop()


async def test_upload_ends_are_exposed_at_zero_from_the_start(api: Api) -> None:
    """A counter series that first appears at 1 loses that first count to ``increase()`` and
    ``rate()`` (Prometheus has no earlier sample to compare with): the first completion of each
    frontend after a start went missing from ``increase(chunkd_uploads_finished_total[1h])``."""
    _, ops_key = await api.runtime.keys.create("ops", "metrics:read")
    samples = await scrape(api, ops_key)
    for frontend in FRONTENDS:
        for status in FINISH_EVENTS:
            key = ("chunkd_uploads_finished_total", frozenset({("frontend", frontend), ("status", status)}))
            assert samples.get(key) == 0.0, key


async def test_media_inspections_are_counted_by_kind_and_outcome(api: Api) -> None:
    """Inspection (a worker process per image or PDF, with a bounded queue) had no metric: neither
    how many files it refused nor how long it took nor how many waited."""
    from tests.support.files import seeded_bytes
    from tests.support.media_files import chunked_upload, make_pdf, make_png

    _, ops_key = await api.runtime.keys.create("ops", "metrics:read")
    before = await scrape(api, ops_key)
    for kind in INSPECTION_KINDS:
        for outcome in INSPECTION_OUTCOMES:  # every series from the start, at 0
            assert (("chunkd_media_inspections_total", frozenset({("kind", kind), ("outcome", outcome)}))) in before
    files = [
        ("a.png", make_png(20, 10), "image"),
        ("b.pdf", make_pdf(), "document"),
        ("c.png", seeded_bytes(5, 900), "image"),
    ]
    for name, content, field in files:
        upload_id = await chunked_upload(api.client, content, name, api.auth(), field=field)
        body = {"upload_id": upload_id, "md5": hashlib.md5(content).hexdigest()}
        completed = await api.client.post("/api/v2/media/upload/complete/", data=body, headers=api.auth())
        assert completed.status_code == (400 if name == "c.png" else 201), completed.text
    after = await scrape(api, ops_key)
    assert value(after, "chunkd_media_inspections_total", kind="image", outcome="accepted") == 1
    assert value(after, "chunkd_media_inspections_total", kind="image", outcome="refused") == 1
    assert value(after, "chunkd_media_inspections_total", kind="pdf", outcome="accepted") == 1
    assert value(after, "chunkd_media_inspection_duration_seconds_count", kind="image") == 2
    assert value(after, "chunkd_media_inspection_duration_seconds_count", kind="pdf") == 1
    assert (
        value(after, "chunkd_media_inspections_waiting") == 0 and value(after, "chunkd_media_inspections_running") == 0
    )


def test_inspection_label_values_are_bounded() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.media_inspection("svg", "exploded", 0.1)  # unknown values are counted as "other"
    text = metrics.render(pending=None).decode()
    assert 'chunkd_media_inspections_total{kind="other",outcome="other"} 1.0' in text


async def test_an_inspection_refused_for_a_full_queue_is_counted_busy(tmp_path: Path) -> None:
    from chunkd.domain.errors import RateLimited
    from chunkd.service.inspection import InspectionLimits, InspectionPool

    metrics = Metrics(process_metrics=False)
    limits = InspectionLimits(workers=1, timeout_seconds=1, memory_bytes=2**28, max_pdf_pages=1, max_image_pixels=1)
    pool = InspectionPool(dataclasses.replace(limits, queue=0))
    pool.count, pool.occupancy = metrics.media_inspection, metrics.media_inspection_occupancy
    await pool._take_turn("bob")  # the one worker is taken, and no job may wait
    with pytest.raises(RateLimited):
        await pool.inspect("pdf", str(tmp_path / "x.pdf"), owner="alice")
    text = metrics.render(pending=None).decode()
    assert 'chunkd_media_inspections_total{kind="pdf",outcome="busy"} 1.0' in text
    assert "chunkd_media_inspections_running 1.0" in text and "chunkd_media_inspections_waiting 0.0" in text
    pool._give_back("bob")
    assert "chunkd_media_inspections_running 0.0" in metrics.render(pending=None).decode()
