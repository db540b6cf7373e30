"""Background maintenance run by every worker process (one of them at a time per task).

Every `maintenance_interval_s`:
- reap abandoned jobs: RQ's StartedJobRegistry cleanup retries (or fails) jobs whose lease
  lapsed because their worker died, calling `workers.jobs.on_job_failure` to update the record;
- promote retries whose backoff elapsed (RQ keeps them in the ScheduledJobRegistry; we do not
  run RQ's forked scheduler process, which would outlive a SIGKILLed worker);
- the rest of RQ's registry hygiene (finished/failed expiry, dead worker entries, jobs stuck
  between dequeue and start).
Every `reconcile_interval_s` (and at startup): reconcile the durable records with the queue, so
work accepted before a Redis loss or a crash between "record saved" and "job enqueued" is
enqueued again. The records in storage are the source of truth; Redis is only the queue.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import timedelta

from redis.exceptions import RedisError
from rq import Queue, worker_registration
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.timeouts import TimerDeathPenalty
from rq.utils import current_timestamp

from core.queues import (
    ACTIVE_STATUSES,
    ALL_QUEUES,
    compress_spec,
    enqueue_once,
    enqueue_webhook,
    job_status,
    reconstruct_spec,
    redis_lock,
    webhook_job_id,
)
from core.records import CorruptRecord, PendingWork, RecordNotFound, Status, utcnow
from core.storage import StorageError
from workers.context import WorkerContext
from workers.worker import FramersWorker

log = logging.getLogger(__name__)

# A pending marker without a record is an upload that never completed (gateway crash mid-way);
# its leftovers are removed once it is certainly not an upload still in progress.
ORPHAN_MARKER_AGE = timedelta(hours=6)  # far longer than any upload takes


class Housekeeper(threading.Thread):
    def __init__(self, ctx: WorkerContext, worker: FramersWorker, stop: threading.Event) -> None:
        super().__init__(name="framers-housekeeper", daemon=True)
        self.ctx = ctx
        self.worker = worker
        self.stop_event = stop
        self._next_reconcile = 0.0

    def run(self) -> None:
        interval = self.ctx.settings.maintenance_interval_s
        while True:
            try:
                self.tick()
            except (RedisError, StorageError) as exc:  # down for a while: try again next tick
                log.warning("housekeeping skipped: %s", exc)
            except Exception:
                log.exception("housekeeping failed")
            if self.stop_event.wait(interval):
                return

    def tick(self) -> None:
        self.reap_abandoned()
        self.promote_due_retries()
        if time.monotonic() >= self._next_reconcile:
            self.reconcile()
            self._next_reconcile = time.monotonic() + self.ctx.settings.reconcile_interval_s

    def _lock_ttl(self) -> float:
        # Short, so a worker killed while holding it delays the others by seconds, not minutes.
        return max(10.0, 4 * self.ctx.settings.maintenance_interval_s)

    def reap_abandoned(self) -> None:
        conn = self.ctx.redis
        for name in ALL_QUEUES:
            with redis_lock(conn, f"maintenance:{name}", self._lock_ttl()) as acquired:
                if not acquired:
                    continue
                queue = Queue(name, connection=conn)
                # TimerDeathPenalty: callbacks run in this thread, where SIGALRM cannot be used.
                StartedJobRegistry(name, connection=conn, death_penalty_class=TimerDeathPenalty).cleanup()
                FinishedJobRegistry(name, connection=conn).cleanup()
                FailedJobRegistry(name, connection=conn).cleanup()
                worker_registration.clean_worker_registry(queue)
                queue.intermediate_queue.cleanup(self.worker, queue)

    def promote_due_retries(self) -> None:
        conn = self.ctx.redis
        for name in ALL_QUEUES:
            registry = ScheduledJobRegistry(name, connection=conn)
            for job_id in registry.get_jobs_to_schedule(current_timestamp()):
                try:
                    # requeue removes the entry first (ZREM); only one caller can win it.
                    registry.requeue(job_id)
                except InvalidJobOperation:
                    continue
                except NoSuchJobError:
                    conn.zrem(registry.key, job_id)

    def reconcile(self) -> None:
        """Re-enqueue accepted work that the queue lost; drop markers of finished work."""
        conn = self.ctx.redis
        with redis_lock(conn, "reconcile", ttl_s=300) as acquired:
            if not acquired:
                return
            count = 0
            for pending in self.ctx.records.iter_pending():
                with contextlib.suppress(Exception):
                    count += int(self._reconcile_one(pending))
            if count:
                log.warning("reconciler re-enqueued %d job(s) missing from the queue", count)

    def _reconcile_one(self, pending: PendingWork) -> bool:
        ctx = self.ctx
        if pending.webhook_event is not None:
            return self._reconcile_webhook(pending, pending.webhook_event)
        rec_name = pending.reconstructor
        try:
            record = ctx.records.load(pending.video_id)
            state = record if rec_name is None else ctx.records.load_reconstruction(pending.video_id, rec_name)
        except RecordNotFound:
            if utcnow() - pending.created_at > ORPHAN_MARKER_AGE:
                ctx.records.delete_video(pending.video_id)  # an upload that never got its record
            return False
        if state.status.terminal:
            ctx.records.clear_pending(pending.video_id, pending.job)
            return False
        spec = (
            compress_spec(ctx.settings, pending.video_id)
            if rec_name is None
            else reconstruct_spec(ctx.settings, pending.video_id, rec_name)
        )
        status = job_status(ctx.redis, spec.job_id)
        if status in ACTIVE_STATUSES:
            return False
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            # The job failed but its record was not updated (e.g. storage was down at the time).
            state.status, state.error = Status.failed, state.last_error or "processing failed"
            state.finished_at = utcnow()
            if rec_name is None:
                ctx.records.save(record)
            else:
                ctx.records.save_reconstruction(state)  # type: ignore[arg-type]
            ctx.records.clear_pending(pending.video_id, pending.job)
            return False
        # Missing (Redis lost it, or the gateway died before enqueueing) or finished while the
        # record says otherwise: run it (again). Jobs are idempotent.
        return enqueue_once(ctx.redis, ctx.settings, spec)

    def _reconcile_webhook(self, pending: PendingWork, event_id: str) -> bool:
        """Re-queue an event still pending whose delivery job Redis no longer has."""
        ctx = self.ctx
        try:
            delivery = ctx.records.load_webhook(pending.video_id, event_id)
        except (RecordNotFound, CorruptRecord):
            if utcnow() - pending.created_at > ORPHAN_MARKER_AGE:
                ctx.records.clear_pending(pending.video_id, pending.job)
            return False
        if delivery.status != "pending":
            ctx.records.clear_pending(pending.video_id, pending.job)
            return False
        job_id = webhook_job_id(event_id)
        status = job_status(ctx.redis, job_id)
        if status in ACTIVE_STATUSES:
            return False  # queued, scheduled for a retry, or running
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            # RQ gave up (e.g. the last attempt's worker died) before the log was written.
            delivery.status = "failed"
            ctx.records.save_webhook(delivery)
            ctx.records.clear_pending(pending.video_id, pending.job)
            return False
        if status is not None:
            with contextlib.suppress(NoSuchJobError):
                Job.fetch(job_id, connection=ctx.redis).delete()
        # Lost by Redis (or finished without its log written): deliver it (again).
        enqueue_webhook(ctx.redis, ctx.settings, pending.video_id, event_id)
        return True
