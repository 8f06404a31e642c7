"""The server's own log lines that name a request (a request cut by the shutdown, an error after its
client went away) cannot be forged by the request: its path is percent-decoded, so
``/v1/webhooks/x%0AWARNING:...`` put a line break and a line of the client's making into the log."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from chunkd.server.cycle import CycleApp

FORGED = "/v1/webhooks/x\nWARNING:  forged line\r"


def _cycle(*, disconnected: bool) -> Any:
    return SimpleNamespace(response_started=False, response_complete=False, disconnected=disconnected)


async def _run(app: Any, cycle: Any, connection: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "PATCH", "path": FORGED, "headers": [], "state": {"request_id": "trace-7"}}
    await CycleApp(app, cycle, 60.0, 1024, connection)(scope, receive, send)
    return sent


@pytest.mark.parametrize("case", ["shutdown", "client gone"])
async def test_a_request_path_cannot_break_a_server_log_line(case: str, caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if case == "shutdown":
            raise asyncio.CancelledError
        raise RuntimeError("the app failed after the client went away")

    connection = SimpleNamespace(stopping=case == "shutdown", body_pending=lambda cycle: False)
    with caplog.at_level(logging.INFO, logger="chunkd.server"):
        sent = await _run(app, _cycle(disconnected=case == "client gone"), connection)
    if case == "shutdown":
        assert sent[0]["status"] == 503
    [message] = [r.getMessage() for r in caplog.records if r.name == "chunkd.server"]
    assert "\n" not in message and "\r" not in message, message
    assert "/v1/webhooks/x%0AWARNING:%20%20forged%20line%0D" in message
    # The id of the request's access line (and X-Request-Id), to find one from the other.
    assert message.endswith(", request id trace-7"), message
