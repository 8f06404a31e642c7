"""The server secret: CHUNKD_SECRET (hex or base64) overrides the data dir's file, which nodes
starting at once on a shared data dir create exactly once."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError

from chunkd.runtime import load_secret, server_secret
from chunkd.settings import Settings


def test_secret_from_hex_or_base64_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = bytes(range(32))
    (tmp_path / "secret.key").write_bytes(b"f" * 32)
    assert server_secret(Settings(data_dir=tmp_path)) == b"f" * 32
    assert server_secret(Settings(data_dir=tmp_path, secret=raw.hex())) == raw
    assert server_secret(Settings(data_dir=tmp_path, secret=base64.b64encode(raw).decode())) == raw
    assert server_secret(Settings(data_dir=tmp_path, secret=base64.urlsafe_b64encode(raw).decode().rstrip("="))) == raw
    monkeypatch.setenv("CHUNKD_SECRET", raw.hex().upper())
    assert server_secret(Settings(data_dir=tmp_path)) == raw


@pytest.mark.parametrize("bad", ["", "short", "00" * 31, "not base64 at all!"])
def test_bad_secret_is_refused_with_the_setting_named(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValidationError, match="CHUNKD_SECRET"):
        Settings(data_dir=tmp_path, secret=bad)


def test_nodes_creating_the_secret_file_at_once_agree(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: load_secret(tmp_path / "secret.key"), range(32)))
    assert len(secrets) == 1 and len(secrets.pop()) == 32
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]  # no temporary files left behind
