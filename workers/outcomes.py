"""How a job run ends when it does not succeed: failed (retried or for good), canceled, abandoned.

Shared by the job functions in `workers.jobs`; `on_job_failure` is RQ's failure callback there.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import get_current_job
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.timeouts import JobTimeoutException

from core import job_metrics
from core.queues import COMPRESS_FUNC, RECONSTRUCT_FUNC, clear_cancel, is_deleted
from core.records import (
    CorruptRecord,
    JobState,
    ReconstructionRecord,
    RecordNotFound,
    Status,
    VideoRecord,
    compress_marker,
    reconstruct_marker,
    utcnow,
)
from core.storage import StorageError
from framers.errors import BundleError, InvalidVideoError, ModelError, UnsupportedOptionError
from workers import webhooks
from workers.context import WorkerContext, get_context

log = logging.getLogger("workers.jobs")

# Retrying cannot help, so the job fails at once with the codec's message: bad input (video,
# bundle, option) — and a missing/corrupt model, which needs an operator, not a retry in 10 s.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    InvalidVideoError,
    BundleError,
    UnsupportedOptionError,
    ModelError,
)


class PermanentJobError(Exception):
    """A failure of this video's own making (e.g. its source object is gone); never retried."""


#: failures of what surrounds the work (storage, Redis, the OS, memory): retried however often
#: they repeat, as an outage can last minutes
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (StorageError, RedisError, OSError, MemoryError)


def repeats_itself(exc: BaseException, message: str, state: JobState) -> bool:
    """Whether a failure raised by the work itself (not ``INFRASTRUCTURE_ERRORS``) is the one the
    previous attempt ended with (``state.last_error``): deterministic, so retrying cannot help
    (a fresh-user trial's 8×8 video sat "queued" for 6 minutes through 4 attempts of one OpenCV
    error)."""
    return not isinstance(exc, INFRASTRUCTURE_ERRORS) and state.last_error == message


BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    InvalidVideoError,
    BundleError,
    UnsupportedOptionError,
    PermanentJobError,
)


class VideoDeleted(Exception):
    """The video was deleted while its job ran: stop, and write nothing back."""


class JobCanceled(Exception):
    """Someone canceled this job (POST /jobs/{id}/cancel): stop, record `canceled`."""


def record_failure(
    ctx: WorkerContext,
    state: JobState,
    save: Callable[[], None],
    exc: BaseException,
    queue: str,
    started: float,
    video_id: str,
    marker: str,
    what: str,
    video: VideoRecord,
) -> None:
    """Write the outcome of a failed run to the record; decide retry vs. permanent failure
    (a final failure sends its webhook event)."""
    job = get_current_job()
    permanent = isinstance(exc, (*PERMANENT_ERRORS, PermanentJobError, JobTimeoutException))
    if isinstance(exc, JobTimeoutException):
        message = f"{what} timed out (limit {job.timeout if job else '?'} s)"
    elif permanent:
        message = str(exc) or type(exc).__name__
    else:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    message = _without_scratch_paths(message, ctx.settings.scratch_dir)
    if not permanent and repeats_itself(exc, message, state):
        permanent = True
        message += " (the previous attempt failed the same way: not retried again)"
    if permanent and job is not None:
        # RQ decides whether to retry from this (in-memory) job right after we re-raise.
        job.retries_left = 0
    will_retry = not permanent and job is not None and bool(job.retries_left)
    if will_retry:
        state.status, state.progress, state.last_error = Status.queued, 0.0, message
        outcome = "retry"
        log.warning("%s of %s failed, will retry: %s", what, video_id, message)
    else:
        state.status, state.error, state.finished_at = Status.failed, message, utcnow()
        if isinstance(state, ReconstructionRecord):
            # Bad input stays bad; a missing model or a too-short timeout can be fixed by an
            # operator, so a later request may try again.
            state.permanent = isinstance(exc, BAD_INPUT_ERRORS)
        outcome = "failed"
        log.error("%s of %s failed: %s", what, video_id, message)
    try:
        save()
        if not will_retry:
            ctx.records.clear_pending(video_id, marker)
    except VideoDeleted:
        pass
    except Exception:  # the record could not be written; the reconciler repairs it later
        log.exception("could not record the failure of %s", video_id)
    job_metrics.record_job(ctx.redis, queue, outcome, time.monotonic() - started)
    if not will_retry:
        _emit_failed(ctx, video, state)


def on_job_failure(job: Job, connection: Redis, exc_type: Any, exc_value: Any, tb: Any) -> None:
    """RQ failure callback. Job functions record their own failures; this handles the one case
    they cannot: the worker died mid-job (SIGKILL, OOM, power) and RQ found the job abandoned.
    """
    if not (isinstance(exc_type, type) and issubclass(exc_type, AbandonedJobError)):
        return
    ctx = get_context()
    retrying = bool(job.retries_left)
    message = "the worker processing this job stopped unexpectedly (killed or crashed)"
    args = tuple(job.args)
    try:
        if job.func_name == COMPRESS_FUNC and len(args) == 1:
            _mark_abandoned(ctx, ctx.records.load(args[0]), retrying, message, args[0], compress_marker())
        elif job.func_name == RECONSTRUCT_FUNC and len(args) == 2:
            state = ctx.records.load_reconstruction(args[0], args[1])
            _mark_abandoned(ctx, state, retrying, message, args[0], reconstruct_marker(args[1]))
    except RecordNotFound:
        return
    log.warning("job %s abandoned by its worker; %s", job.id, "retrying" if retrying else "giving up")


def _mark_abandoned(
    ctx: WorkerContext,
    state: VideoRecord | ReconstructionRecord,
    retrying: bool,
    message: str,
    video_id: str,
    marker: str,
) -> None:
    if state.status.terminal:
        return
    if retrying:
        state.status, state.progress, state.last_error = Status.queued, 0.0, message
    else:
        state.status, state.finished_at = Status.failed, utcnow()
        state.error = f"{message}; gave up after {state.attempts} attempts"
    if is_deleted(ctx.redis, video_id):
        return
    if isinstance(state, VideoRecord):
        ctx.records.save(state)
    else:
        ctx.records.save_reconstruction(state)
    if not retrying:
        ctx.records.clear_pending(video_id, marker)
        try:
            video = state if isinstance(state, VideoRecord) else ctx.records.load(video_id)
        except (RecordNotFound, CorruptRecord):
            return
        _emit_failed(ctx, video, state)


def record_cancel(
    ctx: WorkerContext,
    state: JobState,
    save: Callable[[], None],
    queue: str,
    started: float,
    marker: str,
    job_id: str,
    video: VideoRecord,
) -> dict[str, Any]:
    """A canceled run: record `canceled` (what it had done is discarded, the source and bundle
    stay), drop its pending marker and cancel flag, send the `*.canceled` event. The RQ job then
    ends normally: a cancel is not a failure, and is never retried."""
    state.status, state.finished_at, state.last_error = Status.canceled, utcnow(), None
    try:
        save()
    except VideoDeleted:
        return discard(ctx, video.id)
    ctx.records.clear_pending(video.id, marker)
    clear_cancel(ctx.redis, job_id)
    job_metrics.record_job(ctx.redis, queue, "canceled", time.monotonic() - started)
    log.info("job %s canceled", job_id)
    if isinstance(state, ReconstructionRecord):
        webhooks.emit(ctx, "reconstruct.canceled", video, state)
    else:
        webhooks.emit(ctx, "compress.canceled", video)
    return {"video_id": video.id, "status": "canceled"}


def _emit_failed(ctx: WorkerContext, video: VideoRecord, state: object) -> None:
    """The `compress.failed` or `reconstruct.failed` event of a job that failed for good."""
    if isinstance(state, ReconstructionRecord):
        webhooks.emit(ctx, "reconstruct.failed", video, state)
    else:
        webhooks.emit(ctx, "compress.failed", video)


def discard(ctx: WorkerContext, video_id: str) -> dict[str, Any]:
    """Remove what is left of a video deleted while its job ran."""
    ctx.records.delete_video(video_id)
    log.info("video %s was deleted while its job ran; outputs discarded", video_id)
    return {"video_id": video_id, "skipped": "video deleted"}


def _without_scratch_paths(message: str, scratch: Path) -> str:
    """Error messages go to users: show the file name, not where a worker kept its copy."""
    return re.sub(re.escape(str(scratch)) + r"/job-[^/'\"]+/", "", message)
