"""A start chunkd refuses for a reason of its own (the database unreachable, a schema not this
version's) is logged as that one line; uvicorn logged the lifespan's whole traceback (about 150
lines). Any other failed start keeps its traceback: that one is a bug to report."""

from __future__ import annotations

import logging
import traceback

from chunkd.backends.repository.sqlalchemy.database import SchemaMismatch
from chunkd.domain.errors import StorageError
from chunkd.server.run import StartRefusals, log_config


def _failed_start(exc: Exception) -> logging.LogRecord:
    try:
        raise exc
    except Exception:
        text = traceback.format_exc()  # what Starlette sends as lifespan.startup.failed
    return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, text, None, None)


def test_a_refused_start_is_one_line_and_any_other_keeps_its_traceback() -> None:
    refusals = StartRefusals()
    for refusal in (StorageError("the metadata database is unreachable; try again shortly"), SchemaMismatch("at 0007")):
        record = _failed_start(refusal)
        assert refusals.filter(record)
        assert record.getMessage() == f"chunkd cannot start: {refusal}"
    bug = _failed_start(KeyError("chunkd.x.StorageError: not really"))
    assert refusals.filter(bug) and bug.getMessage().startswith("Traceback") and "KeyError" in bug.getMessage()
    # And the filter is where uvicorn logs a failed start.
    assert log_config()["loggers"]["uvicorn.error"]["filters"] == ["start_refusals"]
