"""The app's expiry sweeper stops between sweeps at shutdown: a sweep under way ends its batch
instead of being cancelled inside a database transaction (which can leave a driver's connection
waiting for ever, as the webhook delivery worker's once did)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from chunkd.app import create_app
from chunkd.domain.errors import StorageError
from chunkd.settings import Settings
from tests.conftest import settings_with
from tests.support.waiting import until


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


async def test_the_server_removes_orphaned_blobs_itself(settings: Settings) -> None:
    """Blobs no record points at (a crash between a delete's record and its bytes) are removed by
    the server, at start and every ``orphan_sweep_interval_seconds``, once older than the grace;
    they were left until someone ran ``chunkd gc``. Recorded parts, and young blobs (a part being
    written is not recorded yet), stay; so does every unrecorded blob of an upload written to
    within the grace (a whole PUT holds some): this one was last written an hour ago."""
    from chunkd.backends.blobs.local import LocalBlobStore

    app = create_app(
        settings_with(
            settings, reaper_interval_seconds=0.01, orphan_sweep_interval_seconds=0.01, orphan_grace_seconds=60
        )
    )
    async with app.router.lifespan_context(app):
        uploads = app.state.chunkd.uploads
        real_clock = uploads.clock
        uploads.clock = lambda: real_clock() - timedelta(hours=1)
        upload = await uploads.create("alice", filename="a.bin", size_bytes=3, part_size=3)

        async def body():  # type: ignore[no-untyped-def]
            yield b"abc"

        await uploads.put_part("alice", upload.id, 1, body())
        uploads.clock = real_clock
        store = uploads.blobs
        assert isinstance(store, LocalBlobStore)
        directory = store.root / upload.id[:2] / upload.id
        # Older than the grace counted from the database's last write (an hour ago: see
        # test_a_database_restored_from_a_backup_keeps_what_was_stored_after_it).
        old = time.time() - 2 * 3600
        orphan, young = directory / "9.leftover.part", directory / "8.being-written.part"
        gone_upload = store.root / "zz" / ("z" * 22)
        # The old blobs are made outside the store and moved in already old (a rename keeps the
        # mtime): a sweep (every 10 ms) that unlinked 1.x.part just after gone_upload's utime made
        # that directory young again, and it was then spared for the whole grace.
        outside = settings.data_dir / "outside"
        for path in (outside / "9.leftover.part", outside / "gone" / "1.x.part"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
        for path in (outside / "9.leftover.part", outside / "gone" / "1.x.part", outside / "gone"):
            os.utime(path, (old, old))
        gone_upload.parent.mkdir(parents=True, exist_ok=True)
        os.rename(outside / "gone", gone_upload)
        os.rename(outside / "9.leftover.part", orphan)
        young.write_bytes(b"x")
        new_upload = store.root / "yy" / ("y" * 22)  # made by a first part an instant before its file
        new_upload.mkdir(parents=True)
        await until(lambda: not orphan.exists() and not gone_upload.exists(), 30, "the orphans swept")
        assert young.exists() and new_upload.exists()
        stored = await uploads.get("alice", upload.id)
        assert (directory / stored.parts[1].blob_ref).exists()


async def test_orphans_are_swept_only_in_a_store_of_this_database(settings: Settings) -> None:
    """A store never marked becomes the database's at its first sweep; a store marked as another
    database's (this one lost and made anew, a wrong database URL or data dir) is never swept: each
    of its blobs would have been an orphan here."""
    from chunkd.backends.blobs.local import DATABASE_MARK, LocalBlobStore
    from chunkd.domain.errors import ForeignStore

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        uploads = app.state.chunkd.uploads
        store = uploads.blobs
        assert isinstance(store, LocalBlobStore)
        mark = store.root / DATABASE_MARK
        assert not mark.exists()  # (the tests' apps run no sweep at start)
        stray = _unrecorded_blob(store.root, 3600)

        mark.write_text("db_" + "0" * 32 + "\n")  # another database's store
        with pytest.raises(ForeignStore, match="belongs to another database"):
            await uploads.sweep_orphans(60)
        assert stray.exists()

        mark.unlink()  # unmarked: it becomes this database's, and is swept
        assert await uploads.sweep_orphans(60) >= 1 and not stray.exists()
        assert mark.read_text().strip() == await uploads.repo.database_id()
        assert await uploads.sweep_orphans(60) == 0  # and stays this database's


async def test_a_database_restored_from_a_backup_keeps_what_was_stored_after_it(settings: Settings) -> None:
    """A restored backup carries the store's mark too, and no record of the files stored after the
    backup: at the next start every one of them older than the grace went as an orphan, silently.
    The grace now counts from the database's last write: blobs newer than that (less the grace)
    stay, until the database has moved past them."""
    from datetime import timedelta

    from chunkd.backends.blobs.local import LocalBlobStore

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        uploads = app.state.chunkd.uploads
        store = uploads.blobs
        assert isinstance(store, LocalBlobStore)
        await uploads.sweep_orphans(60)  # marks the store as this database's
        # The restored database: its last write five hours ago, when the backup was taken.
        made = await uploads.create("alice", filename="before.bin", size_bytes=10, part_size=10)
        made.updated_at = uploads.clock() - timedelta(hours=5)
        await uploads.repo.save(made)
        # What the backup does not know: a file stored two hours ago (its record is not in the
        # restored database), long past the grace.
        after = _unrecorded_blob(store.root, 7200, b"stored after the backup")
        assert await uploads.sweep_orphans(60) == 0 and after.exists()
        # A blob older than the database's last write (less the grace) is an orphan as before.
        _aged(after, 5 * 3600 + 600)
        assert await uploads.sweep_orphans(60) >= 1 and not after.exists()


def _unrecorded_blob(root: Path, seconds_old: float, data: bytes = b"x") -> Path:
    """A part file in the local store's ``root`` that no upload record names, ``seconds_old``."""
    blob = root / "zz" / ("z" * 22) / "1.x.part"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    _aged(blob, seconds_old)
    return blob


def _aged(blob: Path, seconds: float) -> None:
    """``blob`` and its upload's directory made ``seconds`` old (what the sweep judges by)."""
    when = time.time() - seconds
    for path in (blob, blob.parent):
        os.utime(path, (when, when))


async def test_the_reaper_forgets_events_past_their_retention(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outbox grew by every lifecycle event for ever; the reaper forgets the ones older than
    ``event_retention_days`` whose deliveries are all final, and keeps the newer ones."""
    from sqlalchemy import select

    from chunkd.backends.repository.sqlalchemy.tables import events

    monkeypatch.setattr("chunkd.app.HISTORY_EVERY_SECONDS", 0.01)
    # The uploads live for ten days: the reaper only forgets the old one's event, never expires it.
    days = 86400
    app = create_app(
        settings_with(settings, reaper_interval_seconds=0.01, event_retention_days=1, upload_ttl_seconds=10 * days)
    )
    async with app.router.lifespan_context(app):
        runtime = app.state.chunkd
        engine = runtime.repo.engine

        async def kept() -> set[str]:
            async with engine.connect() as conn:
                return set((await conn.execute(select(events.c.upload_id))).scalars())

        real_clock = runtime.uploads.clock
        runtime.uploads.clock = lambda: real_clock() - timedelta(days=2)  # made two days ago
        old = await runtime.uploads.create("alice", filename="old.bin", size_bytes=3, part_size=3)
        runtime.uploads.clock = real_clock
        new = await runtime.uploads.create("alice", filename="new.bin", size_bytes=3, part_size=3)
        await runtime.delivery.run_once()  # dispatched: no endpoint, so nothing is pending

        async def forgotten() -> bool:
            return old.id not in await kept()

        await until(forgotten, 30, "the old event forgotten")
        assert await kept() == {new.id}
