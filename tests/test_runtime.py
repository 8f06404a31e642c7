"""The runtime is built once, typed: every per-process part is a field made by ``open_runtime``
(nothing kept in a loose dict and made on first use), and the engine's defaults are written once."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from chunkd.readiness import Readiness
from chunkd.runtime import Runtime, open_runtime
from chunkd.service.config import EngineConfig
from chunkd.service.delivery import DeliveryPolicy, DeliveryWorker
from chunkd.service.takeover import InFlight
from chunkd.service.webhooks import WebhookService
from chunkd.settings import Settings


async def test_every_part_is_a_typed_field_built_at_start(tmp_path: Path) -> None:
    assert "extras" not in {f.name for f in dataclasses.fields(Runtime)}
    runtime = await open_runtime(Settings(data_dir=tmp_path, fsync=False))
    try:
        assert isinstance(runtime.takeover, InFlight) and runtime.takeover.locks is runtime.locks
        assert isinstance(runtime.readiness, Readiness) and runtime.readiness.blobs is runtime.blobs
        assert isinstance(runtime.webhooks, WebhookService) and isinstance(runtime.delivery, DeliveryWorker)
        assert await runtime.readiness.check() == {"database": "ok", "storage": "ok"}
    finally:
        await runtime.close()


def test_settings_defaults_are_the_engines() -> None:
    settings = Settings()
    assert settings.engine_config() == EngineConfig()
    assert settings.delivery_policy() == DeliveryPolicy()


def test_the_app_reads_the_media_type_table_before_serving(tmp_path: Path) -> None:
    """Read on first use, it was a 500 for the first upload of a server out of file descriptors
    (opening /etc/mime.types); a fresh interpreter shows it is read when the app is made."""
    code = (
        "import mimetypes, sys\n"
        "from chunkd.app import create_app\n"
        "from chunkd.settings import Settings\n"
        "assert not mimetypes.inited\n"
        f"create_app(Settings(data_dir={str(tmp_path)!r}))\n"
        "sys.exit(0 if mimetypes.inited else 1)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
