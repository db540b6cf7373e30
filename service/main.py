"""The FastAPI application: `create_app(settings)`; `service.main:app` for `uvicorn` directly."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from core.records import CorruptRecord
from core.settings import Settings, get_settings
from core.storage import ObjectNotFound, StorageError
from service import docs, problems, ui
from service.head import HeadAsGetMiddleware
from service.metrics import MetricsMiddleware
from service.routes import downloads, media, system, videos
from service.state import Services

log = logging.getLogger("service")

DESCRIPTION = """
Keyframe video compression as a service. Upload a video to `POST /compress`, poll
`GET /jobs/{id}`, download the bundle from `GET /bundles/{id}` or a reconstructed video from
`GET /reconstruct/{id}` (202 + Retry-After while it is being made; `codec`, `container`, `crf` or
`quality` choose the output), cancel with `POST /jobs/{id}/cancel`. A web page is at `/ui`.
Authenticate with `X-API-Key: <key>` or `Authorization: Bearer <key>` when keys are configured.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gateway: routes, HEAD on every GET route, problem-details errors, metrics."""
    settings = settings or get_settings()
    services = Services.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _sweep_stale_uploads(settings.scratch_dir / "uploads")
        if not settings.auth_enabled:
            log.warning(
                "no API keys configured (FRAMERS_API_KEYS): authentication is off and only "
                "requests from this machine (loopback) are accepted"
            )
        yield
        services.redis.close()

    app = FastAPI(
        title="FrameRS Service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # replaced by service.docs: the same pages without any CDN
        redoc_url=None,
    )
    app.state.services = services
    app.include_router(videos.router)
    app.include_router(downloads.router)
    app.include_router(media.router)
    app.include_router(system.router)
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=services.metrics)  # outermost: sees HEAD as HEAD
    problems.install(app)
    docs.install(app)
    ui.install(app)

    # Infrastructure failures anywhere below the routes become clear 5xx answers.
    @app.exception_handler(StorageError)
    async def storage_unavailable(request: Request, exc: StorageError) -> JSONResponse:
        log.error("storage error on %s: %s", request.url.path, exc)
        return _error(503, "storage is unavailable, try again later", "storage_unavailable", {"Retry-After": "10"})

    @app.exception_handler(ObjectNotFound)
    async def object_missing(request: Request, exc: ObjectNotFound) -> JSONResponse:
        # A route that did not expect the object to be missing: the resource is gone, not the storage.
        log.warning("object missing on %s: %s", request.url.path, exc)
        return _error(404, "a stored object of this resource is missing", "not_found")

    @app.exception_handler(RedisError)
    async def queue_unavailable(request: Request, exc: RedisError) -> JSONResponse:
        log.error("Redis error on %s: %s", request.url.path, exc)
        return _error(503, "the job queue is unavailable, try again later", "queue_unavailable", {"Retry-After": "10"})

    @app.exception_handler(CorruptRecord)
    async def corrupt_record(request: Request, exc: CorruptRecord) -> JSONResponse:
        log.error("corrupt record on %s: %s", request.url.path, exc)
        return _error(500, "a stored record of this video is unreadable", "corrupt_record")

    return app


def _sweep_stale_uploads(folder: Path, max_age_s: float = 86_400) -> None:
    """Partial uploads of a gateway that crashed mid-request (other gateways may share the folder,
    hence the age limit)."""
    cutoff = time.time() - max_age_s
    for path in folder.glob("*.part"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                path.unlink()


def _error(status_code: int, detail: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return problems.problem_response(status_code, detail, code, headers=headers)


def __getattr__(name: str) -> Any:
    # `uvicorn service.main:app` builds the app from the environment on first access only, so
    # importing this module (tests, `framers serve`) has no side effects.
    if name == "app":
        app = create_app()
        globals()["app"] = app  # later accesses find the same app without coming here
        return app
    raise AttributeError(name)
