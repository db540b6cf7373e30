"""Request dependencies (FastAPI `Annotated` style): services, tenant, the addressed video."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status

from core.records import VIDEO_ID_PATTERN, CorruptRecord, RecordNotFound, VideoRecord
from core.settings import Settings
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
    try:
        record = services.records.load(video_id)
    except RecordNotFound:
        record = None
    except CorruptRecord as exc:
        raise Problem(
            status.HTTP_500_INTERNAL_SERVER_ERROR, "the record of this video is unreadable", "corrupt_record"
        ) from exc
    if record is None or record.tenant != tenant:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no video {video_id}")
    return record


VideoDep = Annotated[VideoRecord, Depends(get_video)]
