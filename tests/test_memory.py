"""The malloc arena cap is applied on glibc (the machines chunkd is built and tested on), and the
objects a started server holds are kept out of the cyclic collector's passes."""

from __future__ import annotations

import gc
import platform
from collections.abc import Iterator
from pathlib import Path

import pytest

from chunkd.app import create_app
from chunkd.memory import limit_malloc_arenas
from chunkd.settings import Settings


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_arena_cap_is_applied() -> None:
    assert limit_malloc_arenas(2) is True


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


async def test_a_started_server_freezes_what_start_up_made(tmp_path: Path, unfrozen: None) -> None:
    app = create_app(Settings(data_dir=tmp_path, bootstrap_admin_key=False))
    assert gc.get_freeze_count() == 0
    async with app.router.lifespan_context(app):
        # The app, its routes and the runtime are frozen: a full collection no longer walks them.
        assert gc.get_freeze_count() > 10_000
        assert not gc.is_tracked(app) or app not in gc.get_objects(generation=2)
