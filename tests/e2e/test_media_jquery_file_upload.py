"""The real jQuery File Upload library (npm ``blueimp-file-upload`` on ``jquery``) in headless
Chromium against a real ``chunkd serve``'s media API, configured as django-chunked-upload's demo
page configures it: ``maxChunkSize``, a ``formData`` array that gains ``upload_id`` from the first
chunk's answer (``chunkdone``), and on ``done`` a complete call with the MD5 the page computed with
SparkMD5. A chunk whose answer is lost (the server stored it, the browser saw a 502) is retried as
jQuery File Upload documents it: ask the server for the bytes it holds, set ``uploadedBytes``,
submit again. A file of one chunk goes whole, without ``Content-Range``; an image over the limit is
refused at its first chunk and the page gets the 413 and its ``detail``. The page and the libraries
are served from the chunkd origin through Playwright's request routing (no CORS needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from tests.support.media_files import make_png
from tests.support.server import ChunkdServer
from tests.support.tools import CHROMIUM, launch_chromium, require

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODULES = Path(__file__).parents[1] / "node_modules"
LIBRARIES = {
    "jquery.js": MODULES / "jquery" / "dist" / "jquery.js",
    "jquery.ui.widget.js": MODULES / "blueimp-file-upload" / "js" / "vendor" / "jquery.ui.widget.js",
    "jquery.fileupload.js": MODULES / "blueimp-file-upload" / "js" / "jquery.fileupload.js",
    "spark-md5.js": MODULES / "spark-md5" / "spark-md5.js",
}
CHUNK = 204_800  # the media API's default chunk limit, as the page's maxChunkSize

PAGE = """<!doctype html>
<html><head><meta charset="utf-8">
<script src="/__jfutest__/jquery.js"></script>
<script src="/__jfutest__/jquery.ui.widget.js"></script>
<script src="/__jfutest__/jquery.fileupload.js"></script>
<script src="/__jfutest__/spark-md5.js"></script>
</head><body>
<script>
function calculate_md5(file, chunk_size) {  // the demo's: SparkMD5 over FileReader slices
  return new Promise(function (resolve) {
    var chunks = Math.ceil(file.size / chunk_size), current = 0, spark = new SparkMD5.ArrayBuffer();
    function read_next_chunk() {
      var reader = new FileReader();
      reader.onload = function (e) {
        spark.append(e.target.result);
        if (++current < chunks) read_next_chunk(); else resolve(spark.end());
      };
      reader.readAsArrayBuffer(file.slice(current * chunk_size, Math.min((current + 1) * chunk_size, file.size)));
    }
    read_next_chunk();
  });
}
window.runUpload = async function ([token, asset, name, maxChunkSize]) {
  const file = new File([await (await fetch('/__jfutest__/' + asset)).blob()], name, {type: 'image/png'});
  const headers = {Authorization: 'Bearer ' + token};
  const form_data = [];
  const log = {chunks: [], failures: [], retries: 0, asked: []};
  return new Promise(function (resolve) {
    let md5 = null;
    const $input = $('<input type="file" name="image">').appendTo(document.body);
    $input.fileupload({
      url: '/api/v2/media/upload/chunk/',
      dataType: 'json',
      maxChunkSize: maxChunkSize,
      formData: form_data,
      headers: headers,
      add: function (e, data) {
        md5 = calculate_md5(data.files[0], maxChunkSize);
        data.submit();
      },
      chunkdone: function (e, data) {
        if (form_data.length < 1) form_data.push({name: 'upload_id', value: data.result.upload_id});
        log.chunks.push({range: data.contentRange, status: data.jqXHR.status, result: data.result});
      },
      fail: function (e, data) {
        log.failures.push({status: data.jqXHR.status, body: data.jqXHR.responseJSON || null});
        if (form_data.length && log.retries < 3 && data.uploadedBytes < data.files[0].size) {
          // jQuery File Upload's documented retry: ask the server for the bytes it holds.
          log.retries += 1;
          $.ajax({url: '/v1/files/' + form_data[0].value, headers: headers, dataType: 'json'}).done(function (f) {
            log.asked.push(f.bytesReceived);
            data.uploadedBytes = f.bytesReceived;
            data.data = null;
            data.submit();
          });
          return;
        }
        resolve({log: log});
      },
      done: function (e, data) {
        md5.then(function (hex) {
          $.ajax({type: 'POST', url: '/api/v2/media/upload/complete/', headers: headers, dataType: 'json',
                  data: {upload_id: data.result.upload_id, md5: hex}})
            .always(function (a, textStatus, b) {
              const ok = textStatus === 'success';
              resolve({log: log, last: data.result, md5: hex,
                       complete: {status: (ok ? b : a).status, body: ok ? a : a.responseJSON}});
            });
        });
      },
    });
    $input.fileupload('add', {files: [file]});
  });
};
</script></body></html>
"""


def test_jquery_file_upload_chunks_retry_and_complete(live_server: ChunkdServer) -> None:
    require(CHROMIUM, "chromium")
    for name, path in LIBRARIES.items():
        require(path, name)
    from playwright.sync_api import Request, Route, sync_playwright

    key = live_server.create_key("alice")
    token = httpx.post(
        f"{live_server.url}/v1/auth/token",
        headers={"Authorization": f"Bearer {key}"},
        json={"scope": "files:create files:read"},
    ).json()["accessToken"]
    photo, small, huge = make_png(600, 400), make_png(40, 40), make_png(1500, 1500)
    assert 3 * CHUNK < len(photo) < 4 * CHUNK and len(small) < CHUNK and len(huge) > 5 * 1024 * 1024
    assets = {name: (path.read_bytes(), "application/javascript") for name, path in LIBRARIES.items()}
    assets["page.html"] = (PAGE.encode(), "text/html; charset=utf-8")
    for name, data in (("photo.png", photo), ("small.png", small), ("huge.png", huge)):
        assets[name] = (data, "application/octet-stream")

    def serve(route: Route) -> None:
        body, content_type = assets[route.request.url.rsplit("/", 1)[-1]]
        route.fulfill(status=200, body=body, headers={"Content-Type": content_type})

    lost: list[int] = []

    def lose_chunk_3_answer(route: Route) -> None:
        """Chunk 3 reaches the server and is stored, but the browser is told it failed."""
        if not lost and route.request.headers.get("content-range", "").startswith(f"bytes {2 * CHUNK}-"):
            lost.append(route.fetch().status)
            route.fulfill(status=502, body="bad gateway")
            return
        route.continue_()

    sent: list[dict[str, str]] = []

    def record(request: Request) -> None:
        if "/api/v2/media/upload/" in request.url:
            sent.append(request.headers)

    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page()
            page.route(f"{live_server.url}/__jfutest__/*", serve)
            page.route(f"{live_server.url}/api/v2/media/upload/chunk/", lose_chunk_3_answer)
            page.on("request", record)
            page.goto(f"{live_server.url}/__jfutest__/page.html")

            result = page.evaluate("args => window.runUpload(args)", [token, "photo.png", "my photo.png", CHUNK])
            log = result["log"]
            assert lost == [201]
            assert log["failures"] == [{"status": 502, "body": None}] and log["asked"] == [3 * CHUNK], log
            size = len(photo)
            ranges = [f"bytes {s}-{min(s + CHUNK, size) - 1}/{size}" for s in range(0, size, CHUNK)]
            assert [c["range"] for c in log["chunks"]] == [r for r in ranges if not r.startswith(f"bytes {2 * CHUNK}-")]
            upload_id = log["chunks"][0]["result"]["upload_id"]
            assert all(c["status"] == 201 and c["result"]["upload_id"] == upload_id for c in log["chunks"])
            assert [c["result"]["offset"] for c in log["chunks"]] == [CHUNK, 2 * CHUNK, size]
            assert [h.get("content-range") for h in sent] == [*ranges, None]  # chunk 3 once, then complete
            assert all(h["authorization"] == f"Bearer {token}" for h in sent)
            assert result["md5"] == hashlib.md5(photo).hexdigest()
            complete = result["complete"]
            assert complete["status"] == 201, complete
            media = complete["body"]
            assert (media["type"], media["image_width"], media["image_height"]) == ("image", 600, 400)
            assert httpx.get(media["image"]).content == photo

            sent.clear()
            whole = page.evaluate("args => window.runUpload(args)", [token, "small.png", "small.png", CHUNK])
            assert whole["log"]["chunks"] == [] and whole["log"]["failures"] == [], whole
            assert [h.get("content-range") for h in sent] == [None, None]  # the one chunk, then complete
            assert whole["last"]["offset"] == len(small) and whole["complete"]["status"] == 201, whole
            assert httpx.get(whole["complete"]["body"]["image"]).content == small

            refused = page.evaluate("args => window.runUpload(args)", [token, "huge.png", "huge.png", CHUNK])
            (failure,) = refused["log"]["failures"]
            assert failure["status"] == 413 and failure["body"]["code"] == "too_large", refused
            assert failure["body"]["detail"] == f"the file has {len(huge)} bytes; an image may have at most 5242880"
        finally:
            browser.close()
