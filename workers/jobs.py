"""RQ job functions: compress an uploaded video, reconstruct a video from its bundle.

Contract with the rest of the system:
- arguments are ids only; everything else comes from the durable record in object storage;
- progress, results and the reason of a failure are written to the record as the job goes;
- bad input (the codec's InvalidVideoError, BundleError, UnsupportedOptionError) and ModelError
  fail the job at once with the codec's message as `error`; anything else is treated as transient and retried
  with backoff by RQ (Retry), the record showing `queued` plus `last_error` meanwhile;
- jobs are idempotent: a run that is repeated (retry, dead worker, reconciler) overwrites the same
  objects, and each output object appears atomically, so a half-done run leaves nothing visible;
- a video deleted while its job runs stops the job, and the job leaves nothing behind.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from redis import Redis
from rq import get_current_job
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.timeouts import JobTimeoutException

from core import job_metrics
from core.queues import COMPRESS_FUNC, COMPRESS_QUEUE, RECONSTRUCT_FUNC, RECONSTRUCT_QUEUE, is_deleted
from core.records import (
    CorruptRecord,
    ReconstructionRecord,
    RecordNotFound,
    Status,
    VideoKeys,
    VideoRecord,
    compress_marker,
    reconstruct_marker,
    utcnow,
)
from core.storage import ObjectNotFound
from framers.errors import BundleError, InvalidVideoError, ModelError, UnsupportedOptionError
from workers import webhooks
from workers.context import WorkerContext, get_context
from workers.progress import ProgressReporter
from workers.scratch import job_dir

log = logging.getLogger(__name__)

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


BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    InvalidVideoError,
    BundleError,
    UnsupportedOptionError,
    PermanentJobError,
)


class VideoDeleted(Exception):
    """The video was deleted while its job ran: stop, and write nothing back."""


class _State(Protocol):
    status: Status
    progress: float
    attempts: int
    error: str | None
    last_error: str | None
    started_at: Any
    finished_at: Any


# --------------------------------------------------------------------------------------------
# compress


def compress_video(video_id: str) -> dict[str, Any]:
    """Compress the uploaded source of `video_id` into its single-file bundle."""
    ctx = get_context()
    keys = VideoKeys(video_id)
    marker = compress_marker()
    try:
        record = ctx.records.load(video_id)
    except RecordNotFound:
        return _skipped(ctx, video_id, marker, "video deleted")
    if record.status is Status.done and ctx.storage.exists(keys.bundle):
        return _skipped(ctx, video_id, marker, "already done")

    def save() -> None:
        _check_not_deleted(ctx.redis, video_id)
        ctx.records.save(record)

    record.status, record.progress, record.error = Status.running, 0.0, None
    record.attempts += 1
    record.started_at = utcnow()
    started = time.monotonic()
    try:
        save()
        from framers import pipeline  # the codec; imported here so callbacks work without it

        with _scratch(ctx) as tmp:
            source = tmp / _local_name(record.source.filename, record.source_key)
            try:
                ctx.storage.get_file(record.source_key, source)
            except ObjectNotFound as exc:
                raise PermanentJobError("the uploaded source is missing from storage") from exc
            bundle = tmp / "bundle.frs"
            opts = record.options
            result = pipeline.compress(
                source,
                bundle,
                selector=opts.selector,
                keep=opts.keep,
                stride=opts.stride,
                oracle_reconstructor=opts.reconstructor,
                keyframe_codec=opts.keyframe_codec,
                keyframe_crf=opts.crf,
                target_psnr=opts.target_psnr,
                target_kbps=opts.target_kbps,
                progress=_progress(ctx, record, save),
            )
            _check_not_deleted(ctx.redis, video_id)
            ctx.storage.put_file(Path(result.bundle_path), keys.bundle, move=True)
        record.status, record.progress = Status.done, 1.0
        record.finished_at = utcnow()
        record.bundle_bytes = int(result.bundle_bytes)
        record.frames, record.kept_frames = int(result.frames), int(result.kept_frames)
        record.compress_seconds = float(result.seconds)
        record.model_versions = dict(result.model_versions)
        record.cuts = list(result.cuts)
        record.adaptive = result.adaptive
        record.warnings = list(result.warnings)
        # what the bundle holds, not what the upload's header promised (never claim lost audio)
        record.source.has_audio = bool(result.has_audio)
        record.last_error = None
        save()
    except VideoDeleted:
        return _discard(ctx, video_id)
    except BaseException as exc:
        _record_failure(ctx, record, save, exc, COMPRESS_QUEUE, started, video_id, marker, "compression", record)
        raise
    if _deleted_meanwhile(ctx, video_id):
        return _discard(ctx, video_id)

    if not ctx.settings.keep_sources:
        # Only now: until the bundle and the record are stored, the upload is the only copy.
        ctx.storage.delete(record.source_key)
        record.source_deleted = True
        try:
            save()
        except VideoDeleted:
            return _discard(ctx, video_id)
    ctx.records.clear_pending(video_id, marker)
    job_metrics.record_job(ctx.redis, COMPRESS_QUEUE, "done", time.monotonic() - started, record.frames or 0)
    log.info("compressed %s: %s -> %s bytes", video_id, record.source.bytes, record.bundle_bytes)
    webhooks.emit(ctx, "compress.done", record)
    return {"video_id": video_id, "status": "done", "bundle_bytes": record.bundle_bytes}


# --------------------------------------------------------------------------------------------
# reconstruct


def reconstruct_video(video_id: str, reconstructor: str) -> dict[str, Any]:
    """Reconstruct the full video of `video_id` from its bundle with `reconstructor`."""
    ctx = get_context()
    keys = VideoKeys(video_id)
    marker = reconstruct_marker(reconstructor)
    try:
        record = ctx.records.load(video_id)
    except RecordNotFound:
        return _skipped(ctx, video_id, marker, "video deleted")
    try:
        state = ctx.records.load_reconstruction(video_id, reconstructor)
    except RecordNotFound:
        state = ReconstructionRecord(video_id=video_id, reconstructor=reconstructor)
    output_key = keys.reconstruction(reconstructor)
    if state.status is Status.done and ctx.storage.exists(output_key):
        return _skipped(ctx, video_id, marker, "already done")

    def save() -> None:
        _check_not_deleted(ctx.redis, video_id)
        ctx.records.save_reconstruction(state)

    state.status, state.progress, state.error, state.permanent = Status.running, 0.0, None, False
    state.attempts += 1
    state.started_at = utcnow()
    started = time.monotonic()
    try:
        save()
        from framers import pipeline

        if record.status is not Status.done:
            raise PermanentJobError(f"the video is not compressed (status {record.status})")
        with _scratch(ctx) as tmp:
            bundle = tmp / "bundle.frs"
            try:
                ctx.storage.get_file(keys.bundle, bundle)
            except ObjectNotFound as exc:
                raise PermanentJobError("the bundle of this video is missing from storage") from exc
            output = tmp / f"{reconstructor}.mp4"
            result = pipeline.reconstruct(
                bundle, output, reconstructor=reconstructor, progress=_progress(ctx, state, save)
            )
            _check_not_deleted(ctx.redis, video_id)
            state.output_bytes = ctx.storage.put_file(Path(result.output_path), output_key, move=True)
        state.status, state.progress = Status.done, 1.0
        state.finished_at = utcnow()
        state.frames, state.width, state.height = int(result.frames), int(result.width), int(result.height)
        state.seconds = float(result.seconds)
        state.model_versions = dict(result.model_versions)
        state.last_error = None
        save()
    except VideoDeleted:
        return _discard(ctx, video_id)
    except BaseException as exc:
        _record_failure(
            ctx, state, save, exc, RECONSTRUCT_QUEUE, started, video_id, marker, "reconstruction", record
        )
        raise
    if _deleted_meanwhile(ctx, video_id):
        return _discard(ctx, video_id)
    ctx.records.clear_pending(video_id, marker)
    job_metrics.record_job(ctx.redis, RECONSTRUCT_QUEUE, "done", time.monotonic() - started, state.frames or 0)
    log.info("reconstructed %s with %s: %s frames", video_id, reconstructor, state.frames)
    webhooks.emit(ctx, "reconstruct.done", record, state)
    return {"video_id": video_id, "reconstructor": reconstructor, "status": "done", "bytes": state.output_bytes}


# --------------------------------------------------------------------------------------------
# webhooks


def deliver_webhook(video_id: str, event_id: str) -> dict[str, Any]:
    """Deliver one stored webhook event of `video_id` (retried with backoff by RQ on failure)."""
    return webhooks.deliver(video_id, event_id)


# --------------------------------------------------------------------------------------------
# failure handling


def _record_failure(
    ctx: WorkerContext,
    state: _State,
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


def _emit_failed(ctx: WorkerContext, video: VideoRecord, state: object) -> None:
    """The `compress.failed` or `reconstruct.failed` event of a job that failed for good."""
    if isinstance(state, ReconstructionRecord):
        webhooks.emit(ctx, "reconstruct.failed", video, state)
    else:
        webhooks.emit(ctx, "compress.failed", video)


# --------------------------------------------------------------------------------------------
# helpers


def _check_not_deleted(redis: Redis, video_id: str) -> None:
    if is_deleted(redis, video_id):
        raise VideoDeleted(video_id)


def _deleted_meanwhile(ctx: WorkerContext, video_id: str) -> bool:
    # Closes the race "DELETE ran between our last check and our last write".
    return is_deleted(ctx.redis, video_id) or not ctx.records.exists(video_id)


def _discard(ctx: WorkerContext, video_id: str) -> dict[str, Any]:
    ctx.records.delete_video(video_id)
    log.info("video %s was deleted while its job ran; outputs discarded", video_id)
    return {"video_id": video_id, "skipped": "video deleted"}


def _skipped(ctx: WorkerContext, video_id: str, marker: str, why: str) -> dict[str, Any]:
    if why == "video deleted":
        ctx.records.delete_video(video_id)  # removes a stray marker or half-deleted leftovers
    else:
        ctx.records.clear_pending(video_id, marker)
    return {"video_id": video_id, "skipped": why}


def _progress(ctx: WorkerContext, state: _State, save: Callable[[], None]) -> ProgressReporter:
    def write(fraction: float) -> None:
        state.progress = fraction
        save()

    return ProgressReporter(write, ctx.settings.progress_interval_s)


def _scratch(ctx: WorkerContext) -> AbstractContextManager[Path]:
    return job_dir(ctx.settings.scratch_dir)


def _without_scratch_paths(message: str, scratch: Path) -> str:
    """Error messages go to users: show the file name, not where a worker kept its copy."""
    return re.sub(re.escape(str(scratch)) + r"/job-[^/'\"]+/", "", message)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _local_name(filename: str, source_key: str) -> str:
    """The user's file name, made safe: the codec's error messages then name the user's file."""
    suffix = Path(source_key).suffix
    stem = _UNSAFE.sub("_", Path(filename).stem).strip("._")[:80] or "source"
    return stem + suffix
