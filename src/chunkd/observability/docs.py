"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) with every asset served by chunkd itself.

FastAPI's default pages load their scripts from a CDN (and ReDoc's page its fonts from Google), so
on a server without internet access they stay blank. Here the same pages point at copies of the
npm packages' built files shipped inside chunkd (``static/``, see its README for versions and
licences), under ``/docs/assets/``.

Both pages also carry a Content-Security-Policy that lets them load nothing from another host:
ReDoc's bundle still names one image on its vendor's CDN (the "API docs by Redocly" logo, hidden
when it fails to load), and the policy keeps the browser from even trying."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

__all__ = ["ASSETS_PATH", "install_docs"]

STATIC = Path(__file__).parent / "static"
ASSETS_PATH = "/docs/assets"
# Inline script and style: FastAPI's page templates start the UIs with an inline <script>, and both
# UIs set inline styles. Workers from blob: URLs: ReDoc's search index.
POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'self'; base-uri 'self'; form-action 'self'"
)


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = POLICY
    return page


def install_docs(app: FastAPI, *, title: str) -> None:
    """Serve the two documentation pages and their assets (``app`` made with ``docs_url=None,
    redoc_url=None``, so FastAPI's CDN pages are not registered)."""
    openapi_url = app.openapi_url or "/openapi.json"

    def asset(name: str, request: Request) -> str:
        # Relative to the app's root path, so the pages also work behind a proxy prefix.
        return f"{request.scope.get('root_path', '').rstrip('/')}{ASSETS_PATH}/{name}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=f"{request.scope.get('root_path', '').rstrip('/')}{openapi_url}",
            title=f"{title} — API",
            swagger_js_url=asset("swagger-ui/swagger-ui-bundle.js", request),
            swagger_css_url=asset("swagger-ui/swagger-ui.css", request),
            swagger_favicon_url=asset("swagger-ui/favicon-32x32.png", request),
            # No badge fetched from the public validator service.
            swagger_ui_parameters={"validatorUrl": None},
        )
        return _with_policy(page)

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=f"{request.scope.get('root_path', '').rstrip('/')}{openapi_url}",
            title=f"{title} — API",
            redoc_js_url=asset("redoc/redoc.standalone.js", request),
            redoc_favicon_url=asset("swagger-ui/favicon-32x32.png", request),
            with_google_fonts=False,
        )
        return _with_policy(page)

    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC), name="docs-assets")
