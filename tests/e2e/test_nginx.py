"""nginx (Debian's package) with the sample config of docs/nginx-chunkd.conf in front of two chunkd
nodes: an upload through it lands on both nodes, bodies stream through unbuffered, and the file
comes back intact (also by Range)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cluster import start_cluster
from tests.support.postgres import PostgresServer
from tests.support.server import ChunkdServer, free_port
from tests.support.tools import missing

pytestmark = [pytest.mark.e2e]

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "nginx-chunkd.conf"
MiB = 1024 * 1024


def _nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if found is None:
        missing("nginx is not installed (scripts/services/nginx.sh installs it)")
    return found


def render_config(root: Path, nodes: list[ChunkdServer], port: int) -> Path:
    """The sample config with the test's node addresses and port, inside a minimal nginx.conf."""
    sample = SAMPLE.read_text()
    servers = "".join(f"    server 127.0.0.1:{n.port} max_fails=3 fail_timeout=10s;\n" for n in nodes)
    sample, upstreams = re.subn(r"(?m)^    server 10\.0\.0\.\d+:8080[^\n]*\n", "", sample)
    assert upstreams == 3, "the sample's upstream block changed; update this test"
    sample = sample.replace("upstream chunkd {\n", "upstream chunkd {\n" + servers, 1)
    sample, listens = re.subn(r"(?m)^    listen 80;$", f"    listen 127.0.0.1:{port};", sample)
    assert listens == 1
    (root / "chunkd.conf").write_text(sample)
    conf = root / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format upstream '$request_method $uri $status $upstream_addr';
    access_log {root}/access.log upstream;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    include {root}/chunkd.conf;
}}
"""
    )
    return conf


@pytest.fixture
def nginx_cluster(tmp_path: Path, pg_server: PostgresServer) -> Iterator[tuple[str, Path, list[ChunkdServer]]]:
    binary = _nginx()
    nodes = start_cluster(tmp_path, pg_server.url(pg_server.create_database()), {"CHUNKD_STORAGE": "local"}, 2)
    # nginx's workers (user nobody when run as root) must reach their temp dirs: pytest's tmp_path
    # is private to root, so use a directory of its own under the system temp dir.
    root = Path(tempfile.mkdtemp(prefix="chunkd-nginx-"))
    os.chmod(root, 0o777)
    port = free_port()
    conf = render_config(root, nodes, port)
    process = subprocess.Popen(
        [binary, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120  # bounds only an nginx that never comes up
        with httpx.Client(timeout=5) as http:  # one client: a new one per poll costs real CPU
            while True:
                assert process.poll() is None, (root / "error.log").read_text()
                try:
                    if http.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "nginx did not come up"
                time.sleep(0.05)
        yield url, root, nodes
    finally:
        process.terminate()
        process.wait(timeout=10)
        for node in nodes:
            node.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_upload_through_nginx_reaches_both_nodes(nginx_cluster: tuple[str, Path, list[ChunkdServer]]) -> None:
    url, root, nodes = nginx_cluster
    key = nodes[0].create_key("alice")
    part = 2 * MiB
    data = os.urandom(4 * part + 1234)
    md5 = hashlib.md5(data).hexdigest()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        created = client.post("/v1/files", json={"filename": "via-nginx.bin", "sizeBytes": len(data), "partSize": part})
        assert created.status_code == 201, created.text
        body = created.json()
        # Upload URLs point back through nginx (Host header passed with its port).
        assert body["uploadUrl"].startswith(f"{url}/v1/files/{body['id']}/content?")
        for number, start in enumerate(range(0, len(data), part), start=1):

            def chunks(start: int = start) -> Iterator[bytes]:  # chunked transfer encoding
                for offset in range(start, min(start + part, len(data)), 256 * 1024):
                    yield data[offset : min(offset + 256 * 1024, start + part, len(data))]

            put = client.put(f"/v1/files/{body['id']}/parts/{number}", content=chunks())
            assert put.status_code == 200, put.text
        done = client.post(f"/v1/files/{body['id']}/complete", json={"md5": md5})
        assert done.status_code == 200, done.text
        assert client.get(f"/v1/files/{body['id']}/content").content == data
        ranged = client.get(f"/v1/files/{body['id']}/content", headers={"Range": "bytes=100-199"})
        assert ranged.status_code == 206 and ranged.content == data[100:200]

    puts = [line.split() for line in (root / "access.log").read_text().splitlines() if line.startswith("PUT ")]
    assert len(puts) == 5 and all(p[2] == "200" for p in puts)
    assert {p[3] for p in puts} == {f"127.0.0.1:{n.port}" for n in nodes}  # round-robin, no stickiness
    # With request buffering on, nginx would have spooled each 2 MiB body to disk first and said so.
    assert "buffered to a temporary file" not in (root / "error.log").read_text()


def test_a_draft_creation_with_its_body_passes_nginx_whole(nginx_cluster: tuple[str, Path, list[ChunkdServer]]) -> None:
    """An IETF-draft creation that carries the whole file (what tus-js-client's ietf-draft modes and
    Apple's URLSession send), through the sample config with chunkd's default settings. nginx 1.22
    took the 104 chunkd sent for it for the final response and stopped relaying the body: the
    request stalled until chunkd's body timeout (a 408 after 60 s). By default chunkd now sends no
    1xx to a request that came through a proxy."""
    url, root, nodes = nginx_cluster
    key = nodes[0].create_key("alice")
    data = os.urandom(16 * MiB + 5)
    headers = {
        "Authorization": f"Bearer {key}",
        "Upload-Draft-Interop-Version": "6",
        "Upload-Complete": "?1",
        "Content-Type": "application/octet-stream",
    }
    with httpx.Client(base_url=url, timeout=120) as client:
        created = client.post("/files/", content=data, headers=headers)
        assert created.status_code in (200, 201), created.text
        assert created.headers["upload-complete"] == "?1"
        file_id = created.headers["location"].rstrip("/").rsplit("/", 1)[1]
        stored = client.get(f"/v1/files/{file_id}", headers={"Authorization": f"Bearer {key}"}).json()
        assert stored["status"] == "COMPLETED" and stored["md5"] == hashlib.md5(data).hexdigest()
    creations = [
        line.split() for line in (root / "access.log").read_text().splitlines() if line.startswith("POST /files/")
    ]
    assert [c[2] for c in creations] == [str(created.status_code)]  # not "104"
