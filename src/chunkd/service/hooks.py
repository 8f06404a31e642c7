"""Blocking hooks: chunkd asks an operator's service (``CHUNKD_HOOK_URL``) before it creates an
upload, finishes one and serves one, and does what it answers. Every dialect goes through them, as
they are called by the engine (create, complete) and by the shared download response.

Request: ``POST <hook url>`` with JSON ``{"hook": "pre-create" | "pre-finish" | "pre-download",
"owner": ..., "upload": <the file object of the Files API, plus frontend and metadata>}``.

Answer: a 2xx with a JSON object (or an empty body: go ahead).

* ``{"reject": true, "status": 403, "message": "..."}`` refuses the request; the client gets the
  message in its own dialect's error shape, with the status mapped to the nearest engine error
  (400/422: invalid input, 403 and anything else: forbidden, 404: not found, 409: conflict, 413: too
  large). A refused pre-finish leaves the upload PENDING and resumable.
* pre-create: ``{"metadata": {...}}`` is added to the upload's metadata; keys the upload already has
  (a dialect's state, a link's tags), keys starting with ``_`` (the store's) and the engine's own
  (``ENGINE_KEYS``: the upload link it was made through, say) are neither replaced nor added.
* pre-finish: ``{"result": <any JSON>}`` is stored with the completed upload (``metadata.preFinish``)
  and returned again on every repeated complete.

Failure policy (``CHUNKD_HOOK_FAILURE``): when the hook cannot be reached, has not answered in full
within ``CHUNKD_HOOK_TIMEOUT_SECONDS``, answers a non-2xx status, more than ``MAX_ANSWER_BYTES`` or
something that is not a JSON object, ``reject`` (the default: a hook is often a
security check) refuses the request as retryable (``hook_unavailable``, like a busy upload), and
``allow`` goes ahead as if there were no hook."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from standardwebhooks import Webhook

from chunkd.domain import errors as e
from chunkd.domain.events import file_object
from chunkd.domain.metadata import ENGINE_KEYS, PRE_FINISH
from chunkd.domain.upload import Upload
from chunkd.scope import CURRENT_REQUEST_ID
from chunkd.service.tls import outgoing_tls

__all__ = ["NO_HOOKS", "ContentRejected", "HookChain", "HttpHooks", "UploadHooks", "count_hook", "rejection"]

log = logging.getLogger(__name__)

# The most of a hook's answer that is read: an answer is a small JSON object, and a request waits on it.
MAX_ANSWER_BYTES = 1024 * 1024


def count_hook(hook: str, result: str) -> None:
    """Where a hook call's outcome goes (``accepted``, ``rejected``, ``error``). The runtime points
    ``HttpHooks.count`` and ``ClamdScanner.count`` at ``Metrics.hook_invocation``
    (``chunkd_hook_invocations_total{hook,result}``)."""


def _no_constant(name: str) -> Any:
    """``NaN``, ``Infinity``, ``-Infinity``: not JSON (RFC 8259), though Python's parser takes them."""
    raise ValueError(f"the answer holds {name}, which is not JSON")


class ContentRejected(e.InvalidInput):
    """A pre-finish check found the content unacceptable for good (e.g. a virus): the engine removes
    the upload's bytes, cancels it and emits ``upload.rejected`` with ``reason`` (plus ``details``)."""

    code = "content_rejected"

    def __init__(self, message: str, *, reason: str, **details: Any) -> None:
        super().__init__(message, field="file", reason=reason, **details)
        self.reason = reason


class UploadHooks(Protocol):
    """What the engine asks before a change; each may raise a domain error to refuse it."""

    async def pre_create(self, upload: Upload) -> None:
        """May change ``upload.metadata``."""

    async def pre_finish(self, upload: Upload) -> None:
        """May record a result in ``upload.metadata`` (saved with the COMPLETED status)."""

    async def pre_download(self, upload: Upload) -> None: ...


class _NoHooks:
    async def pre_create(self, upload: Upload) -> None:
        return None

    async def pre_finish(self, upload: Upload) -> None:
        return None

    async def pre_download(self, upload: Upload) -> None:
        return None


NO_HOOKS: UploadHooks = _NoHooks()


class HookChain:
    """Several hooks, called in order (e.g. the virus scan, then the operator's HTTP hook)."""

    def __init__(self, hooks: Sequence[UploadHooks]) -> None:
        self.hooks = list(hooks)

    async def pre_create(self, upload: Upload) -> None:
        for hook in self.hooks:
            await hook.pre_create(upload)

    async def pre_finish(self, upload: Upload) -> None:
        for hook in self.hooks:
            await hook.pre_finish(upload)

    async def pre_download(self, upload: Upload) -> None:
        for hook in self.hooks:
            await hook.pre_download(upload)


def rejection(status: int, message: str) -> e.ChunkdError:
    """The engine error that carries a hook's refusal to every dialect."""
    error: e.ChunkdError
    if status in (400, 422):
        error = e.InvalidInput(message, field="hook")
    elif status == 404:
        error = e.NotFound(message, field="hook")
    elif status == 409:
        error = e.Conflict(message, field="hook")
    elif status == 413:
        error = e.TooLarge(message, field="hook")
    else:
        error = e.Forbidden(message, field="hook")
    error.code = "rejected_by_hook"
    return error


class HttpHooks:
    """The operator's hook service over HTTP (JSON, a timeout, no redirects followed). With a
    ``secret`` (``CHUNKD_HOOK_SECRET``) each call is signed as a Standard Webhooks message, so the
    service can refuse calls that are not chunkd's (its answers decide what chunkd accepts, and a
    pre-finish may record a result)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        fail_open: bool,
        secret: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.fail_open = fail_open
        self.signer = Webhook(secret) if secret is not None else None
        self.count: Callable[[str, str], None] = count_hook
        # httpx's timeout bounds each read and write, not the whole exchange; ``call`` puts one
        # deadline on it (a hook trickling its answer would otherwise hold the request for ever).
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            verify=outgoing_tls(),
            transport=transport,
        )

    async def call(self, hook: str, upload: Upload) -> dict[str, Any]:
        """The hook's answer (``{}`` to go ahead); raises the refusal, or the failure per the policy."""
        view = file_object(upload, with_parts=False)
        view.update(frontend=upload.frontend, metadata=upload.metadata)
        body = {"hook": hook, "owner": upload.owner, "upload": view}
        try:
            async with asyncio.timeout(self.timeout):
                content = await self._answer(body)
            answer = json.loads(content, parse_constant=_no_constant) if content.strip() else {}
            if not isinstance(answer, dict):
                raise ValueError("the answer is not a JSON object")
            # What is kept of it (metadata, the pre-finish result) is stored and sent as UTF-8
            # JSON: a lone surrogate ("\ud800") in it made every later answer about the upload a 500.
            json.dumps(answer, ensure_ascii=False).encode()
        except (httpx.HTTPError, ValueError, TimeoutError, RecursionError) as exc:  # RecursionError: nested too deep
            if isinstance(exc, TimeoutError):
                exc = TimeoutError(f"no answer within {self.timeout:g} s")
            self.count(hook, "error")
            policy = "allow" if self.fail_open else "reject"
            request_id = CURRENT_REQUEST_ID.get() or "-"
            log.warning("%s hook failed (%s); policy: %s, request id %s", hook, exc, policy, request_id)
            if self.fail_open:
                return {}
            error = e.Busy(f"the {hook} hook is not available; try again later", field="hook")
            error.code = "hook_unavailable"
            raise error from None
        if answer.get("reject"):
            self.count(hook, "rejected")
            status = answer.get("status")
            message = answer.get("message")
            raise rejection(
                status if isinstance(status, int) else 403,
                message if isinstance(message, str) and message else f"refused by the {hook} hook",
            )
        self.count(hook, "accepted")
        return answer

    async def _answer(self, body: dict[str, Any]) -> bytes:
        """The body of a 2xx answer, at most ``MAX_ANSWER_BYTES`` of it (ValueError otherwise)."""
        # The request's id, as its access line and X-Request-Id say it: the hook's logs can name it.
        request_id = CURRENT_REQUEST_ID.get()
        headers = {"Content-Type": "application/json"}
        if request_id:
            headers["X-Request-Id"] = request_id
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        if self.signer is not None:
            # A fresh id per call (a retry by the client is another call), and the time it is sent:
            # a receiver's library refuses a replay outside its tolerance (5 minutes).
            call_id, sent_at = f"hook_{uuid.uuid4().hex}", datetime.now(UTC)
            headers["webhook-id"] = call_id
            headers["webhook-timestamp"] = str(int(sent_at.timestamp()))
            headers["webhook-signature"] = self.signer.sign(call_id, sent_at, payload)
        async with self.client.stream("POST", self.url, content=payload.encode(), headers=headers) as response:
            if not 200 <= response.status_code < 300:
                raise ValueError(f"HTTP {response.status_code}")
            content = bytearray()
            async for data in response.aiter_bytes():
                content += data
                if len(content) > MAX_ANSWER_BYTES:
                    raise ValueError(f"the answer is longer than {MAX_ANSWER_BYTES} bytes")
            return bytes(content)

    async def pre_create(self, upload: Upload) -> None:
        answer = await self.call("pre-create", upload)
        metadata = answer.get("metadata")
        if isinstance(metadata, dict):
            # Added to, never replacing: the dialects' own state ("tus", "pm"…), a link's tags
            # and the store's "_" keys are what the upload runs on; a hook echoing a client's
            # fields back must not be a way to set them.
            kept = [k for k in metadata if k.startswith("_") or k in upload.metadata or k in ENGINE_KEYS]
            if kept:
                log.warning("the pre-create hook's metadata may not replace %s; ignored", ", ".join(sorted(kept)))
            upload.metadata.update((k, v) for k, v in metadata.items() if k not in kept)

    async def pre_finish(self, upload: Upload) -> None:
        answer = await self.call("pre-finish", upload)
        if "result" in answer:
            upload.metadata[PRE_FINISH] = answer["result"]

    async def pre_download(self, upload: Upload) -> None:
        await self.call("pre-download", upload)

    async def close(self) -> None:
        await self.client.aclose()
