"""What chunkd reads of a blocking hook's answer: all of it within ``CHUNKD_HOOK_TIMEOUT_SECONDS``
(httpx's own timeout bounds each read, so a hook trickling its answer would hold the request for
ever) and at most ``MAX_ANSWER_BYTES``; either failure follows the failure policy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from chunkd.domain import errors as e
from chunkd.service.hooks import MAX_ANSWER_BYTES, HttpHooks
from tests.support.uploads import make_upload

Answer = Callable[[httpx.Request], Awaitable[httpx.Response]]


class EndlessBody(httpx.AsyncByteStream):
    """A body that sends one byte and then nothing, never ending."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"{"
        await asyncio.Event().wait()


async def never_ending(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, stream=EndlessBody())


async def never_answering(request: httpx.Request) -> httpx.Response:
    # The mock transport applies no httpx timeout: this stands for a hook trickling its head.
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def too_long(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b'{"metadata": {"x": "' + b"y" * MAX_ANSWER_BYTES + b'"}}')


async def too_deep(request: httpx.Request) -> httpx.Response:
    # Under the size cap, past the parser's recursion limit (it raised RecursionError: a 500).
    return httpx.Response(200, content=b'{"metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


async def lone_surrogate(request: httpx.Request) -> httpx.Response:
    # Valid JSON whose string cannot be stored as UTF-8: every later answer about the upload was a 500.
    return httpx.Response(200, content=b'{"result": "\\ud800", "metadata": {"x": "\\udfff"}}')


async def not_a_number(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b'{"result": NaN, "metadata": {"x": Infinity}}')


def hooks(answer: Answer, *, fail_open: bool, timeout: float = 0.2) -> HttpHooks:
    """0.2 s keeps the answers that must time out quick; one that must arrive gets a longer deadline
    (on a loaded machine an in-process exchange alone took over 100 ms)."""
    return HttpHooks(
        "http://hooks.example/", timeout=timeout, fail_open=fail_open, transport=httpx.MockTransport(answer)
    )


@pytest.mark.parametrize("answer", [never_ending, never_answering, too_long, too_deep, lone_surrogate, not_a_number])
async def test_an_answer_that_never_ends_or_is_too_long_is_a_hook_failure(answer: Answer) -> None:
    refusing = hooks(answer, fail_open=False)
    with pytest.raises(e.Busy) as refused:
        await asyncio.wait_for(refusing.pre_create(make_upload()), 30)  # wait_for: a hang fails, not hangs
    assert refused.value.code == "hook_unavailable"
    await refusing.close()

    allowing = hooks(answer, fail_open=True)
    upload = make_upload()
    await asyncio.wait_for(allowing.pre_create(upload), 30)
    assert "x" not in upload.metadata  # gone ahead as if there were no hook
    await allowing.close()


async def test_an_answer_in_time_and_within_the_cap_is_used() -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"metadata": {"project": "x"}})

    upload = make_upload()
    ok = hooks(answer, fail_open=False, timeout=30)
    await ok.pre_create(upload)
    assert upload.metadata["project"] == "x"
    await ok.close()


async def test_pre_create_metadata_adds_but_never_replaces() -> None:
    """A hook that echoes a client's fields back cannot set the dialect's state, a link's tags or
    the store's reserved ``_`` keys; its new keys are added."""

    async def echoing(request: httpx.Request) -> httpx.Response:
        fields = {"project": "x", "tus": {"forged": True}, "link": "other", "_s3": {"UploadId": "forged"}}
        # Nor the engine's keys the upload has not got yet: an upload link to act on it, a clean scan.
        fields |= {"uploadLink": "lnk_forged", "virusScan": {"result": "clean"}, "concatenation": {}}
        return httpx.Response(200, json={"metadata": fields})

    answering = hooks(echoing, fail_open=False, timeout=30)
    upload = make_upload(metadata={"tus": {"metadata": {}}, "link": "L1"})
    await answering.pre_create(upload)
    assert upload.metadata == {"tus": {"metadata": {}}, "link": "L1", "project": "x"}
    await answering.close()
