"""Release requests between the workers of one ``chunkd serve --workers N`` (the datagram socket
pairs of ``chunkd.backends.locks.siblings``), here with both ends in one process: which writers a
request stops. The requests crossing real processes are tested in tests/e2e/test_workers.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from chunkd.backends.locks.release import ReleaseRegistry
from chunkd.backends.locks.siblings import Siblings, channels


@pytest.fixture
def pair() -> Iterator[tuple[Siblings, Siblings]]:
    inboxes, outboxes = channels(2)
    yield Siblings(inboxes, outboxes, 0), Siblings(inboxes, outboxes, 1)
    for box in (*inboxes, *outboxes):
        box.close()


async def delivered() -> None:
    """Let the event loop read what is in the inbox (a datagram pair delivers at once)."""
    for _ in range(10):
        await asyncio.sleep(0)


def listening(siblings: Siblings, registry: ReleaseRegistry) -> None:
    siblings.listen(lambda upload, requester, at: registry.fire(upload, requester, asked_at=at))


async def test_a_request_stops_the_other_workers_writer_but_not_its_own(pair: tuple[Siblings, Siblings]) -> None:
    asking, holding = pair
    registry = ReleaseRegistry()
    listening(holding, registry)
    stopped: list[str] = []
    try:
        with (
            registry.register("up1", lambda: stopped.append("stale")),
            registry.register("up1", lambda: stopped.append("mine"), "token-1"),
        ):
            asking.ask("up1", "token-1")
            asking.ask("other", "token-1")
            await delivered()
        assert stopped == ["stale"]
    finally:
        holding.stop()


async def test_a_request_that_arrives_late_leaves_a_newer_writer_alone(pair: tuple[Siblings, Siblings]) -> None:
    """A waiter asks again every ASK_AGAIN; a request sent before a writer registered was meant for
    the one before it, and must not stop the new one."""
    asking, holding = pair
    registry = ReleaseRegistry()
    listening(holding, registry)
    stopped: list[str] = []
    try:
        asking.ask("up1", "token-1")  # sent; read only when the loop runs
        with registry.register("up1", lambda: stopped.append("newer")):
            await delivered()
            assert stopped == []
            asking.ask("up1", "token-2")  # sent after it registered: stops it
            await delivered()
        assert stopped == ["newer"]
    finally:
        holding.stop()


async def test_a_worker_started_again_drops_the_requests_left_for_its_predecessor(
    pair: tuple[Siblings, Siblings],
) -> None:
    asking, holding = pair
    registry = ReleaseRegistry()
    stopped: list[str] = []
    with registry.register("up1", lambda: stopped.append("writer")):
        asking.ask("up1", "token-1")  # queued while no worker listens in that slot
        listening(holding, registry)
        try:
            await delivered()
        finally:
            holding.stop()
    assert stopped == []
