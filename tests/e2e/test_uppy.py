"""Uppy (npm ``uppy``, its prebuilt bundle, unchanged) in Debian's headless Chromium against a real
``chunkd serve``, from a page on another origin, as a site embedding the uploader would: the
requests are cross-origin, so every preflight and every response header the library reads must
pass chunkd's CORS policy (``CHUNKD_CORS_ORIGINS``).

- ``@uppy/tus`` (tus-js-client's browser build inside): tus 1.0, the IETF draft mode, parallel
  uploads (concatenation), and a page reloaded mid-upload that resumes the same upload from the
  offset the server holds (the URL kept in localStorage, the offset asked with HEAD).
- ``@uppy/xhr-upload``: the Files API's signed ``uploadUrl`` taken as a presigned PUT target, as
  pages do with S3 (create with the key, PUT the bytes with no credentials, complete).

The page, the bundle and the file are served by a small HTTP server of the test's own on a second
loopback port (a page Playwright fulfilled itself would count as a public origin, and Chromium's
local network access checks would refuse its requests to 127.0.0.1)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.files import FilesClient, MiB, random_file
from tests.support.server import ChunkdServer, free_port
from tests.support.tools import chromium, require
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BUNDLE = Path(__file__).parents[1] / "node_modules" / "uppy" / "dist" / "uppy.min.js"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><script src="/uppy.min.js"></script></head>
<body><script>
const progress = [];
async function picked() {
  const blob = await (await fetch('/file.bin')).blob();
  const uppy = new Uppy.Uppy();
  uppy.on('upload-progress', (file, p) => progress.push(p.bytesUploaded));
  return {uppy, blob};
}
// @uppy/tus: the same file (same name, type and size: the same fingerprint) each time.
window.tusUpload = async ([api, key, options]) => {
  const {uppy, blob} = await picked();
  uppy.use(Uppy.Tus, {endpoint: api + '/files/', headers: {Authorization: 'Bearer ' + key},
                      retryDelays: [0, 250, 500, 1000], ...options});
  uppy.addFile({name: 'holiday été.bin', type: 'video/mp4', data: blob});
  const result = await uppy.upload();
  return {url: result.successful.map(f => f.response.uploadURL)[0] || null,
          errors: result.failed.map(f => String(f.error)), progress};
};
// Starts a tus upload and returns at once (the test reloads the page under it).
window.tusStart = (args) => { window.tusUpload(args); };
// @uppy/xhr-upload: the Files API's signed uploadUrl as a presigned PUT, then complete.
window.xhrUpload = async ([api, key]) => {
  const {uppy, blob} = await picked();
  const auth = {Authorization: 'Bearer ' + key};
  uppy.use(Uppy.XHRUpload, {
    method: 'PUT', formData: false,
    async endpoint(file) {
      const created = await (await fetch(api + '/v1/files', {method: 'POST',
        headers: {...auth, 'Content-Type': 'application/json'},
        body: JSON.stringify({filename: file.name, sizeBytes: file.size, mimeType: file.type})})).json();
      uppy.setFileMeta(file.id, {fileId: created.id});
      return created.uploadUrl;
    },
  });
  uppy.addPostProcessor(async (ids) => {
    for (const id of ids) {
      const file = uppy.getFile(id);
      const done = await fetch(api + '/v1/files/' + file.meta.fileId + '/complete', {method: 'POST', headers: auth});
      uppy.setFileMeta(id, {completed: done.status});
    }
  });
  uppy.addFile({name: 'report.pdf', type: 'application/pdf', data: blob});
  const result = await uppy.upload();
  const file = uppy.getFiles()[0];
  return {fileId: file.meta.fileId, completed: file.meta.completed, errors: result.failed.map(f => String(f.error))};
};
</script></body></html>
""".encode()


class Site:
    """The embedding site: the page, the Uppy bundle and the file to pick, on a loopback port."""

    def __init__(self, file: Path) -> None:
        files = {"/": (PAGE, "text/html"), "/uppy.min.js": (BUNDLE.read_bytes(), "text/javascript")}
        files["/file.bin"] = (file.read_bytes(), "application/octet-stream")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body, kind = files.get(self.path, files["/"])
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def picked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The file the page picks (4 MiB and a few bytes) and its MD5."""
    path = tmp_path_factory.mktemp("uppy") / "file.bin"
    return path, random_file(path, 4 * MiB + 7)


@pytest.fixture(scope="module")
def site(picked: tuple[Path, str]) -> Iterator[Site]:
    require(BUNDLE, "uppy")
    site = Site(picked[0])
    try:
        yield site
    finally:
        site.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[ChunkdServer]:
    """chunkd allowing the site's origin, shared by the module's tests (each with its own key)."""
    env = {"CHUNKD_FSYNC": "true", "CHUNKD_CORS_ORIGINS": site.origin}
    with ChunkdServer(tmp_path_factory.mktemp("uppy-api") / "data", env=env) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as instance:
        yield instance


@pytest.fixture
def page(browser: Any, site: Site) -> Iterator[Any]:
    """The site's page in a new context: localStorage (where Uppy keeps upload URLs) starts empty."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(site.origin + "/")
        yield page
    finally:
        context.close()


@pytest.mark.parametrize(
    "options",
    [{"chunkSize": MiB}, {"chunkSize": MiB, "protocol": "ietf-draft-05"}, {"parallelUploads": 3}],
    ids=["tus-v1", "ietf-draft-05", "parallel"],
)
def test_uppy_tus_across_origins(
    api: ChunkdServer, page: Any, picked: tuple[Path, str], options: dict[str, Any]
) -> None:
    key = api.create_key("alice")
    out = page.evaluate("window.tusUpload", [api.url, key, options])
    assert out["errors"] == [] and out["url"].startswith(f"{api.url}/files/")
    with FilesClient(api, key) as files:
        info = files.get(out["url"].rsplit("/", 1)[1])
    assert info["status"] == "COMPLETED" and info["md5"] == picked[1]
    assert (info["filename"], info["mimeType"], info["sizeBytes"]) == ("holiday été.bin", "video/mp4", 4 * MiB + 7)


def test_uppy_tus_resumes_after_a_reload(api: ChunkdServer, page: Any, picked: tuple[Path, str]) -> None:
    """Uploads throttled to 512 KiB/s; the page is reloaded once the server holds a MiB, and the
    file picked again: Uppy finds the upload's URL in localStorage, asks the server its offset
    (HEAD) and sends only the rest, to the same upload."""
    key = api.create_key("alice")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    conditions = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 512 * 1024}
    cdp.send("Network.emulateNetworkConditions", conditions)
    page.evaluate("window.tusStart", [api.url, key, {"chunkSize": MiB}])
    with FilesClient(api, key) as files:

        def held() -> dict[str, Any] | None:
            pending = files.http.get("/v1/files", params={"status": "PENDING"}).json()["data"]
            return next((u for u in pending if u["bytesReceived"] >= MiB), None)

        first = wait_for(held, what="a MiB on the server")
        page.reload()
        cdp.send("Network.emulateNetworkConditions", {**conditions, "uploadThroughput": -1})
        out = page.evaluate("window.tusUpload", [api.url, key, {"chunkSize": MiB}])
        assert out["errors"] == [] and out["url"] == f"{api.url}/files/{first['id']}"
        # Progress after the reload started where the server was, not at zero.
        assert min(out["progress"]) >= first["bytesReceived"]
        info = files.get(first["id"])
    assert info["status"] == "COMPLETED" and info["md5"] == picked[1]


def test_uppy_xhr_upload_puts_to_the_signed_upload_url(api: ChunkdServer, page: Any, picked: tuple[Path, str]) -> None:
    key = api.create_key("alice")
    out = page.evaluate("window.xhrUpload", [api.url, key])
    assert out["errors"] == [] and out["completed"] == 200
    with FilesClient(api, key) as files:
        info = files.get(out["fileId"])
        assert files.download_md5(out["fileId"]) == (4 * MiB + 7, picked[1])
    assert info["status"] == "COMPLETED" and info["md5"] == picked[1]
    assert (info["filename"], info["mimeType"]) == ("report.pdf", "application/pdf")
