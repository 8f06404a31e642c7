"""The built-in pre-finish virus scan: the upload's stored bytes are streamed to ClamAV's clamd
(``CHUNKD_CLAMD``: a Unix socket path, or host:port) with its INSTREAM command, before the upload
is marked COMPLETED. An infected file is refused with the signature's name, its bytes removed and
``upload.rejected`` emitted (see ``ContentRejected``).

INSTREAM is written here rather than taken from a client library: the Python clients on PyPI
either block (clamd, pyclamd) or read from a file object (aioclamd), and the bytes here come from an
async iterator over the blob store (local disk or S3), sent as they are read with nothing spooled.
The protocol is small: ``zINSTREAM\\0``, then chunks each prefixed with its length as 4 big-endian
bytes, then a zero length; clamd answers ``stream: OK`` or ``stream: <signature> FOUND``, ending in
NUL.

clamd refuses streams longer than its ``StreamMaxLength`` (25 MB by default) with an ERROR answer;
that, and clamd being down, is a scan failure, handled by ``CHUNKD_CLAMD_FAILURE`` (reject by
default: a file is not served unscanned)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator, Callable

from chunkd.domain import errors as e
from chunkd.domain.metadata import VIRUS_SCAN
from chunkd.domain.upload import Upload
from chunkd.service.hooks import ContentRejected, count_hook

__all__ = ["ClamdScanner", "ScanFailed", "clamd_problem", "instream"]

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024  # clamd reads each length-prefixed chunk whole; keep them modest


class ScanFailed(Exception):
    """clamd could not be reached (``unreachable``) or did not give a verdict."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


async def _connect(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if address.startswith("/"):
        return await asyncio.open_unix_connection(address)
    host, _, port = address.rpartition(":")
    return await asyncio.open_connection(host.strip("[]") or "127.0.0.1", int(port))


async def instream(address: str, chunks: AsyncIterator[bytes]) -> str | None:
    """Scan the bytes of ``chunks`` with clamd at ``address``: the signature found, or None if clean."""
    try:
        reader, writer = await _connect(address)
    except (OSError, ValueError) as exc:
        raise ScanFailed(f"cannot reach clamd at {address}: {exc}", unreachable=True) from None
    try:
        writer.write(b"zINSTREAM\0")
        async for chunk in chunks:
            view = memoryview(chunk)
            for start in range(0, len(view), _CHUNK):
                piece = view[start : start + _CHUNK]
                writer.write(struct.pack(">I", len(piece)))
                writer.write(piece)
                await writer.drain()
        writer.write(struct.pack(">I", 0))
        await writer.drain()
        answer = (await reader.readuntil(b"\0")).rstrip(b"\0").decode("utf-8", "replace").strip()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        # clamd closes the connection when a stream passes StreamMaxLength: read its reason if any.
        raise ScanFailed(f"clamd did not answer the scan: {exc!r}") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    verdict = answer.removeprefix("stream:").strip()
    if verdict == "OK":
        return None
    if verdict.endswith(" FOUND"):
        return verdict.removesuffix(" FOUND").strip()
    raise ScanFailed(f"clamd answered {answer!r}")


async def clamd_problem(address: str, timeout: float) -> str | None:
    """Why clamd at ``address`` cannot scan now (its ``PING`` gets no ``PONG``), or None when it
    answers. Asked once at start: a scanner set to the wrong place otherwise shows only at the
    first completion, refused with ``scan_unavailable``."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await _connect(address)
            try:
                writer.write(b"zPING\0")
                await writer.drain()
                answer = (await reader.readuntil(b"\0")).rstrip(b"\0")
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        return str(exc) or type(exc).__name__
    return None if answer.strip() == b"PONG" else f"it answered {answer[:80]!r} to PING"


class ClamdScanner:
    """A pre-finish hook scanning the received bytes (``read``) with clamd."""

    def __init__(
        self,
        address: str,
        read: Callable[[Upload], AsyncIterator[bytes]],
        *,
        timeout: float,
        fail_open: bool,
    ) -> None:
        self.address = address
        self.read = read
        self.timeout = timeout
        self.fail_open = fail_open
        self.count: Callable[[str, str], None] = count_hook
        self._unreachable = False  # the last scan could not reach clamd

    async def pre_create(self, upload: Upload) -> None:
        return None

    async def pre_download(self, upload: Upload) -> None:
        return None

    async def pre_finish(self, upload: Upload) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                signature = await instream(self.address, self.read(upload))
        except (ScanFailed, TimeoutError) as exc:
            self.count("clamav", "error")
            # clamd away fails every completion, and its clients retry each second: said when it
            # goes and when it is back. A scan that failed otherwise is said each time.
            away = isinstance(exc, ScanFailed) and exc.unreachable
            level = logging.DEBUG if away and self._unreachable else logging.WARNING
            log.log(level, "virus scan of %s failed: %s", upload.id, exc or "timeout")
            self._unreachable = away or self._unreachable
            if self.fail_open:
                return
            error = e.Busy("the virus scanner is not available; try completing again later", field="file")
            error.code = "scan_unavailable"
            raise error from None
        if self._unreachable:
            self._unreachable = False
            log.info("virus scan: clamd at %s answering again", self.address)
        if signature is not None:
            self.count("clamav", "rejected")
            raise ContentRejected(
                f"the file contains a virus ({signature}); it was refused and its bytes removed",
                reason="virus",
                signature=signature,
            )
        self.count("clamav", "accepted")
        upload.metadata[VIRUS_SCAN] = {"scanner": "clamd", "result": "clean"}
