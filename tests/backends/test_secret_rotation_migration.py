"""Migration 0013 adds ``webhook_endpoints.previous_secret`` and ``previous_secret_until`` exactly as
``tables.webhook_endpoints`` describes them; the endpoints there before have no previous secret."""

from __future__ import annotations

from pathlib import Path

from chunkd.backends.repository.sqlalchemy.database import create_engine, migrate
from tests.support.migrations import schema_diffs, upgrade_to


async def test_0013_adds_the_previous_secret(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade_to, "0012_key_expiry")
            await conn.exec_driver_sql(
                "INSERT INTO webhook_endpoints (id, owner, url, secret, created_at) VALUES "
                "('we_1', 'a', 'https://a.test/', 'whsec_x', '2026-01-01')"
            )
        await migrate(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(schema_diffs, "webhook_endpoints") == []
            rows = await conn.exec_driver_sql(
                "SELECT secret, previous_secret, previous_secret_until FROM webhook_endpoints"
            )
            assert [tuple(r) for r in rows] == [("whsec_x", None, None)]
    finally:
        await engine.dispose()
