"""The web page at /ui: static HTML, JS and CSS shipped in the package (service/static/ui).

No CDN and no other host: the page talks only to this gateway (relative URLs, its API key in the
`X-API-Key` header), and a Content-Security-Policy keeps it that way. The page itself is public
(it holds no data); everything it shows comes from the authenticated API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static" / "ui"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def install(app: FastAPI) -> None:
    """Serve the page at /ui and its assets under /ui/assets/ (both outside the OpenAPI document)."""

    @app.get("/ui", include_in_schema=False)
    def ui_page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            media_type="text/html",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
        )

    app.mount("/ui/assets", StaticFiles(directory=STATIC_DIR), name="ui-assets")
