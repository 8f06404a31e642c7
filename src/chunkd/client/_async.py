"""The asyncio client: :class:`AsyncClient` performs the core's effects with httpx.AsyncClient,
``asyncio.sleep``, tasks for parallel parts and worker threads for file reads and hashing, so the
event loop never blocks on disk or MD5. It decides nothing itself (see :mod:`chunkd.client._core`)."""

from __future__ import annotations

import asyncio
import builtins
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, Unpack

import httpx

from chunkd.client._core import ClientCore, ProgressCallback, Tracker, UploadOptions
from chunkd.client._effects import Blocking, Driver, Effect, Fetch, Flow, Parallel, Request, Sleep
from chunkd.client.links import create_link_flow, links_flow, revoke_link_flow
from chunkd.client.models import File, Page, UploadLink, Usage
from chunkd.client.source import CHUNK, Source, SourceLike

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient(ClientCore[httpx.AsyncBaseTransport]):
    """The same API as :class:`chunkd.client.Client`, awaitable. ``transport`` lets tests talk to
    an in-process app (``httpx.ASGITransport``)."""

    _http: httpx.AsyncClient

    def _connect(
        self, headers: dict[str, str], timeout: httpx.Timeout, transport: httpx.AsyncBaseTransport | None
    ) -> None:
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- the calls (documented on Client) -------------------------------------------------------
    async def get(self, file_id: str) -> File:
        """The file object, with the parts the server holds."""
        return await self._run(self._get_flow(file_id))

    async def list_page(self, *, status: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
        """One page of your files, newest first."""
        return await self._run(self._list_page_flow(status, limit, cursor))

    async def list(self, *, status: str | None = None, page_size: int = 50) -> AsyncIterator[File]:
        """All your files (optionally in one status), newest first, following ``nextCursor``."""
        cursor: str | None = None
        while True:
            page = await self.list_page(status=status, limit=page_size, cursor=cursor)
            for file in page.files:
                yield file
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def usage(self) -> Usage:
        """See :meth:`chunkd.client.Client.usage`."""
        return await self._run(self._usage_flow())

    async def cancel(self, file_id: str) -> File:
        """PENDING → CANCELLED; the bytes received are freed."""
        return await self._run(self._cancel_flow(file_id))

    async def delete(self, file_id: str) -> None:
        """Remove a file and its bytes."""
        await self._run(self._delete_flow(file_id))

    async def create(
        self, filename: str, size: int, *, part_size: int | None = None, mime_type: str | None = None
    ) -> File:
        """Start an upload (the server picks the part size unless given)."""
        return await self._run(self._create_flow(filename, size, part_size, mime_type))

    async def complete(self, file_id: str, md5: str | None = None) -> File:
        """Finish an upload; the server checks the whole file against ``md5`` (hex) when given."""
        return await self._run(self._complete_flow(file_id, md5))

    async def upload(self, source: SourceLike, **options: Unpack[UploadOptions]) -> File:
        """See :meth:`chunkd.client.Client.upload`."""
        return await self._run(self._upload_flow(source, **options))

    async def resume(
        self, file_id: str, source: SourceLike, *, parallel: int = 4, on_progress: ProgressCallback | None = None
    ) -> File:
        """See :meth:`chunkd.client.Client.resume`."""
        return await self._run(self._resume_flow(file_id, source, parallel, on_progress))

    async def download(
        self, file_id: str, dest: str | os.PathLike[str] | None = None, *, on_progress: ProgressCallback | None = None
    ) -> Path:
        """See :meth:`chunkd.client.Client.download`."""
        return await self._run(self._download_flow(file_id, dest, on_progress))

    async def create_upload_link(
        self,
        *,
        expires_in: int | None = None,
        max_files: int | None = None,
        max_bytes: int | None = None,
        allowed_mime_types: Sequence[str] | None = None,
        note: str | None = None,
    ) -> UploadLink:
        """See :meth:`chunkd.client.Client.create_upload_link`."""
        return await self._run(
            create_link_flow(
                self._send_flow,
                expires_in=expires_in,
                max_files=max_files,
                max_bytes=max_bytes,
                allowed_mime_types=allowed_mime_types,
                note=note,
            )
        )

    async def upload_links(self, *, limit: int = 100) -> builtins.list[UploadLink]:
        """See :meth:`chunkd.client.Client.upload_links`."""
        return await self._run(links_flow(self._send_flow, limit))

    async def revoke_upload_link(self, link_id: str) -> UploadLink:
        """See :meth:`chunkd.client.Client.revoke_upload_link`."""
        return await self._run(revoke_link_flow(self._send_flow, link_id))

    async def _put_part(self, file: File, number: int, src: Source, tracker: Tracker) -> None:
        """Send one part (tests use it to leave an upload half done)."""
        await self._run(self._put_part_flow(file, number, src, tracker))

    # ---- performing effects ---------------------------------------------------------------------
    async def _run(self, flow: Flow[T]) -> T:
        driver = Driver(flow)
        while (effect := driver.next()) is not None:
            try:
                driver.answer(await self._perform(effect))
            except BaseException as exc:  # raised inside the flow, which decides (cancellation too)
                driver.fail(exc)
        return driver.result

    async def _perform(self, effect: Effect) -> Any:
        if isinstance(effect, Request):
            content = _in_thread(effect.body.read) if effect.body is not None else None
            return await self._http.request(effect.method, effect.path, content=content, **effect.options())
        if isinstance(effect, Fetch):
            return await self._fetch(effect)
        if isinstance(effect, Sleep):
            await asyncio.sleep(effect.seconds)
            return None
        if isinstance(effect, Blocking):
            return await asyncio.to_thread(effect.function, *effect.args)
        return await self._parallel(effect)

    async def _fetch(self, fetch: Fetch) -> httpx.Response:
        async with self._http.stream("GET", fetch.path, headers=fetch.headers, follow_redirects=True) as response:
            if fetch.sink.accepts(response):
                async for data in response.aiter_bytes(CHUNK):
                    await asyncio.to_thread(fetch.sink.write, data)
            else:
                await response.aread()
        return response

    async def _parallel(self, job: Parallel) -> Any:
        slots = asyncio.Semaphore(job.limit)

        async def one(flow: Flow[None]) -> None:
            async with slots:
                await self._run(flow)

        stop = threading.Event()
        whole = asyncio.get_running_loop().run_in_executor(None, job.whole, stop)
        try:
            async with asyncio.TaskGroup() as group:
                for flow in job.flows:
                    group.create_task(one(flow))
            return await whole
        except BaseExceptionGroup as failed:  # callers get the typed error, as from Client
            raise _first(failed) from None
        finally:
            stop.set()  # and wait: the hashing thread must be done with the file before it is closed
            await asyncio.wait([whole])


async def _in_thread(read: Callable[[], bytes]) -> AsyncIterator[bytes]:
    """``read()`` until it returns nothing, each call in a worker thread."""
    while data := await asyncio.to_thread(read):
        yield data


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error in a task group's failure (the others were cancelled because of it)."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first(error)
        if not isinstance(error, asyncio.CancelledError):
            return error
    return group.exceptions[0]
