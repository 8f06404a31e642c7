"""A bad setting stops ``chunkd serve`` with its name and what is wrong, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHUNKD = str(Path(sys.executable).parent / "chunkd")


def serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHUNKD, "serve", "--data-dir", str(tmp_path / "data"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_a_malformed_setting_is_named_with_its_variable(tmp_path: Path) -> None:
    done = serve(tmp_path, CHUNKD_PORT="abc")
    assert done.returncode == 2
    assert done.stderr.startswith("chunkd: port (CHUNKD_PORT): Input should be a valid integer")
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "data").exists()  # nothing was made


def test_more_than_one_worker_under_granian_is_refused(tmp_path: Path) -> None:
    done = serve(tmp_path, "--workers", "2", "--server", "granian")
    assert done.returncode == 2
    assert "workers: more than one server process needs server=uvicorn" in done.stderr


def test_bad_rate_limits_stop_the_start_in_one_line(tmp_path: Path) -> None:
    """They were read at the first request: the server ran and answered every request 500,
    /healthz included, with a traceback each."""
    done = serve(tmp_path, CHUNKD_RATE_LIMITS="banana")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("chunkd: rate_limits (CHUNKD_RATE_LIMITS): Value error, rate limit 'banana'")
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"rate_limits": "read=abc"}, "rate_limits"),
        ({"rate_limits": "read=10/minute;foo=5/second"}, "rate_limits"),
        ({"redis_url": "banana"}, "redis_url"),
        ({"part_size": 0}, "part_size"),
        ({"part_size": 100}, ""),  # below min_part_size: every create without a part size was refused
        ({"min_part_size": 10_000_000, "max_part_size": 1000, "part_size": 5000}, ""),
        ({"reaper_interval_seconds": 0}, "reaper_interval_seconds"),  # a busy loop
        ({"upload_ttl_seconds": -10}, "upload_ttl_seconds"),  # every upload made EXPIRED
        ({"s3_presign_seconds": 0}, "s3_presign_seconds"),  # every redirected download a 500
        ({"s3_presign_seconds": 9_999_999}, "s3_presign_seconds"),  # past SigV4's 7 days: S3 refuses them
        ({"max_file_size": -1}, "max_file_size"),
        ({"max_pending_uploads": -1}, "max_pending_uploads"),
        ({"public_url": "not a url"}, "public_url"),
        ({"hook_url": "notaurl"}, "hook_url"),  # every upload refused at its first hook call
        ({"clamd": "nonsense"}, "clamd"),  # every complete refused, scan_unavailable
        ({"clamd": "localhost:99999"}, "clamd"),
        ({"trusted_proxies": "10.0.0.0/33"}, "trusted_proxies"),
        ({"trusted_proxies": "127.0.0.1, proxy.example"}, "trusted_proxies"),
        ({"storage": "s3"}, ""),  # no bucket: a traceback when the store was made
        ({"s3_max_connections": 0}, "s3_max_connections"),
    ],
)
def test_a_nonsense_setting_is_refused_at_start(tmp_path: Path, values: dict[str, object], field: str) -> None:
    from pydantic import ValidationError

    from chunkd.settings import Settings

    with pytest.raises(ValidationError) as refused:
        Settings(data_dir=tmp_path, **values)  # type: ignore[arg-type]
    assert [".".join(map(str, error["loc"])) for error in refused.value.errors()] == [field]


def test_a_misspelt_variable_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from chunkd.cli.common import settings_for

    monkeypatch.setenv("CHUNKD_MAX_FILESIZE", "10")
    monkeypatch.setenv("CHUNKD_KEY", "ck_x")  # the client commands' own: no warning
    settings_for(tmp_path)
    err = capsys.readouterr().err
    assert "CHUNKD_MAX_FILESIZE is not a setting" in err and "CHUNKD_KEY" not in err


def test_well_formed_addresses_are_taken(tmp_path: Path) -> None:
    from chunkd.settings import Settings

    settings = Settings(
        data_dir=tmp_path,
        hook_url="https://hooks.example/chunkd",
        clamd="[::1]:3310",
        trusted_proxies="127.0.0.1, 10.0.0.0/8, ::1",
        public_url="https://uploads.example/up",
    )
    assert settings.clamd == "[::1]:3310" and Settings(data_dir=tmp_path, clamd="/run/clamav/clamd.ctl").clamd
    assert Settings(data_dir=tmp_path, trusted_proxies="*").trusted_proxies == "*"
