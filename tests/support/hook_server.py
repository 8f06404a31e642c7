"""A blocking-hook service for tests, run as its own process:

    python -m tests.support.hook_server PORT RULES_FILE LOG_FILE

Each call (JSON ``{"hook", "owner", "upload"}``) is answered from ``RULES_FILE`` (JSON, read on every
call so a test can change its mind): ``rules[hook][upload filename]``, else ``rules[hook]["*"]``,
else ``{}`` (go ahead); a rule ``{"http_status": N}`` answers that status with no body. Every call
is appended to ``LOG_FILE`` as a JSON line. ``HookServer`` starts and stops it."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.receiver import ReceiverProcess, append_json_line, read_json_lines, serve, write_json

__all__ = ["HookServer"]


class HookServer(ReceiverProcess):
    module = "tests.support.hook_server"
    name = "hook server"

    def __init__(self, root: Path, port: int) -> None:
        super().__init__(root, port)
        self.rules_file = root / "rules.json"
        self.log_file = root / "calls.jsonl"
        self.rules({})

    def arguments(self) -> list[str]:
        return [str(self.rules_file), str(self.log_file)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def rules(self, rules: dict[str, dict[str, Any]]) -> None:
        write_json(self.rules_file, rules)

    def calls(self) -> list[dict[str, Any]]:
        return read_json_lines(self.log_file)


def _serve(port: int, rules_file: Path, log_file: Path) -> None:
    def answer(path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        call = json.loads(body)
        # What it carried besides: its X-Request-Id, and the raw body and Standard Webhooks headers a
        # signed call is verified by.
        signed = {k: headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature") if k in headers}
        append_json_line(
            log_file, {**call, "_request_id": headers.get("x-request-id"), "_signed": signed, "_body": body.decode()}
        )
        rules = json.loads(rules_file.read_text()).get(call["hook"], {})
        rule = rules.get(call["upload"]["filename"], rules.get("*", {}))
        if "http_status" in rule:
            return rule["http_status"], b""
        return 200, json.dumps(rule).encode()

    serve(port, answer)


if __name__ == "__main__":
    _serve(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
