"""Migration 0011 adds ``webhook_endpoints.disabled_reason`` exactly as ``tables.webhook_endpoints``
describes it, and gives the endpoints disabled before it a reason."""

from __future__ import annotations

from pathlib import Path

from chunkd.backends.repository.sqlalchemy.database import create_engine, migrate
from tests.support.migrations import schema_diffs, upgrade_to


async def test_0011_gives_disabled_endpoints_a_reason(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade_to, "0010_event_retention")
            await conn.exec_driver_sql(
                "INSERT INTO webhook_endpoints (id, owner, url, created_at, failing_since, disabled_at) VALUES "
                "('we_failing', 'a', 'https://a.test/', '2026-01-01', '2026-01-01', '2026-01-06'),"
                "('we_by_hand', 'a', 'https://b.test/', '2026-01-01', NULL, '2026-01-02'),"
                "('we_on', 'a', 'https://c.test/', '2026-01-01', '2026-01-01', NULL)"
            )
        await migrate(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(schema_diffs, "webhook_endpoints") == []
            rows = await conn.exec_driver_sql("SELECT id, disabled_reason FROM webhook_endpoints ORDER BY id")
            assert [tuple(r) for r in rows] == [("we_by_hand", "owner"), ("we_failing", "failing"), ("we_on", None)]
    finally:
        await engine.dispose()
