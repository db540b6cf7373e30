"""GET /reconstruct/{id} (the video, started on demand) and GET /bundles/{id}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse

from core.records import METHOD_PATTERN, Status, VideoKeys
from core.storage import ObjectNotFound
from service.deps import ServicesDep, VideoDep
from service.head import is_head
from service.operations import (
    CompressionFailed,
    NotReady,
    ReconstructionFailed,
    request_reconstruction,
)
from service.options import InvalidOptions, check_method
from service.problems import Problem
from service.ranges import RangeNotSatisfiable, object_response
from service.schemas import ReconstructionAccepted

router = APIRouter(tags=["downloads"])

RangeHeader = Annotated[str | None, Header(alias="Range", include_in_schema=False)]
IfRangeHeader = Annotated[str | None, Header(alias="If-Range", include_in_schema=False)]


@router.get(
    "/reconstruct/{video_id}",
    summary="The reconstructed video (mp4); starts the reconstruction when needed",
    response_class=Response,
    responses={
        200: {"content": {"video/mp4": {}}, "description": "The video (Range supported)"},
        202: {"model": ReconstructionAccepted, "description": "Being made; retry after Retry-After seconds"},
        409: {"description": "The video failed to compress"},
        416: {"description": "Range not satisfiable"},
        422: {"description": "Unknown reconstructor, or the reconstruction failed for good"},
    },
)
def reconstruct(
    request: Request,
    record: VideoDep,
    services: ServicesDep,
    range_header: RangeHeader = None,
    if_range: IfRangeHeader = None,
    reconstructor: Annotated[
        str | None, Query(pattern=METHOD_PATTERN, description="Default: the one chosen at upload")
    ] = None,
) -> Response:
    name = reconstructor or record.options.reconstructor
    try:
        check_method(services.catalog, "reconstructor", name)
    except InvalidOptions as exc:
        raise Problem(422, str(exc), "invalid_option") from exc
    key = VideoKeys(record.id).reconstruction(name)
    head = is_head(request)
    ready = _ranged(services, key, "video/mp4", f"{record.id}-{name}.mp4", range_header, if_range, head)
    if ready is not None:
        return ready
    links = {"status": f"/jobs/{record.id}", "self": f"/reconstruct/{record.id}?reconstructor={name}"}
    retry_after = {"Retry-After": str(services.settings.retry_after_s)}
    try:
        state = request_reconstruction(services, record, name)
    except NotReady as exc:
        body = ReconstructionAccepted(
            id=record.id, reconstructor=name, status=record.status, progress=0.0, detail=str(exc), links=links
        )
        return JSONResponse(body.model_dump(mode="json"), status.HTTP_202_ACCEPTED, headers=retry_after)
    except CompressionFailed as exc:
        raise Problem(status.HTTP_409_CONFLICT, str(exc), "compression_failed") from exc
    except ReconstructionFailed as exc:
        raise Problem(422, str(exc), "reconstruction_failed") from exc
    # It may have finished between our existence check and now.
    ready = _ranged(services, key, "video/mp4", f"{record.id}-{name}.mp4", range_header, if_range, head)
    if ready is not None:
        return ready
    body = ReconstructionAccepted(
        id=record.id,
        reconstructor=name,
        status=state.status if state.status is not Status.done else Status.running,
        progress=state.progress,
        detail=f"reconstruction with {name} is {state.status}; retry in {services.settings.retry_after_s} s",
        links=links,
    )
    return JSONResponse(body.model_dump(mode="json"), status.HTTP_202_ACCEPTED, headers=retry_after)


@router.get(
    "/bundles/{video_id}",
    summary="The single-file keyframe bundle (.frs)",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The bundle (Range supported)"},
        409: {"description": "Not compressed (yet, or failed)"},
        416: {"description": "Range not satisfiable"},
    },
)
def bundle(
    request: Request,
    record: VideoDep,
    services: ServicesDep,
    range_header: RangeHeader = None,
    if_range: IfRangeHeader = None,
) -> Response:
    if record.status is Status.failed:
        raise Problem(
            status.HTTP_409_CONFLICT, f"the video could not be compressed: {record.error}", "compression_failed"
        )
    if record.status is not Status.done:
        raise Problem(
            status.HTTP_409_CONFLICT,
            f"the bundle is not ready (status {record.status}); poll /jobs/{record.id}",
            "not_ready",
            headers={"Retry-After": str(services.settings.retry_after_s)},
        )
    response = _ranged(
        services,
        VideoKeys(record.id).bundle,
        "application/octet-stream",
        f"{record.id}.frs",
        range_header,
        if_range,
        is_head(request),
    )
    if response is None:
        raise Problem(status.HTTP_404_NOT_FOUND, "the bundle of this video is missing from storage", "not_found")
    return response


def _ranged(
    services: ServicesDep,
    key: str,
    media_type: str,
    filename: str,
    range_header: str | None,
    if_range: str | None,
    head: bool = False,
) -> Response | None:
    """The object as a (partial) response, or None when it does not exist (yet)."""
    try:
        return object_response(
            services.storage,
            key,
            media_type=media_type,
            filename=filename,
            range_header=range_header,
            if_range=if_range,
            head=head,
        )
    except ObjectNotFound:
        return None
    except RangeNotSatisfiable as exc:
        raise Problem(416, str(exc), "range_not_satisfiable", headers={"Content-Range": f"bytes */{exc.size}"}) from exc
