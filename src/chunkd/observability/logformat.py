"""The server log's lines as JSON, for ``CHUNKD_LOG_FORMAT=json``: one object per line, as the
access log's, so a collector that parses one parses both. Fields: ``time`` (ISO 8601 UTC with
milliseconds), ``level``, ``logger``, ``message``, and ``exception`` (the traceback, in one string)
when the line has one."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonLines", "json_line"]


def json_line(level: str, logger: str, message: str, *, created: float | None = None, **extra: Any) -> str:
    """One server-log line as JSON (also for what is printed outside logging, e.g. the start-up banner)."""
    moment = datetime.fromtimestamp(created, UTC) if created is not None else datetime.now(UTC)
    fields = {"time": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"}
    fields.update(level=level, logger=logger, message=message)
    fields.update({name: value for name, value in extra.items() if value is not None})
    return json.dumps(fields, separators=(",", ":"), default=str)


class JsonLines(logging.Formatter):
    """A record as one line of JSON; tracebacks and messages with line breaks stay in that line."""

    def format(self, record: logging.LogRecord) -> str:
        exception = None
        if record.exc_info:
            exception = self.formatException(record.exc_info)
        elif record.exc_text:
            exception = record.exc_text
        stack = self.formatStack(record.stack_info) if record.stack_info else None
        return json_line(
            record.levelname, record.name, record.getMessage(), created=record.created, exception=exception, stack=stack
        )
