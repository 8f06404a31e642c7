"""Moving a request body into a blob writer while hashing it, with bounded memory."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from chunkd.domain.checksum import ResumableMD5, StreamHasher
from chunkd.domain.errors import TooLarge
from chunkd.ports.blobs import BlobWriter

__all__ = ["BATCH_BYTES", "BodyReader", "StreamedPart", "stream_into"]

# Bodies arrive in ~64 KiB pieces; hashing and writing them in ~1 MiB batches keeps the per-batch
# thread hand-off cheap while memory stays bounded at one batch per in-flight request.
BATCH_BYTES = 1024 * 1024


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


class StreamedPart:
    """What streaming one part produced: its size and digests, and the writer to commit."""

    def __init__(
        self,
        writer: BlobWriter,
        whole: ResumableMD5 | None,
        extra: StreamHasher | None,
        *,
        part_md5: bool = True,
    ) -> None:
        self.writer = writer
        self.whole = whole
        self.whole_start = whole.state() if whole is not None else None
        self.extra = extra
        self.size = 0
        # The part's own MD5 is its ETag and tells a re-sent part from a changed one; appended
        # parts have no use for it, so they skip that second pass over every byte. A part hashed
        # into a whole-file state that has seen no byte yet (it starts the file) has the whole-file
        # digest as its own: hash it once, not twice (MD5 is most of the CPU an upload costs).
        self._part_is_whole = part_md5 and self.whole_start == _EMPTY_MD5_STATE
        self._md5 = hashlib.md5() if part_md5 and not self._part_is_whole else None

    @property
    def md5(self) -> str:
        if self._md5 is not None:
            return self._md5.hexdigest()
        if self._part_is_whole:
            assert self.whole is not None
            return self.whole.hexdigest()
        return ""

    def _hash_part(self, data: bytes) -> None:
        if self._md5 is not None:
            self._md5.update(data)

    def _hash_rest(self, data: bytes) -> None:
        if self.whole is not None:
            self.whole.update(data)
        if self.extra is not None:
            self.extra.update(data)

    async def feed(self, data: bytes) -> None:
        # The digests and the write all release the GIL, so they run side by side.
        jobs = [self.writer.write(data)]
        if self._md5 is not None:
            jobs.append(asyncio.to_thread(self._hash_part, data))
        if self.whole is not None or self.extra is not None:
            jobs.append(asyncio.to_thread(self._hash_rest, data))
        await asyncio.gather(*jobs)
        self.size += len(data)


async def stream_into(
    part: StreamedPart,
    chunks: AsyncIterator[bytes],
    *,
    limit: int | None,
    limit_error: Callable[[], Exception] | None = None,
    heartbeat: Callable[[], Awaitable[None]] | None = None,
    heartbeat_every: float = 30.0,
) -> None:
    """Feed ``chunks`` into ``part``. Past ``limit`` bytes reading stops at once and ``limit_error()``
    is raised (the rest of the body is never read). ``heartbeat`` runs every ``heartbeat_every``
    seconds while bytes flow, so an upload receiving bytes does not expire."""
    buffer = bytearray()
    total = 0
    last_beat = time.monotonic()
    # One batch is hashed and written (in threads) while the next one is received, so reading
    # the socket overlaps with hashing; batches still go in strictly in order, and at most two
    # are held in memory.
    feeding: asyncio.Task[None] | None = None
    try:
        async for chunk in chunks:
            total += len(chunk)
            if limit is not None and total > limit:
                raise (limit_error() if limit_error else TooLarge(f"body is longer than {limit} bytes", field="body"))
            buffer += chunk
            if len(buffer) >= BATCH_BYTES:
                data = bytes(buffer)
                buffer.clear()
                if feeding is not None:
                    await feeding
                feeding = asyncio.create_task(part.feed(data))
            # Checked on every chunk, not only per batch: a slow client may take longer than the
            # TTL to fill one batch, and its upload must not expire while its bytes trickle in.
            if heartbeat is not None and time.monotonic() - last_beat >= heartbeat_every:
                last_beat = time.monotonic()
                await heartbeat()
    finally:
        if feeding is not None:
            await feeding
        # Also on a broken body (client gone): what arrived is handed over, and the caller
        # decides whether to keep it (appends keep partial bytes) or abort.
        if buffer:
            data = bytes(buffer)
            buffer.clear()
            await part.feed(data)
