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
from tests.support.waiting import wait_for

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


@pytest.mark.parametrize("when", ["parts are retried", "the whole file is hashed"])
def test_ctrl_c_stops_the_upload_threads_soon(
    when: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Ctrl-C lets the parts in flight finish, but starts nothing more: parts that met a 503 went on
    waiting and trying again (about a minute with the default policy) after it, and Ctrl-C once
    every part was sent waited for the whole-file MD5 to the end of the file. Ctrl-C comes when the
    upload is in that state (not after a while): every part has met its 503 (each would be tried
    again after its Retry-After), or every part is sent and the whole-file MD5 goes on."""
    import signal
    import threading

    from chunkd.client.source import Source

    part, parts = 1000, 3
    retrying = when == "parts are retried"
    puts: list[int] = []
    interrupted = threading.Event()
    md5_stopped: list[bool] = []

    def ctrl_c() -> None:
        interrupted.set()
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        if request.method == "POST":
            file = {"id": "f1", "filename": "a.bin", "sizeBytes": part * parts, "status": "PENDING"}
            return httpx.Response(201, json={**file, "partSize": part, "partCount": parts, "parts": []})
        puts.append(int(interrupted.is_set()))
        if len(puts) == parts:
            # Retrying: each part has met its 503 and would wait 20 s to try again. Hashing: every
            # part is sent, and the whole-file MD5 (of a large file, say) is still being read.
            ctrl_c()
        if retrying:
            return httpx.Response(
                503, json={"error": {"code": "unavailable", "message": "no"}}, headers={"Retry-After": "20"}
            )
        return httpx.Response(200, json={"partNumber": 1, "sizeBytes": part})

    whole_md5 = Source.md5

    def slow_whole_md5(self: Source, offset: int = 0, length: int | None = None, stop: Any = None) -> bytes:
        if length is None and not retrying:
            assert stop is not None
            md5_stopped.append(stop.wait(60))  # True: told to stop; False: it would have read on
            return b""
        return whole_md5(self, offset, length, stop)

    monkeypatch.setattr(Source, "md5", slow_whole_md5)
    # Ctrl-C raises KeyboardInterrupt here even where this process was started ignoring SIGINT (a
    # background job of a shell does: CI run as one got no interrupt, and the upload ran to its end).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    # Retry-After is long (20 s) so that only a client that does not stop sends a part again: with
    # 3 s, a CPU-saturated machine once kept the main thread from taking the signal for that long.
    policy = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.002, max_retry_after=20)
    source = tmp_path / "a.bin"
    source.write_bytes(b"x" * part * parts)
    with (
        Client(
            "http://test", "k", transport=httpx.MockTransport(handler), retry=policy, remember_uploads=False
        ) as client,
        pytest.raises(KeyboardInterrupt),
    ):
        client.upload(source, parallel=parts)
    assert interrupted.is_set()
    assert 1 not in puts  # no part sent, or sent again, after Ctrl-C
    # A worker whose start the Ctrl-C interrupted is not one the executor joins on its way out (it
    # ends at once, having no work), and may not even have started yet (Thread.join refuses it then;
    # enumerate() lists it): wait for every upload thread to be gone rather than find one still there.
    wait_for(
        lambda: not [t for t in threading.enumerate() if t.name.startswith(("chunkd-upload", "chunkd-md5"))],
        timeout=30,
        what="the upload threads to end",
    )
    if not retrying:
        assert md5_stopped == [True]  # the whole-file MD5 was stopped, not left to read on
