"""The sandbox that hostile files are parsed in: content inspection (Pillow, pypdf) runs in a small
pool of worker processes of its own, never in the server's process or its default thread pool.

Why a process and not a thread: a crafted PDF or image can make a parser spin for minutes or
allocate gigabytes (a 9.5 MB PDF of 100,000 pages: 11.7 s and +280 MB in pypdf), and a thread can
neither be stopped nor limited. Each worker process is held to

- an address-space limit (``RLIMIT_AS``, ``memory_bytes``): an allocation past it fails with
  ``MemoryError`` in the worker, or kills it;
- a CPU-time limit (``RLIMIT_CPU``, the wall time rounded up plus one second, set afresh for each
  job over the CPU the worker has used so far): a backstop that kills the worker with ``SIGXCPU``
  even if nobody watches it;
- a wall-time limit (``timeout_seconds``): Pebble's pool kills the worker running a job that takes
  longer and starts another, so the rest of the pool carries on.

Pebble is used rather than ``concurrent.futures.ProcessPoolExecutor`` because the standard pool
cannot stop one running job: its only remedy for a stuck worker is to break the whole pool. The
workers are forked from a fork server that has the parsers imported already, so replacing a
killed one is cheap and inherits nothing of the server's threads, sockets or memory.

Any of these limits answers the client with the same 400 as a file that is not what it claims
to be (``ContentRefused``); the caller records it on the upload so the bytes are not parsed again.

A worker that dies while it has no job (the OOM killer, a stray ``kill``) makes Pebble give up
on the whole pool: that job and every one after it failed with ``BrokenProcessPool`` (a 500 on
every media complete until a restart). A broken pool is let go and a fresh one started; the job,
which never ran, is tried once on it, and a second break answers 429 (``RateLimited``, nothing
recorded) like a full queue.

Jobs wait for a worker in this process, not in Pebble's queue, so that the wait is bounded and
shared fairly: at most ``queue`` jobs wait (one more is ``RateLimited``, a 429 that records
nothing), and a free worker goes to the waiting job whose owner has had the fewest turns since it
last had none (each owner's oldest, then each one's second …). Pebble's queue was first come,
first served and unbounded: 20 completes of one owner's 3.6 KB PDF (2.3 s of pypdf each) held
another owner's 70-byte PNG back 46 s.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import multiprocessing
import os
import resource
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Literal

from pebble import ProcessExpired, ProcessPool

from chunkd.domain.errors import ContentRefused, InvalidInput, RateLimited
from chunkd.service.content import Inspection, inspect_image, inspect_pdf

__all__ = [
    "OUTCOMES",
    "InspectionLimits",
    "InspectionPool",
    "Kind",
    "cap_cpu",
    "run_inspection",
    "worker_pool",
]

Kind = Literal["image", "pdf"]
#: How one inspection ended: the file is what it claims (``accepted``), is not, or passed a parser's
#: own limit (``refused``), took longer than allowed (``timeout``), passed its CPU or memory limit
#: (``killed``), found ``queue`` jobs waiting already (``busy``, a 429), or was given up by its
#: request (``cancelled``: the client went away), or failed otherwise (``error``: a fault).
OUTCOMES = ("accepted", "refused", "timeout", "killed", "busy", "cancelled", "error")
# How many jobs one worker runs before it is replaced (memory fragmentation from hostile files).
JOBS_PER_WORKER = 200


@dataclass(frozen=True)
class InspectionLimits:
    """Settings ``media_inspect_*``."""

    workers: int
    timeout_seconds: float
    memory_bytes: int
    max_pdf_pages: int
    max_image_pixels: int
    queue: int = 16  # jobs that may wait for a worker

    @property
    def cpu_seconds(self) -> int:
        return math.ceil(self.timeout_seconds) + 1


def _start_worker(memory_bytes: int) -> None:
    """Worker initializer: the address-space limit, no core files (a worker killed by SIGXCPU
    would otherwise dump one), and a lower priority than the server's own process."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or memory_bytes < hard:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    os.nice(5)


def cap_cpu(seconds: int) -> None:
    """RLIMIT_CPU counts the whole life of the process: allow ``seconds`` more than used so far
    (only the soft limit moves, so it can move again for the next job)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime) + seconds
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def run_inspection(
    kind: Kind, path: str, max_pixels: int, max_pages: int, cpu_seconds: int
) -> tuple[Inspection | None, str]:
    """One job, in a worker: ``(inspection, "")``, or ``(None, why it was refused)`` (plain data:
    exceptions with keyword arguments do not survive pickling back to the server)."""
    cap_cpu(cpu_seconds)
    try:
        with open(path, "rb") as handle:
            if kind == "pdf":
                return inspect_pdf(handle, max_pages=max_pages), ""
            return inspect_image(handle, max_pixels=max_pixels), ""
    except InvalidInput as exc:
        return None, exc.message
    except MemoryError:
        return None, "inspecting the file needs more memory than allowed"


def _context() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    # The fork server imports the parsers once; every worker forked from it starts with them.
    context.set_forkserver_preload(["chunkd.service.inspection", "PIL.Image", "pypdf"])
    return context


def worker_pool(limits: InspectionLimits) -> ProcessPool:
    """A Pebble pool of ``limits.workers`` limited workers (jobs call ``cap_cpu`` themselves)."""
    return ProcessPool(
        max_workers=limits.workers,
        max_tasks=JOBS_PER_WORKER,
        initializer=_start_worker,
        initargs=(limits.memory_bytes,),
        context=_context(),
    )


class _PoolBroken(Exception):
    """Pebble gave up on ``pool``: the job did not run."""

    def __init__(self, pool: ProcessPool) -> None:
        super().__init__("the inspection pool is broken")
        self.pool = pool


@dataclass(eq=False)
class _Waiter:
    owner: str
    tag: int  # the owner's turn number: the lowest waiting one goes next
    order: int  # arrival, between equal tags
    turn: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class InspectionPool:
    """``await pool.inspect(kind, path, owner=...)``: the file at ``path`` inspected in a limited
    worker.

    The pool starts on first use (most servers never inspect anything) and is stopped by
    ``close``. Jobs beyond ``workers`` wait for a free worker, at most ``queue`` of them, taking
    turns by owner; their wall time starts when a worker takes them."""

    def __init__(self, limits: InspectionLimits) -> None:
        self.limits = limits
        self._pool: ProcessPool | None = None
        self.jobs_started = 0  # jobs handed to a worker (observable by tests and metrics)
        self._running = 0
        self._waiting: list[_Waiter] = []
        self._clock = 0  # the tag of the last job started
        self._last_tag: dict[str, int] = {}  # owners with a job running or waiting: their last tag
        self._jobs: dict[str, int] = {}  # … and how many they have
        self._arrivals = itertools.count()
        # What the runtime counts (chunkd.metrics): each inspection's kind, outcome and worker time
        # (None: it never reached a worker), and the jobs waiting and running after each change.
        self.count: Callable[[Kind, str, float | None], None] = lambda kind, outcome, seconds: None
        self.occupancy: Callable[[int, int], None] = lambda waiting, running: None

    async def _take_turn(self, owner: str) -> None:
        """Wait until a worker is free for ``owner``'s job (``RateLimited`` when ``queue`` jobs wait
        already); the caller gives the turn back with ``_give_back``."""
        tag = max(self._clock, self._last_tag.get(owner, 0) + 1)
        if self._running < self.limits.workers and not self._waiting:
            self._count(owner, tag, +1)
            self._running += 1
            self._clock = tag
            self.occupancy(len(self._waiting), self._running)
            return
        if len(self._waiting) >= self.limits.queue:
            raise RateLimited(
                f"{len(self._waiting)} files wait to be inspected already; try again shortly", field="upload_id"
            )
        waiter = _Waiter(owner, tag, next(self._arrivals))
        self._waiting.append(waiter)
        self._count(owner, tag, +1)
        self.occupancy(len(self._waiting), self._running)
        try:
            await waiter.turn
        except BaseException:
            if waiter in self._waiting:  # cancelled while waiting
                self._waiting.remove(waiter)
                self._count(owner, tag, -1)
                self.occupancy(len(self._waiting), self._running)
            elif not waiter.turn.cancelled():  # cancelled once its turn had come
                self._give_back(owner)
            raise

    def _count(self, owner: str, tag: int, change: int) -> None:
        jobs = self._jobs.get(owner, 0) + change
        if jobs:
            self._jobs[owner] = jobs
            self._last_tag[owner] = max(self._last_tag.get(owner, 0), tag)
        else:
            self._jobs.pop(owner, None)
            self._last_tag.pop(owner, None)

    def _give_back(self, owner: str) -> None:
        self._running -= 1
        self._count(owner, 0, -1)
        while self._waiting and self._running < self.limits.workers:
            waiter = min(self._waiting, key=lambda w: (w.tag, w.order))
            self._waiting.remove(waiter)
            self._running += 1
            self._clock = max(self._clock, waiter.tag)
            waiter.turn.set_result(None)
        self.occupancy(len(self._waiting), self._running)

    def _ensure(self) -> ProcessPool:
        if self._pool is None:
            self._pool = worker_pool(self.limits)
        return self._pool

    async def inspect(self, kind: Kind, path: str, *, owner: str = "", field: str = "type") -> Inspection:
        """What the file at ``path`` is; ``ContentRefused`` (naming ``field``) when it is not an
        acceptable ``kind``, or when inspecting it passed a limit; ``RateLimited`` when too many
        files wait already (``owner``'s jobs take turns with other owners')."""
        try:
            await self._take_turn(owner)
        except RateLimited:
            self.count(kind, "busy", None)
            raise
        try:
            return await self._run(kind, path, field)
        finally:
            self._give_back(owner)

    async def _run(self, kind: Kind, path: str, field: str) -> Inspection:
        try:
            return await self._run_on(self._ensure(), kind, path, field)
        except _PoolBroken as broken:
            await self._discard(broken.pool)
        try:
            return await self._run_on(self._ensure(), kind, path, field)
        except _PoolBroken as broken:
            await self._discard(broken.pool)
            raise RateLimited(
                "the inspection workers stopped and are being restarted; try again shortly", field=field
            ) from None

    async def _discard(self, pool: ProcessPool) -> None:
        """Let go of a pool Pebble gave up on (its threads have stopped; its workers are killed), so
        that the next job starts a fresh one."""
        if self._pool is pool:
            self._pool = None
        pool.stop()  # type: ignore[no-untyped-call]
        await asyncio.to_thread(pool.join, 10)

    async def _run_on(self, pool: ProcessPool, kind: Kind, path: str, field: str) -> Inspection:
        limits = self.limits
        try:
            future = pool.schedule(
                run_inspection,
                args=(kind, path, limits.max_image_pixels, limits.max_pdf_pages, limits.cpu_seconds),
                timeout=limits.timeout_seconds,
            )
        except RuntimeError as exc:  # "Unexpected error within the Pool": broken before this job
            raise _PoolBroken(pool) from exc
        self.jobs_started += 1
        # Cancelling this await (the client went away) cancels the job, and Pebble kills its worker.
        started = time.perf_counter()
        outcome = "error"
        try:
            found, refusal = await asyncio.wrap_future(future)
            outcome = "refused" if found is None else "accepted"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except BrokenProcessPool as exc:  # a worker died idle: Pebble failed every job of the pool
            raise _PoolBroken(pool) from exc
        except FutureTimeout:
            outcome = "timeout"
            raise ContentRefused(
                f"inspecting the file took longer than the {limits.timeout_seconds:g} seconds allowed",
                field=field,
                limit="media_inspect_timeout_seconds",
            ) from None
        except ProcessExpired as exc:  # killed by its CPU or memory limit (or it crashed)
            outcome = "killed"
            raise ContentRefused(
                f"inspecting the file passed its CPU or memory limit (the worker stopped: {exc})",
                field=field,
                limit="media_inspect_memory_bytes",
            ) from None
        finally:
            self.count(kind, outcome, time.perf_counter() - started)
        if found is None:
            raise ContentRefused(refusal, field=field)
        return found

    def close(self) -> None:
        """Stop the workers (running jobs are killed)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()  # type: ignore[no-untyped-call]
            pool.join(timeout=10)
