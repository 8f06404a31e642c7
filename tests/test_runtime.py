"""The runtime is built once, typed: every per-process part is a field made by ``open_runtime``
(nothing kept in a loose dict and made on first use), and the engine's defaults are written once."""

from __future__ import annotations

import dataclasses
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
