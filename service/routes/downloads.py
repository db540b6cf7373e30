"""GET /reconstruct/{id} (the video, started on demand) and GET /bundles/{id}."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse

from core.records import Status, VideoKeys, VideoRecord
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
from service.targets import Target, TargetDep

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
    variant = target.variant
    key = VideoKeys(record.id).reconstruction(variant)
    media_type = target.output.media_type
    filename = f"{record.id}-{variant}.{target.output.container}"
    head = is_head(request)
    ready = _ranged(services, key, media_type, filename, range_header, if_range, head)
    if ready is not None:
        return ready
    links = {"status": f"/jobs/{record.id}", "self": str(request.url.path) + _query(request)}
    return _start(services, record, target, links,
                  lambda: _ranged(services, key, media_type, filename, range_header, if_range, head))


def _start(services: ServicesDep, record: VideoRecord, target: Target, links: dict[str, str],
           ready: Callable[[], Response | None], missing_when_done: Problem | None = None) -> Response:
    """Start the reconstruction ``target`` if needed: 202 with Retry-After while it is made, or what
    ``ready`` returns once it exists; 409/422 (Problem) when it cannot be made, and
    ``missing_when_done`` when the reconstruction is done but ``ready`` finds nothing."""
    name, variant = target.reconstructor, target.variant
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
    response = ready()
    if response is not None:
        return response
    if state.status is Status.done and missing_when_done is not None:
        raise missing_when_done
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


@router.get(
    "/significance/{video_id}",
    summary="How badly each chunk (2 frames x 16x16 px) of the rebuilt video misses the source: JSON or PNG",
    response_class=Response,
    responses={
        200: {"content": {"application/json": {}, "image/png": {}},
              "description": "The per-chunk MSE map (`framers significance --method exact` format) or its heatmap"},
        202: {"model": ReconstructionAccepted, "description": "The reconstruction that measures it is being made; "
              "retry after Retry-After seconds"},
        409: {"description": "The source was not kept (`source_deleted`: upload with keep_source=true), the "
              "video failed to compress or was canceled, or the reconstruction holds no map (`not_available`)"},
        422: {"description": "Unknown reconstructor or output options, or `format` not json/png"},
    },
)
def significance(
    request: Request,
    record: VideoDep,
    services: ServicesDep,
    target: TargetDep,
    format: Annotated[str, Query(pattern="^(json|png)$", description="json (default) or png (a heatmap)")] = "json",
) -> Response:
    """The encoder-side significance of the video (issue 15, CARV's chunk unit): the mean squared
    error of each chunk of the frames a reconstruction rebuilds, against the uploaded source. The
    reconstruction job measures it while rebuilding, so it needs the source (upload with
    `keep_source=true`); asking starts that reconstruction (as `GET /reconstruct` would)."""
    key = VideoKeys(record.id).significance(target.variant, format)
    media_type = "application/json" if format == "json" else "image/png"
    filename = f"{record.id}-{target.variant}-significance.{format}"

    def ready() -> Response | None:
        return _ranged(services, key, media_type, filename, None, None, is_head(request))

    response = ready()
    if response is not None:
        return response
    if record.source_deleted:
        raise Problem(status.HTTP_409_CONFLICT, "significance compares the rebuilt frames with the source, which "
                      "was deleted after compression; upload with keep_source=true", "source_deleted")
    links = {"status": f"/jobs/{record.id}", "self": str(request.url.path) + _query(request),
             "reconstruction": f"/reconstruct/{record.id}" + _query(request, drop="format")}
    missing = Problem(status.HTTP_409_CONFLICT, f"the reconstruction {target.variant} was made without a "
                      "significance map (before this service measured it, or the source's frames did not match the "
                      "bundle's)", "not_available")
    return _start(services, record, target, links, ready, missing)


def _query(request: Request, drop: str | None = None) -> str:
    """The request's query string (with a leading ?), less the parameter ``drop``."""
    if drop is None:
        return f"?{request.url.query}" if request.url.query else ""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != drop]
    return f"?{urlencode(params)}" if params else ""


def check_not_given_up(record: VideoRecord) -> None:
    """409 ``compression_failed`` / ``compression_canceled`` for a video whose compression failed
    or was canceled: the answer of every route that needs its bundle (``/quality`` said
    ``not_ready`` instead, pointing at a GET /reconstruct that answered 409; a fresh-user trial's)."""
    if record.status is Status.failed:
        raise Problem(
            status.HTTP_409_CONFLICT, f"the video could not be compressed: {record.error}", "compression_failed"
        )
    if record.status is Status.canceled:
        raise Problem(status.HTTP_409_CONFLICT, "the compression of this video was canceled", "compression_canceled")


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
    check_not_given_up(record)
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
