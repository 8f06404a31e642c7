"""/docs and /redoc work on a server without internet access: the pages name no other host, their
assets come from chunkd itself, and a real browser that may reach nothing else renders both."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.server import ChunkdServer
from tests.support.tools import CHROMIUM, launch_chromium, require

pytestmark = pytest.mark.e2e

URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")


WAIT = 120_000  # ms; bounds a page that never renders, not how fast it renders


def test_pages_reference_only_local_assets(live_server: ChunkdServer) -> None:
    with httpx.Client(base_url=live_server.url) as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page)
            assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
            assert "http://" not in html.text and "https://" not in html.text, html.text
            references = [a or b for a, b in URL.findall(html.text)]
            assert references, html.text
            for reference in references:
                assert reference.startswith("/"), reference
                asset = client.get(reference)
                assert asset.status_code == 200, reference
                assert len(asset.content) > 0
        bundle = client.get("/docs/assets/swagger-ui/swagger-ui-bundle.js")
        assert bundle.headers["content-type"].startswith(("text/javascript", "application/javascript"))
        assert client.get("/docs/assets/redoc/redoc.standalone.js").status_code == 200
        assert client.get("/docs/assets/../app.py").status_code == 404


def test_a_browser_cut_off_from_other_hosts_renders_both_pages(live_server: ChunkdServer) -> None:
    require(CHROMIUM, "chromium")
    from playwright.sync_api import Route, sync_playwright

    own = urlsplit(live_server.url).netloc
    elsewhere: list[str] = []
    errors: list[str] = []

    def only_chunkd(route: Route) -> None:
        if urlsplit(route.request.url).netloc in (own, "") or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT)  # navigation too: Chromium on a loaded machine is slow, not wrong
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.route("**/*", only_chunkd)
            page.goto(f"{live_server.url}/docs")
            # Swagger UI rendered the document: the title and an operation of the Files API.
            page.wait_for_selector(".swagger-ui .info .title", timeout=WAIT)
            page.wait_for_selector("#operations-files-create_file_v1_files_post, .opblock-tag", timeout=WAIT)
            assert "chunkd" in page.inner_text(".swagger-ui .info .title")

            page.goto(f"{live_server.url}/redoc")
            page.wait_for_selector("redoc .api-info h1, .api-info h1", timeout=WAIT)
            assert "chunkd" in page.inner_text(".api-info h1")
            page.locator("h2", has_text="Create an upload").first.wait_for(timeout=WAIT)
        finally:
            browser.close()
    assert elsewhere == [], f"the docs pages tried to reach other hosts: {elsewhere}"
    assert errors == [], errors
