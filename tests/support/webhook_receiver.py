"""A webhook receiver for end-to-end tests, run as its own process:

    python -m tests.support.webhook_receiver PORT SECRETS_FILE LOG_FILE [DELAY_SECONDS]

Every POST is verified with the ``standardwebhooks`` package against the secret that
``SECRETS_FILE`` (JSON ``{path: "whsec_…"}``, read on each request so a test can add an endpoint's
secret once it has registered it) gives for the request's path. Each request is appended to
``LOG_FILE`` as one JSON line ``{"path", "id", "verified", "payload"}``; a verified message gets a
204 (or the status ``statuses.json`` beside ``SECRETS_FILE`` gives for its path), anything else a 400,
after ``DELAY_SECONDS`` (a slow receiver keeps deliveries in flight, so
several senders overlap). ``WebhookReceiver`` starts, stops and reads it."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.support.receiver import ReceiverProcess, append_json_line, read_json_lines, serve, write_json

__all__ = ["WebhookReceiver", "webhook_env"]

Messages = list[dict[str, Any]]


def webhook_env(receiver: WebhookReceiver, secret: str) -> dict[str, str]:
    """A server's settings for the operator endpoint on ``receiver`` signed with ``secret``, owner URLs
    allowed on loopback, and short retry delays."""
    return {
        "CHUNKD_WEBHOOK_URLS": receiver.url("/operator"),
        "CHUNKD_WEBHOOK_SECRET": secret,
        "CHUNKD_WEBHOOK_BLOCK_PRIVATE": "false",
        "CHUNKD_WEBHOOK_RETRY_BASE_SECONDS": "0.1",
        "CHUNKD_WEBHOOK_RETRY_MAX_DELAY_SECONDS": "0.5",
        "CHUNKD_WEBHOOK_POLL_SECONDS": "0.1",
        "CHUNKD_WEBHOOK_TIMEOUT_SECONDS": "5",
    }


class WebhookReceiver(ReceiverProcess):
    """The receiver process on a fixed port (so it can be stopped and started again at the same URL)."""

    module = "tests.support.webhook_receiver"
    name = "webhook receiver"

    def __init__(self, root: Path, port: int, *, delay: float = 0.0) -> None:
        super().__init__(root, port)
        self.delay = delay
        self.secrets_file = root / "secrets.json"
        self.statuses_file = root / "statuses.json"
        self.log_file = root / "received.jsonl"
        for empty in (self.secrets_file, self.statuses_file):
            if not empty.exists():
                empty.write_text("{}")

    def arguments(self) -> list[str]:
        return [str(self.secrets_file), str(self.log_file), str(self.delay)]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def set_secret(self, path: str, secret: str) -> None:
        write_json(self.secrets_file, {**json.loads(self.secrets_file.read_text()), path: secret})

    def set_status(self, path: str, status: int | None) -> None:
        """The status a verified message to ``path`` gets from now on (None: 204)."""
        statuses = {k: v for k, v in json.loads(self.statuses_file.read_text()).items() if k != path}
        write_json(self.statuses_file, statuses if status is None else {**statuses, path: status})

    def messages(self, path: str | None = None) -> Messages:
        return [m for m in read_json_lines(self.log_file) if path is None or m["path"] == path]

    def wait_for(
        self, condition: Callable[[Messages], bool], timeout: float = 60.0, path: str | None = None
    ) -> Messages:
        """Wait until ``condition(messages)`` holds (polling the log; the receiver is another process)."""
        deadline = time.monotonic() + timeout
        while (messages := self._look(condition, deadline, path)) is None:
            time.sleep(0.05)
        return messages

    async def arrived(
        self, condition: Callable[[Messages], bool], timeout: float = 60.0, path: str | None = None
    ) -> Messages:
        """``wait_for`` for async tests, yielding to the event loop (where an in-process app's
        delivery worker runs) between looks."""
        deadline = time.monotonic() + timeout
        while (messages := self._look(condition, deadline, path)) is None:
            await asyncio.sleep(0.05)
        return messages

    def _look(self, condition: Callable[[Messages], bool], deadline: float, path: str | None) -> Messages | None:
        """The messages once ``condition`` holds for them, None while it does not yet."""
        messages = self.messages(path)
        if condition(messages):
            return messages
        if time.monotonic() > deadline:
            raise AssertionError(f"the receiver never saw what was expected; it got {messages}")
        return None


def _serve(port: int, secrets_file: Path, log_file: Path, delay: float) -> None:
    from standardwebhooks import Webhook, WebhookVerificationError

    def answer(path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        time.sleep(delay)
        secret = json.loads(secrets_file.read_text()).get(path)
        verified, payload = False, None
        if secret is not None:
            try:
                payload = Webhook(secret).verify(body, dict(headers))
                verified = True
            except WebhookVerificationError:
                pass
        append_json_line(
            log_file, {"path": path, "id": headers.get("webhook-id"), "verified": verified, "payload": payload}
        )
        statuses = secrets_file.parent / "statuses.json"
        status = json.loads(statuses.read_text()).get(path, 204) if statuses.exists() else 204
        return (status if verified else 400), b""

    serve(port, answer)


if __name__ == "__main__":
    _serve(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
