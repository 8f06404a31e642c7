"""``chunkd download`` to a place it cannot write says so in one line (exit 1), not a traceback."""

from __future__ import annotations

import errno
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


def test_a_missing_directory_given_with_a_slash_is_not_made_a_file(tmp_path: Path) -> None:
    # Path() drops the slash: the bytes went to a file named "missing".
    target = f"{tmp_path / 'missing'}/"
    done = CliRunner().invoke(app, ["download", "abc", "-o", target, "--key", "ck_0000000000000000_x"])
    assert done.exit_code == 1, done.output
    assert done.stderr.strip() == f"error: abc: cannot write {target}: no such directory"
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_says_where_the_partial_download_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("chunkd.client._transfer.DownloadSink.sync", full)
    done = CliRunner().invoke(app, ["download", "abc", "-o", str(tmp_path), "--key", "ck_0000000000000000_x"])
    assert done.exit_code == 1, done.output
    partial = tmp_path / ".report.pdf.abc.part"
    assert partial.read_bytes() == b"abc"
    assert " ".join(done.stderr.split()) == (
        f"error: abc: No space left on device; 3 bytes received are kept in {partial}: "
        "run the download again to continue, or delete it"
    )


def test_a_disk_full_before_the_first_byte_leaves_no_empty_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("chunkd.client._transfer.DownloadSink.write", full)
    done = CliRunner().invoke(app, ["download", "abc", "-o", str(tmp_path), "--key", "ck_0000000000000000_x"])
    assert done.exit_code == 1, done.output
    assert list(tmp_path.iterdir()) == []  # ".report.pdf.abc.part", empty, stayed behind
    assert done.stderr.strip() == f"error: abc: cannot write {tmp_path / 'report.pdf'}: No space left on device"
