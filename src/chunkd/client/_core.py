"""What the sync and async clients share: every decision, and no I/O.

:class:`ClientCore` holds a client's settings and writes each call once, as a flow (see
:mod:`chunkd.client._effects`): the requests, the retry policy, which parts to send, where a download
resumes, how error answers map to exceptions, and the checks on the bytes. ``Client`` and
``AsyncClient`` subclass it and only perform the effects."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import os
import uuid
from pathlib import Path
from typing import Any, Generic, TypedDict, TypeVar

import httpx

from chunkd.client._effects import Blocking, Fetch, Flow, Parallel, Request, Sleep
from chunkd.client._transfer import DownloadSink, PartBody, ProgressCallback, Tracker
from chunkd.client.errors import (
    ChecksumMismatch,
    ClientError,
    Conflict,
    ConnectionFailed,
    IntegrityError,
    NotFound,
    PermissionDenied,
    UploadExpired,
    error_from_response,
)
from chunkd.client.models import File, Page, Usage
from chunkd.client.retry import (
    RetryNotice,
    RetryNoticeCallback,
    RetryPolicy,
    is_retryable_error,
    is_retryable_response,
    reason_of,
    retry_after,
)
from chunkd.client.source import Source, SourceLike, part_range
from chunkd.client.state import UploadState

__all__ = [
    "DEFAULT_URL",
    "ClientCore",
    "ProgressCallback",
    "Tracker",
    "UploadOptions",
    "content_md5",
    "missing_parts",
    "partial_path",
    "resumable",
    "reusable",
    "user_agent",
]

DEFAULT_URL = "http://127.0.0.1:8080"
TransportT = TypeVar("TransportT")


class UploadOptions(TypedDict, total=False):
    """The keyword options of ``upload()``, declared once for both clients (defaults in brackets)."""

    filename: str | None  # the name the server keeps [the path's, or the file object's, name]
    part_size: int | None  # bytes per part [the server's CHUNKD_PART_SIZE]
    parallel: int  # parts in flight at once [4]
    on_progress: ProgressCallback | None  # told (bytes done, bytes in all) as parts go out [None]
    mime_type: str | None  # the file's media type [the server's guess from the name]


def user_agent() -> str:
    return "chunkd-client/0.1"


def content_md5(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def resumable(file: File, size: int) -> bool:
    """Whether a remembered upload can take the rest of this file's bytes."""
    return file.status == "PENDING" and file.size_bytes == size and bool(file.part_size) and file.parts is not None


def reusable(file: File, size: int) -> bool:
    """Whether a remembered upload is this file's: finished already (a crash came between *complete*
    and forgetting it) or still able to take the rest."""
    return (file.status == "COMPLETED" and file.size_bytes == size) or resumable(file, size)


def part_count(file: File) -> int:
    assert file.part_size is not None
    return file.part_count if file.part_count is not None else -(-file.size_bytes // file.part_size)


def missing_parts(file: File) -> list[int]:
    """Part numbers the server does not hold yet, judged by number and size only (an etag's format
    is the server's business; the whole-file MD5 at *complete* is the check)."""
    assert file.part_size is not None
    count = part_count(file)
    held = {
        p.part_number
        for p in file.parts or ()
        if p.size_bytes == part_range(p.part_number, file.part_size, file.size_bytes)[1]
    }
    return [n for n in range(1, count + 1) if n not in held]


def create_body(filename: str, size: int, part_size: int | None, mime_type: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"filename": filename, "sizeBytes": size}
    if part_size is not None:
        body["partSize"] = part_size
    if mime_type is not None:
        body["mimeType"] = mime_type
    return body


def download_name(file: File) -> str:
    """A safe local name for a file's (client-chosen, so untrusted) filename."""
    name = file.filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name if name not in ("", ".", "..") else file.id


NAME_MAX = 255  # bytes in one file name, on Linux's and macOS's file systems


def partial_path(target: Path, file_id: str) -> Path:
    """The hidden file a download fills before it takes ``target``'s name: ``.NAME.ID.part``, NAME
    cut short (on a character) where the whole would pass ``NAME_MAX``. A name of more than 226
    bytes (the server keeps up to 255) made every download of the file fail with 'File name too long'."""
    suffix = f".{file_id}.part"
    name = target.name
    while len(os.fsencode(f".{name}{suffix}")) > NAME_MAX and name:
        name = name[:-1]
    return target.with_name(f".{name}{suffix}")


def _refuse_existing(target: Path) -> None:
    """A name taken from the upload (chosen by whoever uploaded: a partner, say) never replaces a
    file already there, such as a ``.bashrc`` in the directory a download runs in; a ``dest`` path
    given by the caller does."""
    if target.exists() or target.is_symlink():
        raise FileExistsError(
            errno.EEXIST, "it exists already (the name comes from the upload: give a path to replace it)", str(target)
        )


class ClientCore(Generic[TransportT]):
    """A chunkd server's Files API. ``key`` is an API key (``ck_…``) or an access token.

    Uploads remember (server, key, absolute path, size, mtime) → upload id in a small state file
    (see :mod:`chunkd.client.state`), so uploading the same file again after a crash resumes it;
    pass ``remember_uploads=False`` to turn that off. ``transport`` replaces httpx's (tests talk
    to an in-process app through ``httpx.ASGITransport``); ``on_retry`` is told before each wait."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        remember_uploads: bool = True,
        state_dir: Path | None = None,
        transport: TransportT | None = None,
        on_retry: RetryNoticeCallback | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        # A key read from a file or a shell often ends in a newline. Surrounding whitespace is
        # dropped; whitespace or control characters within are refused here, with the key left out
        # of the message (httpx's "Illegal header value" quotes the whole header).
        key = key.strip() if key is not None else None
        if key is not None and any(c.isspace() or not c.isprintable() for c in key):
            raise ValueError("the API key contains whitespace or control characters; check how it was copied")
        self.key = key
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry
        self.state = UploadState(state_dir) if remember_uploads else None
        # Whether the server has answered this client yet: see ``_send_flow``.
        self._answered = False
        headers = {"User-Agent": user_agent()}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._connect(headers, httpx.Timeout(timeout, connect=10.0), transport)

    def _connect(self, headers: dict[str, str], timeout: httpx.Timeout, transport: TransportT | None) -> None:
        """Open the shell's httpx client."""
        raise NotImplementedError

    # ---- requests with retries ------------------------------------------------------------------
    def _wait(self, method: str, path: str, attempt: int, hint: float | None, reason: str) -> Sleep:
        """The wait before the next try, told to ``on_retry`` first."""
        delay = self.retry.delay(attempt, hint)
        if self.on_retry is not None:
            self.on_retry(RetryNotice(method, f"{self.url}{path}", attempt + 1, delay, reason))
        return Sleep(delay)

    def _send_flow(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        body: PartBody | None = None,
        headers: dict[str, str] | None = None,
    ) -> Flow[httpx.Response]:
        """One API call, tried again (with backoff) on network errors, 5xx, 429 and retryable 409s;
        an error answer becomes a typed exception."""
        # Whether a try may have been carried out though its answer never came (a proxy's 502, a
        # connection cut after the request went out): a DELETE then answered 404 was done by it.
        maybe_done = False
        full = 0  # answers 507 so far
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            try:
                response: httpx.Response = yield Request(method, path, json, params, headers, body)
            except httpx.TransportError as exc:
                maybe_done = maybe_done or not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                # A refused connection before the server ever answered is a wrong URL or a server
                # not started: one more try, not the 40-55 s of backoff that ride out a restart.
                never_answered = isinstance(exc, httpx.ConnectError) and not self._answered and attempt >= 1
                if last or never_answered or not is_retryable_error(exc):
                    raise ConnectionFailed(f"{method} {self.url}{path}: {exc or type(exc).__name__}") from exc
                hint, failure = None, reason_of(exc)
            else:
                self._answered = True
                if response.status_code == 507:
                    full += 1
                    last = last or full >= self.retry.storage_full_attempts
                if not (is_retryable_response(response) and not last):
                    if method == "DELETE" and response.status_code == 404 and maybe_done:
                        return response  # deleted by the try whose answer was lost
                    if response.is_error:
                        raise error_from_response(response)
                    self._check_answered_by_chunkd(method, path, response)
                    return response
                hint, failure = retry_after(response), reason_of(response)
                maybe_done = maybe_done or response.status_code != 429
            if body is not None:
                body.rewind()
            yield self._wait(method, path, attempt, hint, failure)
        raise AssertionError("unreachable")

    def _check_answered_by_chunkd(self, method: str, path: str, response: httpx.Response) -> None:
        """Every successful answer of the API is JSON, or empty (204): anything else is another
        server at this URL (a web page, a proxy's login form), not a success. A DELETE answered
        200 with HTML was reported as done, and a page where JSON was due ended in a traceback."""
        kind = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if response.status_code == 204 or kind == "application/json" or kind.endswith("+json"):
            return
        raise ClientError(
            f"{method} {self.url}{path}: the server answered {response.status_code} with "
            f"{kind or 'no content type'}, not as a chunkd server does: check the URL (CHUNKD_URL, --url)"
        )

    def _file_flow(self, method: str, path: str, **kwargs: Any) -> Flow[File]:
        response = yield from self._send_flow(method, path, **kwargs)
        return File.from_json(response.json())

    # ---- simple calls ---------------------------------------------------------------------------
    def _get_flow(self, file_id: str) -> Flow[File]:
        return self._file_flow("GET", f"/v1/files/{file_id}")

    def _list_page_flow(self, status: str | None, limit: int, cursor: str | None) -> Flow[Page]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        data = (yield from self._send_flow("GET", "/v1/files", params=params)).json()
        return Page(tuple(File.from_json(f) for f in data["data"]), data.get("nextCursor"))

    def _usage_flow(self) -> Flow[Usage]:
        return Usage.from_json((yield from self._send_flow("GET", "/v1/usage")).json())

    def _cancel_flow(self, file_id: str) -> Flow[File]:
        return self._file_flow("POST", f"/v1/files/{file_id}/cancel")

    def _delete_flow(self, file_id: str) -> Flow[None]:
        yield from self._send_flow("DELETE", f"/v1/files/{file_id}")

    def _create_flow(self, filename: str, size: int, part_size: int | None, mime_type: str | None) -> Flow[File]:
        # One key for every try of this create: a try whose answer was lost (a network error, a
        # proxy's 5xx) made the upload, and the next try is answered with it, not with a second one.
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        return self._file_flow(
            "POST", "/v1/files", json=create_body(filename, size, part_size, mime_type), headers=headers
        )

    def _complete_flow(self, file_id: str, md5: str | None) -> Flow[File]:
        return self._file_flow("POST", f"/v1/files/{file_id}/complete", json={"md5": md5} if md5 else {})

    # ---- upload ---------------------------------------------------------------------------------
    def _upload_flow(
        self,
        source: SourceLike,
        *,
        filename: str | None = None,
        part_size: int | None = None,
        parallel: int = 4,
        on_progress: ProgressCallback | None = None,
        mime_type: str | None = None,
    ) -> Flow[File]:
        src = Source(source)
        try:
            remembered = yield from self._remembered_flow(src)
            if remembered is not None and remembered.status == "COMPLETED":
                # A run stopped between complete and forget: that upload is this file's only if its
                # MD5 is this file's (one edited since with its size and mtime kept is not).
                local_md5: bytes = yield Blocking(src.md5)
                if remembered.md5 == local_md5.hex():
                    if self.state is not None and src.local is not None:
                        yield Blocking(self.state.forget, (self.url, self.key, src.local))
                    return remembered
                remembered = None

            def start() -> Flow[File]:
                file = yield from self._create_flow(filename or src.name, src.size, part_size, mime_type)
                if self.state is not None and src.local is not None:
                    yield Blocking(self.state.put, (self.url, self.key, src.local, file.id))
                    # This path's uploads of the file as it was (another size or mtime): nothing
                    # resumes them now, so they are cancelled, not left pending until they expire.
                    stale: list[str] = yield Blocking(self.state.superseded, (self.url, self.key, src.local))
                    for old in stale:
                        with contextlib.suppress(ClientError):
                            yield from self._cancel_flow(old)
                return file

            try:
                done = yield from self._fill_flow(remembered or (yield from start()), src, parallel, on_progress)
            except UploadExpired:
                if remembered is None:
                    raise
                # It expired while we resumed it (idle too long before this run): start over, once.
                done = yield from self._fill_flow((yield from start()), src, parallel, on_progress)
            except ChecksumMismatch:
                if remembered is None:
                    raise  # the file changed while this run read it: nothing to retry with
                # The file was edited in place since the parts sent before (same size and mtime:
                # an editor or a copy that keeps them). Resuming onto those parts failed at every
                # run; sending every part again, once, replaces them with the file as it is now.
                done = yield from self._fill_flow(remembered, src, parallel, on_progress, every_part=True)
            if self.state is not None and src.local is not None:
                yield Blocking(self.state.forget, (self.url, self.key, src.local))
            return done
        finally:
            src.close()

    def _resume_flow(
        self, file_id: str, source: SourceLike, parallel: int, on_progress: ProgressCallback | None
    ) -> Flow[File]:
        src = Source(source)
        try:
            file = yield from self._get_flow(file_id)
            if not resumable(file, src.size):
                raise Conflict(409, "invalid_state", f"upload {file_id} is {file.status} ({file.size_bytes} bytes)")
            return (yield from self._fill_flow(file, src, parallel, on_progress))
        finally:
            src.close()

    def _remembered_flow(self, src: Source) -> Flow[File | None]:
        """The unfinished upload this local file went to before, if it can still take the rest."""
        if self.state is None or src.local is None:
            return None
        upload_id: str | None = yield Blocking(self.state.get, (self.url, self.key, src.local))
        if upload_id is None:
            return None
        try:
            file: File | None = yield from self._get_flow(upload_id)
        except (NotFound, PermissionDenied):  # gone; or a credential that may not read it: start over
            file = None
        if file is not None and reusable(file, src.size):
            return file
        yield Blocking(self.state.forget, (self.url, self.key, src.local))  # expired, cancelled or gone
        return None

    def _fill_flow(
        self,
        file: File,
        src: Source,
        parallel: int,
        on_progress: ProgressCallback | None,
        *,
        every_part: bool = False,
    ) -> Flow[File]:
        """Send the parts the server lacks (``every_part``: all of them), ``parallel`` at a time,
        beside one pass over the whole file for its MD5; then complete with it."""
        assert file.part_size is not None
        todo = missing_parts(file) if not every_part else list(range(1, part_count(file) + 1))
        tracker = Tracker(src.size, on_progress)
        tracker.add(src.size - sum(part_range(n, file.part_size, src.size)[1] for n in todo))
        parts = [self._put_part_flow(file, n, src, tracker) for n in todo]
        digest: bytes = yield Parallel(parts, max(1, parallel), lambda stop: src.md5(0, None, stop))
        done = yield from self._complete_flow(file.id, digest.hex())
        try:
            return (yield from self._get_flow(file.id))
        except (PermissionDenied, NotFound):
            # A credential that may upload but not read (files:create alone, an upload link's
            # token): the file is complete and its MD5 checked by the server; its full view is
            # not ours to see. This was reported as a failed upload.
            return dataclasses.replace(done, md5=done.md5 or digest.hex(), part_size=file.part_size)

    def _put_part_flow(self, file: File, number: int, src: Source, tracker: Tracker) -> Flow[None]:
        assert file.part_size is not None
        offset, length = part_range(number, file.part_size, file.size_bytes)
        digest: bytes = yield Blocking(src.md5, (offset, length))
        headers = {
            "Content-MD5": content_md5(digest),
            "Content-Length": str(length),
            "Content-Type": "application/octet-stream",
        }
        body = PartBody(src, offset, length, tracker)
        yield from self._send_flow("PUT", f"/v1/files/{file.id}/parts/{number}", body=body, headers=headers)

    # ---- download -------------------------------------------------------------------------------
    def _download_flow(
        self, file_id: str, dest: str | os.PathLike[str] | None, on_progress: ProgressCallback | None
    ) -> Flow[Path]:
        file = yield from self._get_flow(file_id)
        if file.status != "COMPLETED":
            raise Conflict(409, "invalid_state", f"file {file_id} is {file.status}; only COMPLETED files download")
        if isinstance(dest, str) and dest.endswith(("/", os.sep)) and not Path(dest).is_dir():
            # Path() drops the trailing slash: "missing-dir/" would become a file of that name.
            raise FileNotFoundError(errno.ENOENT, "no such directory", dest)
        target = Path(dest) if dest is not None else Path(download_name(file))
        named_by_uploader = dest is None or target.is_dir()
        if target.is_dir():
            target = target / download_name(file)
        if named_by_uploader:
            _refuse_existing(target)
        partial = partial_path(target, file.id)
        sink = DownloadSink(file.size_bytes, on_progress)
        if partial.exists() and partial.stat().st_size <= file.size_bytes:
            yield Blocking(sink.resume_from, (partial,))
        try:
            with open(partial, "r+b" if partial.exists() else "wb") as out:
                sink.open(out)
                yield from self._fetch_flow(f"/v1/files/{file_id}/content", sink)
                yield Blocking(sink.sync)
        except OSError as exc:  # a full disk, say: the bytes so far stay for the next try, said where
            try:
                # What reached the file, not what was handed to its buffer (the rest was refused).
                on_disk = partial.stat().st_size
            except OSError:
                raise exc from None
            if on_disk == 0:  # nothing to continue from: not left behind as an empty hidden file
                partial.unlink(missing_ok=True)
                raise OSError(exc.errno, exc.strerror or str(exc), exc.filename or str(target)) from exc
            kept = f"{on_disk} bytes received are kept in {partial}"
            advice = "run the download again to continue, or delete it"
            raise OSError(exc.errno, f"{exc.strerror or exc}; {kept}: {advice}", exc.filename) from exc
        md5 = sink.digest.hexdigest()
        if sink.offset != file.size_bytes or (file.md5 is not None and md5 != file.md5):
            partial.unlink()
            raise IntegrityError(
                f"downloaded {sink.offset} bytes with MD5 {md5}, expected {file.size_bytes} bytes with MD5 {file.md5}"
            )
        if named_by_uploader:
            _refuse_existing(target)  # one may have appeared meanwhile
        os.replace(partial, target)
        return target

    def _fetch_flow(self, path: str, sink: DownloadSink) -> Flow[None]:
        """Fill ``sink`` from ``path``, continuing with a Range request after a failure; the retry
        budget starts again whenever a try brought bytes."""
        attempt = 0
        failure: ClientError
        while not sink.finished:
            start = sink.offset
            try:
                response: httpx.Response = yield Fetch(path, sink.range_headers(), sink)
            except httpx.TransportError as exc:
                if not is_retryable_error(exc):
                    raise ConnectionFailed(f"GET {self.url}{path}: {exc}") from exc
                hint, reason, failure = None, reason_of(exc), ConnectionFailed(f"GET {self.url}{path}: {exc}")
            else:
                if response.is_success:
                    return
                if not is_retryable_response(response):
                    raise error_from_response(response)
                hint, reason, failure = retry_after(response), reason_of(response), error_from_response(response)
            attempt = 0 if sink.offset > start else attempt + 1
            if attempt >= self.retry.attempts:
                raise failure
            yield self._wait("GET", path, attempt, hint, reason)
