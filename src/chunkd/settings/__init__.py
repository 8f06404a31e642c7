"""Every setting of chunkd, with unit and default. Each one can be given as an environment
variable ``CHUNKD_<NAME>`` (e.g. ``CHUNKD_DATA_DIR``) or, for a few, a ``chunkd serve`` option.

The settings are declared, and documented, in groups of one concept each: ``storage`` (data dir,
database, local disk or S3, secret), ``server`` (listening, request limits, tus path, access log),
``uploads`` (part sizes, expiry, quotas, upload links, media and asset limits), ``access`` (tokens,
rate limits, CORS, body guards) and ``events`` (webhooks, hooks, virus scanning). ``Settings`` is
all of them in one object read from the environment."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from chunkd.settings.access import AccessSettings
from chunkd.settings.events import EventSettings
from chunkd.settings.server import ServerSettings
from chunkd.settings.storage import StorageSettings
from chunkd.settings.uploads import UploadSettings

__all__ = ["Settings"]


# Bases in reverse: pydantic lists the fields of the last base first (storage first, events last).
class Settings(BaseSettings, EventSettings, AccessSettings, UploadSettings, ServerSettings, StorageSettings):
    """Every setting, read from ``CHUNKD_*`` environment variables (or given as keyword arguments)."""

    model_config = SettingsConfigDict(env_prefix="CHUNKD_", extra="ignore")
