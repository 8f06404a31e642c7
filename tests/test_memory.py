"""The malloc arena cap is applied on glibc (the machines chunkd is built and tested on), the
objects a started server holds are kept out of the cyclic collector's passes, its young passes are
spaced out, and the upload paths leave nothing for it to find."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import platform
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.request_cost import Client

from chunkd.app import create_app
from chunkd.memory import YOUNG_COLLECTION_EVERY, limit_malloc_arenas
from chunkd.settings import Settings


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_arena_cap_is_applied() -> None:
    assert limit_malloc_arenas(2) is True


@pytest.fixture
def unfrozen() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


async def test_a_started_server_freezes_what_start_up_made(tmp_path: Path, unfrozen: None) -> None:
    app = create_app(Settings(data_dir=tmp_path, bootstrap_admin_key=False))
    assert gc.get_freeze_count() == 0
    async with app.router.lifespan_context(app):
        # The app, its routes and the runtime are frozen: a full collection no longer walks them.
        assert gc.get_freeze_count() > 10_000
        assert not gc.is_tracked(app) or app not in gc.get_objects(generation=2)
        assert gc.get_threshold()[0] == YOUNG_COLLECTION_EVERY


async def test_uploading_leaves_no_reference_cycles(tmp_path: Path, unfrozen: None) -> None:
    """What a tus PATCH, a part and a complete make is freed by reference counting as soon as the
    request ends: garbage in reference cycles would wait for the cyclic collector's passes, which
    the server spaces out (``tune_collector``), and be promoted to older generations meanwhile
    (each request's streaming pipeline was such a cycle of ~23 objects). The requests go straight to
    the ASGI app, as the server hands them over (the benchmark's caller): an HTTP client in the same
    process would add its own objects (httpx's requests and responses are reference cycles)."""
    app = create_app(Settings(data_dir=tmp_path, bootstrap_admin_key=False))
    async with app.router.lifespan_context(app):
        _, key = await app.state.chunkd.keys.create("alice", "files:create,files:read")
        client = Client(app, f"Bearer {key}".encode())
        tus = {"Tus-Resumable": "1.0.0"}
        headers, _ = await client.expect(201, "POST", "/files", headers={**tus, "Upload-Length": str(20 * 1000)})
        location = "/files/" + headers[b"location"].decode().rsplit("/", 1)[1]
        json_type = {"Content-Type": "application/json"}
        _, created = await client.expect(
            201, "POST", "/v1/files", b'{"filename": "a", "sizeBytes": 1000}', headers=json_type
        )
        file_id = json.loads(created)["id"]
        body = os.urandom(1000)
        gc.collect()
        gc.disable()
        try:
            for offset in range(0, 20 * 1000, 1000):
                patch = {**tus, "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)}
                await client.expect(204, "PATCH", location, body, headers=patch)
            await client.expect(200, "PUT", f"/v1/files/{file_id}/parts/1", body)
            completion = json.dumps({"md5": hashlib.md5(body).hexdigest()}).encode()
            await client.expect(200, "POST", f"/v1/files/{file_id}/complete", completion, headers=json_type)
            found = gc.collect()
        finally:
            gc.enable()
    # Fewer than one per request: the webhook delivery poller runs beside them and each of its
    # polls may leave a few (SQLAlchemy's joins); the streaming pipeline alone left ~460 here.
    assert found < 22, f"{found} objects in reference cycles after 22 requests"
