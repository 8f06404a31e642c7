"""``python -m chunkd.server``: run the server on the settings of the environment (``CHUNKD_*``);
what ``chunkd serve`` becomes once it has read its options."""

from chunkd.server.run import run_granian, run_uvicorn
from chunkd.settings import Settings

settings = Settings()
(run_granian if settings.server == "granian" else run_uvicorn)(settings)
