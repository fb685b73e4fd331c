"""The page at / (try every served model in a browser) and Swagger UI at /docs, both served with no CDN.

Everything a browser loads for them comes from this service: the page is three static files
(`static/page/`: HTML, one script, one style, no build step) that call the JSON routes, and Swagger UI's
built files are vendored in `static/swagger-ui/` (`SOURCE.md` says from where and why not from PyPI).
FastAPI's own /docs loads Swagger UI from cdn.jsdelivr.net and its icon from fastapi.tiangolo.com, a blank
page on a network without internet, and its /redoc likewise from the CDN (and Google Fonts): the app is
built with `docs_url=None, redoc_url=None` and this module adds /docs back.

BentoML answers / with its own page (with a tracker and badges loaded from outside), but it mounts this
app ahead of its own routes and lets the app take any path one of its routes matches
(`_bentoml_impl.server.mount.PassiveMount`), so the route for / here wins. None of these routes is an
inference route: they go through BentoML's stack, not `serving.fast_path`, and cost the inference
routes nothing.
"""

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
STATIC_PATH = "/static"
SWAGGER_UI = f"{STATIC_PATH}/swagger-ui"


def add_page_and_docs(api: FastAPI) -> None:
    """GET / (the page), GET /docs (Swagger UI) and /static/ on `api`, none of them in the OpenAPI document."""

    @api.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        # no-cache: a browser revalidates (ETag) and sees a new page after an upgrade; it is a few KB.
        return FileResponse(STATIC / "page" / "index.html", headers={"Cache-Control": "no-cache"})

    @api.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=api.openapi_url or "/openapi.json",
            title=f"{api.title} – API documentation",
            swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
        )

    api.mount(STATIC_PATH, StaticFiles(directory=STATIC), name="static")
