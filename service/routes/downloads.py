"""GET /reconstruct/{id} (the video, started on demand) and GET /bundles/{id}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response, status
from fastapi.responses import JSONResponse

from core.records import Status, VideoKeys
from core.storage import ObjectNotFound
from service.deps import ServicesDep, VideoDep
from service.eta import eta_seconds, retry_after
from service.head import is_head
from service.operations import (
    CompressionCanceled,
    CompressionFailed,
    NotReady,
    ReconstructionFailed,
    request_reconstruction,
)
from service.problems import Problem
from service.ranges import RangeNotSatisfiable, object_response
from service.schemas import ReconstructionAccepted
from service.targets import TargetDep

router = APIRouter(tags=["downloads"])

RangeHeader = Annotated[str | None, Header(alias="Range", include_in_schema=False)]
IfRangeHeader = Annotated[str | None, Header(alias="If-Range", include_in_schema=False)]


@router.get(
    "/reconstruct/{video_id}",
    summary="The reconstructed video; starts the reconstruction when needed",
    response_class=Response,
    responses={
        200: {"content": {"video/mp4": {}, "video/webm": {}}, "description": "The video (Range supported)"},
        202: {"model": ReconstructionAccepted, "description": "Being made; retry after Retry-After seconds "
              "(derived from the running job's estimate)"},
        409: {"description": "The video failed to compress (`compression_failed`) or its compression was "
              "canceled (`compression_canceled`)"},
        416: {"description": "Range not satisfiable"},
        422: {"description": "Unknown reconstructor, output options that do not go together "
              "(`invalid_option`), or the reconstruction failed for good (`reconstruction_failed`)"},
    },
)
def reconstruct(
    request: Request,
    record: VideoDep,
    services: ServicesDep,
    target: TargetDep,
    range_header: RangeHeader = None,
    if_range: IfRangeHeader = None,
) -> Response:
    """The reconstruction of the video with `reconstructor` and output options (`codec`,
    `container`, `crf` or `quality`); each combination is made once and kept."""
    name, variant = target.reconstructor, target.variant
    key = VideoKeys(record.id).reconstruction(variant)
    media_type = target.output.media_type
    filename = f"{record.id}-{variant}.{target.output.container}"
    head = is_head(request)
    ready = _ranged(services, key, media_type, filename, range_header, if_range, head)
    if ready is not None:
        return ready
    links = {"status": f"/jobs/{record.id}", "self": str(request.url.path) + _query(request)}
    try:
        state = request_reconstruction(services, record, target)
    except NotReady as exc:
        wait = retry_after(eta_seconds(record.status, record.progress, record.started_at),
                           services.settings.retry_after_s)
        body = ReconstructionAccepted(
            id=record.id, reconstructor=name, reconstruction=variant, status=record.status, progress=0.0,
            detail=str(exc), links=links,
        )
        return JSONResponse(body.model_dump(mode="json"), status.HTTP_202_ACCEPTED, headers={"Retry-After": str(wait)})
    except CompressionFailed as exc:
        raise Problem(status.HTTP_409_CONFLICT, str(exc), "compression_failed") from exc
    except CompressionCanceled as exc:
        raise Problem(status.HTTP_409_CONFLICT, str(exc), "compression_canceled") from exc
    except ReconstructionFailed as exc:
        raise Problem(422, str(exc), "reconstruction_failed") from exc
    # It may have finished between our existence check and now.
    ready = _ranged(services, key, media_type, filename, range_header, if_range, head)
    if ready is not None:
        return ready
    eta = eta_seconds(state.status, state.progress, state.started_at)
    wait = retry_after(eta, services.settings.retry_after_s)
    body = ReconstructionAccepted(
        id=record.id,
        reconstructor=name,
        reconstruction=variant,
        status=state.status if state.status is not Status.done else Status.running,
        progress=state.progress,
        eta_s=eta,
        detail=f"reconstruction {variant} is {state.status}; retry in {wait} s",
        links=links,
    )
    return JSONResponse(body.model_dump(mode="json"), status.HTTP_202_ACCEPTED, headers={"Retry-After": str(wait)})


def _query(request: Request) -> str:
    return f"?{request.url.query}" if request.url.query else ""


@router.get(
    "/bundles/{video_id}",
    summary="The single-file keyframe bundle (.frs)",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The bundle (Range supported)"},
        409: {"description": "Not compressed (yet: `not_ready`; failed: `compression_failed`; canceled: "
              "`compression_canceled`)"},
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
    if record.status is Status.canceled:
        raise Problem(status.HTTP_409_CONFLICT, "the compression of this video was canceled", "compression_canceled")
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
