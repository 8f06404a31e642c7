"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) with every asset served by chunkd itself.

FastAPI's default pages load their scripts from a CDN (and ReDoc's page its fonts from Google), so
on a server without internet access they stay blank. Here the same pages point at copies of the
npm packages' built files shipped inside chunkd (``static/``, see its README for versions and
licences), under ``/docs/assets/``."""

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


def install_docs(app: FastAPI, *, title: str) -> None:
    """Serve the two documentation pages and their assets (``app`` made with ``docs_url=None,
    redoc_url=None``, so FastAPI's CDN pages are not registered)."""
    openapi_url = app.openapi_url or "/openapi.json"

    def asset(name: str, request: Request) -> str:
        # Relative to the app's root path, so the pages also work behind a proxy prefix.
        return f"{request.scope.get('root_path', '').rstrip('/')}{ASSETS_PATH}/{name}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=f"{request.scope.get('root_path', '').rstrip('/')}{openapi_url}",
            title=f"{title} — API",
            swagger_js_url=asset("swagger-ui/swagger-ui-bundle.js", request),
            swagger_css_url=asset("swagger-ui/swagger-ui.css", request),
            swagger_favicon_url=asset("swagger-ui/favicon-32x32.png", request),
            # No badge fetched from the public validator service.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=f"{request.scope.get('root_path', '').rstrip('/')}{openapi_url}",
            title=f"{title} — API",
            redoc_js_url=asset("redoc/redoc.standalone.js", request),
            redoc_favicon_url=asset("swagger-ui/favicon-32x32.png", request),
            with_google_fonts=False,
        )

    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC), name="docs-assets")
