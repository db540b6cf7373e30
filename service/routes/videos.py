"""POST /compress, GET /jobs/{id}, GET and DELETE /videos/{id}, GET /videos."""

from __future__ import annotations

import base64
import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from core.records import (
    CorruptRecord,
    RecordNotFound,
    SourceInfo,
    Status,
    index_prefix,
    new_video_id,
    video_id_of_index_key,
)
from framers.errors import FrameTooLargeError, InvalidVideoError
from service.deps import ServicesDep, StatusDep, TenantDep, VideoDep
from service.idempotency import (
    HEADER as IDEMPOTENCY_HEADER,
)
from service.idempotency import (
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IdempotencyStore,
    InvalidIdempotencyKey,
    Reservation,
    check_key,
    fingerprint,
)
from service.limits import LimitExceeded, check_resolution, check_video_limits
from service.operations import accept_upload, delete_video
from service.options import (
    EXTRA_FIELDS,
    InvalidOptions,
    parse_callback_url,
    parse_flag,
    parse_metadata,
    parse_options,
)
from service.problems import Problem
from service.schemas import CompressAccepted, JobView, VideoList, VideoSummary, links_for
from service.state import Services
from service.uploads import Upload, UploadError, receive_upload

router = APIRouter(tags=["videos"])

# Multipart framing and option fields on top of the file itself.
MULTIPART_OVERHEAD = 64 * 1024

_FORM_SCHEMA: dict[str, Any] = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
            "description": "Makes a retried upload safe: within 24 h, the same key (per tenant) with the same "
            "file and fields answers with the first upload's video id (header Idempotent-Replayed: true); "
            "with another file or fields 409 idempotency_key_reused",
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The video"},
                        "selector": {"type": "string", "description": "framers, oracle, uniform, stride"},
                        "keep": {"type": "integer", "minimum": 1, "maximum": 8},
                        "stride": {"type": "integer", "minimum": 1},
                        "reconstructor": {"type": "string", "description": "Default for GET /reconstruct"},
                        "keyframe_codec": {"type": "string"},
                        "crf": {"type": "integer", "minimum": 0, "maximum": 63},
                        "target_psnr": {"type": "number", "minimum": 20, "maximum": 60,
                                        "description": "Content-adaptive mode: mean PSNR (dB) to reach"},
                        "target_kbps": {"type": "number", "minimum": 1,
                                        "description": "Content-adaptive mode: kept-frame bitrate (kbit/s)"},
                        "refresh": {"type": "number", "minimum": 0, "exclusiveMaximum": 1,
                                    "description": "Refresh layer: share of the dropped frames' 16x16 blocks "
                                    "corrected by a second stream (0 = off; fixed patterns only)"},
                        "refresh_kbps": {"type": "number", "minimum": 1, "maximum": 1000000,
                                         "description": "Refresh layer's byte budget: kbit/s over the video's "
                                         "duration (alone: 0.1 of the blocks; fixed patterns only)"},
                        "candidate_map": {"type": "boolean",
                                          "description": "Candidate map: per ~16-px block of each dropped frame, "
                                          "framemae's mix or a fixed weighting of its candidates, chosen against "
                                          "the source"},
                        "callback_url": {"type": "string", "format": "uri", "maxLength": 2048,
                                         "description": "http(s) URL that receives signed events "
                                         "(compress.done/failed, reconstruct.done/failed)"},
                        "metadata": {"type": "string", "maxLength": 4096,
                                     "description": "A JSON object (at most 4 KB), stored and echoed back"},
                        "keep_source": {"type": "boolean",
                                        "description": "Keep the upload after compression (GET /sources/{id}, "
                                        "per-frame PSNR in GET /quality/{id}); default false"},
                    },
                }
            }
        },
    }
}


@router.post(
    "/compress",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CompressAccepted,
    openapi_extra=_FORM_SCHEMA,
    summary="Upload a video and queue its compression",
    responses={
        400: {"description": "Malformed form, or a form over its limits (parts, bytes per field, form bytes)"},
        408: {"description": "The upload stalled"},
        413: {"description": "Upload too large"},
        409: {"description": "The Idempotency-Key was used with another file or other options, "
              "or its first request is still being processed"},
        415: {"description": "Not a video"},
        422: {"description": "Bad or repeated options, empty upload, no `file` part, over a limit, "
              "or a malformed Idempotency-Key"},
        503: {"description": "Storage or the job queue is unavailable"},
    },
)
async def compress(request: Request, tenant: TenantDep, services: ServicesDep) -> JSONResponse:
    """Upload a video (multipart `file` + options) and queue its compression.

    With an `Idempotency-Key` header, a repeat of the same upload (same file and form fields)
    within 24 h answers with the first one's video id instead of storing it again."""
    settings = services.settings
    idempotency_key = request.headers.get(IDEMPOTENCY_HEADER)
    if idempotency_key is not None:
        try:
            check_key(idempotency_key)
        except InvalidIdempotencyKey as exc:
            raise Problem(422, str(exc), "invalid_idempotency_key", headers={"Connection": "close"}) from exc
    if _declared_length(request) > settings.max_upload_bytes + MULTIPART_OVERHEAD:
        services.metrics.uploads.labels("too_large").inc()
        raise Problem(
            413,
            f"the upload exceeds the limit of {settings.max_upload_bytes} bytes",
            "upload_too_large",
            headers={"Connection": "close"},  # the body is not read
        )
    uploads_dir = settings.scratch_dir / "uploads"
    uploads_dir.mkdir(parents=True, exist_ok=True)
    dest = uploads_dir / f"{uuid.uuid4().hex}.part"
    try:
        upload = await receive_upload(
            request.headers,
            request.stream(),
            dest,
            max_bytes=settings.max_upload_bytes,
            idle_timeout_s=settings.upload_idle_timeout_s,
        )
    except UploadError as exc:
        services.metrics.uploads.labels(type(exc).__name__).inc()
        # The rest of a refused body is not read: close the connection rather than reuse it.
        errors = [{"field": exc.field, "location": f"body.{exc.field}", "message": str(exc)}] if exc.field else None
        raise Problem(exc.status, str(exc), exc.code, headers={"Connection": "close"}, errors=errors) from exc
    try:
        record_id, replayed = await run_in_threadpool(
            _accept_once, services, tenant, upload, idempotency_key
        )
    finally:
        upload.path.unlink(missing_ok=True)  # moved into storage on success; garbage otherwise
    body = CompressAccepted(id=record_id, status=Status.queued, links=links_for(record_id))
    headers = {"Location": body.links.status}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED, headers=headers)


def _accept_once(services: Services, tenant: str, upload: Upload, key: str | None) -> tuple[str, bool]:
    """(video id, replayed): accept the upload, or with an idempotency key find the video of an
    earlier identical upload. Runs in the threadpool (it may wait for a concurrent repeat)."""
    if key is None:
        return _validate_and_accept(services, tenant, upload), False
    store = IdempotencyStore(services.redis, services.settings.idempotency_ttl_s)
    try:
        held = store.begin(tenant, key, fingerprint(upload.sha256, upload.fields))
    except IdempotencyKeyReused as exc:
        raise Problem(status.HTTP_409_CONFLICT, str(exc), "idempotency_key_reused") from exc
    except IdempotencyKeyInUse as exc:
        raise Problem(
            status.HTTP_409_CONFLICT,
            str(exc),
            "idempotency_key_in_use",
            headers={"Retry-After": str(services.settings.retry_after_s)},
        ) from exc
    if not isinstance(held, Reservation):
        services.metrics.uploads.labels("replayed").inc()
        return held, True
    try:
        video_id = _validate_and_accept(services, tenant, upload)
    except BaseException:
        store.abandon(held)
        raise
    store.complete(held, video_id)
    return video_id, False


def _declared_length(request: Request) -> int:
    """The Content-Length, length-bounded: more than 18 digits (h11 lets 20 through; other servers may
    pass more) counts as larger than any limit and is never converted; none or invalid counts as 0."""
    declared = request.headers.get("content-length", "").lstrip("0")
    if not (declared.isascii() and declared.isdigit()):
        return 0
    return 10**18 if len(declared) > 18 else int(declared)


def _validate_and_accept(services: Services, tenant: str, upload: Upload) -> str:
    """Options, emptiness, probe, limits — then store and queue. Runs in the threadpool."""
    from framers.video import probe

    settings = services.settings
    try:
        options = parse_options(
            {k: v for k, v in upload.fields.items() if k not in EXTRA_FIELDS}, settings, services.catalog
        )
        callback_url = parse_callback_url(upload.fields.get("callback_url", ""), settings, tenant)
        metadata = parse_metadata(upload.fields.get("metadata", ""))
        keep_source = parse_flag("keep_source", upload.fields.get("keep_source", ""))
        if upload.size == 0:
            raise InvalidOptions("the uploaded file is empty", code="empty_upload")
    except InvalidOptions as exc:
        services.metrics.uploads.labels("invalid").inc()
        raise Problem(422, str(exc), exc.code, errors=exc.errors) from exc
    name = upload.filename or "upload"
    try:
        # A header declaring a frame larger than the limits is refused before anything is decoded.
        info = probe(upload.path, max_pixels=settings.max_width * settings.max_height)
    except InvalidVideoError as exc:
        # Name the user's file, never our temp path.
        reason = str(exc).replace(str(upload.path), name).replace(upload.path.name, name)
        if isinstance(exc, FrameTooLargeError):  # answered like the resolution check below
            services.metrics.uploads.labels("over_limit").inc()
            try:
                check_resolution(exc.width, exc.height, settings)
            except LimitExceeded as limit:
                raise Problem(422, f"{name}: {limit}", "over_limit") from exc
            raise Problem(422, reason, "over_limit") from exc  # (more pixels than allowed implies a side is over)
        services.metrics.uploads.labels("not_a_video").inc()
        raise Problem(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"{name} is not a video this service can read: {reason.removeprefix(f'{name}: ')}",
            "not_a_video",
        ) from exc
    try:
        check_video_limits(info, settings)
    except LimitExceeded as exc:
        services.metrics.uploads.labels("over_limit").inc()
        raise Problem(422, f"{name}: {exc}", "over_limit") from exc
    source = SourceInfo(
        filename=name,
        bytes=upload.size,
        width=info.width,
        height=info.height,
        frames=info.frames,
        fps=info.fps,
        duration=info.duration,
        codec=info.codec,
        has_audio=info.has_audio,
    )
    video_id = new_video_id()
    accept_upload(
        services,
        tenant=tenant,
        video_id=video_id,
        upload_path=upload.path,
        filename=name,
        size=upload.size,
        info=source,
        options=options,
        callback_url=callback_url,
        metadata=metadata,
        keep_source=keep_source,
    )
    return video_id


MAX_LIST_SCAN = 1000  # index entries examined per listing request (a page may end early, with a cursor)
_CURSOR_RE = re.compile(r"^[0-9]{16}-[0-9a-f]{32}$")


@router.get(
    "/videos",
    response_model=VideoList,
    summary="The tenant's videos, newest first (paged with an opaque cursor)",
    responses={422: {"description": "Invalid limit, status or cursor"}},
)
def list_videos(
    tenant: TenantDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Videos per page")] = 20,
    cursor: Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page")] = None,
    status_filter: Annotated[Status | None, Query(alias="status", description="Only videos in this status")] = None,
) -> VideoList:
    """A page of the tenant's videos, newest first; `next_cursor` continues it (null at the end).
    With `status`, a page may hold fewer than `limit` videos and still have a next cursor."""
    records = services.records
    after = _decode_cursor(tenant, cursor) if cursor else None
    videos: list[VideoSummary] = []
    last: str | None = None
    more = False
    scanned = 0
    for key in records.iter_index(tenant, after):
        if len(videos) >= limit or scanned >= MAX_LIST_SCAN:
            more = True
            break
        scanned += 1
        last = key
        video_id = video_id_of_index_key(key)
        if video_id is None:
            continue
        try:
            record = records.load(video_id)
        except RecordNotFound:
            continue  # deleted (its entry goes with the delete; a crashed delete may leave it)
        except CorruptRecord:
            continue
        if record.tenant != tenant or (status_filter is not None and record.status is not status_filter):
            continue
        videos.append(VideoSummary.of(record))
    next_cursor = _encode_cursor(last) if more and last else None
    return VideoList(videos=videos, next_cursor=next_cursor)


def _encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.rsplit("/", 1)[-1].encode()).decode().rstrip("=")


def _decode_cursor(tenant: str, cursor: str) -> str:
    try:
        name = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        name = ""
    if not _CURSOR_RE.match(name):
        raise Problem(
            422,
            "invalid cursor: pass the next_cursor of a previous page unchanged",
            "invalid_cursor",
            errors=[{"field": "cursor", "location": "query.cursor", "message": "not a cursor of this listing"}],
        )
    return index_prefix(tenant) + name


@router.get("/jobs/{video_id}", response_model=JobView, summary="Status of a video's compression")
def get_job(status_: StatusDep) -> Response:
    """The video's record: status, progress, sizes, reconstructions, metadata, webhook deliveries.
    One Redis read when the status copy is there (issue 18); serialised here rather than through
    the response model a second time (JobView is that model)."""
    return Response(JobView.of(*status_).model_dump_json(), media_type="application/json")


@router.get("/videos/{video_id}", response_model=JobView,
            summary="A video: its record (the same view as GET /jobs/{id}; `links.video` points here)")
def get_video(status_: StatusDep) -> Response:
    """The record the job links name as the video itself; DELETE on the same path removes it."""
    return get_job(status_)


@router.delete(
    "/videos/{video_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a video: source, bundle, reconstructions and record",
)
def delete(record: VideoDep, services: ServicesDep) -> Response:
    delete_video(services, record)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
