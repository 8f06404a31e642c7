"""The real Fine Uploader library (npm ``fine-uploader``) in headless Chromium against a real
``chunkd serve``: chunking with concurrent chunks, an automatic retry of a chunk the server had
already stored, the done (chunking success) endpoint, the library's own delete, and a whole small
file. The test page and the library are served from the chunkd origin through
Playwright's request routing, so the page is same-origin with the API and needs no CORS."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from tests.support.server import ChunkdServer
from tests.support.tools import CHROMIUM, launch_chromium, require

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIBRARY = Path(__file__).parents[1] / "node_modules" / "fine-uploader" / "fine-uploader" / "fine-uploader.core.js"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><script src="/__pmtest__/fine-uploader.core.js"></script></head>
<body><script>
window.runUpload = async function ([key, asset, filename]) {
  const blob = await (await fetch('/__pmtest__/' + asset)).blob();
  const file = new File([blob], filename, {type: 'application/octet-stream'});
  return new Promise((resolve) => {
    const log = {errors: [], chunks: [], inFlight: 0, maxInFlight: 0, retries: 0};
    const uploader = new qq.FineUploaderBasic({
      request: {endpoint: '/api/v2/pm/upload/', customHeaders: {Authorization: 'Bearer ' + key}},
      chunking: {
        enabled: true,
        concurrent: {enabled: true},
        success: {endpoint: '/api/v2/pm/upload/?done'},
      },
      deleteFile: {enabled: true, endpoint: '/api/v2/pm/upload', customHeaders: {Authorization: 'Bearer ' + key}},
      maxConnections: 3,
      retry: {enableAuto: true, autoAttemptDelay: 0, maxAutoAttempts: 3},
      callbacks: {
        onAutoRetry: function (id, name, attempt) { log.retries += 1; },
        onUploadChunk: function () { log.inFlight += 1; log.maxInFlight = Math.max(log.maxInFlight, log.inFlight); },
        onUploadChunkSuccess: function (id, chunk, response) {
          log.inFlight -= 1;
          log.chunks.push({index: chunk.partIndex, response: response});
        },
        onError: function (id, name, reason) { log.errors.push(reason); },
        onComplete: function (id, name, response, xhr) {
          window.uploader = uploader;
          window.fileId = id;
          resolve({log: log, response: response, uuid: uploader.getUuid(id), name: name,
                   status: xhr ? xhr.status : null});
        },
      },
    });
    uploader.addFiles([file]);
  });
};
window.runDelete = function () {
  return new Promise((resolve) => {
    window.uploader._options.callbacks.onDeleteComplete = function (id, xhr, isError) {
      resolve({status: xhr.status, isError: isError, body: xhr.responseText});
    };
    window.uploader.deleteFile(window.fileId);
  });
};
</script></body></html>
"""


def test_fine_uploader_chunked_concurrent_upload(live_server: ChunkdServer) -> None:
    require(CHROMIUM, "chromium")
    require(LIBRARY, "fine-uploader")
    from playwright.sync_api import Route, sync_playwright

    key = live_server.create_key("alice")
    data = os.urandom(12 * 1024 * 1024)
    small = os.urandom(300_000)  # under one chunk: Fine Uploader sends it whole, with no done request
    assets = {
        "page.html": (PAGE.encode(), "text/html; charset=utf-8"),
        "fine-uploader.core.js": (LIBRARY.read_bytes(), "application/javascript"),
        "data.bin": (data, "application/octet-stream"),
        "small.bin": (small, "application/octet-stream"),
    }

    def serve(route: Route) -> None:
        body, content_type = assets[route.request.url.rsplit("/", 1)[-1]]
        route.fulfill(status=200, body=body, headers={"Content-Type": content_type})

    failed: list[int] = []

    def fail_chunk_3_once(route: Route) -> None:
        """Chunk 3's first attempt reaches the server, but the browser is told it failed (a proxy
        error after the bytes were stored): Fine Uploader re-sends it and the part is replaced."""
        body = route.request.post_data_buffer or b""
        if not failed and b'name="qqpartindex"\r\n\r\n3\r\n' in body:
            failed.append(route.fetch().status)
            route.fulfill(status=502, body="bad gateway")
            return
        route.continue_()

    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page()
            page.route(f"{live_server.url}/__pmtest__/*", serve)
            page.route(f"{live_server.url}/api/v2/pm/upload/", fail_chunk_3_once)
            page.goto(f"{live_server.url}/__pmtest__/page.html")
            result = page.evaluate("args => window.runUpload(args)", [key, "data.bin", "twelve megabytes.bin"])
            # The one injected failure (reported by the library as an error, then auto-retried), no other.
            assert len(result["log"]["errors"]) == 1 and result["log"]["retries"] == 1, result["log"]
            assert result["response"]["success"] is True and result["response"]["file_uuid"] == result["uuid"]
            chunks = result["log"]["chunks"]
            assert sorted(c["index"] for c in chunks) == list(range(7))  # 6 × 2,000,000 + 582,912
            assert all(c["response"] == {"file_uuid": result["uuid"], "success": True} for c in chunks)
            assert result["log"]["maxInFlight"] > 1, "chunks were not sent concurrently"
            assert failed == [200]  # the server had stored chunk 3 before the browser was told it failed

            headers = {"Authorization": f"Bearer {key}"}
            upload_file_url = f"{live_server.url}/api/v2/pm/upload/{result['uuid']}"
            with httpx.Client(headers=headers, timeout=60) as client:
                info = client.get(f"{upload_file_url}/info").json()
                assert info["filename"] == "twelve megabytes.bin" and info["filesize"] == len(data)
                assert info["url"] == upload_file_url
                native = client.get(f"{live_server.url}/v1/files/{info['id']}").json()
                assert native["status"] == "COMPLETED" and native["partSize"] == 2_000_000
                assert len(native["parts"]) == 7 and native["bytesReceived"] == len(data)  # chunk 3 replaced
                assert native["md5"] == hashlib.md5(data).hexdigest()
                downloaded = client.get(upload_file_url)
                assert downloaded.status_code == 200
                assert hashlib.md5(downloaded.content).hexdigest() == hashlib.md5(data).hexdigest()

                deleted = page.evaluate("() => window.runDelete()")
                assert deleted["status"] == 200 and not deleted["isError"], deleted
                assert client.get(upload_file_url).status_code == 404

            whole = page.evaluate("args => window.runUpload(args)", [key, "small.bin", "small.bin"])
            assert whole["log"]["errors"] == [] and whole["log"]["chunks"] == [], whole
            assert whole["response"]["success"] is True and whole["response"]["file_uuid"] == whole["uuid"]
            with httpx.Client(headers=headers, timeout=60) as client:
                assert client.get(whole["response"]["file_url"]).content == small
        finally:
            browser.close()
