"""Request dependencies (FastAPI `Annotated` style): services, tenant, the addressed video."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, Path, Request, status

from core.records import (
    VIDEO_ID_PATTERN,
    CorruptRecord,
    ReconstructionRecord,
    RecordNotFound,
    VideoRecord,
    WebhookDelivery,
)
from core.settings import Settings
from core.status_cache import load_status
from service.auth import AuthError, RemoteAnonymousDenied, resolve_tenant
from service.problems import Problem
from service.state import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_tenant(request: Request, services: ServicesDep) -> str:
    client = request.client.host if request.client else None
    try:
        return resolve_tenant(services.settings.tenants_by_key, request.headers, client)
    except RemoteAnonymousDenied as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from exc
    except AuthError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc


TenantDep = Annotated[str, Depends(get_tenant)]

VideoId = Annotated[str, Path(pattern=VIDEO_ID_PATTERN, description="Video id (32 hex digits) from POST /compress")]


def get_video(video_id: VideoId, tenant: TenantDep, services: ServicesDep) -> VideoRecord:
    """The addressed video's record; 404 alike for "no such video" and "another tenant's video"
    so that ids cannot be probed across tenants."""
    return _owned(lambda: services.records.load(video_id), lambda record: record, video_id, tenant)


Status = tuple[VideoRecord, list[ReconstructionRecord], list[WebhookDelivery]]
T = TypeVar("T")


def get_status(video_id: VideoId, tenant: TenantDep, services: ServicesDep) -> Status:
    """What GET /jobs shows of the addressed video (record, reconstructions, webhook deliveries),
    from the Redis status copy when it is there (``core.status_cache``); 404 as ``get_video``."""
    return _owned(lambda: load_status(services.records, video_id), lambda loaded: loaded[0], video_id, tenant)


def _owned(load: Callable[[], T], record_of: Callable[[T], VideoRecord], video_id: str, tenant: str) -> T:
    """``load()`` when the video exists and belongs to ``tenant``; 404 otherwise, 500 when unreadable."""
    try:
        loaded = load()
    except RecordNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no video {video_id}") from None
    except CorruptRecord as exc:
        raise Problem(
            status.HTTP_500_INTERNAL_SERVER_ERROR, "the record of this video is unreadable", "corrupt_record"
        ) from exc
    if record_of(loaded).tenant != tenant:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no video {video_id}")
    return loaded


VideoDep = Annotated[VideoRecord, Depends(get_video)]
StatusDep = Annotated[Status, Depends(get_status)]
