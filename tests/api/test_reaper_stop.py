"""The app's expiry sweeper stops between sweeps at shutdown: a sweep under way ends its batch
instead of being cancelled inside a database transaction (which can leave a driver's connection
waiting for ever, as the webhook delivery worker's once did)."""

from __future__ import annotations

import asyncio

from chunkd.app import create_app
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
