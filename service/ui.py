"""The web page at /ui: static HTML, JS and CSS shipped in the package (service/static/ui).

No CDN and no other host: the page talks only to this gateway (relative URLs, its API key in the
`X-API-Key` header), and a Content-Security-Policy keeps it that way. The page itself is public
(it holds no data); everything it shows comes from the authenticated API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static" / "ui"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def install(app: FastAPI) -> None:
    """Serve the page at /ui (/ redirects there) and its assets under /ui/assets/ (all outside the
    OpenAPI document)."""

    @app.get("/ui", include_in_schema=False)
    def ui_page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            media_type="text/html",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
        )

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        """A browser pointed at the gateway itself lands on the page (a fresh-user trial got a 404)."""
        return RedirectResponse("/ui", status_code=307)

    app.mount("/ui/assets", StaticFiles(directory=STATIC_DIR), name="ui-assets")
