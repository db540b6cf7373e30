"""GET /models, /healthz, /readyz, /metrics."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from core.queues import ALL_QUEUES, connected_workers
from core.storage import StorageError
from service.deps import ServicesDep
from service.methods import CatalogUnavailable
from service.schemas import Health, ModelsView, Readiness
from service.targets import encodable_codecs

router = APIRouter(tags=["system"])


@router.get("/models", response_model=ModelsView, summary="Selectors, reconstructors and model versions")
def models(services: ServicesDep) -> ModelsView:
    try:
        catalog = services.catalog.get()
    except CatalogUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    settings = services.settings
    return ModelsView(
        selectors=[str(s) for s in catalog.get("selectors", [])],
        reconstructors=[str(r) for r in catalog.get("reconstructors", [])],
        output_codecs=encodable_codecs(),
        models=dict(catalog.get("models", {})),
        defaults={
            "selector": settings.default_selector,
            "selector_when_keep_is_given": settings.default_slot_selector,
            "reconstructor": settings.default_reconstructor,
            "keep": settings.default_keep,
            "stride": settings.default_stride,
            "target_psnr": settings.default_target_psnr,
        },
    )


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: Redis, storage and the model store are reachable, and workers serve every queue",
    responses={503: {"model": Readiness, "description": "Something is unreachable, or no worker serves a queue"}},
)
def readyz(services: ServicesDep) -> JSONResponse:
    """Ready when Redis, storage and the model store answer and every queue (webhooks,
    reconstruct, compress) has at least one connected worker (RQ's worker registry: a worker is
    listed while its heartbeat key lives, i.e. within `2 x FRAMERS_JOB_LEASE_S` of its last beat).
    With FRAMERS_READY_REQUIRES_WORKERS=false the workers check is reported but not required."""
    checks: dict[str, str] = {}
    try:
        services.redis.ping()
        checks["redis"] = "ok"
    except RedisError as exc:
        checks["redis"] = f"unreachable: {exc}"
    if checks["redis"] == "ok":
        try:
            per_queue = connected_workers(services.redis)
            missing = [q for q in ALL_QUEUES if not per_queue.get(q)]
            total = per_queue.get("*", 0)
            checks["workers"] = (
                f"no worker serves {', '.join(missing)} ({total} connected)" if missing else f"ok: {total} connected"
            )
        except RedisError as exc:
            checks["workers"] = f"unknown: {exc}"
    else:
        checks["workers"] = "unknown: Redis is unreachable"
    try:
        services.storage.ping()
        checks["storage"] = "ok"
    except StorageError as exc:
        checks["storage"] = f"unreachable: {exc}"
    models_ok, checks["models"] = services.catalog.check_model_store()
    workers_ok = checks["workers"].startswith("ok") or not services.settings.ready_requires_workers
    ready = models_ok and all(checks[k] == "ok" for k in ("redis", "storage")) and workers_ok
    body = Readiness(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else status.HTTP_503_SERVICE_UNAVAILABLE)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
