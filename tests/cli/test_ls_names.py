"""``chunkd ls`` shows each filename as it is: a name is chosen by whoever uploaded the file (a
partner, through an upload link), so it is never read as the table's markup."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from chunkd.cli import app
from chunkd.client import Client

NAMES = ["[red]inv.pdf", "[conceal]hidden", "a[b]c.txt"]  # short: the table is 80 columns wide


@pytest.fixture(autouse=True)
def server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server whose listing holds files with those names."""

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/files"
        files = [{"id": f"id{i}", "filename": n, "sizeBytes": 1, "status": "COMPLETED"} for i, n in enumerate(NAMES)]
        return httpx.Response(200, json={"data": files, "nextCursor": None})

    def client(url: str, key: str, **options: Any) -> Client:
        return Client(url, key, transport=httpx.MockTransport(answer), remember_uploads=False)

    monkeypatch.setattr("chunkd.client.Client", client)


def test_ls_prints_filenames_verbatim() -> None:
    done = CliRunner().invoke(app, ["ls", "--key", "ck_0000000000000000_x"])
    assert done.exit_code == 0, done.output
    for name in NAMES:
        assert name in done.stdout, done.stdout
