"""chunkd's HTTP protocol's per-request wrapper (``CycleApp``) with stand-ins for uvicorn's
connection and cycle; the protocol end to end is in tests/security/test_server_limits.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from chunkd.server.cycle import CycleApp


def _parts(*, body_pending: bool) -> tuple[Any, Any, list[Any]]:
    """A cycle, a connection whose request body is (not) pending, and the cycles it was told to close after."""
    closed_after: list[Any] = []
    cycle = SimpleNamespace(
        response_started=False,
        response_complete=False,
        disconnected=False,
        keep_alive=True,
        flow=SimpleNamespace(write_paused=False),
    )
    connection = SimpleNamespace(stopping=False, body_pending=lambda _: body_pending, close_after=closed_after.append)
    return cycle, connection, closed_after


async def _answer(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


async def _serve(cycle: Any, connection: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "PUT", "path": "/v1/files/x/parts/1", "headers": []}
    await CycleApp(_answer, cycle, 60.0, 1024, connection)(scope, receive, send)
    return sent


def test_asking_whether_the_body_is_pending_changes_nothing() -> None:
    """A query: the connection is told to close only when an early response actually starts."""
    cycle, connection, closed_after = _parts(body_pending=True)
    wrapper = CycleApp(_answer, cycle, 60.0, 1024, connection)
    assert wrapper._body_pending() and wrapper._body_pending()
    assert closed_after == []


async def test_an_early_response_says_close_and_closes_its_connection_once() -> None:
    cycle, connection, closed_after = _parts(body_pending=True)
    start = (await _serve(cycle, connection))[0]
    assert (b"connection", b"close") in start["headers"]
    assert closed_after == [cycle]


async def test_a_response_after_the_body_keeps_its_connection() -> None:
    cycle, connection, closed_after = _parts(body_pending=False)
    start = (await _serve(cycle, connection))[0]
    assert (b"connection", b"close") not in start["headers"]
    assert closed_after == []
