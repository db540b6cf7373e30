"""GET /models, /healthz, /readyz, /metrics."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from core.storage import StorageError
from service.deps import ServicesDep
from service.methods import CatalogUnavailable
from service.schemas import Health, ModelsView, Readiness

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
    summary="Readiness: Redis, storage and the model store are reachable",
    responses={503: {"model": Readiness}},
)
def readyz(services: ServicesDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        services.redis.ping()
        checks["redis"] = "ok"
    except RedisError as exc:
        checks["redis"] = f"unreachable: {exc}"
    try:
        services.storage.ping()
        checks["storage"] = "ok"
    except StorageError as exc:
        checks["storage"] = f"unreachable: {exc}"
    models_ok, checks["models"] = services.catalog.check_model_store()
    ready = models_ok and checks["redis"] == "ok" and checks["storage"] == "ok"
    body = Readiness(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else status.HTTP_503_SERVICE_UNAVAILABLE)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
