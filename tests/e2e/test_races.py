"""Races against a real server: concurrent completes, complete against a part upload, two
uploads of the same part. Whatever the interleaving, the result is one of the serial outcomes."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.files import FilesClient, part_etag, seeded_bytes
from tests.support.server import ChunkdServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

PART = 256 * 1024
PARTS = 4
SIZE = PARTS * PART - 321


def piece(data: bytes, number: int) -> bytes:
    return data[(number - 1) * PART : number * PART]


def slowly(data: bytes, delay: float, pieces: int = 8) -> Iterator[bytes]:
    """A request body that takes about ``delay`` seconds to arrive."""
    step = -(-len(data) // pieces)
    for start in range(0, len(data), step):
        time.sleep(delay / pieces)
        yield data[start : start + step]


def together(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released at the same instant."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def uploaded(server: ChunkdServer, key: str, data: bytes, skip: tuple[int, ...] = ()) -> str:
    with FilesClient(server, key) as client:
        file_id = client.create(len(data), PART)["id"]
        for number in range(1, PARTS + 1):
            if number not in skip:
                assert client.put_part(file_id, number, piece(data, number)).status_code == 200
    return file_id


def check_file(server: ChunkdServer, key: str, file_id: str, expected: bytes) -> None:
    """The one COMPLETED file: the declared size, its recorded MD5 = the MD5 of what it serves."""
    with FilesClient(server, key) as client:
        state = client.get(file_id)
        assert state["status"] == "COMPLETED"
        assert state["md5"] == hashlib.md5(expected).hexdigest()
        assert client.download_md5(file_id) == (len(expected), state["md5"])


@pytest.mark.parametrize("round_", range(4))
def test_two_concurrent_completes(e2e_server: ChunkdServer, e2e_key: str, round_: int) -> None:
    data = seeded_bytes(round_, SIZE)
    file_id = uploaded(e2e_server, e2e_key, data)

    def complete() -> httpx.Response:
        with FilesClient(e2e_server, e2e_key) as own:
            return own.complete(file_id, hashlib.md5(data).hexdigest())

    first, second = together(complete, complete)
    answers = sorted([first, second], key=lambda r: r.status_code)
    assert answers[0].status_code == 200, answers[0].text
    assert answers[1].status_code in (200, 409), answers[1].text
    if answers[1].status_code == 200:
        assert answers[0].json() == answers[1].json()
    assert answers[0].json()["status"] == "COMPLETED"
    check_file(e2e_server, e2e_key, file_id, data)
    with FilesClient(e2e_server, e2e_key) as client:
        again = client.complete(file_id)
        assert again.status_code == 200 and again.json() == answers[0].json()


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.3, 0.6])
def test_complete_racing_a_resent_part(e2e_server: ChunkdServer, e2e_key: str, delay: float) -> None:
    old = seeded_bytes(10, SIZE)
    file_id = uploaded(e2e_server, e2e_key, old)
    new = old[:PART] + seeded_bytes(11, PART) + old[2 * PART :]

    def resend() -> httpx.Response:
        with FilesClient(e2e_server, e2e_key) as own:
            return own.put_part(file_id, 2, slowly(piece(new, 2), 0.3))

    def complete() -> httpx.Response:
        time.sleep(delay)
        with FilesClient(e2e_server, e2e_key) as own:
            return own.complete(file_id)

    put, done = together(resend, complete)
    assert done.status_code == 200, done.text
    # The part either made it in before completion (and is in the file) or was refused.
    assert put.status_code in (200, 409), put.text
    check_file(e2e_server, e2e_key, file_id, new if put.status_code == 200 else old)


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.6])
def test_complete_racing_the_last_part(e2e_server: ChunkdServer, e2e_key: str, delay: float) -> None:
    data = seeded_bytes(20, SIZE)
    file_id = uploaded(e2e_server, e2e_key, data, skip=(3,))

    def send() -> httpx.Response:
        with FilesClient(e2e_server, e2e_key) as own:
            return own.put_part(file_id, 3, slowly(piece(data, 3), 0.3))

    def complete() -> httpx.Response:
        time.sleep(delay)
        with FilesClient(e2e_server, e2e_key) as own:
            return own.complete(file_id)

    put, done = together(send, complete)
    assert put.status_code == 200, put.text
    if done.status_code == 409:
        assert done.json()["error"]["code"] == "missing_parts"
        with FilesClient(e2e_server, e2e_key) as client:
            assert client.complete(file_id).status_code == 200
    else:
        assert done.status_code == 200, done.text
    check_file(e2e_server, e2e_key, file_id, data)


def test_same_part_sent_twice_at_once_never_mixes(e2e_server: ChunkdServer, e2e_key: str) -> None:
    data = seeded_bytes(30, SIZE)
    file_id = uploaded(e2e_server, e2e_key, data)
    variants = [seeded_bytes(31, PART), seeded_bytes(32, PART)]

    def send(body: bytes) -> Callable[[], httpx.Response]:
        def call() -> httpx.Response:
            with FilesClient(e2e_server, e2e_key) as own:
                return own.put_part(file_id, 2, slowly(body, 0.2))

        return call

    answers = together(send(variants[0]), send(variants[1]))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    with FilesClient(e2e_server, e2e_key) as client:
        etag = {p["partNumber"]: p["etag"] for p in client.get(file_id)["parts"]}[2]
        winner = next(v for v in variants if etag == part_etag(v))
        assert client.complete(file_id).status_code == 200
    check_file(e2e_server, e2e_key, file_id, data[:PART] + winner + data[2 * PART :])


def test_two_whole_puts_at_once_never_mix(e2e_server: ChunkdServer, e2e_key: str) -> None:
    """A whole-file PUT sent while an older one for the same upload still streams (a client that
    retried with other bytes, or two clients sharing the uploadUrl): the newer stops the older and
    stores its own body; the file is one of the bodies, never parts of each."""
    older, newer = seeded_bytes(40, SIZE), seeded_bytes(41, SIZE)
    with FilesClient(e2e_server, e2e_key) as client:
        file_id = client.create(SIZE, PART)["id"]
    resume = threading.Event()

    def stalled() -> Iterator[bytes]:
        yield older[:PART]
        resume.wait(timeout=60)
        yield older[PART:]

    def put_older() -> httpx.Response | httpx.TransportError:
        with FilesClient(e2e_server, e2e_key) as own:
            try:
                url = f"/v1/files/{file_id}/content"
                return own.http.put(url, content=stalled(), headers={"Content-Length": str(SIZE)})
            except httpx.TransportError as error:  # answered (and closed) before the rest was sent
                return error

    with ThreadPoolExecutor(1) as pool, FilesClient(e2e_server, e2e_key) as client:
        first = pool.submit(put_older)
        wait_for(lambda: client.get(file_id)["parts"], what="the older PUT's first part")
        second = client.http.put(f"/v1/files/{file_id}/content", content=newer)
        resume.set()
        stopped = first.result()
        assert second.status_code == 200, second.text
        assert isinstance(stopped, httpx.TransportError) or stopped.status_code == 409, stopped.text
        assert client.complete(file_id).status_code == 200
    check_file(e2e_server, e2e_key, file_id, newer)
