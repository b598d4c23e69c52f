"""`/docs` (Swagger UI) and `/redoc` that work offline: their assets come from the
`fastapi-offline` package and are served by the app itself, never from a CDN. `/demo`: the demo
feed page (static HTML and JS in `serving/static/demo`, no build step)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"


def install_offline_docs(app: FastAPI) -> None:
    """Serve the documentation pages and their assets (the app's `openapi_url` must be set)."""
    app.mount(ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")
    pages = APIRouter(include_in_schema=False)
    title, openapi_url = app.title, app.openapi_url

    @pages.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},  # no call to the public validator
        )

    @pages.get("/redoc")
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    app.include_router(pages)


def install_demo_page(app: FastAPI) -> None:
    """The demo feed at `/demo`, its script and style under `/demo/`."""
    folder = files("serving") / "static" / "demo"
    app.mount("/demo/", StaticFiles(directory=str(folder)), name="demo-assets")

    @app.get("/demo", include_in_schema=False)
    async def demo_page() -> FileResponse:
        return FileResponse(str(folder / "index.html"))
