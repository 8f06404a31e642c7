"""Moving a request body into a blob writer while hashing it, with bounded memory."""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import cast

from chunkd.domain.checksum import ResumableMD5, StreamHasher
from chunkd.domain.errors import StorageError, TooLarge
from chunkd.ports.blobs import BlobWriter, BlockingWriter
from chunkd.service.crc import Crc64Hasher

__all__ = ["BATCH_BYTES", "BodyReader", "StreamedPart", "stream_into"]

# Bodies arrive in ~64 KiB pieces; hashing and writing them in ~1 MiB batches keeps the per-batch
# thread hand-off cheap while memory stays bounded at one batch per in-flight request.
BATCH_BYTES = 1024 * 1024
# What all the bodies streaming in one process may hold in batches (received, not yet written and
# hashed). One stream gets full 1 MiB batches; many streams share the budget with smaller ones (not
# below MIN_BATCH_BYTES), so memory stays flat however many uploads run at once: 32 concurrent tus
# uploads held ~4 MiB each in batches before (≈130 MiB over the process's base), now ≤ 16 MiB in all.
# 16 MiB rather than 24 (32 streams: 128 KiB batches instead of 192 KiB): peak RSS of 32 concurrent
# uploads 159–166 → 152–153 MiB; up to 4 streams still get 1 MiB batches (compare.py rss-32, 2026-11-30).
STREAM_BUDGET_BYTES = 16 * 1024 * 1024
MIN_BATCH_BYTES = 128 * 1024
_active_streams = 0


def batch_bytes() -> int:
    """The batch size for a stream now, given how many streams share the budget."""
    share = STREAM_BUDGET_BYTES // (max(1, _active_streams) * (PIPELINE_DEPTH + 1))
    return max(MIN_BATCH_BYTES, min(BATCH_BYTES, share))


class BodyReader:
    """Wraps a body iterator so that it can be consumed in consecutive slices of exact sizes
    (one PUT of a whole file becomes many parts)."""

    def __init__(self, body: AsyncIterator[bytes]) -> None:
        self._body = body
        self._carry = b""
        self.exhausted = False

    async def slice(self, limit: int | None) -> AsyncIterator[bytes]:
        """Yield at most ``limit`` bytes (all that is left if None); the rest stays for the next slice."""
        remaining = limit
        while remaining is None or remaining > 0:
            if self._carry:
                chunk, self._carry = self._carry, b""
            else:
                try:
                    chunk = await anext(self._body)
                except StopAsyncIteration:
                    self.exhausted = True
                    return
                if not chunk:
                    continue
            if remaining is not None and len(chunk) > remaining:
                chunk, self._carry = chunk[:remaining], chunk[remaining:]
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk

    async def at_end(self) -> bool:
        """True once no byte is left (reads ahead one chunk if needed)."""
        if self._carry:
            return False
        if self.exhausted:
            return True
        async for chunk in self.slice(None):
            self._carry = chunk
            return False
        return True


_EMPTY_MD5_STATE = ResumableMD5().state()

# Batches one request may have in flight (received, not yet written and hashed). More than one
# lets the slowest stage (an MD5 at ~600 MiB/s per core) run without a gap while the event loop
# receives the next batches; the cost is this many batches of memory per request.
PIPELINE_DEPTH = 3


class _Lane:
    """The write stage of a store whose ``write`` is a coroutine (S3): its jobs run one after
    another, in the order they were pushed, without the caller waiting for each. A lane holds no
    job once it has run: a lane that kept its stage's function (a bound method of the part) would
    make each part a reference cycle, left for the cyclic collector to find (~23 objects per
    request, promoted to older generations while the request runs)."""

    def __init__(self) -> None:
        self._tail: asyncio.Task[None] | None = None

    def push(self, job: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``job`` after every job pushed before it."""
        self._tail = asyncio.create_task(self._run(self._tail, job))
        return self._tail

    @staticmethod
    async def _run(previous: asyncio.Task[None] | None, job: Callable[[], Awaitable[None]]) -> None:
        if previous is not None:
            await previous  # a failed stage fails every later job of it too
        await job()


# The threads of every stream's thread lanes, sized as asyncio's default executor (which ran these
# jobs before). Its threads start at the first job (never in a supervisor that forks workers).
_LANES = ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="chunkd-lane")
# Jobs a lane runs before it lets the pool's other lanes go first: a whole pipeline's worth.
_TURN = PIPELINE_DEPTH


class _ThreadLane:
    """A stage whose jobs are blocking calls (a local write, a digest): they run one after another
    in a worker thread that takes the next job as soon as it has finished the last, with no round
    trip through the event loop in between. A ``_Lane``'s next job waited for the loop to notice
    the last one had ended and hand the next to a thread, while the loop was busy receiving the
    next batch or serving other requests, and the stage sat idle meanwhile. The thread is one of
    ``_LANES``', held for at most ``_TURN`` jobs at a time: a lane with more queued goes to the back
    of the pool's queue, so that lanes kept busy by fast clients cannot hold every thread while
    other uploads' lanes wait. A job that fails fails every later job of the lane with the same
    error, unrun. Measured against task-per-batch lanes (three alternating pairs, 2026-12-01): one
    256 MiB tus PATCH 323/376/367 → 390/405/413 MiB/s, 8 MiB parts 180/200/190 → 199/211/200."""

    def __init__(self) -> None:
        self._jobs: collections.deque[tuple[Callable[[], object], asyncio.Future[None]]] = collections.deque()
        self._lock = threading.Lock()
        self._draining = False
        self._failed: BaseException | None = None

    def push(self, job: Callable[[], object]) -> asyncio.Future[None]:
        """Queue ``job``; the future is done once it has run (or failed)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._jobs.append((job, done))
            idle, self._draining = not self._draining, True
        if idle:
            _LANES.submit(self._drain, loop)
        return done

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        for _ in range(_TURN):
            with self._lock:
                if not self._jobs:
                    self._draining = False
                    return
                job, done = self._jobs.popleft()
            if self._failed is None:
                try:
                    job()
                except BaseException as exc:  # the job's caller gets it, in the event loop
                    self._failed = exc
            with suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
                loop.call_soon_threadsafe(_settle, done, self._failed)
        _LANES.submit(self._drain, loop)  # the turn is over; still draining: back of the queue


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():  # cancelled: its caller has gone
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def _update_all(hasher: StreamHasher | ResumableMD5, chunks: Sequence[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)


# Digests of a one-batch body run here while the worker thread that wrote it waits for the disk:
# MD5 (~600 MB/s) and fdatasync both release the GIL, so they overlap instead of adding up. On this
# machine a 256 KiB write + MD5 + fdatasync took 1.17–1.26 ms one after the other and 0.81–0.83 ms
# overlapped; 1 MiB 3.7–4.4 ms and 2.3–2.9 ms (200 each, medians, 2026-12-01). A pool of its own:
# the writing job, in asyncio's pool, waits for this one, which must never queue behind it there.
# Its threads start at the first job (never in a supervisor that forks workers).
_DIGESTS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="chunkd-digest")


# Whether a writer's type can write in the caller's thread, by type: isinstance against a
# runtime-checkable Protocol inspects the class each time (~0.25 ms on Python 3.11, once per body).
_BLOCKING_TYPES: dict[type, bool] = {}


def _as_blocking(writer: BlobWriter) -> BlockingWriter | None:
    kind = type(writer)
    blocking = _BLOCKING_TYPES.get(kind)
    if blocking is None:
        blocking = _BLOCKING_TYPES[kind] = isinstance(writer, BlockingWriter)
    return cast("BlockingWriter", writer) if blocking else None


class StreamedPart:
    """What streaming one part produced: its size and checksums, and the writer to commit.

    Each batch goes through independent lanes (the write, the whole-file MD5, optionally the part's
    own MD5 and an extra digest). They all release the GIL, so on two cores the digests run side by
    side while the event loop receives; each lane keeps its batches in order.

    ``size`` counts bytes only once the writer has taken them: a storage fault never leaves bytes
    counted that are not in storage. The part's CRC-64/NVME is computed in the write lane (at
    several GB/s it costs less than a lane of its own); it is the part's integrity checksum and
    combines into the whole file's without reading anything again (invariant 5: MD5 once per byte).
    """

    def __init__(
        self,
        writer: BlobWriter,
        whole: ResumableMD5 | None,
        extra: StreamHasher | None,
        *,
        part_md5: bool = False,
        crc_seed: int = 0,
        follows: StreamedPart | None = None,
    ) -> None:
        self.writer = writer
        # ``follows``: the part before this one in the same body, whose lanes may still be hashing
        # it. This part's bytes continue its whole-file MD5 in the same lane, queued behind its
        # bytes, so the body's next part streams in without waiting for the last one's hash.
        chained = follows is not None and follows.whole is not None
        self._whole_lane: _ThreadLane | None
        if chained:
            assert follows is not None
            whole, self._whole_lane = follows.whole, follows._whole_lane
        else:
            self._whole_lane = _ThreadLane() if whole is not None else None
        self.whole: ResumableMD5 | None = whole
        self._chained = chained
        # The whole-file MD5 state before this part's bytes and after them. A chained part's are
        # snapshots taken in the lane (the shared hasher runs on past them), known once it has landed.
        self.whole_start = whole.state() if whole is not None and not chained else None
        self._whole_end: bytes | None = None
        self._tail: asyncio.Future[list[object]] | None = None
        self.received = 0  # bytes the body gave (``size`` counts them once written)
        self.extra = extra
        self.size = 0
        self._crc = Crc64Hasher(crc_seed)
        # The part's own MD5 is computed only where a client or a dialect needs it (Content-MD5, an
        # S3-style MD5 ETag). A part hashed into a whole-file state that has seen no byte yet (it
        # starts the file) has the whole-file digest as its own: hash it once, not twice.
        self._part_is_whole = part_md5 and self.whole_start == _EMPTY_MD5_STATE
        self._md5 = hashlib.md5() if part_md5 and not self._part_is_whole else None
        self._hashers = [hasher for hasher in (self._md5, whole, extra) if hasher is not None]
        self._blocking = _as_blocking(writer)
        # A store that writes in the caller's thread writes in a lane of blocking jobs, as the
        # digests run; any other store's ``write`` is a coroutine, in a lane of its own.
        self._thread_write = _ThreadLane() if self._blocking is not None else None
        self._async_write = _Lane() if self._blocking is None else None
        self._digest_lanes = [
            (self._whole_lane if hasher is whole and self._whole_lane is not None else _ThreadLane(), hasher)
            for hasher in self._hashers
        ]
        if chained:
            assert self._whole_lane is not None
            self._whole_lane.push(self._mark_start)
        self._sealed = False  # the bytes' sync is on its way (``seal``, or the one-batch hop)

    def _mark_start(self) -> None:
        assert self.whole is not None
        self.whole_start = self.whole.state()

    def _mark_end(self) -> None:
        assert self.whole is not None
        self._whole_end = self.whole.state()

    @property
    def whole_end(self) -> bytes | None:
        """The whole-file MD5 state after this part's bytes (once the part has landed)."""
        if self._whole_end is not None:
            return self._whole_end
        return self.whole.state() if self.whole is not None else None

    async def _write(self, chunks: Sequence[bytes]) -> None:
        """A store whose write is a coroutine: the write, then the CRC in a worker thread."""
        await self.writer.write(chunks)
        await asyncio.to_thread(self._crc.update_all, chunks)
        self.size += sum(map(len, chunks))

    def _write_blocking(self, writer: BlockingWriter, chunks: Sequence[bytes]) -> None:
        writer.write_blocking(chunks)
        self._crc.update_all(chunks)

    def _write_counted(self, writer: BlockingWriter, chunks: Sequence[bytes]) -> None:
        """A lane job: the write and the CRC, then the bytes are counted (only once written)."""
        self._write_blocking(writer, chunks)
        self.size += sum(map(len, chunks))

    def _everything(self, writer: BlockingWriter, chunks: Sequence[bytes]) -> None:
        """The whole body as one batch, in one worker thread: write, CRC, and the sync that makes
        the bytes durable (so the commit after it needs no hop of its own), while the digests run
        in a second thread."""
        self._write_blocking(writer, chunks)
        if not self._hashers:
            writer.sync_blocking()
        else:
            digested = _DIGESTS.submit(self._digest_all, chunks)
            try:
                writer.sync_blocking()
            finally:
                digested.result()  # never return while a hasher is still being updated
        self.size += sum(map(len, chunks))

    def _digest_all(self, chunks: Sequence[bytes]) -> None:
        for hasher in self._hashers:
            _update_all(hasher, chunks)

    @property
    def md5(self) -> str:
        """The part's MD5 hex digest, or "" when it was not asked for."""
        if self._md5 is not None:
            return self._md5.hexdigest()
        if self._part_is_whole:
            # From the state after this part's own bytes: the hasher itself runs on into the next
            # part of the same body (``follows``) before this part is committed.
            end = self.whole_end
            assert end is not None
            return ResumableMD5(end).hexdigest()
        return ""

    @property
    def crc64(self) -> int:
        """The part's CRC-64/NVME so far (continuing from ``crc_seed``)."""
        return self._crc.value

    @property
    def crc_hex(self) -> str:
        return self._crc.hexdigest()

    def push(self, chunks: Sequence[bytes], *, only: bool = False) -> asyncio.Future[list[None]]:
        """Start writing and hashing one batch; the future is done when every lane has it.
        ``only``: this batch is the whole body (nothing was pushed before it). With a store that
        writes in our thread it is then written and hashed in one executor hop: for a small body
        the hops cost more than the work (a 256 KiB PATCH took five hops, two of them per lane);
        a longer body keeps the lanes, whose MD5 runs beside the write on another core."""
        if only and self._blocking is not None and not self._chained:
            self._sealed = True
            return asyncio.gather(*[asyncio.to_thread(self._everything, self._blocking, chunks)])
        jobs: list[asyncio.Future[None]] = []
        if self._thread_write is not None:
            assert self._blocking is not None
            jobs.append(self._thread_write.push(functools.partial(self._write_counted, self._blocking, chunks)))
        elif self._async_write is not None:
            jobs.append(self._async_write.push(functools.partial(self._write, chunks)))
        jobs += [lane.push(functools.partial(_update_all, hasher, chunks)) for lane, hasher in self._digest_lanes]
        return asyncio.gather(*jobs)

    def seal(self) -> asyncio.Future[list[None]] | None:
        """The body has ended: make the written bytes durable in the write lane, right after its
        last write and beside the digests still running, so the commit has no sync left to wait
        for. None where the store syncs only in its commit, or the one-batch hop already syncs."""
        if self._thread_write is None or self._blocking is None or self._sealed:
            return None
        self._sealed = True
        return asyncio.gather(*[self._thread_write.push(self._blocking.sync_blocking)])

    def mark_end(self) -> asyncio.Future[list[None]] | None:
        """The body has ended: snapshot the whole-file state after its bytes, in their lane, before
        a part that follows adds its own (None if this part hashes no whole-file MD5)."""
        if self._whole_lane is None:
            return None
        return asyncio.gather(*[self._whole_lane.push(self._mark_end)])

    async def feed(self, chunks: Sequence[bytes]) -> None:
        """Write and hash one batch, and wait for it."""
        await self.push(chunks)

    def land_later(self, jobs: Sequence[asyncio.Future[list[None]]]) -> None:
        """``landed`` is to wait for these (``stream_into(wait=False)``)."""
        self._tail = asyncio.gather(*jobs, return_exceptions=True)

    async def landed(self) -> None:
        """Wait until every byte handed over is written, hashed and, where the store syncs as it
        goes, durable; raise what failed. Only a part streamed with ``wait=False`` has anything
        left to wait for here."""
        if self._tail is None:
            return
        # Shielded: a caller cancelled here leaves the jobs running, and ``abandon`` waits for them.
        outcomes = await asyncio.shield(self._tail)
        self._tail = None
        _raise_first(outcomes, None)

    async def abandon(self) -> None:
        """Abort the writer, once no lane job still runs on it (or at once if cancelled meanwhile:
        a store's writer refuses writes after its abort)."""
        try:
            if self._tail is not None:
                await asyncio.wait([self._tail])
        finally:
            self._tail = None
            await self.writer.abort()


def _raise_first(outcomes: Sequence[object], body_error: BaseException | None) -> None:
    # A storage fault decides what is durable, so it wins over whatever ended the body: the caller
    # must abort, never keep "what arrived" as if the client had merely gone away.
    for outcome in outcomes:
        if isinstance(outcome, StorageError):
            raise outcome from body_error
    if body_error is not None:
        raise body_error
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def stream_into(
    part: StreamedPart,
    chunks: AsyncIterator[bytes],
    *,
    limit: int | None,
    limit_error: Callable[[], Exception] | None = None,
    heartbeat: Callable[[], Awaitable[None]] | None = None,
    heartbeat_every: float = 30.0,
    wait: bool = True,
) -> None:
    """Feed ``chunks`` into ``part``. Past ``limit`` bytes reading stops at once and ``limit_error()``
    is raised (the rest of the body is never read). ``heartbeat`` runs every ``heartbeat_every``
    seconds while bytes flow, so an upload receiving bytes does not expire.

    ``wait=False``: once the body has ended well, return without waiting for the last batches'
    writes, hashes and sync; ``part.landed()`` waits for them (and raises what failed). The next
    part of one long body then streams in meanwhile, its whole-file MD5 queued behind this one's
    (``StreamedPart(follows=...)``): up to two pipelines of batches are in memory at that moment.
    A body that breaks off is waited for in either case."""
    # Chunks are batched as a list, never joined: copying every byte once more in the event loop
    # cost as much loop time as receiving it (a 1 MiB bytearray append-then-copy measured ~0.9 ms).
    batch: list[bytes] = []
    batched = 0
    total = 0
    last_beat = time.monotonic()
    # Up to PIPELINE_DEPTH batches are written and hashed (in threads) while the next one is
    # received, so reading the socket overlaps with hashing; memory stays bounded by the depth.
    in_flight: collections.deque[asyncio.Future[list[None]]] = collections.deque()
    body_error: BaseException | None = None
    global _active_streams
    _active_streams += 1
    target = batch_bytes()
    try:
        async for chunk in chunks:
            total += len(chunk)
            if limit is not None and total > limit:
                raise (limit_error() if limit_error else TooLarge(f"body is longer than {limit} bytes", field="body"))
            batch.append(chunk)
            batched += len(chunk)
            if batched >= target:
                if len(in_flight) >= PIPELINE_DEPTH:
                    await in_flight.popleft()
                in_flight.append(part.push(batch))
                batch, batched = [], 0
                target = batch_bytes()
            # Checked on every chunk, not only per batch: a slow client may take longer than the
            # TTL to fill one batch, and its upload must not expire while its bytes trickle in.
            if heartbeat is not None and time.monotonic() - last_beat >= heartbeat_every:
                last_beat = time.monotonic()
                await heartbeat()
    except BaseException as exc:
        body_error = exc
    finally:
        _active_streams -= 1
    # Also on a broken body (client gone): what arrived is handed over, and the caller decides
    # whether to keep it (appends keep partial bytes) or abort.
    part.received = total
    if batch and not isinstance(body_error, StorageError):
        # One hop for a one-batch body, unless a later part's hash is to continue from this one's
        # in its lane (the one-hop job hashes outside the lanes).
        in_flight.append(part.push(batch, only=total == batched and wait))
    if body_error is None and total and (sealed := part.seal()) is not None:
        in_flight.append(sealed)
    if body_error is None and not wait:
        if (marked := part.mark_end()) is not None:
            in_flight.append(marked)
        part.land_later(in_flight)
        return
    _raise_first(await asyncio.gather(*in_flight, return_exceptions=True), body_error)
