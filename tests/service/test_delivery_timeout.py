"""One delivery attempt is bounded as a whole by the webhook timeout, not per network read: a
receiver that answers a byte at a time would otherwise hold the attempt (and the round, and every
other owner's deliveries behind it) for as long as it likes, and outlive the attempt's lease, so
another node would send the same event again while this one still waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chunkd.backends.repository import open_metadata
from chunkd.domain.events import Event, EventType
from chunkd.ports.metadata import MetadataStore
from chunkd.ports.webhooks import DeliveryStatus, Endpoint
from chunkd.service.delivery import DeliveryPolicy, DeliveryWorker
from tests.support.uploads import make_upload

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def metadata(tmp_path: Path) -> AsyncIterator[MetadataStore]:
    store = await open_metadata(f"sqlite:///{tmp_path / 'chunkd.db'}", run_migrations=True)
    try:
        yield store
    finally:
        await store.close()


async def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_timeout(metadata: MetadataStore) -> None:
    stop = asyncio.Event()

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n")
        try:
            while not stop.is_set():  # a byte well within every per-read timeout, for ever
                writer.write(b".")
                await writer.drain()
                await asyncio.sleep(0.01)
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await metadata.webhooks.add_endpoint(
        Endpoint("we_1", "alice", f"http://127.0.0.1:{port}/", "whsec_c2VjcmV0", None, T0, None, None)
    )
    upload = make_upload(10, 10, owner="alice")
    await metadata.uploads.create(upload, [Event.for_upload(EventType.UPLOAD_COMPLETED, upload, T0)])
    worker = DeliveryWorker(
        metadata.webhooks,
        DeliveryPolicy(timeout=0.5, block_private=False),
        operator_secret=None,
        clock=lambda: T0 + timedelta(seconds=1),
    )
    try:
        # The bound only keeps a failing run from hanging; the attempt itself ends at its timeout.
        assert await asyncio.wait_for(worker.run_once(), 30) == 1
    finally:
        stop.set()
        await worker.close()
        server.close()
        await server.wait_closed()
    [delivery] = await metadata.webhooks.list_deliveries("we_1", 10)
    assert delivery.status is DeliveryStatus.PENDING and delivery.attempts == 1
    assert delivery.last_error is not None and "0.5" in delivery.last_error
