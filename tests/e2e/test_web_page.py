"""The browser upload page (``/``) in Debian's headless Chromium against a real ``chunkd serve``:
sign in with an API key, upload three files (one of 50 MiB) with progress shown, pause and resume,
reload the page mid-upload and pick the file again (it continues: no part the server already held
is sent again), and delete a file from the list. Upload throughput is throttled through the
DevTools protocol so that "mid-upload" lasts long enough to act in, whatever the machine."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.files import FilesClient, MiB, random_file
from tests.support.server import ChunkdServer
from tests.support.tools import chromium

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BIG = 50 * MiB + 12345


@pytest.fixture(scope="module")
def chromium_of_the_module() -> Iterator[Any]:
    # One Chromium for the module's tests (each launch is ~2 s of CPU); each test has contexts of its
    # own, closed after it. Not for the session: Playwright's loop, open between its calls, makes
    # asyncio.run() in this thread fail, and other modules' tests use it.
    with chromium() as instance:
        yield instance


@pytest.fixture
def browser(chromium_of_the_module: Any) -> Iterator[Any]:
    """The module's Chromium; the contexts (and pages) a test opened are closed after it, so that no
    page of one test (an upload going on, its storage) is seen by the next."""
    yield chromium_of_the_module
    for context in chromium_of_the_module.contexts:
        context.close()


def throttle(page: Any, bytes_per_second: int, *, offline: bool = False, cdp: Any = None) -> Any:
    """Limit the page's upload speed, or cut its network (DevTools network emulation; the server is
    untouched). Returns the DevTools session, to change the conditions later through it."""
    cdp = cdp or page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    conditions = {"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": bytes_per_second}
    cdp.send("Network.emulateNetworkConditions", conditions)
    return cdp


def state_of(page: Any, name: str) -> dict[str, Any]:
    """The page's own view of one upload (state, bytes sent, parts the server acknowledged)."""
    return page.evaluate(  # type: ignore[no-any-return]
        """name => { const u = window.chunkdUploads.filter(u => u.file.name === name).pop();
        return u ? {state: u.state, sent: u.sent, size: u.size, id: u.meta && u.meta.id,
                    received: [...u.received], error: u.error && u.error.message, resumed: u.resumed} : null; }""",
        name,
    )


def wait_for(page: Any, name: str, condition: str, timeout: float = 120_000) -> None:
    """Wait until ``condition`` (JS over ``u``, the named upload) holds."""
    page.wait_for_function(
        f"""name => {{ const u = (window.chunkdUploads || []).filter(u => u.file.name === name).pop();
        return Boolean(u && ({condition})); }}""",
        arg=name,
        timeout=timeout,
    )


def wait_drawn(page: Any, name: str, condition: str, timeout: float = 120_000) -> None:
    """Wait until ``condition`` (JS over ``li``, the named upload's row) holds. The page draws its
    rows at the next animation frame after an upload changes, so what ``wait_for`` saw may not be
    on the screen yet; the row's ``data-state`` and texts are drawn together."""
    page.wait_for_function(
        f"""name => {{ const li = [...document.querySelectorAll('#uploads li')].find(li => li.dataset.name === name);
        return Boolean(li && ({condition})); }}""",
        arg=name,
        timeout=timeout,
    )


def sign_in(page: Any, server: ChunkdServer, key: str) -> None:
    page.goto(server.url + "/")
    page.fill("#api-key", key)
    page.click("#sign-in-form button[type=submit]")
    page.wait_for_selector("#uploader:not([hidden])")
    assert page.input_value("#api-key") == ""  # the key is not left in the form


def picking(browser: Any, server: ChunkdServer, key: str, paths: list[Path], rate: int) -> tuple[Any, Any, Any]:
    """A new browser context signed in with ``key``, its uploads throttled to ``rate`` bytes a
    second, with ``paths`` picked: the context, its page and the DevTools session of the throttle."""
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, server, key)
    cdp = throttle(page, rate)
    page.set_input_files("#pick", [str(p) for p in paths])
    return context, page, cdp


def paused_after_a_part(browser: Any, server: ChunkdServer, key: str, path: Path) -> tuple[Any, Any, str, str]:
    """A file of 12 MiB + 5 written at ``path``, picked in a new signed-in context and paused once the
    server holds a part of it: the context, its page, the file's MD5 and the upload's id."""
    md5 = random_file(path, 12 * MiB + 5)
    context, page, _ = picking(browser, server, key, [path], 4 * MiB)
    wait_for(page, path.name, "u.received.size >= 1 && (u.pause(), true)")
    return context, page, md5, state_of(page, path.name)["id"]


def test_page_is_served_with_a_strict_csp(live_server: ChunkdServer) -> None:
    import httpx

    page = httpx.get(live_server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["referrer-policy"] == "no-referrer"  # no link out of the page names it
    assert "http" not in page.text.split("<body>")[0].replace("http-equiv", "")  # no asset from elsewhere
    for asset in ("app.js", "uploader.js", "md5.js", "style.css"):
        response = httpx.get(f"{live_server.url}/web/{asset}")
        assert response.status_code == 200 and response.headers["content-security-policy"] == csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "https://" not in response.text
    assert httpx.get(f"{live_server.url}/web/..%2Fapp.py").status_code == 404
    # HEAD, as uptime checks and link previews send it: the page's headers, no body (it was a 405).
    head = httpx.head(live_server.url + "/")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-security-policy"] == csp
    assert httpx.head(f"{live_server.url}/web/app.js").status_code == 200


def test_sign_in_upload_pause_reload_resume_delete(live_server: ChunkdServer, browser: Any, tmp_path: Path) -> None:
    key = live_server.create_key("alice")
    files = {"big.bin": BIG, "small.txt": 300_000, "medium.bin": 3 * MiB + 7}
    paths = {name: tmp_path / name for name in files}
    md5s = {name: random_file(paths[name], size) for name, size in files.items()}

    context, page, _ = picking(browser, live_server, key, [paths[n] for n in files], 4 * MiB)

    # Progress is shown while the big file is on its way, per file and in total.
    wait_for(page, "big.bin", "u.received.size >= 1 && u.state === 'uploading'")
    wait_drawn(page, "big.bin", "parseInt(li.querySelector('.percent').textContent) > 0")
    row = page.locator("#uploads li[data-name='big.bin']")
    percent = int(row.locator(".percent").inner_text().rstrip("%"))
    assert 0 < percent < 100
    assert float(page.locator("#total-bar").get_attribute("value") or 0) > 0
    assert "MiB of" in page.locator("#total-text").inner_text()

    # Pause: nothing more is acknowledged; resume: it goes on.
    row.locator("button.pause").click()
    wait_for(page, "big.bin", "u.state === 'paused'")
    wait_drawn(page, "big.bin", "li.dataset.state === 'paused'")
    paused = state_of(page, "big.bin")
    assert row.locator(".status").inner_text() == "paused"
    with FilesClient(live_server, key) as client:
        held = client.get(paused["id"])
        assert held["status"] == "PENDING" and 0 < len(held["parts"]) < held["partCount"]
    row.locator("button.pause").click()  # now labelled Resume
    # Held again the moment one more part is acknowledged (paused inside the page, in the same
    # turn as the check, so several of its seven parts are surely still to go) ...
    wait_for(
        page,
        "big.bin",
        f"u.state === 'uploading' && u.received.size > {len(paused['received'])} && (u.pause(), true)",
    )
    wait_for(page, "small.txt", "u.state === 'done'")  # ... while the others finish
    wait_for(page, "medium.bin", "u.state === 'done'")
    upload_id = state_of(page, "big.bin")["id"]
    storage = page.evaluate("() => JSON.stringify(Object.assign({}, localStorage))")
    assert upload_id in storage
    # The ids stored are random base64url: one in a few thousand holds "eyJ" or "ck_" by chance.
    besides_ids = storage.replace(upload_id, "")
    assert key not in storage and "eyJ" not in besides_ids and "ck_" not in besides_ids

    # Reload mid-upload (bytes in flight): the token is gone with the page (memory only).
    row.locator("button.pause").click()
    wait_for(page, "big.bin", "u.state === 'uploading' && u.inflight.size > 0")
    page.reload()
    with FilesClient(live_server, key) as client:
        before = client.get(upload_id)
    assert before["status"] == "PENDING" and len(before["parts"]) < before["partCount"]
    held_parts = {p["partNumber"] for p in before["parts"]}

    sent_parts: list[int] = []
    page.on(
        "request",
        lambda request: (
            sent_parts.append(int(request.url.rsplit("/", 1)[1]))
            if request.method == "PUT" and "/parts/" in request.url
            else None
        ),
    )
    page.wait_for_selector("#sign-in:not([hidden])")
    sign_in(page, live_server, key)
    throttle(page, 4 * MiB)
    page.set_input_files("#pick", str(paths["big.bin"]))
    wait_for(page, "big.bin", "u.state === 'done'", timeout=180_000)
    after = state_of(page, "big.bin")
    assert after["id"] == upload_id and after["resumed"] is True
    assert not held_parts & set(sent_parts), "parts the server already held were sent again"
    assert set(sent_parts) == set(range(1, before["partCount"] + 1)) - held_parts

    with FilesClient(live_server, key) as client:
        listed = {f["filename"]: f for f in client.http.get("/v1/files").json()["data"]}
        for name, size in files.items():
            assert listed[name]["status"] == "COMPLETED" and listed[name]["sizeBytes"] == size
            assert client.download_md5(listed[name]["id"]) == (size, md5s[name])
        assert json.loads(page.evaluate("() => localStorage.getItem('chunkd.resume.owner.alice')")) == {}

        # The list shows them; delete one from the page.
        page.click("#refresh")
        victim = page.locator(f"#file-rows tr[data-id='{listed['small.txt']['id']}']")
        victim.wait_for()
        victim.locator("button.delete").click()
        page.wait_for_selector(f"#file-rows tr[data-id='{listed['small.txt']['id']}']", state="detached")
        assert client.http.get(f"/v1/files/{listed['small.txt']['id']}").status_code == 404

        # Cancel mid-upload: the server's upload is CANCELLED and the page forgets it.
        dropped = tmp_path / "dropped.bin"
        random_file(dropped, 40 * MiB)
        page.set_input_files("#pick", str(dropped))
        wait_for(page, dropped.name, "u.meta && u.sent > 0 && u.received.size === 0 && u.state === 'uploading'")
        page.locator(f"#uploads li[data-name='{dropped.name}'] button.cancel").click()
        wait_for(page, dropped.name, "u.state === 'cancelled'")
        cancelled_id = state_of(page, dropped.name)["id"]
        page.wait_for_function(
            f"() => !(localStorage.getItem('chunkd.resume.owner.alice') || '').includes('{cancelled_id}')"
        )

        def cancelled() -> bool:
            return bool(client.get(cancelled_id)["status"] == "CANCELLED")

        deadline = time.monotonic() + 30  # the cancel request follows the page's change of state
        while not cancelled() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cancelled()
    context.close()


def open_link(browser: Any, url: str) -> tuple[Any, Any]:
    """The link's URL in a fresh browser context: no cookies, no storage, no key."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(url)
    return context, page


def test_upload_link_in_a_fresh_browser(live_server: ChunkdServer, browser: Any, tmp_path: Path) -> None:
    owner_key = live_server.create_key("alice", "files:create,files:read,files:delete,links:admin")
    path = tmp_path / "from partner.bin"
    md5 = random_file(path, 5 * MiB + 3)
    with FilesClient(live_server, owner_key) as owner:
        # The owner makes the link on the page (shown because the key holds links:admin).
        owner_page = browser.new_page()
        sign_in(owner_page, live_server, owner_key)
        owner_page.fill("#link-files", "2")
        owner_page.fill("#link-note-input", "Invoices for ACME, please")
        owner_page.click("#link-form button[type=submit]")
        owner_page.wait_for_selector("#link-created:not([hidden])")
        url = owner_page.input_value("#link-url")
        assert url.startswith(f"{live_server.url}/#link=cl_")
        links = owner.http.get("/v1/upload-links").json()["data"]
        assert len(links) == 1 and links[0]["maxFiles"] == 2 and links[0]["note"] == "Invoices for ACME, please"
        link = links[0]
        owner_page.locator(f"#link-rows tr[data-id='{link['id']}']").wait_for()

        context, page = open_link(browser, url)
        page.wait_for_selector("#uploader:not([hidden])")
        assert page.locator("#sign-in").is_hidden()
        assert page.inner_text("#link-note") == "Invoices for ACME, please"
        assert "up to 2 files (2 left)" in page.inner_text("#link-limits")
        page.set_input_files("#pick", str(path))
        wait_for(page, path.name, "u.state === 'done'")
        # What is left is read again once the file is in (it said "2 left" for good).
        page.wait_for_function("() => document.querySelector('#link-limits').textContent.includes('(1 left)')")
        assert page.locator("#files").is_hidden()  # a link's visitor sees no list of files
        context.close()

        files = owner.http.get("/v1/files").json()["data"]
        assert [(f["filename"], f["uploadLink"], f["status"]) for f in files] == [(path.name, link["id"], "COMPLETED")]
        assert owner.download_md5(files[0]["id"]) == (5 * MiB + 3, md5)

        # Revoked from the page: the link is refused from then on.
        owner_page.locator(f"#link-rows tr[data-id='{link['id']}'] button.revoke").click()
        owner_page.wait_for_selector(f"#link-rows tr[data-id='{link['id']}'] button.revoke", state="detached")
        assert owner.http.get("/v1/upload-links").json()["data"][0]["revokedAt"] is not None


def test_refused_links_say_why_and_store_nothing(live_server: ChunkdServer, browser: Any, tmp_path: Path) -> None:
    owner_key = live_server.create_key("alice", "files:create,files:read,files:delete,links:admin")
    path = tmp_path / "big.bin"
    random_file(path, 2 * MiB)
    with FilesClient(live_server, owner_key) as owner:
        # Past maxBytes: the server refuses the creation; the page shows its reason.
        small = owner.http.post("/v1/upload-links", json={"maxBytes": MiB}).json()
        context, page = open_link(browser, small["url"])
        page.wait_for_selector("#uploader:not([hidden])")
        page.set_input_files("#pick", str(path))
        wait_for(page, path.name, "u.state === 'failed'")
        wait_drawn(page, path.name, "li.dataset.state === 'failed'")
        row = page.locator(f"#uploads li[data-name='{path.name}']")
        assert "accepts at most 1048576 bytes" in row.locator(".detail").inner_text()
        context.close()

        # Revoked while the page is open: the next request is refused, with the reason.
        revoked = owner.http.post("/v1/upload-links", json={}).json()
        context, page = open_link(browser, revoked["url"])
        page.wait_for_selector("#uploader:not([hidden])")
        assert owner.http.delete(f"/v1/upload-links/{revoked['id']}").status_code == 200
        page.set_input_files("#pick", str(path))
        wait_for(page, path.name, "u.state === 'failed'")
        assert "revoked" in page.inner_text("#message")
        page.reload()  # and opened again: refused at once
        page.wait_for_selector("#message:not([hidden])")
        assert "revoked" in page.inner_text("#message") and page.locator("#uploader").is_hidden()
        context.close()

        # Expired (a one-second link, waited for through the API): refused when opened.
        expired = owner.http.post("/v1/upload-links", json={"expiresIn": 1}).json()
        token = expired["url"].split("#link=", 1)[1]
        import httpx

        with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {token}"}) as partner:
            while (status := partner.get("/v1/upload-links/current").status_code) != 401:
                assert status == 200, status
                time.sleep(0.05)  # pacing the poll (the link's expiry is the server's own clock)
        context, page = open_link(browser, expired["url"])
        page.wait_for_selector("#message:not([hidden])")
        assert "expired" in page.inner_text("#message") and page.locator("#uploader").is_hidden()
        context.close()

        assert owner.http.get("/v1/files").json()["data"] == []


def test_upload_survives_a_dropped_network(browser: Any, tmp_path: Path) -> None:
    """The browser goes offline mid-upload (parts in flight fail): the page waits for the network
    and carries on by itself, and the file arrives whole."""
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_PART_SIZE": str(MiB)}).start()
    try:
        key = server.create_key("alice")
        path = tmp_path / "through a tunnel.bin"
        md5 = random_file(path, 12 * MiB + 1)
        context, page, cdp = picking(browser, server, key, [path], 2 * MiB)
        wait_for(page, path.name, "u.received.size >= 2")
        failed: list[str] = []
        page.on("requestfailed", lambda request: failed.append(request.url))
        throttle(page, 2 * MiB, offline=True, cdp=cdp)
        page.wait_for_function("() => navigator.onLine === false")
        wait_for(page, path.name, "u.requests.size === 0")  # every part in flight broke off
        assert failed, "no request failed while offline"
        offline = state_of(page, path.name)
        assert offline["state"] == "uploading" and len(offline["received"]) < 13  # waiting, not failed
        throttle(page, 2 * MiB, cdp=cdp)
        wait_for(page, path.name, "u.state === 'done'", timeout=180_000)
        with FilesClient(server, key) as client:
            assert client.download_md5(offline["id"]) == (12 * MiB + 1, md5)
        context.close()
    finally:
        server.kill()


def test_parts_from_other_bytes_are_sent_again_and_the_file_completes(
    live_server: ChunkdServer, browser: Any, tmp_path: Path
) -> None:
    """A part the server holds from other bytes (a file changed in place, keeping the name, size
    and date the page resumes by) makes the complete's MD5 check fail. The page sends every part
    again, once, and completes; it used to fail, and Resume or picking the file again failed alike."""
    key = live_server.create_key("alice")
    path = tmp_path / "changed.bin"
    context, page, md5, upload_id = paused_after_a_part(browser, live_server, key, path)
    with FilesClient(live_server, key) as client:
        held = client.get(upload_id)
        part = held["parts"][0]
        stale = b"\0" * part["sizeBytes"]  # what the file held before it was changed
        assert client.put_part(upload_id, part["partNumber"], stale).status_code == 200

        sent: list[int] = []
        page.on("request", lambda r: sent.append(1) if r.method == "PUT" and "/parts/" in r.url else None)
        page.evaluate("name => window.chunkdUploads.filter(u => u.file.name === name).pop().resume()", path.name)
        wait_for(page, path.name, "u.state === 'done' || u.state === 'failed'", timeout=180_000)
        assert state_of(page, path.name)["state"] == "done", state_of(page, path.name)
        assert len(sent) >= held["partCount"]  # every part again, the stale one included
        assert client.get(upload_id)["md5"] == md5
        assert client.download_md5(upload_id) == (12 * MiB + 5, md5)
    context.close()


def test_pause_and_resume_in_a_backoff_keep_to_the_parallel_parts(browser: Any, tmp_path: Path) -> None:
    """A part answered 503 waits (Retry-After) before it is sent again. Paused and resumed in that
    wait, the upload's waiting worker went on beside the resumed run's three: four parts in flight,
    more than PARALLEL_PARTS, and parts the resumed run was sending were sent a second time. (Paused
    and resumed in one turn, the resume did nothing and the parts the pause broke off were never
    sent again: the upload stayed 'waiting' for ever.)"""
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_PART_SIZE": str(MiB)}).start()
    try:
        key = server.create_key("alice")
        path = tmp_path / "busy.bin"
        md5 = random_file(path, 12 * MiB)
        context = browser.new_context()
        page = context.new_page()
        page.add_init_script(  # the most part requests in flight at once (done at readyState 4, before onload)
            """(() => { let now = 0; window.mostInFlight = 0; const send = XMLHttpRequest.prototype.send;
            XMLHttpRequest.prototype.send = function (body) {
              now++; window.mostInFlight = Math.max(window.mostInFlight, now);
              this.addEventListener('readystatechange', () => { if (this.readyState === 4) now--; });
              return send.call(this, body); }; })()"""
        )
        refused: list[str] = []

        def busy_once(route: Any) -> None:
            if refused:
                route.continue_()
                return
            refused.append(route.request.url)
            error = {"error": {"code": "unavailable", "message": "busy"}}
            route.fulfill(status=503, headers={"Retry-After": "3"}, json=error)

        page.route("**/parts/1", busy_once)
        sign_in(page, server, key)
        throttle(page, MiB)
        page.set_input_files("#pick", str(path))
        while not refused:
            page.wait_for_timeout(20)
        row = page.locator(f"#uploads li[data-name='{path.name}']")
        row.locator("button.pause").click()  # Pause, then Resume, as a user clicks them
        wait_drawn(page, path.name, "li.dataset.state === 'paused'")
        row.locator("button.pause").click()
        wait_for(page, path.name, "u.state === 'done' || u.state === 'failed'", timeout=180_000)
        assert state_of(page, path.name)["state"] == "done"
        assert page.evaluate("() => window.mostInFlight") <= 3
        with FilesClient(server, key) as client:
            assert client.download_md5(state_of(page, path.name)["id"]) == (12 * MiB, md5)
        context.close()
    finally:
        server.kill()


def test_a_file_changed_on_disk_mid_upload_fails_with_a_reason(browser: Any, tmp_path: Path) -> None:
    """Chromium refuses to send a part of a file changed since it was picked
    (net::ERR_UPLOAD_FILE_CHANGED, a network error to the page): the page took it for a lost
    connection and tried again for ever, showing 'uploading' with no progress and no reason."""
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_PART_SIZE": str(MiB)}).start()
    try:
        key = server.create_key("alice")
        path = tmp_path / "edited.bin"
        random_file(path, 12 * MiB)
        context, page, _ = picking(browser, server, key, [path], 2 * MiB)
        wait_for(page, path.name, "u.received.size >= 2")
        with path.open("r+b") as f:
            f.seek(8 * MiB)
            f.write(b"edited")
        later = time.time() + 10
        os.utime(path, (later, later))
        wait_for(page, path.name, "u.state === 'failed'", timeout=60_000)
        wait_drawn(page, path.name, "li.dataset.state === 'failed'")
        detail = page.locator(f"#uploads li[data-name='{path.name}'] .detail").inner_text()
        assert "changed" in detail and "pick it again" in detail, detail
        context.close()
    finally:
        server.kill()


def test_a_file_completed_while_the_page_was_away_is_not_sent_again(
    live_server: ChunkdServer, browser: Any, tmp_path: Path
) -> None:
    """The page was reloaded while its complete was on its way, and the server completed the upload:
    the file picked again is done (its MD5 is the one the server holds). The page created a new
    upload and sent the whole file again, a second copy in the owner's files."""
    key = live_server.create_key("alice")
    path = tmp_path / "finished.bin"
    context, page, md5, upload_id = paused_after_a_part(browser, live_server, key, path)
    with FilesClient(live_server, key) as client:
        held = client.get(upload_id)
        data, size = path.read_bytes(), held["partSize"]
        for n in set(range(1, held["partCount"] + 1)) - {p["partNumber"] for p in held["parts"]}:
            assert client.put_part(upload_id, n, data[(n - 1) * size : n * size]).status_code == 200
        assert client.complete(upload_id, md5).status_code == 200  # what the page's complete did

        page.reload()
        sign_in(page, live_server, key)
        sent: list[str] = []
        page.on("request", lambda r: sent.append(r.url) if r.method in ("POST", "PUT") else None)
        page.set_input_files("#pick", str(path))
        wait_for(page, path.name, "u.state === 'done' || u.state === 'failed'", timeout=60_000)
        assert state_of(page, path.name)["state"] == "done" and state_of(page, path.name)["id"] == upload_id
        assert sent == []
        assert [f["id"] for f in client.http.get("/v1/files").json()["data"]] == [upload_id]
        assert json.loads(page.evaluate("() => localStorage.getItem('chunkd.resume.owner.alice')")) == {}

        # Completed from other bytes (a file changed since, keeping its name, size and date): sent anew.
        changed = tmp_path / "changed.bin"
        changed_md5 = random_file(changed, 3 * MiB)
        stale = client.create(3 * MiB, 3 * MiB, filename=changed.name)
        assert client.put_part(stale["id"], 1, b"\0" * (3 * MiB)).status_code == 200
        assert client.complete(stale["id"]).status_code == 200
        remembered = f"{changed.name}\0{3 * MiB}\0{changed.stat().st_mtime_ns // 1_000_000}"
        page.evaluate(
            "([k, id]) => localStorage.setItem('chunkd.resume.owner.alice', JSON.stringify({[k]: id}))",
            [remembered, stale["id"]],
        )
        page.set_input_files("#pick", str(changed))
        wait_for(page, changed.name, "u.state === 'done' || u.state === 'failed'", timeout=60_000)
        again = state_of(page, changed.name)
        assert again["state"] == "done" and again["id"] != stale["id"]
        assert client.get(again["id"])["md5"] == changed_md5
    context.close()


def test_files_picked_together_upload_a_few_at_a_time(browser: Any, tmp_path: Path) -> None:
    """Every file picked started at once: 50 files made 50 uploads (past a quota of pending uploads
    the rest failed) and 50 MD5 readers beside 150 part requests. Three upload at a time now; the
    others wait their turn, and all of them finish."""
    server = ChunkdServer(tmp_path / "data", env={"CHUNKD_PART_SIZE": str(MiB)}).start()
    try:
        key = server.create_key("alice")
        paths = [tmp_path / f"f{i}.bin" for i in range(6)]
        md5s = [random_file(path, 2 * MiB) for path in paths]
        context = browser.new_context()
        page = context.new_page()
        page.add_init_script(  # the most files with a part request in flight at once
            """(() => { const now = new Map(); window.mostFiles = 0; const open = XMLHttpRequest.prototype.open;
            XMLHttpRequest.prototype.open = function (method, url, ...rest) {
              const m = /\\/v1\\/files\\/([^/]+)\\/parts\\//.exec(url);
              if (m) {
                this.addEventListener('loadstart', () => {
                  now.set(m[1], (now.get(m[1]) || 0) + 1); window.mostFiles = Math.max(window.mostFiles, now.size); });
                this.addEventListener('loadend', () => {
                  const left = now.get(m[1]) - 1; if (left) now.set(m[1], left); else now.delete(m[1]); });
              }
              return open.call(this, method, url, ...rest); }; })()"""
        )
        sign_in(page, server, key)
        throttle(page, 4 * MiB)
        page.set_input_files("#pick", [str(p) for p in paths])
        for path in paths:
            wait_for(page, path.name, "u.state === 'done' || u.state === 'failed'", timeout=180_000)
        assert [state_of(page, p.name)["state"] for p in paths] == ["done"] * len(paths)
        assert 2 <= page.evaluate("() => window.mostFiles") <= 3
        with FilesClient(server, key) as client:
            for path, md5 in zip(paths, md5s, strict=True):
                assert client.download_md5(state_of(page, path.name)["id"]) == (2 * MiB, md5)
        context.close()
    finally:
        server.kill()


def test_the_page_can_be_used_from_the_keyboard_and_names_its_controls(
    live_server: ChunkdServer, browser: Any, tmp_path: Path
) -> None:
    """The file input is hidden: the drop zone is the control a keyboard reaches, a button named for
    what it does (Enter or Space opens the picker), and each row's progress bar and buttons say which
    file they are for (every row had a "Pause" and a "Cancel" of no file)."""
    path = tmp_path / "keyboard.bin"
    random_file(path, 3 * MiB)
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, live_server, live_server.create_key("alice"))
    throttle(page, 256 * 1024)
    drop = page.get_by_role("button", name="Drop files here, or press Enter to choose files")
    # The picker itself is the browser's: the test sees the click the key makes on the hidden input.
    page.evaluate("""() => document.getElementById('pick').addEventListener('click', (event) => {
        event.preventDefault(); window.pickerOpened = (window.pickerOpened || 0) + 1; })""")
    for key in ("Enter", " "):
        drop.press(key)
    page.wait_for_function("() => window.pickerOpened === 2")
    page.set_input_files("#pick", str(path))
    page.get_by_role("button", name=f"Pause {path.name}").click()
    wait_drawn(page, path.name, "li.dataset.state === 'paused'")
    page.get_by_role("button", name=f"Resume {path.name}").wait_for()
    assert page.get_by_role("progressbar", name=path.name).count() == 1
    assert page.get_by_role("progressbar", name="All uploads").count() == 1
    page.get_by_role("button", name=f"Cancel {path.name}").click()
    wait_drawn(page, path.name, "li.dataset.state === 'cancelled'")
    context.close()


def test_a_download_streams_to_disk_through_a_signed_url(
    live_server: ChunkdServer, browser: Any, tmp_path: Path
) -> None:
    """Download reads no byte into the page: it read the whole file into a Blob (a 4 GB file held
    4 GB in the tab). It follows a short-lived URL signed for that file's download alone, which the
    browser streams to disk (Content-Disposition: attachment); no key or token is in the URL."""
    key = live_server.create_key("alice")
    path = tmp_path / "report 2026.bin"
    md5 = random_file(path, 3 * MiB + 11)
    with FilesClient(live_server, key) as client:
        created = client.create(3 * MiB + 11, 2 * MiB, filename=path.name)
        data = path.read_bytes()
        for n, start in enumerate(range(0, len(data), 2 * MiB), 1):
            assert client.put_part(created["id"], n, data[start : start + 2 * MiB]).status_code == 200
        assert client.complete(created["id"], md5).status_code == 200
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.add_init_script(  # what the page reads itself: Blobs made into URLs, and the URLs it fetches
        """(() => { window.blobUrls = 0; window.fetched = [];
        const make = URL.createObjectURL; URL.createObjectURL = (o) => { window.blobUrls++; return make(o); };
        const get = window.fetch;
        window.fetch = (url, ...rest) => { window.fetched.push(String(url)); return get(url, ...rest); };
        })()"""
    )
    sign_in(page, live_server, key)
    row = page.locator(f"#file-rows tr[data-id='{created['id']}']")
    row.wait_for()
    with page.expect_download() as info:
        row.locator("button.download").click()
    download = info.value
    saved = tmp_path / "saved.bin"
    download.save_as(saved)
    assert download.suggested_filename == path.name
    assert saved.stat().st_size == 3 * MiB + 11 and hashlib.md5(saved.read_bytes()).hexdigest() == md5
    url = download.url
    assert f"/v1/files/{created['id']}/content?" in url and "signature=" in url
    assert key.rsplit("_", 1)[1] not in url and "eyJ" not in url  # neither the key's secret nor a token
    assert page.evaluate("() => window.blobUrls") == 0
    assert not [u for u in page.evaluate("() => window.fetched") if "/content" in u]
    assert page.locator("#uploader").is_visible() and page.url == live_server.url + "/"  # the page stayed
    context.close()


def test_each_owner_on_one_browser_resumes_only_their_own_uploads(
    live_server: ChunkdServer, browser: Any, tmp_path: Path
) -> None:
    """The resume store was one for the whole browser: a second owner signing in picked the same
    file, was offered the first owner's upload id (a GET of it, a 404), and the entry was dropped,
    so the first owner, back, sent the whole file again. Each owner has a store of their own now."""
    alice, bob = live_server.create_key("alice"), live_server.create_key("bob")
    path = tmp_path / "shared.bin"
    context, page, md5, alice_id = paused_after_a_part(browser, live_server, alice, path)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/v1/files/" in r.url else None)

    page.click("#sign-out")
    sign_in(page, live_server, bob)
    page.set_input_files("#pick", str(path))
    wait_for(page, path.name, "u.state === 'done' || u.state === 'failed'", timeout=120_000)
    bobs = state_of(page, path.name)
    assert bobs["state"] == "done" and bobs["id"] != alice_id and not bobs["resumed"]
    assert not [url for url in asked if alice_id in url], "bob's page was offered alice's upload"
    stored = page.evaluate("() => JSON.stringify(Object.assign({}, localStorage))")
    assert alice_id in stored and "chunkd.resume.owner.alice" in stored

    page.click("#sign-out")
    sign_in(page, live_server, alice)
    page.set_input_files("#pick", str(path))
    wait_for(page, path.name, "u.state === 'done' || u.state === 'failed'", timeout=120_000)
    again = state_of(page, path.name)
    assert again["state"] == "done" and again["id"] == alice_id and again["resumed"] is True
    with FilesClient(live_server, alice) as client:
        assert [f["id"] for f in client.http.get("/v1/files").json()["data"]] == [alice_id]
        assert client.download_md5(alice_id) == (12 * MiB + 5, md5)
    with FilesClient(live_server, bob) as client:
        assert [f["id"] for f in client.http.get("/v1/files").json()["data"]] == [bobs["id"]]
    context.close()


def test_an_upload_saved_before_stores_were_per_owner_still_resumes(
    live_server: ChunkdServer, browser: Any, tmp_path: Path
) -> None:
    """The resume store was one per browser (``chunkd.resume.owner``) before it was one per owner.
    Its entries went with the change, so every upload under way then was sent again from its
    start; they are handed to the first owner who signs in now."""
    key = live_server.create_key("alice")
    path = tmp_path / "older.bin"
    context, page, md5, upload_id = paused_after_a_part(browser, live_server, key, path)
    page.evaluate(  # as the page before the change kept it
        """() => { localStorage.setItem('chunkd.resume.owner', localStorage.getItem('chunkd.resume.owner.alice'));
        localStorage.removeItem('chunkd.resume.owner.alice'); }"""
    )
    page.reload()
    sign_in(page, live_server, key)
    page.set_input_files("#pick", str(path))
    wait_for(page, path.name, "u.state === 'done' || u.state === 'failed'", timeout=120_000)
    again = state_of(page, path.name)
    assert again["state"] == "done" and again["id"] == upload_id and again["resumed"] is True
    assert page.evaluate("() => localStorage.getItem('chunkd.resume.owner')") is None
    with FilesClient(live_server, key) as client:
        assert client.download_md5(upload_id) == (12 * MiB + 5, md5)
    context.close()


def test_a_link_token_leaves_the_address_bar_and_the_page_still_reloads(
    live_server: ChunkdServer, browser: Any, tmp_path: Path
) -> None:
    """The link's token stayed in the address bar (/#link=cl_…) and so in the tab's history, for
    anyone looking at the screen or going back. It is read once, kept for the tab
    (sessionStorage), and taken out of the URL; a reload still opens the link."""
    owner_key = live_server.create_key("alice", "files:create,files:read,files:delete,links:admin")
    path = tmp_path / "after reload.bin"
    md5 = random_file(path, MiB + 1)
    with FilesClient(live_server, owner_key) as owner:
        link = owner.http.post("/v1/upload-links", json={"note": "for the reload"}).json()
        token = link["url"].split("#link=", 1)[1]
        context, page = open_link(browser, link["url"])
        page.wait_for_selector("#uploader:not([hidden])")
        assert page.url == live_server.url + "/" and token not in page.url
        # Replaced, not pushed: going back leaves the page (no entry of the tab holds the token).
        page.go_back()
        assert page.url == "about:blank"
        page.go_forward()
        page.wait_for_selector("#uploader:not([hidden])")
        assert token not in page.url
        assert page.evaluate("() => sessionStorage.getItem('chunkd.link')") == token

        page.reload()
        page.wait_for_selector("#uploader:not([hidden])")
        assert page.inner_text("#link-note") == "for the reload" and token not in page.url
        page.set_input_files("#pick", str(path))
        wait_for(page, path.name, "u.state === 'done' || u.state === 'failed'")
        assert state_of(page, path.name)["state"] == "done"
        files = owner.http.get("/v1/files").json()["data"]
        assert [(f["uploadLink"], f["md5"]) for f in files] == [(link["id"], md5)]

        # Kept for that tab alone: another tab of the same browser opens the sign-in page.
        other = context.new_page()
        other.goto(live_server.url + "/")
        other.wait_for_selector("#sign-in:not([hidden])")
        assert other.locator("#uploader").is_hidden()
        context.close()


def test_through_a_link_a_file_completed_while_the_page_was_away_is_not_sent_again(
    live_server: ChunkdServer, browser: Any, tmp_path: Path
) -> None:
    """Reloaded during its complete, a link's page made a second copy of the file: its saved upload,
    completed, is no longer readable through the link (a 404), and it created a new one. It asks
    the complete again with the file's MD5 (answered as the first), and the file is done."""
    owner_key = live_server.create_key("alice", "files:create,files:read,files:delete,links:admin")
    path = tmp_path / "through the link.bin"
    md5 = random_file(path, 12 * MiB + 5)
    import httpx

    with FilesClient(live_server, owner_key) as owner:
        link = owner.http.post("/v1/upload-links", json={}).json()
        token = link["url"].split("#link=", 1)[1]
        context, page = open_link(browser, link["url"])
        page.wait_for_selector("#uploader:not([hidden])")
        throttle(page, 4 * MiB)
        page.set_input_files("#pick", str(path))
        wait_for(page, path.name, "u.received.size >= 1 && (u.pause(), true)")
        upload_id = state_of(page, path.name)["id"]
        with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {token}"}) as partner:
            held = partner.get(f"/v1/files/{upload_id}").json()
            data, size = path.read_bytes(), held["partSize"]
            for n in set(range(1, held["partCount"] + 1)) - {p["partNumber"] for p in held["parts"]}:
                assert partner.put(
                    f"/v1/files/{upload_id}/parts/{n}", content=data[(n - 1) * size : n * size]
                ).is_success
            done = partner.post(f"/v1/files/{upload_id}/complete", json={"md5": md5})  # what the page's complete did
            assert done.status_code == 200, done.text
            assert partner.get(f"/v1/files/{upload_id}").status_code == 404  # the link reads it no more

        page.reload()
        page.wait_for_selector("#uploader:not([hidden])")
        sent: list[str] = []
        page.on("request", lambda r: sent.append(f"{r.method} {r.url}") if r.method in ("POST", "PUT") else None)
        page.set_input_files("#pick", str(path))
        wait_for(page, path.name, "u.state === 'done' || u.state === 'failed'", timeout=60_000)
        assert state_of(page, path.name)["state"] == "done" and state_of(page, path.name)["id"] == upload_id
        assert sent == [f"POST {live_server.url}/v1/files/{upload_id}/complete"]
        assert [f["id"] for f in owner.http.get("/v1/files").json()["data"]] == [upload_id]
        assert json.loads(page.evaluate(f"() => localStorage.getItem('chunkd.resume.link.{link['id']}')")) == {}
        assert owner.download_md5(upload_id) == (12 * MiB + 5, md5)
        context.close()
