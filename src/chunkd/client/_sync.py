"""The blocking client: :class:`Client` (httpx.Client; parallel parts on a thread pool)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import httpx

from chunkd.client import _core
from chunkd.client._core import ProgressCallback, Tracker, content_md5, missing_parts, resumable, reusable
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

__all__ = ["DEFAULT_URL", "Client"]

DEFAULT_URL = "http://127.0.0.1:8080"
BodyFactory = Callable[[], Iterable[bytes]]


class Client:
    """A chunkd server's Files API. ``key`` is an API key (``ck_…``) or an access token.

    Uploads remember (server, key, absolute path, size, mtime) → upload id in a small state file
    (see :mod:`chunkd.client.state`), so uploading the same file again after a crash resumes it;
    pass ``remember_uploads=False`` to turn that off."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        remember_uploads: bool = True,
        state_dir: Path | None = None,
        transport: httpx.BaseTransport | None = None,
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
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0), transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- requests with retries ------------------------------------------------------------------
    def _wait(self, method: str, path: str, attempt: int, hint: float | None, reason: str) -> float:
        """How long to wait before the next try, told to ``on_retry`` first."""
        delay = self.retry.delay(attempt, hint)
        if self.on_retry is not None:
            self.on_retry(RetryNotice(method, f"{self.url}{path}", attempt + 1, delay, reason))
        return delay

    def _send(
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
        """One API call, tried again (with backoff) on network errors, 5xx, 429 and upload_busy;
        an error answer becomes a typed exception."""
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            try:
                response = self._http.request(
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
            time.sleep(self._wait(method, path, attempt, hint, failure))
        raise AssertionError("unreachable")

    # ---- simple calls ---------------------------------------------------------------------------
    def get(self, file_id: str) -> File:
        """The file object, with the parts the server holds."""
        return File.from_json(self._send("GET", f"/v1/files/{file_id}").json())

    def list_page(self, *, status: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
        """One page of your files, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        data = self._send("GET", "/v1/files", params=params).json()
        return Page(tuple(File.from_json(f) for f in data["data"]), data.get("nextCursor"))

    def list(self, *, status: str | None = None, page_size: int = 50) -> Iterator[File]:
        """All your files (optionally in one status), newest first, following ``nextCursor``."""
        cursor: str | None = None
        while True:
            page = self.list_page(status=status, limit=page_size, cursor=cursor)
            yield from page.files
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def cancel(self, file_id: str) -> File:
        """PENDING → CANCELLED; the bytes received are freed."""
        return File.from_json(self._send("POST", f"/v1/files/{file_id}/cancel").json())

    def delete(self, file_id: str) -> None:
        """Remove a file and its bytes."""
        self._send("DELETE", f"/v1/files/{file_id}")

    def create(self, filename: str, size: int, *, part_size: int | None = None, mime_type: str | None = None) -> File:
        """Start an upload (the server picks the part size unless given)."""
        body = _core.create_body(filename, size, part_size, mime_type)
        return File.from_json(self._send("POST", "/v1/files", json=body).json())

    def complete(self, file_id: str, md5: str | None = None) -> File:
        """Finish an upload; the server checks the whole file against ``md5`` (hex) when given."""
        response = self._send("POST", f"/v1/files/{file_id}/complete", json={"md5": md5} if md5 else {})
        return File.from_json(response.json())

    # ---- upload ---------------------------------------------------------------------------------
    def upload(
        self,
        source: SourceLike,
        *,
        filename: str | None = None,
        part_size: int | None = None,
        parallel: int = 4,
        on_progress: ProgressCallback | None = None,
        mime_type: str | None = None,
    ) -> File:
        """Upload a file (a path, or a seekable binary file object from its current position) in
        parts, ``parallel`` at a time, each with its Content-MD5, and complete it with the whole
        file's MD5. A path uploaded before by this key to this server and not finished (same size
        and mtime) is resumed: only the parts the server lacks are sent."""
        src = Source(source)
        try:
            remembered = self._remembered(src)
            if remembered is not None and remembered.status == "COMPLETED":
                return remembered

            def start() -> File:
                file = self.create(filename or src.name, src.size, part_size=part_size, mime_type=mime_type)
                if self.state is not None and src.local is not None:
                    self.state.put(self.url, self.key, src.local, file.id)
                return file

            try:
                done = self._fill_and_complete(remembered or start(), src, parallel, on_progress)
            except UploadExpired:
                if remembered is None:
                    raise
                # It expired while we resumed it (idle too long before this run): start over, once.
                done = self._fill_and_complete(start(), src, parallel, on_progress)
            if self.state is not None and src.local is not None:
                self.state.forget(self.url, self.key, src.local)
            return done
        finally:
            src.close()

    def resume(
        self,
        file_id: str,
        source: SourceLike,
        *,
        parallel: int = 4,
        on_progress: ProgressCallback | None = None,
    ) -> File:
        """Continue upload ``file_id`` with the same bytes: send only the parts the server lacks,
        then complete. Raises :class:`Conflict` if the upload is no longer PENDING."""
        src = Source(source)
        try:
            file = self.get(file_id)
            if not resumable(file, src.size):
                raise Conflict(409, "invalid_state", f"upload {file_id} is {file.status} ({file.size_bytes} bytes)")
            return self._fill_and_complete(file, src, parallel, on_progress)
        finally:
            src.close()

    def _remembered(self, src: Source) -> File | None:
        """The unfinished upload this local file went to before, if it can still take the rest."""
        if self.state is None or src.local is None:
            return None
        upload_id = self.state.get(self.url, self.key, src.local)
        if upload_id is None:
            return None
        try:
            file = self.get(upload_id)
        except NotFound:
            file = None
        if file is not None and reusable(file, src.size):
            return file
        self.state.forget(self.url, self.key, src.local)  # expired, cancelled or gone: start over
        return None

    def _fill_and_complete(self, file: File, src: Source, parallel: int, on_progress: ProgressCallback | None) -> File:
        assert file.part_size is not None
        todo = missing_parts(file)
        tracker = Tracker(src.size, on_progress)
        tracker.add(src.size - sum(part_range(n, file.part_size, src.size)[1] for n in todo))
        with ThreadPoolExecutor(max_workers=max(1, parallel) + 1, thread_name_prefix="chunkd-upload") as pool:
            stop = threading.Event()
            whole = pool.submit(src.md5, 0, None, stop)  # one pass over the file beside the parts
            futures = [pool.submit(self._put_part, file, n, src, tracker) for n in todo]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException:
                stop.set()
                for future in futures:
                    future.cancel()
                raise
            md5 = whole.result().hex()
        self.complete(file.id, md5)
        return self.get(file.id)

    def _put_part(self, file: File, number: int, src: Source, tracker: Tracker) -> None:
        assert file.part_size is not None
        offset, length = part_range(number, file.part_size, file.size_bytes)
        headers = {
            "Content-MD5": content_md5(src.md5(offset, length)),
            "Content-Length": str(length),
            "Content-Type": "application/octet-stream",
        }
        sent = 0

        def body() -> Iterator[bytes]:
            nonlocal sent
            for chunk in src.chunks(offset, length):
                sent += len(chunk)
                tracker.add(len(chunk))
                yield chunk

        def rewind() -> None:
            nonlocal sent
            tracker.add(-sent)
            sent = 0

        self._send("PUT", f"/v1/files/{file.id}/parts/{number}", body=body, headers=headers, before_retry=rewind)

    # ---- download -------------------------------------------------------------------------------
    def download(
        self, file_id: str, dest: str | os.PathLike[str] | None = None, *, on_progress: ProgressCallback | None = None
    ) -> Path:
        """Download a COMPLETED file to ``dest`` (a path or a directory; default: its filename in
        the current directory) and verify its MD5. Bytes go to a hidden ``.NAME.ID.part`` file
        first: an interrupted download continues from there with a Range request."""
        file = self.get(file_id)
        if file.status != "COMPLETED":
            raise Conflict(409, "invalid_state", f"file {file_id} is {file.status}; only COMPLETED files download")
        target = Path(dest) if dest is not None else Path(_core.download_name(file))
        if target.is_dir():
            target = target / _core.download_name(file)
        partial = target.with_name(f".{target.name}.{file.id}.part")
        digest, offset = hashlib.md5(), 0
        if partial.exists() and partial.stat().st_size <= file.size_bytes:
            with open(partial, "rb") as handle:
                while data := handle.read(CHUNK):
                    digest.update(data)
                    offset += len(data)
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
                    with self._http.stream(
                        "GET", f"/v1/files/{file_id}/content", headers=headers, follow_redirects=True
                    ) as response:
                        if response.is_error and not is_retryable_response(response):
                            response.read()
                            raise error_from_response(response)
                        if response.is_success:
                            if response.status_code == 200 and offset:  # the server sent it all again
                                out.seek(0)
                                out.truncate()
                                digest, offset = hashlib.md5(), 0
                                tracker.add(-start)
                            for data in response.iter_bytes(CHUNK):
                                out.write(data)
                                digest.update(data)
                                offset += len(data)
                                tracker.add(len(data))
                            break
                        response.read()
                        hint = retry_after(response)
                        failure: BaseException = error_from_response(response)
                        reason = reason_of(response)
                except httpx.TransportError as exc:
                    if not is_retryable_error(exc):
                        raise ConnectionFailed(f"GET {self.url}/v1/files/{file_id}/content: {exc}") from exc
                    failure = ConnectionFailed(f"GET {self.url}/v1/files/{file_id}/content: {exc}")
                    reason = reason_of(exc)
                attempt = 0 if offset > start else attempt + 1  # progress resets the budget
                if attempt >= self.retry.attempts:
                    raise failure
                time.sleep(self._wait("GET", f"/v1/files/{file_id}/content", attempt, hint, reason))
            out.flush()
            os.fsync(out.fileno())
        if offset != file.size_bytes or (file.md5 is not None and digest.hexdigest() != file.md5):
            partial.unlink()
            raise IntegrityError(
                f"downloaded {offset} bytes with MD5 {digest.hexdigest()}, "
                f"expected {file.size_bytes} bytes with MD5 {file.md5}"
            )
        os.replace(partial, target)
        return target
