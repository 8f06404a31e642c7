"""``chunkd links create/ls/revoke`` against a real ``chunkd serve``: the URL alone on stdout (so a
script can take it), a partner's ``chunkd upload`` through the link's token within its limits, the
listing, and a revocation that stops the token at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_cli_client import chunkd, cli_env  # noqa: F401  (a fixture)
from tests.support.files import random_file
from tests.support.server import ChunkdServer

pytestmark = pytest.mark.e2e


def test_a_link_made_by_the_cli_takes_a_partners_upload_until_revoked(
    tmp_path: Path,
    e2e_server: ChunkdServer,
    cli_env: dict[str, str],  # noqa: F811
) -> None:
    admin = e2e_server.create_key("carol", "links:admin,files:create,files:read")
    owner = {**cli_env, "CHUNKD_URL": e2e_server.url, "CHUNKD_KEY": admin}
    made = chunkd(
        "links",
        "create",
        "--expires-in",
        "2d",
        "--max-files",
        "1",
        "--max-bytes",
        "1MiB",
        "--type",
        "application/*",
        "--note",
        "[red]scans",
        env=owner,
    )
    assert made.returncode == 0, made.stderr
    url = made.stdout.strip()
    assert url.startswith(f"{e2e_server.url}/#link=cl_") and "\n" not in url
    assert "up to 1 file;" in made.stderr and "up to 1.0 MiB" in made.stderr

    [listed] = [json.loads(line) for line in chunkd("links", "ls", "--json", env=owner).stdout.splitlines()]
    assert (listed["maxFiles"], listed["maxBytes"], listed["allowedMimeTypes"]) == (1, 1024 * 1024, ["application/*"])
    assert listed["url"] is None and listed["note"] == "[red]scans" and listed["revokedAt"] is None
    table = chunkd("links", "ls", env=owner)
    assert table.returncode == 0 and listed["id"] in table.stdout and "[red]scans" in table.stdout

    partner = {**cli_env, "CHUNKD_URL": e2e_server.url, "CHUNKD_KEY": url.split("#link=", 1)[1]}
    scan = tmp_path / "scan.pdf"
    md5 = random_file(scan, 300_000)
    sent = chunkd("upload", str(scan), "--json", env=partner)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["md5"] == md5
    again = chunkd(
        "upload", str(tmp_path / "scan.pdf"), "--json", env={**partner, "XDG_STATE_HOME": str(tmp_path / "s2")}
    )
    assert again.returncode == 1 and "accepts at most 1 files" in again.stderr

    revoked = chunkd("links", "revoke", listed["id"], env=owner)
    assert revoked.returncode == 0 and revoked.stdout.strip() == f"revoked {listed['id']}"
    [after] = [json.loads(line) for line in chunkd("links", "ls", "--json", env=owner).stdout.splitlines()]
    assert after["revokedAt"] is not None and after["filesUploaded"] == 1
    late = chunkd("upload", str(scan), env={**partner, "XDG_STATE_HOME": str(tmp_path / "s3")})
    assert late.returncode == 1 and "refused the API key" in late.stderr


def test_a_bad_duration_or_size_is_a_usage_error(e2e_server: ChunkdServer, cli_env: dict[str, str]) -> None:  # noqa: F811
    env = {**cli_env, "CHUNKD_URL": e2e_server.url, "CHUNKD_KEY": "ck_0000000000000000_x"}
    for option, value in (("--expires-in", "soon"), ("--max-bytes", "lots")):
        done = chunkd("links", "create", option, value, env=env)
        assert done.returncode == 2 and "is not a" in done.stderr
