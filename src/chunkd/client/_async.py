"""The asyncio client: :class:`AsyncClient` (httpx.AsyncClient; parallel parts as tasks, file
reads and hashing in worker threads so the event loop never blocks on disk or MD5)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from chunkd.client import _core
from chunkd.client._core import ProgressCallback, Tracker, content_md5, missing_parts, resumable, reusable
from chunkd.client._sync import DEFAULT_URL
from chunkd.client.errors import (
    Conflict,
    ConnectionFailed,
    IntegrityError,
    NotFound,
    UploadExpired,
    error_from_response,
)
from chunkd.client.models import File, Page
from chunkd.client.retry import (
    RetryNotice,
    RetryPolicy,
    is_retryable_error,
    is_retryable_response,
    reason_of,
    retry_after,
)
from chunkd.client.source import CHUNK, Source, SourceLike, part_range
from chunkd.client.state import UploadState

__all__ = ["AsyncClient"]

BodyFactory = Callable[[], AsyncIterable[bytes]]


class AsyncClient:
    """The same API as :class:`chunkd.client.Client`, awaitable. ``transport`` lets tests talk to
    an in-process app (``httpx.ASGITransport``)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        remember_uploads: bool = True,
        state_dir: Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        on_retry: Callable[[RetryNotice], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry
        self.state = UploadState(state_dir) if remember_uploads else None
        headers = {"User-Agent": _core.user_agent()}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0), transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _wait(self, method: str, path: str, attempt: int, hint: float | None, reason: str) -> float:
        """How long to wait before the next try, told to ``on_retry`` first."""
        delay = self.retry.delay(attempt, hint)
        if self.on_retry is not None:
            self.on_retry(RetryNotice(method, f"{self.url}{path}", attempt + 1, delay, reason))
        return delay

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        body: BodyFactory | None = None,
        headers: dict[str, str] | None = None,
        before_retry: Callable[[], None] | None = None,
    ) -> httpx.Response:
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            try:
                response = await self._http.request(
                    method, path, json=json, params=params, content=body() if body else None, headers=headers
                )
            except httpx.TransportError as exc:
                if last or not is_retryable_error(exc):
                    raise ConnectionFailed(f"{method} {self.url}{path}: {exc or type(exc).__name__}") from exc
                hint, failure = None, reason_of(exc)
            else:
                if not (is_retryable_response(response) and not last):
                    if response.is_error:
                        raise error_from_response(response)
                    return response
                hint, failure = retry_after(response), reason_of(response)
            if before_retry is not None:
                before_retry()
            await asyncio.sleep(self._wait(method, path, attempt, hint, failure))
        raise AssertionError("unreachable")

    async def get(self, file_id: str) -> File:
        """The file object, with the parts the server holds."""
        return File.from_json((await self._send("GET", f"/v1/files/{file_id}")).json())

    async def list_page(self, *, status: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
        """One page of your files, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        data = (await self._send("GET", "/v1/files", params=params)).json()
        return Page(tuple(File.from_json(f) for f in data["data"]), data.get("nextCursor"))

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

    async def cancel(self, file_id: str) -> File:
        """PENDING → CANCELLED; the bytes received are freed."""
        return File.from_json((await self._send("POST", f"/v1/files/{file_id}/cancel")).json())

    async def delete(self, file_id: str) -> None:
        """Remove a file and its bytes."""
        await self._send("DELETE", f"/v1/files/{file_id}")

    async def create(
        self, filename: str, size: int, *, part_size: int | None = None, mime_type: str | None = None
    ) -> File:
        """Start an upload (the server picks the part size unless given)."""
        body = _core.create_body(filename, size, part_size, mime_type)
        return File.from_json((await self._send("POST", "/v1/files", json=body)).json())

    async def complete(self, file_id: str, md5: str | None = None) -> File:
        """Finish an upload; the server checks the whole file against ``md5`` (hex) when given."""
        response = await self._send("POST", f"/v1/files/{file_id}/complete", json={"md5": md5} if md5 else {})
        return File.from_json(response.json())

    async def upload(
        self,
        source: SourceLike,
        *,
        filename: str | None = None,
        part_size: int | None = None,
        parallel: int = 4,
        on_progress: ProgressCallback | None = None,
        mime_type: str | None = None,
    ) -> File:
        """See :meth:`chunkd.client.Client.upload`."""
        src = Source(source)
        try:
            remembered = await self._remembered(src)
            if remembered is not None and remembered.status == "COMPLETED":
                return remembered

            async def start() -> File:
                file = await self.create(filename or src.name, src.size, part_size=part_size, mime_type=mime_type)
                if self.state is not None and src.local is not None:
                    await asyncio.to_thread(self.state.put, self.url, self.key, src.local, file.id)
                return file

            try:
                done = await self._fill_and_complete(remembered or await start(), src, parallel, on_progress)
            except UploadExpired:
                if remembered is None:
                    raise
                # It expired while we resumed it (idle too long before this run): start over, once.
                done = await self._fill_and_complete(await start(), src, parallel, on_progress)
            if self.state is not None and src.local is not None:
                await asyncio.to_thread(self.state.forget, self.url, self.key, src.local)
            return done
        finally:
            src.close()

    async def resume(
        self, file_id: str, source: SourceLike, *, parallel: int = 4, on_progress: ProgressCallback | None = None
    ) -> File:
        """See :meth:`chunkd.client.Client.resume`."""
        src = Source(source)
        try:
            file = await self.get(file_id)
            if not resumable(file, src.size):
                raise Conflict(409, "invalid_state", f"upload {file_id} is {file.status} ({file.size_bytes} bytes)")
            return await self._fill_and_complete(file, src, parallel, on_progress)
        finally:
            src.close()

    async def _remembered(self, src: Source) -> File | None:
        if self.state is None or src.local is None:
            return None
        upload_id = await asyncio.to_thread(self.state.get, self.url, self.key, src.local)
        if upload_id is None:
            return None
        try:
            file: File | None = await self.get(upload_id)
        except NotFound:
            file = None
        if file is not None and reusable(file, src.size):
            return file
        await asyncio.to_thread(self.state.forget, self.url, self.key, src.local)
        return None

    async def _fill_and_complete(
        self, file: File, src: Source, parallel: int, on_progress: ProgressCallback | None
    ) -> File:
        assert file.part_size is not None
        todo = missing_parts(file)
        tracker = Tracker(src.size, on_progress)
        tracker.add(src.size - sum(part_range(n, file.part_size, src.size)[1] for n in todo))
        slots = asyncio.Semaphore(max(1, parallel))

        async def one(number: int) -> None:
            async with slots:
                await self._put_part(file, number, src, tracker)

        stop = threading.Event()
        whole = asyncio.get_running_loop().run_in_executor(None, src.md5, 0, None, stop)
        try:
            async with asyncio.TaskGroup() as group:
                for number in todo:
                    group.create_task(one(number))
            digest = await whole
        except BaseExceptionGroup as failed:  # callers get the typed error, as from Client
            raise _first(failed) from None
        finally:
            stop.set()  # and wait: the hashing thread must be done with the file before it is closed
            await asyncio.wait([whole])
        await self.complete(file.id, digest.hex())
        return await self.get(file.id)

    async def _put_part(self, file: File, number: int, src: Source, tracker: Tracker) -> None:
        assert file.part_size is not None
        offset, length = part_range(number, file.part_size, file.size_bytes)
        digest = await asyncio.to_thread(src.md5, offset, length)
        headers = {
            "Content-MD5": content_md5(digest),
            "Content-Length": str(length),
            "Content-Type": "application/octet-stream",
        }
        sent = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal sent
            position, end = offset, offset + length
            while position < end:
                data = await asyncio.to_thread(src.read, position, min(CHUNK, end - position))
                if not data:
                    raise OSError(f"{src.name} is shorter than when the upload started")
                position += len(data)
                sent += len(data)
                tracker.add(len(data))
                yield data

        def rewind() -> None:
            nonlocal sent
            tracker.add(-sent)
            sent = 0

        await self._send("PUT", f"/v1/files/{file.id}/parts/{number}", body=body, headers=headers, before_retry=rewind)

    async def download(
        self, file_id: str, dest: str | os.PathLike[str] | None = None, *, on_progress: ProgressCallback | None = None
    ) -> Path:
        """See :meth:`chunkd.client.Client.download`."""
        file = await self.get(file_id)
        if file.status != "COMPLETED":
            raise Conflict(409, "invalid_state", f"file {file_id} is {file.status}; only COMPLETED files download")
        target = Path(dest) if dest is not None else Path(_core.download_name(file))
        if target.is_dir():
            target = target / _core.download_name(file)
        partial = target.with_name(f".{target.name}.{file.id}.part")
        digest, offset = hashlib.md5(), 0
        if partial.exists() and partial.stat().st_size <= file.size_bytes:
            offset, digest = await asyncio.to_thread(_hash_file, partial)
        tracker = Tracker(file.size_bytes, on_progress)
        tracker.add(offset)
        with open(partial, "r+b" if partial.exists() else "wb") as out:
            out.truncate(offset)
            out.seek(offset)
            attempt = 0
            while offset < file.size_bytes or file.size_bytes == 0:
                start = offset
                headers = {"Range": f"bytes={offset}-"} if offset else {}
                hint: float | None = None
                try:
                    async with self._http.stream(
                        "GET", f"/v1/files/{file_id}/content", headers=headers, follow_redirects=True
                    ) as response:
                        if response.is_error and not is_retryable_response(response):
                            await response.aread()
                            raise error_from_response(response)
                        if response.is_success:
                            if response.status_code == 200 and offset:
                                out.seek(0)
                                out.truncate()
                                digest, offset = hashlib.md5(), 0
                                tracker.add(-start)
                            async for data in response.aiter_bytes(CHUNK):
                                await asyncio.to_thread(out.write, data)
                                digest.update(data)
                                offset += len(data)
                                tracker.add(len(data))
                            break
                        await response.aread()
                        hint = retry_after(response)
                        failure: BaseException = error_from_response(response)
                        reason = reason_of(response)
                except httpx.TransportError as exc:
                    if not is_retryable_error(exc):
                        raise ConnectionFailed(f"GET {self.url}/v1/files/{file_id}/content: {exc}") from exc
                    failure = ConnectionFailed(f"GET {self.url}/v1/files/{file_id}/content: {exc}")
                    reason = reason_of(exc)
                attempt = 0 if offset > start else attempt + 1
                if attempt >= self.retry.attempts:
                    raise failure
                await asyncio.sleep(self._wait("GET", f"/v1/files/{file_id}/content", attempt, hint, reason))
            out.flush()
            await asyncio.to_thread(os.fsync, out.fileno())
        if offset != file.size_bytes or (file.md5 is not None and digest.hexdigest() != file.md5):
            partial.unlink()
            raise IntegrityError(
                f"downloaded {offset} bytes with MD5 {digest.hexdigest()}, "
                f"expected {file.size_bytes} bytes with MD5 {file.md5}"
            )
        os.replace(partial, target)
        return target


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error in a task group's failure (the others were cancelled because of it)."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first(error)
        if not isinstance(error, asyncio.CancelledError):
            return error
    return group.exceptions[0]


def _hash_file(path: Path) -> tuple[int, Any]:
    digest, size = hashlib.md5(), 0
    with open(path, "rb") as handle:
        while data := handle.read(CHUNK):
            digest.update(data)
            size += len(data)
    return size, digest
