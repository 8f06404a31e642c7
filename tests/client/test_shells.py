"""The SDK's decisions are written once (``chunkd.client._core``) and only performed by ``Client`` and
``AsyncClient``: a failed effect is raised inside the flow, which decides; the two clients, given the
same answers, send the same requests, wait as told and end the same way."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from chunkd.client import AsyncClient, Client, ClientError, File, RetryPolicy
from chunkd.client._effects import Blocking, Driver, Flow, Sleep

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002, max_retry_after=0.002)
FILE = {"id": "f1", "filename": "a.bin", "sizeBytes": 3, "status": "COMPLETED", "md5": "x"}


def test_a_failed_effect_is_raised_where_the_flow_asked_for_it() -> None:
    def flow() -> Flow[int]:
        try:
            yield Sleep(1.0)
        except OSError:
            length: int = yield Blocking(len, ("abc",))
            return length
        return 0

    driver = Driver(flow())
    assert driver.next() == Sleep(1.0)
    driver.fail(OSError("the disk went away"))
    effect = driver.next()
    assert isinstance(effect, Blocking)
    driver.answer(effect.function(*effect.args))
    assert driver.next() is None and driver.result == 3


DOWN = "network down"


def run_both(answers: list[int | str], tmp_path: Path) -> list[tuple[object, list[str], list[tuple[str, int, str]]]]:
    """What ``Client`` and ``AsyncClient`` each end with (a File, or the error's type and status),
    the requests they sent and the retries they announced, when ``get`` meets the same answers in
    turn: a status (200 carries a file object) or ``DOWN`` (the connection is refused)."""
    outcomes = []
    for kind in ("sync", "async"):
        left, sent, notices = list(answers), [], []

        def handler(request: httpx.Request, left: list[int | str] = left, sent: list[str] = sent) -> httpx.Response:
            sent.append(f"{request.method} {request.url.path}")
            answer = left.pop(0)
            if answer == DOWN:
                raise httpx.ConnectError("connection refused", request=request)
            assert isinstance(answer, int)
            body = FILE if answer == 200 else {"error": {"code": f"e{answer}", "message": "no"}}
            return httpx.Response(answer, json=body, headers={"Retry-After": "0"})

        options: dict[str, Any] = {"retry": FAST, "remember_uploads": False, "state_dir": tmp_path}
        options["on_retry"] = notices.append
        result: object
        try:
            if kind == "sync":
                with Client("http://test", "k", transport=httpx.MockTransport(handler), **options) as client:
                    result = client.get("f1")
            else:

                async def get(transport: httpx.MockTransport, options: dict[str, Any]) -> File:
                    async with AsyncClient("http://test", "k", transport=transport, **options) as client:
                        return await client.get("f1")

                result = asyncio.run(get(httpx.MockTransport(handler), options))
        except ClientError as exc:
            result = (type(exc).__name__, getattr(exc, "status", None))
        outcomes.append((result, sent, [(n.method, n.attempt, n.reason) for n in notices]))
    return outcomes


@pytest.mark.parametrize(
    ("answers", "ends", "tries"),
    [
        ([503, 429, 200], File.from_json(FILE), 3),
        ([503, 503, 503], ("ServerError", 503), 3),
        ([404], ("NotFound", 404), 1),
        ([DOWN, 200], File.from_json(FILE), 2),
        ([DOWN, DOWN, DOWN], ("ConnectionFailed", None), 2),  # never answered: one more try only
    ],
)
def test_sync_and_async_clients_decide_alike(
    answers: list[int | str], ends: object, tries: int, tmp_path: Path
) -> None:
    sync, asynchronous = run_both(answers, tmp_path)
    assert sync == asynchronous
    result, sent, notices = sync
    assert result == ends
    assert sent == ["GET /v1/files/f1"] * tries and len(notices) == tries - 1
