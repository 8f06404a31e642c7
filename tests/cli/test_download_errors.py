"""``chunkd download`` to a place it cannot write says so in one line (exit 1), not a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from chunkd.cli import app
from chunkd.client import Client

FILE = {"id": "abc", "filename": "report.pdf", "sizeBytes": 3, "status": "COMPLETED", "md5": None}


@pytest.fixture(autouse=True)
def server(monkeypatch: pytest.MonkeyPatch) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/files/abc":
            return httpx.Response(200, json=FILE)
        return httpx.Response(200, content=b"abc")

    def client(url: str, key: str, **options: Any) -> Client:
        return Client(url, key, transport=httpx.MockTransport(answer), remember_uploads=False)

    monkeypatch.setattr("chunkd.client.Client", client)


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    target = tmp_path / "no-such-dir" / "copy.pdf"
    done = CliRunner().invoke(app, ["download", "abc", "-o", str(target), "--key", "ck_0000000000000000_x"])
    assert done.exit_code == 1, done.output
    assert done.stderr.strip() == (
        f"error: abc: cannot write {tmp_path / 'no-such-dir' / '.copy.pdf.abc.part'}: No such file or directory"
    )


def test_a_writable_target_gets_the_bytes(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["download", "abc", "-o", str(tmp_path), "--key", "ck_0000000000000000_x"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "report.pdf").read_bytes() == b"abc"
