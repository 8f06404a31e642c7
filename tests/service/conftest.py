"""Fixtures of the service tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chunkd.backends.repository import open_metadata
from chunkd.ports.metadata import MetadataStore


@pytest.fixture
async def metadata(tmp_path: Path) -> AsyncIterator[MetadataStore]:
    """A migrated SQLite metadata store of the test's own."""
    store = await open_metadata(f"sqlite:///{tmp_path / 'chunkd.db'}", run_migrations=True)
    try:
        yield store
    finally:
        await store.close()
