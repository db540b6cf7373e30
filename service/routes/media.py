"""POST /jobs/{id}/cancel, GET /quality/{id} (per-frame PSNR, kept frames), GET /sources/{id}."""

from __future__ import annotations

import json
import mimetypes
from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from core.records import VideoKeys
from core.storage import ObjectNotFound
from service.cancel import NoSuchReconstruction, NotCancelable, cancel_compression, cancel_reconstruction
from service.deps import ServicesDep, VideoDep
from service.head import is_head
from service.problems import Problem
from service.ranges import RangeNotSatisfiable, object_response
from service.routes.downloads import check_not_given_up
from service.schemas import CancelView, QualityView
from service.targets import TargetDep

router = APIRouter(tags=["videos"])


@router.post(
    "/jobs/{video_id}/cancel",
    response_model=CancelView,
    summary="Cancel the compression, or with ?reconstructor=... (+ output options) one reconstruction",
    responses={
        200: {"description": "Canceled (it was waiting, or already canceled)"},
        202: {"model": CancelView, "description": "Canceling: the running job stops at its next frame"},
        404: {"description": "No such video, or this reconstruction was never requested"},
        409: {"description": "The job already ended (`not_cancelable`: done or failed)"},
        422: {"description": "Invalid reconstructor or output options"},
        503: {"description": "Storage or the job queue is unavailable"},
    },
)
def cancel(record: VideoDep, services: ServicesDep, target: TargetDep) -> JSONResponse:
    """Stop a queued or running job. The record then says `canceled` and a `compress.canceled` /
    `reconstruct.canceled` event is sent; the source, the bundle and other reconstructions stay."""
    try:
        if target.explicit:
            outcome = cancel_reconstruction(services, record, target)
        else:
            outcome = cancel_compression(services, record)
    except NotCancelable as exc:
        raise Problem(status.HTTP_409_CONFLICT, str(exc), "not_cancelable") from exc
    except NoSuchReconstruction as exc:
        raise Problem(status.HTTP_404_NOT_FOUND, str(exc), "not_found") from exc
    body = CancelView(
        id=record.id,
        job="reconstruct" if target.explicit else "compress",
        reconstruction=target.variant if target.explicit else None,
        status=outcome,
        links={"status": f"/jobs/{record.id}"},
    )
    code = status.HTTP_200_OK if outcome == "canceled" else status.HTTP_202_ACCEPTED
    return JSONResponse(body.model_dump(mode="json"), status_code=code)


@router.get(
    "/quality/{video_id}",
    response_model=QualityView,
    summary="Per-frame PSNR of a reconstruction against the source, kept frames and frame times",
    responses={
        404: {"description": "No such video"},
        409: {"description": "The reconstruction is not made yet (`not_ready`: GET /reconstruct starts it), or "
              "the video failed to compress (`compression_failed`) or its compression was canceled "
              "(`compression_canceled`)"},
        422: {"description": "Invalid reconstructor or output options"},
    },
)
async def quality(record: VideoDep, services: ServicesDep, target: TargetDep) -> QualityView:
    """What the reconstruction job measured (the gateway computes nothing here): which frames the
    bundle keeps, when each frame is shown, and each rebuilt frame's PSNR against the source
    (null unless the source was kept: upload with `keep_source=true`)."""
    check_not_given_up(record)
    keys = VideoKeys(record.id)
    try:
        # The job stores these facts just before the video: both exist once GET /reconstruct is 200.
        raw = await run_in_threadpool(services.storage.get_bytes, keys.frames(target.variant))
        output_bytes = await run_in_threadpool(services.storage.size, keys.reconstruction(target.variant))
    except ObjectNotFound as exc:
        raise Problem(
            status.HTTP_409_CONFLICT,
            f"the reconstruction {target.variant} is not made yet; GET /reconstruct/{record.id} starts it",
            "not_ready",
        ) from exc
    facts = json.loads(raw)
    return QualityView(
        id=record.id,
        reconstruction=target.variant,
        frames=int(facts["frames"]),
        times=facts["times"],
        kept=facts["kept"],
        psnr=facts.get("psnr"),
        psnr_mean=facts.get("psnr_mean"),
        sizes={"source_bytes": record.source.bytes, "bundle_bytes": record.bundle_bytes,
               "output_bytes": output_bytes},
    )


@router.get(
    "/sources/{video_id}",
    summary="The uploaded source video, while it is kept (Range supported)",
    response_class=Response,
    responses={
        200: {"content": {"video/*": {}}, "description": "The upload as it was sent"},
        404: {"description": "No such video"},
        410: {"description": "The source was deleted after compression (`source_deleted`; upload with "
              "keep_source=true to keep it)"},
        416: {"description": "Range not satisfiable"},
    },
)
def source(
    request: Request,
    record: VideoDep,
    services: ServicesDep,
    range_header: Annotated[str | None, Header(alias="Range", include_in_schema=False)] = None,
    if_range: Annotated[str | None, Header(alias="If-Range", include_in_schema=False)] = None,
) -> Response:
    """The upload itself (e.g. to compare with a reconstruction side by side)."""
    gone = Problem(
        status.HTTP_410_GONE,
        "the source of this video was deleted after compression; upload with keep_source=true to keep it",
        "source_deleted",
    )
    if record.source_deleted:
        raise gone
    media_type = mimetypes.guess_type(record.source.filename)[0] or "application/octet-stream"
    try:
        response = object_response(
            services.storage,
            record.source_key,
            media_type=media_type if media_type.startswith("video/") else "application/octet-stream",
            filename=record.id + PurePath(record.source_key).suffix,
            range_header=range_header,
            if_range=if_range,
            head=is_head(request),
        )
    except ObjectNotFound as exc:
        raise gone from exc
    except RangeNotSatisfiable as exc:
        raise Problem(416, str(exc), "range_not_satisfiable", headers={"Content-Range": f"bytes */{exc.size}"}) from exc
    response.headers["Content-Disposition"] = "inline"  # played in a page, not saved
    return response
