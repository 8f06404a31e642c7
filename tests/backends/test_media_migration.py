"""Migrations 0002 and 0003 make the media table exactly as ``tables.media`` describes it, and its
ids are integers handed out in order, never twice."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from chunkd.backends.repository.sqlalchemy.database import create_engine, migrate
from chunkd.backends.repository.sqlalchemy.media import SqlMediaRepository
from chunkd.domain.media import MediaType
from tests.support.migrations import schema_diffs, upgrade_to


async def test_media_table_matches_migration_and_ids_increase(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        await migrate(engine)
        await migrate(engine)  # idempotent
        async with engine.connect() as conn:
            assert await conn.run_sync(schema_diffs, "media") == []
            await conn.exec_driver_sql(
                "INSERT INTO uploads (id, owner, frontend, filename, mime_type, part_size, mode, status, created_at, "
                "updated_at, bytes_received, parts_received, hash_offset, meta) VALUES "
                "('u1', 'a', 'media', 'f', 'x/y', 1, 'append', 'COMPLETED', '2026-01-01', '2026-01-01', 0, 0, 0, '{}'),"
                "('u2', 'a', 'media', 'f', 'x/y', 1, 'append', 'COMPLETED', '2026-01-01', '2026-01-01', 0, 0, 0, '{}')"
            )
            await conn.commit()
        repo = SqlMediaRepository(engine)
        now = datetime.now(UTC)
        first = await repo.add(
            upload_id="u1", owner="a", type=MediaType.IMAGE, width=1, height=2, order=0, added_at=now
        )
        again = await repo.add(upload_id="u1", owner="a", type=MediaType.DOC, width=9, height=9, order=0, added_at=now)
        second = await repo.add(upload_id="u2", owner="a", type=MediaType.DOC, width=3, height=4, order=0, added_at=now)
        assert isinstance(first.id, int) and again == first and second.id > first.id
        assert await repo.get(first.id, "b") is None and await repo.get(first.id, None) == first
        async with engine.begin() as conn:  # deleting the upload takes its media record with it
            await conn.exec_driver_sql("DELETE FROM uploads WHERE id = 'u2'")
        assert await repo.by_upload("u2") is None
    finally:
        await engine.dispose()


async def test_0003_rebuilds_sqlite_media_with_autoincrement_keeping_rows(tmp_path: Path) -> None:
    """A database made before 0003: its rows survive, and the highest id, once deleted, is not
    handed out again (SQLite's plain INTEGER PRIMARY KEY would reuse it)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade_to, "0002_media")
            await conn.exec_driver_sql(
                "INSERT INTO uploads (id, owner, frontend, filename, mime_type, part_size, mode, status, created_at, "
                "updated_at, bytes_received, parts_received, hash_offset, meta) VALUES "
                + ",".join(
                    f"('u{n}', 'a', 'media', 'f', 'x/y', 1, 'append', 'COMPLETED', '2026-01-01', '2026-01-01', "
                    "0, 0, 0, '{}')"
                    for n in range(1, 5)
                )
            )
            await conn.exec_driver_sql(
                'INSERT INTO media (id, upload_id, owner, type, "order", added_at) VALUES '
                "(1, 'u1', 'a', 'image', 0, '2026-01-01'), (7, 'u2', 'a', 'doc', 0, '2026-01-01')"
            )
        await migrate(engine)
        async with engine.connect() as conn:
            table_sql = (await conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'media'")).scalar()
            assert "AUTOINCREMENT" in str(table_sql)
            assert await conn.run_sync(schema_diffs, "media") == []
            rows = (await conn.exec_driver_sql("SELECT id, upload_id, type FROM media ORDER BY id")).all()
            assert [tuple(r) for r in rows] == [(1, "u1", "image"), (7, "u2", "doc")]
        repo = SqlMediaRepository(engine)
        await repo.delete(7)
        now = datetime.now(UTC)
        added = await repo.add(
            upload_id="u3", owner="b", type=MediaType.IMAGE, width=1, height=1, order=0, added_at=now, mime_type="x/y"
        )
        assert added.id == 8 and added.mime_type == "x/y"
        await repo.delete(8)
        again = await repo.add(
            upload_id="u4", owner="b", type=MediaType.IMAGE, width=1, height=1, order=0, added_at=now
        )
        assert again.id == 9
    finally:
        await engine.dispose()
