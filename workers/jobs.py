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

import json
import logging
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from redis import Redis

from core import job_metrics
from core.outputs import parse_variant
from core.queues import (
    COMPRESS_QUEUE,
    RECONSTRUCT_QUEUE,
    cancel_requested,
    compress_job_id,
    is_deleted,
    reconstruct_job_id,
)
from core.records import (
    JobState,
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
from workers import webhooks
from workers.context import WorkerContext, get_context
from workers.outcomes import (
    JobCanceled,
    PermanentJobError,
    VideoDeleted,
    discard,
    on_job_failure,  # noqa: F401 (RQ's failure callback: "workers.jobs.on_job_failure")
    record_cancel,
    record_failure,
)
from workers.progress import ProgressReporter
from workers.scratch import job_dir

log = logging.getLogger(__name__)

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

    job_id = compress_job_id(video_id)
    record.status, record.progress, record.error = Status.running, 0.0, None
    record.attempts += 1
    record.started_at = utcnow()
    started = time.monotonic()
    try:
        _check_not_canceled(ctx, job_id)
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
                refresh=opts.refresh,
                refresh_reconstructor=opts.reconstructor,
                refresh_kbps=opts.refresh_kbps,
                candidate_map=opts.candidate_map,
                progress=_progress(ctx, record, save, job_id),
            )
            _check_not_deleted(ctx.redis, video_id)
            _check_not_canceled(ctx, job_id)
            ctx.storage.put_file(Path(result.bundle_path), keys.bundle, move=True)
        record.status, record.progress = Status.done, 1.0
        record.finished_at = utcnow()
        record.bundle_bytes = int(result.bundle_bytes)
        record.frames, record.kept_frames = int(result.frames), int(result.kept_frames)
        record.duration = round(float(result.duration), 6)
        record.compress_seconds = float(result.seconds)
        record.model_versions = dict(result.model_versions)
        record.cuts = list(result.cuts)
        record.adaptive = result.adaptive
        record.refresh = result.refresh
        record.candidate_map = result.candidate_map
        record.warnings = list(result.warnings)
        # what the bundle holds, not what the upload's header promised (never claim lost audio)
        record.source.has_audio = bool(result.has_audio)
        record.last_error = None
        save()
    except VideoDeleted:
        return discard(ctx, video_id)
    except JobCanceled:
        return record_cancel(ctx, record, save, COMPRESS_QUEUE, started, marker, job_id, record)
    except BaseException as exc:
        record_failure(ctx, record, save, exc, COMPRESS_QUEUE, started, video_id, marker, "compression", record)
        raise
    if _deleted_meanwhile(ctx, video_id):
        return discard(ctx, video_id)

    if not (ctx.settings.keep_sources or record.keep_source):
        # Only now: until the bundle and the record are stored, the upload is the only copy.
        ctx.storage.delete(record.source_key)
        record.source_deleted = True
        try:
            save()
        except VideoDeleted:
            return discard(ctx, video_id)
    ctx.records.clear_pending(video_id, marker)
    job_metrics.record_job(ctx.redis, COMPRESS_QUEUE, "done", time.monotonic() - started, record.frames or 0)
    log.info("compressed %s: %s -> %s bytes", video_id, record.source.bytes, record.bundle_bytes)
    webhooks.emit(ctx, "compress.done", record)
    return {"video_id": video_id, "status": "done", "bundle_bytes": record.bundle_bytes}


# --------------------------------------------------------------------------------------------
# reconstruct


def reconstruct_video(video_id: str, variant: str) -> dict[str, Any]:
    """Reconstruct the full video of `video_id` from its bundle as `variant`: a reconstructor,
    optionally with output options (core.outputs, e.g. "framemae-vp9-crf32-webm"). When the
    upload is still in storage, each frame's PSNR against it is stored too (`frames.json`)."""
    ctx = get_context()
    keys = VideoKeys(video_id)
    reconstructor, spec = parse_variant(variant)
    marker = reconstruct_marker(variant)
    job_id = reconstruct_job_id(video_id, variant)
    try:
        record = ctx.records.load(video_id)
    except RecordNotFound:
        return _skipped(ctx, video_id, marker, "video deleted")
    try:
        state = ctx.records.load_reconstruction(video_id, variant)
    except RecordNotFound:
        state = ReconstructionRecord(video_id=video_id, reconstructor=reconstructor)
    state.variant = None if spec.is_default else variant
    state.codec, state.container, state.crf = spec.codec, spec.container, spec.crf
    output_key = keys.reconstruction(variant)
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
        _check_not_canceled(ctx, job_id)
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
            reference = _kept_source(ctx, record, tmp)
            output = tmp / f"{variant}.{spec.container}"
            result = pipeline.reconstruct(
                bundle,
                output,
                reconstructor=reconstructor,
                output_crf=spec.crf,
                codec=spec.codec,
                container=spec.container,
                reference=reference,
                progress=_progress(ctx, state, save, job_id),
            )
            _check_not_deleted(ctx.redis, video_id)
            _check_not_canceled(ctx, job_id)
            psnr_mean = round(sum(result.psnr) / len(result.psnr), 3) if result.psnr else None
            frames = {"frames": int(result.frames), "kept": result.kept, "times": result.times,
                      "psnr": result.psnr, "psnr_mean": psnr_mean}
            # The facts first: once the video is there (GET /reconstruct answers 200), so are they.
            ctx.storage.put_bytes(json.dumps(frames, separators=(",", ":")).encode(), keys.frames(variant))
            if result.significance is not None:
                _store_significance(ctx, keys, variant, result.significance, tmp)
            state.output_bytes = ctx.storage.put_file(Path(result.output_path), output_key, move=True)
        state.status, state.progress = Status.done, 1.0
        state.finished_at = utcnow()
        state.frames, state.width, state.height = int(result.frames), int(result.width), int(result.height)
        state.seconds = float(result.seconds)
        state.model_versions = dict(result.model_versions)
        state.warnings = list(result.warnings)
        state.psnr_mean = psnr_mean
        state.last_error = None
        save()
    except VideoDeleted:
        return discard(ctx, video_id)
    except JobCanceled:
        return record_cancel(ctx, state, save, RECONSTRUCT_QUEUE, started, marker, job_id, record)
    except BaseException as exc:
        record_failure(
            ctx, state, save, exc, RECONSTRUCT_QUEUE, started, video_id, marker, "reconstruction", record
        )
        raise
    if _deleted_meanwhile(ctx, video_id):
        return discard(ctx, video_id)
    ctx.records.clear_pending(video_id, marker)
    job_metrics.record_job(ctx.redis, RECONSTRUCT_QUEUE, "done", time.monotonic() - started, state.frames or 0)
    log.info("reconstructed %s as %s: %s frames", video_id, variant, state.frames)
    webhooks.emit(ctx, "reconstruct.done", record, state)
    return {"video_id": video_id, "reconstructor": reconstructor, "variant": variant, "status": "done",
            "bytes": state.output_bytes}


def _store_significance(ctx: WorkerContext, keys: VideoKeys, variant: str, significance: Any, tmp: Path) -> None:
    """The per-chunk error map (``framers.significance.Significance``) as JSON and a heatmap PNG."""
    from framers.significance import heatmap_png

    body = json.dumps(significance.to_json(), separators=(",", ":")).encode()
    ctx.storage.put_bytes(body, keys.significance(variant, "json"))
    png = heatmap_png(significance, tmp / "significance.png")
    ctx.storage.put_file(png, keys.significance(variant, "png"), move=True)


def _kept_source(ctx: WorkerContext, record: VideoRecord, tmp: Path) -> Path | None:
    """The uploaded source (for per-frame PSNR) when it is still stored, else None."""
    if record.source_deleted:
        return None
    local = tmp / _local_name(record.source.filename, record.source_key)
    try:
        ctx.storage.get_file(record.source_key, local)
    except ObjectNotFound:
        return None
    return local


# --------------------------------------------------------------------------------------------
# webhooks


def deliver_webhook(video_id: str, event_id: str) -> dict[str, Any]:
    """Deliver one stored webhook event of `video_id` (retried with backoff by RQ on failure)."""
    return webhooks.deliver(video_id, event_id)


# --------------------------------------------------------------------------------------------
# helpers


def _check_not_deleted(redis: Redis, video_id: str) -> None:
    if is_deleted(redis, video_id):
        raise VideoDeleted(video_id)


def _check_not_canceled(ctx: WorkerContext, job_id: str) -> None:
    if cancel_requested(ctx.redis, job_id):
        raise JobCanceled(job_id)


def _deleted_meanwhile(ctx: WorkerContext, video_id: str) -> bool:
    # Closes the race "DELETE ran between our last check and our last write".
    return is_deleted(ctx.redis, video_id) or not ctx.records.exists(video_id)


def _skipped(ctx: WorkerContext, video_id: str, marker: str, why: str) -> dict[str, Any]:
    if why == "video deleted":
        ctx.records.delete_video(video_id)  # removes a stray marker or half-deleted leftovers
    else:
        ctx.records.clear_pending(video_id, marker)
    return {"video_id": video_id, "skipped": why}


def _progress(ctx: WorkerContext, state: JobState, save: Callable[[], None], job_id: str) -> ProgressReporter:
    """The codec's progress callback: throttled record writes, and a cancel check at every call
    (one Redis EXISTS per 16 frames)."""

    def write(fraction: float) -> None:
        state.progress = fraction
        save()

    return ProgressReporter(write, ctx.settings.progress_interval_s, check=lambda: _check_not_canceled(ctx, job_id))


def _scratch(ctx: WorkerContext) -> AbstractContextManager[Path]:
    return job_dir(ctx.settings.scratch_dir)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _local_name(filename: str, source_key: str) -> str:
    """The user's file name, made safe: the codec's error messages then name the user's file."""
    suffix = Path(source_key).suffix
    stem = _UNSAFE.sub("_", Path(filename).stem).strip("._")[:80] or "source"
    return stem + suffix
