"""Cancel a video's compression or one of its reconstructions (POST /jobs/{id}/cancel).

A run that no worker has taken yet is taken out of the queue (or out of the retry schedule)
atomically and recorded `canceled` here, with its `*.canceled` event. A running one gets a cancel
flag in Redis that the job checks between frames; it then stops, discards what it made and
records `canceled` itself (RQ's stop-job command cannot stop a job of our SimpleWorker, which runs
jobs in its own process). Nothing else is lost: the source and bundle stay; a canceled
reconstruction starts again on the next GET /reconstruct.
"""

from __future__ import annotations

from typing import Literal

from core import events
from core.queues import (
    clear_cancel,
    compress_spec,
    job_status,
    reconstruct_spec,
    request_cancel,
    take_waiting_job,
)
from core.records import (
    ReconstructionRecord,
    RecordNotFound,
    Status,
    VideoRecord,
    compress_marker,
    reconstruct_marker,
    utcnow,
)
from service.state import Services
from service.targets import Target

Outcome = Literal["canceled", "canceling"]


class NotCancelable(Exception):
    """The job already ended (done or failed)."""


class NoSuchReconstruction(LookupError):
    """This reconstruction was never asked for."""


def cancel_compression(services: Services, record: VideoRecord) -> Outcome:
    """Cancel the compression of `record`: "canceled" (it was waiting) or "canceling" (running:
    the worker stops at its next frame). Raises NotCancelable when it is done or failed."""
    if record.status is Status.canceled:
        return "canceled"
    if record.status in (Status.done, Status.failed):
        raise NotCancelable(f"the compression is already {record.status}")
    spec = compress_spec(services.settings, record.id)
    request_cancel(services.redis, spec.job_id)
    if not _taken(services, spec.job_id, take_waiting_job(services.redis, spec)):
        return "canceling"
    fresh = services.records.load(record.id)
    if fresh.status.terminal:
        return "canceled" if fresh.status is Status.canceled else _too_late(fresh.status)
    fresh.status, fresh.finished_at, fresh.last_error = Status.canceled, utcnow(), None
    services.records.save(fresh)
    services.records.clear_pending(record.id, compress_marker())
    clear_cancel(services.redis, spec.job_id)
    events.emit(services, "compress.canceled", fresh)
    return "canceled"


def cancel_reconstruction(services: Services, record: VideoRecord, target: Target) -> Outcome:
    """Cancel the reconstruction `target` of `record` (see cancel_compression).
    Raises NoSuchReconstruction, NotCancelable."""
    try:
        state = services.records.load_reconstruction(record.id, target.variant)
    except RecordNotFound as exc:
        raise NoSuchReconstruction(f"no reconstruction {target.variant} of video {record.id}") from exc
    if state.status is Status.canceled:
        return "canceled"
    if state.status in (Status.done, Status.failed):
        raise NotCancelable(f"the reconstruction {target.variant} is already {state.status}")
    spec = reconstruct_spec(services.settings, record.id, target.variant)
    request_cancel(services.redis, spec.job_id)
    if not _taken(services, spec.job_id, take_waiting_job(services.redis, spec)):
        return "canceling"
    fresh: ReconstructionRecord = services.records.load_reconstruction(record.id, target.variant)
    if fresh.status.terminal:
        return "canceled" if fresh.status is Status.canceled else _too_late(fresh.status)
    fresh.status, fresh.finished_at, fresh.last_error = Status.canceled, utcnow(), None
    services.records.save_reconstruction(fresh)
    services.records.clear_pending(record.id, reconstruct_marker(target.variant))
    clear_cancel(services.redis, spec.job_id)
    events.emit(services, "reconstruct.canceled", record, fresh)
    return "canceled"


def _taken(services: Services, job_id: str, removed: bool) -> bool:
    """Whether no worker runs this job now: we took it out of the queue, or Redis has no such job
    (lost with Redis, or not queued yet: the reconciler would queue it again)."""
    return removed or job_status(services.redis, job_id) is None


def _too_late(status: Status) -> Outcome:
    raise NotCancelable(f"the job is already {status}")
