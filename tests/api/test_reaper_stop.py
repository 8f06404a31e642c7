"""The app's expiry sweeper stops between sweeps at shutdown: a sweep under way ends its batch
instead of being cancelled inside a database transaction (which can leave a driver's connection
waiting for ever, as the webhook delivery worker's once did)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from chunkd.app import create_app
from chunkd.domain.errors import StorageError
from chunkd.settings import Settings
from tests.conftest import settings_with


async def test_shutdown_lets_a_running_sweep_finish(settings: Settings) -> None:
    app = create_app(settings_with(settings, reaper_interval_seconds=0.01))
    started, release = asyncio.Event(), asyncio.Event()
    outcomes: list[str] = []
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    uploads = app.state.chunkd.uploads
    expire_due = uploads.expire_due

    async def held_sweep(limit: int = 100) -> int:
        started.set()
        try:
            await release.wait()
            found = await expire_due(limit)
        except asyncio.CancelledError:
            outcomes.append("cancelled")
            raise
        outcomes.append("finished")
        return found

    uploads.expire_due = held_sweep
    await asyncio.wait_for(started.wait(), 30)
    stopping = asyncio.create_task(lifespan.__aexit__(None, None, None))
    await asyncio.sleep(0)  # the shutdown has begun while the sweep is held
    assert not stopping.done()
    release.set()
    await asyncio.wait_for(stopping, 60)
    assert outcomes == ["finished"]


async def test_a_sweep_that_meets_an_outage_logs_one_line(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """The database away (unreachable or not answering): each sweep says so in one warning line,
    without a traceback; any other error keeps its traceback."""
    app = create_app(settings_with(settings, reaper_interval_seconds=0.01))
    sweeps = 0

    async def failing_sweep(limit: int = 100) -> int:
        nonlocal sweeps
        sweeps += 1
        raise StorageError("the metadata database did not answer in time; try again shortly")

    async with app.router.lifespan_context(app):
        app.state.chunkd.uploads.expire_due = failing_sweep
        while sweeps < 3:
            await asyncio.sleep(0.01)
    failed = [r for r in caplog.records if r.getMessage().startswith("expiry sweep failed")]
    assert failed and all(r.levelno == logging.WARNING and r.exc_info is None for r in failed), failed
    assert "did not answer in time" in failed[0].getMessage()
