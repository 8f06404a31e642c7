"""Fixtures for end-to-end tests (helpers live in ``tests.support.files``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import ChunkdServer


@pytest.fixture(scope="session")
def e2e_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChunkdServer]:
    """One real server shared by the e2e tests that need no special settings (each uses its own uploads)."""
    with ChunkdServer(tmp_path_factory.mktemp("e2e") / "data", env={"CHUNKD_FSYNC": "true"}) as server:
        yield server


@pytest.fixture(scope="session")
def e2e_key(e2e_server: ChunkdServer) -> str:
    return e2e_server.create_key("alice")
