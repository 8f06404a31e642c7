"""A start chunkd refuses for a reason of its own (the database unreachable, a schema not this
version's) is logged as that one line; uvicorn logged the lifespan's whole traceback (about 150
lines). Any other failed start keeps its traceback: that one is a bug to report."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import traceback

import pytest

from chunkd.backends.repository.full import database_unreachable
from chunkd.backends.repository.sqlalchemy.database import SchemaMismatch
from chunkd.domain.errors import DatabaseUnavailable, ForeignStore, StorageError, StorageFull
from chunkd.server.run import StartRefusals, log_config


def _failed_start(exc: Exception) -> logging.LogRecord:
    try:
        raise exc
    except Exception:
        text = traceback.format_exc()  # what Starlette sends as lifespan.startup.failed
    return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, text, None, None)


def test_a_refused_start_is_one_line_and_any_other_keeps_its_traceback() -> None:
    refusals = StartRefusals()
    refused: list[Exception] = [
        StorageError("the blob store is unreachable"),
        # What a PostgreSQL down at start raises (a node restarted during a database outage): it
        # was logged as the whole traceback, its class name not among the refusals'.
        DatabaseUnavailable("the metadata database is unreachable; try again shortly"),
        database_unreachable(),  # the very error a start with PostgreSQL down or SQLite's volume failing raises
        StorageFull("no space left on the bytes' volume"),
        ForeignStore("the blob store is marked as another database's"),
        SchemaMismatch("at 0007"),
    ]
    for refusal in refused:
        record = _failed_start(refusal)
        assert refusals.filter(record)
        assert record.getMessage() == f"chunkd cannot start: {refusal}"
    bug = _failed_start(KeyError("chunkd.x.StorageError: not really"))
    assert refusals.filter(bug) and bug.getMessage().startswith("Traceback") and "KeyError" in bug.getMessage()
    # And the filter is where uvicorn logs a failed start.
    assert log_config()["loggers"]["uvicorn.error"]["filters"] == ["start_refusals"]


def test_asyncpg_warning_of_a_database_down_is_one_line_with_its_cause() -> None:
    """While PostgreSQL is down, asyncpg's pool warns at every retry with the connection error's whole
    traceback; under the server's logging it is one line that keeps the cause."""
    script = """
import logging, logging.config
from chunkd.server.run import log_config
logging.config.dictConfig(log_config())
try:
    raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
except ConnectionRefusedError:
    logging.getLogger("asyncpg.pool").warning("Failed to restore the pool connection floor; retrying", exc_info=True)
logging.getLogger("asyncpg.pool").warning("a warning without an exception stays as it is")
"""
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    lines = ran.stderr.splitlines()
    assert len(lines) == 2 and "Traceback" not in ran.stderr, ran.stderr
    assert lines[0].startswith("WARNING:") and lines[0].endswith(
        "Failed to restore the pool connection floor; retrying: ConnectionRefusedError: "
        "[Errno 111] Connect call failed ('127.0.0.1', 5432)"
    )
    assert lines[1].endswith("a warning without an exception stays as it is")


def test_every_chunkd_logger_is_shown_with_its_level_under_the_server() -> None:
    """Only ``chunkd.server`` and ``chunkd.startup`` had a handler: every other chunkd logger's
    warnings (readiness, storage, hooks, webhooks) reached stderr through Python's last-resort
    handler, without a level, and their info lines ("webhook delivery resumed") were dropped."""
    script = """
import logging, logging.config
from chunkd.server.run import log_config
logging.config.dictConfig(log_config())
logging.getLogger("chunkd.readiness").warning("readiness: storage: the blob directory is missing")
logging.getLogger("chunkd.service.delivery").info("webhook delivery resumed")
logging.getLogger("chunkd").info("forgot 3 event(s)")
logging.getLogger("chunkd.server").info("client disconnected")
logging.getLogger("chunkd.service").debug("not shown")
"""
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert ran.stderr.splitlines() == [
        "WARNING:  readiness: storage: the blob directory is missing",
        "INFO:     webhook delivery resumed",
        "INFO:     forgot 3 event(s)",
        "INFO:     client disconnected",
    ], ran.stderr


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_python_warning_is_one_line_with_its_level(log_format: str) -> None:
    """A library's ``warnings.warn`` wrote its own two lines to stderr (the warning, then the
    source line it points at), with no level, and plain text in JSON mode too."""
    script = f"""
import logging, logging.config, warnings
from chunkd.server.run import log_config
logging.config.dictConfig(log_config({log_format!r}))
warnings.warn("a library's warning", UserWarning)
"""
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    [line] = ran.stderr.splitlines()
    if log_format == "json":
        record = json.loads(line)
        assert (record["level"], record["logger"]) == ("WARNING", "py.warnings")
        assert record["message"].endswith("UserWarning: a library's warning")
    else:
        assert line.startswith("WARNING:") and line.endswith("UserWarning: a library's warning"), line
