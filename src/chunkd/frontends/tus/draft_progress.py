"""``104 Upload Resumption Supported`` responses of the IETF resumable-upload draft, and a body
appended in segments so that each durable offset can be announced while the rest still arrives.

Both need an ASGI server that offers the ``http.response.informational`` extension (chunkd's own
uvicorn protocol does, see ``chunkd.server.protocol``); without it they are left out, which the
draft allows."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request

from chunkd.domain.checksum import StreamHasher
from chunkd.domain.upload import Upload
from chunkd.frontends.http import runtime
from chunkd.frontends.tus.draft_versions import INTEROP_HEADER, InteropVersion
from chunkd.service.takeover import TAKE_OVER_WAIT, Writer

__all__ = ["Segments", "can_send_informational", "send_informational", "write_body"]

INFORMATIONAL = "http.response.informational"


def can_send_informational(request: Request) -> bool:
    """Whether the ASGI server lets this request send informational responses."""
    return INFORMATIONAL in request.scope.get("extensions", {})


async def send_informational(request: Request, headers: dict[str, str]) -> bool:
    """Send ``104 Upload Resumption Supported`` with ``headers`` ahead of the final response, if
    the ASGI server offers the ``http.response.informational`` extension; whether it was sent."""
    if not can_send_informational(request):
        return False
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    # Starlette keeps the ASGI ``send`` of the request on it (its own ``send_push_promise`` and
    # early hints use it the same way); informational responses have no other way out of a route.
    await request._send({"type": INFORMATIONAL, "status": 104, "headers": raw})
    return True


class Segments:
    """A request body cut into consecutive bodies of at most ``size`` bytes, so each can be
    committed on its own (and its durable offset announced) while the rest still arrives. A
    segment reads lazily: waiting for its first byte happens inside the engine's append, under
    the upload's lock, so a newer request can ask this one to let go at any time."""

    def __init__(self, body: AsyncIterator[bytes], size: int) -> None:
        self._body = aiter(body)
        self._size = size
        self._carry = b""
        self.finished = False

    def next(self) -> AsyncIterator[bytes] | None:
        """The next segment (possibly empty, when the body ends on a boundary), or None when the
        body has ended."""
        return None if self.finished else self._segment()

    async def _segment(self) -> AsyncIterator[bytes]:
        sent = 0
        chunk, self._carry = self._carry, b""
        while True:
            if not chunk:
                got = await anext(self._body, None)
                if got is None:
                    self.finished = True
                    return
                chunk = got
                continue
            room = self._size - sent
            if len(chunk) > room:
                self._carry = chunk[room:]
                yield chunk[:room]
                return
            yield chunk
            sent += len(chunk)
            chunk = b""
            if sent == self._size:
                return


async def write_body(
    request: Request,
    version: InteropVersion,
    owner: str,
    upload_id: str,
    offset: int,
    writer: Writer,
    checksum: tuple[StreamHasher, bytes, str] | None,
    declare_length: int | None = None,
) -> Upload:
    """Append the request body at ``offset``: in segments with a progress 104 after each commit
    where the version and the server allow, else in one engine append. ``declare_length`` (an
    ``Upload-Length`` sent with the body) is fixed by the first write, never by a refused one."""
    rt = runtime(request)
    service = rt.uploads
    most = rt.settings.resumable_max_append_bytes
    body = writer.guard(request.stream())
    every = rt.settings.resumable_progress_bytes
    if checksum is not None or not every or not version.progress_responses or not can_send_informational(request):
        # A Content-Digest covers the whole request, so it is verified (and kept) as one append.
        return await service.append(
            owner,
            upload_id,
            offset,
            body,
            checksum=checksum,
            max_bytes=most,
            lock_timeout=TAKE_OVER_WAIT,
            declare_length=declare_length,
        )
    segments = Segments(body, every)
    start = offset
    upload: Upload | None = None
    while (segment := segments.next()) is not None:
        room = None if most is None else most - (offset - start)
        upload = await service.append(
            owner,
            upload_id,
            offset,
            segment,
            max_bytes=room,
            lock_timeout=TAKE_OVER_WAIT,
            declare_length=declare_length if upload is None else None,
        )
        offset = upload.bytes_received
        if not segments.finished:
            await send_informational(request, {INTEROP_HEADER: version.header, "Upload-Offset": str(offset)})
    return upload if upload is not None else await service.get(owner, upload_id, with_parts=False)
