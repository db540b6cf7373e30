"""What the endpoints do, without HTTP: accept an upload, request a reconstruction, delete a video.

Blocking (storage, Redis); routes run these in the threadpool. Errors are named exceptions; the
routes turn them into status codes.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from core.queues import (
    cancel_job,
    compress_job_id,
    compress_spec,
    enqueue_once,
    mark_deleted,
    reconstruct_job_id,
    reconstruct_spec,
)
from core.records import (
    CompressOptions,
    ReconstructionRecord,
    RecordNotFound,
    SourceInfo,
    Status,
    VideoKeys,
    VideoRecord,
    compress_marker,
    reconstruct_marker,
)
from service.state import Services
from service.targets import Target

log = logging.getLogger(__name__)
#: how long a request to start a reconstruction again waits for its just-canceled run to stop
RESTART_WAIT_S = 3.0

_SUFFIX_RE = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


class NotReady(Exception):
    """The video is not compressed yet (queued or running)."""


class CompressionFailed(Exception):
    """The video's compression failed; nothing can be derived from it."""


class ReconstructionFailed(Exception):
    """The reconstruction failed for a reason a new attempt cannot fix."""


class CompressionCanceled(Exception):
    """The video's compression was canceled; nothing can be derived from it."""


def source_suffix(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    return suffix if _SUFFIX_RE.match(suffix) else ".bin"


def accept_upload(
    services: Services,
    *,
    tenant: str,
    video_id: str,
    upload_path: Path,
    filename: str,
    size: int,
    info: SourceInfo,
    options: CompressOptions,
    callback_url: str | None = None,
    metadata: dict[str, Any] | None = None,
    keep_source: bool = False,
) -> VideoRecord:
    """Store the upload and its record, then queue the compression.

    Order matters for crash safety: the pending marker first (so a crash at any later point is
    found and finished or cleaned by the reconciler), then the source, then the record, then the
    queue. If Redis is down the upload is still accepted: the reconciler enqueues it later.
    """
    keys = VideoKeys(video_id)
    services.records.mark_pending(video_id, compress_marker())
    source_key = keys.source(source_suffix(filename))
    services.storage.put_file(upload_path, source_key, move=True)
    record = VideoRecord(
        id=video_id,
        tenant=tenant,
        options=options,
        source=info,
        source_key=source_key,
        callback_url=callback_url,
        metadata=metadata,
        keep_source=keep_source,
    )
    services.records.save(record)
    services.records.add_to_index(record)
    try:
        enqueue_once(services.redis, services.settings, compress_spec(services.settings, video_id))
    except RedisError as exc:
        log.error("video %s stored but not queued (Redis: %s); the reconciler will queue it", video_id, exc)
    services.metrics.uploads.labels("accepted").inc()
    services.metrics.upload_bytes.inc(size)
    return record


def reconstruction_state(services: Services, video_id: str, variant: str) -> ReconstructionRecord | None:
    """The state of one reconstruction (a reconstructor + output options), None if never asked for."""
    try:
        return services.records.load_reconstruction(video_id, variant)
    except RecordNotFound:
        return None


def _fresh_state(record: VideoRecord, target: Target, attempts: int = 0) -> ReconstructionRecord:
    spec = target.output
    return ReconstructionRecord(
        video_id=record.id,
        reconstructor=target.reconstructor,
        variant=None if spec.is_default else target.variant,
        codec=spec.codec,
        container=spec.container,
        crf=spec.crf,
        attempts=attempts,
    )


def request_reconstruction(services: Services, record: VideoRecord, target: Target) -> ReconstructionRecord:
    """Make sure the reconstruction `target` is under way; return its current state.

    Concurrent calls start one job: enqueue_once holds a Redis lock and checks the job's
    deterministic id. A reconstruction that failed for good is reported, not re-run; a canceled
    one is started again.
    """
    if record.status is Status.failed:
        raise CompressionFailed(f"the video could not be compressed: {record.error}")
    if record.status is Status.canceled:
        raise CompressionCanceled("the compression of this video was canceled")
    if record.status is not Status.done:
        raise NotReady(f"the video is still being compressed (status {record.status}, {record.progress:.0%})")
    state = reconstruction_state(services, record.id, target.variant)
    if state is not None and state.status is Status.failed and state.permanent:
        raise ReconstructionFailed(f"reconstruction with {target.variant} failed: {state.error}")

    def write_queued_state() -> None:
        services.records.mark_pending(record.id, reconstruct_marker(target.variant))
        services.records.save_reconstruction(_fresh_state(record, target, state.attempts if state else 0))

    output_key = VideoKeys(record.id).reconstruction(target.variant)

    def still_missing() -> bool:
        # The worker stores the video before its run ends: a run that finished since the caller
        # looked has made it, and must not be run again.
        return not services.storage.exists(output_key)

    spec = reconstruct_spec(services.settings, record.id, target.variant)
    enqueued = enqueue_once(services.redis, services.settings, spec,
                            before_enqueue=write_queued_state, needed=still_missing)
    if not enqueued and state is not None and state.status is Status.canceled:
        # Asked again right after a cancel: the canceled run is still stopping (it checks between
        # frames) and holds the job id. Give it a moment, then start the new run; if it is
        # still busy, the answer says "canceled" with a Retry-After, and asking again starts it.
        deadline = time.monotonic() + RESTART_WAIT_S
        while not enqueued and time.monotonic() < deadline:
            time.sleep(0.1)
            enqueued = enqueue_once(services.redis, services.settings, spec,
                                    before_enqueue=write_queued_state, needed=still_missing)
    return reconstruction_state(services, record.id, target.variant) or _fresh_state(record, target)


def delete_video(services: Services, record: VideoRecord) -> None:
    """Remove every object of the video; tell its running jobs to stop and write nothing back."""
    reconstructors = [s.name for s in services.records.list_reconstructions(record.id)]
    mark_deleted(services.redis, record.id)
    cancel_job(services.redis, compress_job_id(record.id))
    for name in reconstructors:
        cancel_job(services.redis, reconstruct_job_id(record.id, name))
    services.records.delete_video(record.id, record)
