"""Migration 0004 creates the upload_links table exactly as ``tables.upload_links`` describes it,
and the repository's conditional counting holds the limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from chunkd.backends.repository.sqlalchemy.database import create_engine, migrate
from chunkd.backends.repository.sqlalchemy.links import SqlUploadLinkRepository
from chunkd.ports.links import UploadLinkRecord
from tests.support.migrations import schema_diffs


async def test_upload_links_table_matches_migration_and_counts_hold(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(schema_diffs, "upload_links") == []
        repo = SqlUploadLinkRepository(engine)
        now = datetime.now(UTC)
        link = UploadLinkRecord(
            id="a" * 32,
            owner="alice",
            secret_hash="0" * 64,
            created_at=now,
            expires_at=now + timedelta(hours=1),
            max_bytes=10,
            max_files=2,
            allowed_mime_types=("image/*",),
        )
        await repo.add_link(link)
        assert await repo.get_link(link.id) == link and await repo.get_link(link.id, "bob") is None
        assert await repo.reserve(link.id, 6, now)
        assert not await repo.reserve(link.id, 5, now)  # 11 > maxBytes
        await repo.release(link.id, 6)
        assert await repo.reserve(link.id, 5, now) and await repo.reserve(link.id, 5, now)
        assert not await repo.reserve(link.id, 0, now)  # maxFiles
        assert not await repo.reserve(link.id, 0, now + timedelta(hours=2))  # expired
        stored = await repo.get_link(link.id)
        assert stored is not None and (stored.files_uploaded, stored.bytes_uploaded) == (2, 10)
        assert await repo.revoke_link(link.id, "alice", now) and not await repo.revoke_link(link.id, "bob", now)
        assert [x.id for x in await repo.list_links("alice", 10)] == [link.id]
    finally:
        await engine.dispose()
