"""The blocking client: :class:`Client` performs the core's effects with httpx.Client, ``time.sleep``
and a thread pool for parallel parts. It decides nothing itself (see :mod:`chunkd.client._core`)."""

from __future__ import annotations

import builtins
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, TypeVar, Unpack

import httpx

from chunkd.client._core import DEFAULT_URL, ClientCore, ProgressCallback, UploadOptions
from chunkd.client._effects import Blocking, Driver, Effect, Fetch, Flow, Parallel, Request, Sleep
from chunkd.client.links import create_link_flow, links_flow, revoke_link_flow
from chunkd.client.models import File, Page, UploadLink, Usage
from chunkd.client.source import CHUNK, SourceLike

__all__ = ["DEFAULT_URL", "Client"]

T = TypeVar("T")


class Stopped(Exception):
    """Raised into a part's flow when its upload is given up: another part failed, or Ctrl-C."""


class Client(ClientCore[httpx.BaseTransport]):
    """A chunkd server's Files API, blocking; parts go out from a thread pool. ``key`` is an API key
    (``ck_…``) or an access token; the other settings are :class:`ClientCore`'s."""

    _http: httpx.Client

    def _connect(self, headers: dict[str, str], timeout: httpx.Timeout, transport: httpx.BaseTransport | None) -> None:
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- the calls ------------------------------------------------------------------------------
    def get(self, file_id: str) -> File:
        """The file object, with the parts the server holds."""
        return self._run(self._get_flow(file_id))

    def list_page(self, *, status: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
        """One page of your files, newest first."""
        return self._run(self._list_page_flow(status, limit, cursor))

    def list(self, *, status: str | None = None, page_size: int = 50) -> Iterator[File]:
        """All your files (optionally in one status), newest first, following ``nextCursor``."""
        page = self.list_page(status=status, limit=page_size)
        yield from page.files
        while page.next_cursor:
            page = self.list_page(status=status, limit=page_size, cursor=page.next_cursor)
            yield from page.files

    def usage(self) -> Usage:
        """What you hold (pending uploads and bytes, stored bytes) and your quotas."""
        return self._run(self._usage_flow())

    def cancel(self, file_id: str) -> File:
        """PENDING → CANCELLED; the bytes received are freed."""
        return self._run(self._cancel_flow(file_id))

    def delete(self, file_id: str) -> None:
        """Remove a file and its bytes."""
        self._run(self._delete_flow(file_id))

    def create(self, filename: str, size: int, *, part_size: int | None = None, mime_type: str | None = None) -> File:
        """Start an upload (the server picks the part size unless given)."""
        return self._run(self._create_flow(filename, size, part_size, mime_type))

    def complete(self, file_id: str, md5: str | None = None) -> File:
        """Finish an upload; the server checks the whole file against ``md5`` (hex) when given."""
        return self._run(self._complete_flow(file_id, md5))

    def upload(self, source: SourceLike, **options: Unpack[UploadOptions]) -> File:
        """Upload a file (a path, or a seekable binary file object from its current position) in
        parts, ``parallel`` at a time, each with its Content-MD5, and complete it with the whole
        file's MD5. A path uploaded before by this key to this server and not finished (same size
        and mtime) is resumed: only the parts the server lacks are sent. ``options``: ``filename``,
        ``part_size``, ``parallel``, ``on_progress``, ``mime_type`` (see :class:`UploadOptions`)."""
        return self._run(self._upload_flow(source, **options))

    def resume(
        self, file_id: str, source: SourceLike, *, parallel: int = 4, on_progress: ProgressCallback | None = None
    ) -> File:
        """Continue upload ``file_id`` with the same bytes: send only the parts the server lacks,
        then complete. Raises :class:`Conflict` if the upload is no longer PENDING."""
        return self._run(self._resume_flow(file_id, source, parallel, on_progress))

    def download(
        self, file_id: str, dest: str | os.PathLike[str] | None = None, *, on_progress: ProgressCallback | None = None
    ) -> Path:
        """Download a COMPLETED file to ``dest`` (a path or a directory; default: its filename in
        the current directory) and verify its MD5. Bytes go to a hidden ``.NAME.ID.part`` file
        first: an interrupted download continues from there with a Range request. A name taken from
        the upload never replaces an existing file (FileExistsError); a path given as ``dest`` does."""
        return self._run(self._download_flow(file_id, dest, on_progress))

    # ---- upload links (scope links:admin) -------------------------------------------------------
    def create_upload_link(
        self,
        *,
        expires_in: int | None = None,
        max_files: int | None = None,
        max_bytes: int | None = None,
        allowed_mime_types: Sequence[str] | None = None,
        note: str | None = None,
    ) -> UploadLink:
        """Make an upload link (its ``url``, token included, is in this answer only). Defaults are
        the server's: 7 days, any number of files and bytes, any media type."""
        return self._run(
            create_link_flow(
                self._send_flow,
                expires_in=expires_in,
                max_files=max_files,
                max_bytes=max_bytes,
                allowed_mime_types=allowed_mime_types,
                note=note,
            )
        )

    def upload_links(self, *, limit: int = 100) -> builtins.list[UploadLink]:
        """Your upload links, revoked and expired ones too, newest first (never their tokens)."""
        return self._run(links_flow(self._send_flow, limit))

    def revoke_upload_link(self, link_id: str) -> UploadLink:
        """End an upload link at once; what was uploaded through it stays."""
        return self._run(revoke_link_flow(self._send_flow, link_id))

    # ---- performing effects ---------------------------------------------------------------------
    def _run(self, flow: Flow[T], stop: threading.Event | None = None) -> T:
        """Perform ``flow``'s effects; once ``stop`` is set (a part of the same upload failed, or
        Ctrl-C), its next effect fails instead: a request in flight finishes, nothing new starts."""
        driver = Driver(flow)
        while (effect := driver.next()) is not None:
            try:
                if stop is not None and stop.is_set():
                    raise Stopped("the upload was given up")
                driver.answer(self._perform(effect, stop))
            except BaseException as exc:  # raised inside the flow, which decides
                driver.fail(exc)
        return driver.result

    def _perform(self, effect: Effect, stop: threading.Event | None = None) -> Any:
        if isinstance(effect, Request):
            content = iter(effect.body.read, b"") if effect.body is not None else None
            return self._http.request(effect.method, effect.path, content=content, **effect.options())
        if isinstance(effect, Fetch):
            return self._fetch(effect)
        if isinstance(effect, Sleep):
            if stop is None:
                time.sleep(effect.seconds)
            elif stop.wait(effect.seconds):
                raise Stopped("the upload was given up")
            return None
        if isinstance(effect, Blocking):
            return effect.function(*effect.args)
        return self._parallel(effect)

    def _fetch(self, fetch: Fetch) -> httpx.Response:
        with self._http.stream("GET", fetch.path, headers=fetch.headers, follow_redirects=True) as response:
            if fetch.sink.accepts(response):
                for data in response.iter_bytes(CHUNK):
                    fetch.sink.write(data)
            else:
                response.read()
        return response

    def _parallel(self, job: Parallel) -> Any:
        # The whole-file MD5 has a thread of its own, so that ``job.limit`` is the number of parts in
        # flight (one pool of limit + 1 threads let a part take the hashing thread once it was done:
        # N + 1 parts at once for ``--parallel N``).
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunkd-md5") as hashing,
            ThreadPoolExecutor(max_workers=job.limit, thread_name_prefix="chunkd-upload") as pool,
        ):
            stop = threading.Event()
            futures: builtins.list[Future[Any]] = []
            try:
                # Inside the try: a Ctrl-C between the submissions must stop what was submitted too
                # (the executors' exit waits for their threads, the MD5's to the file's end).
                whole = hashing.submit(job.whole, stop)
                futures.extend(pool.submit(self._run, flow, stop) for flow in job.flows)
                for future in as_completed(futures):
                    future.result()
                return whole.result()
            except BaseException:
                # The parts in flight finish (their bytes are kept for the resume), but none is
                # tried again and the MD5 stops: Ctrl-C went on waiting for retries (up to a minute
                # at a server down) or, once the parts were sent, for the hashing to the file's end.
                stop.set()
                for future in futures:
                    future.cancel()
                raise
