"""Queue names, deterministic job ids and enqueue helpers shared by the gateway and the workers.

Jobs are enqueued by the dotted name of their function ("workers.jobs.compress_video"), so the
gateway never imports worker code (nor the codec's heavy model code). Job ids are deterministic
("compress-<video>", "reconstruct-<video>-<name>"): together with a short Redis lock this makes
"enqueue unless already queued or running" safe under concurrent requests.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from redis import Redis
from rq import Callback, Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from core.queue_names import ALL_QUEUES, COMPRESS_QUEUE, RECONSTRUCT_QUEUE, WEBHOOK_QUEUE
from core.settings import Settings

COMPRESS_FUNC = "workers.jobs.compress_video"
RECONSTRUCT_FUNC = "workers.jobs.reconstruct_video"
FAILURE_CALLBACK = "workers.jobs.on_job_failure"
DELIVER_FUNC = "workers.jobs.deliver_webhook"

# Statuses meaning "a run of this job is already on its way": do not enqueue another.
ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED})

FAILED_JOB_TTL_S = 7 * 86_400
TOMBSTONE_TTL_S = 7 * 86_400
_KEY = "framers"

_RELEASE_LOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def connect(settings: Settings) -> Redis:
    """A Redis client for RQ (bytes responses, as RQ expects), with sane network timeouts."""
    return Redis.from_url(settings.redis_url, socket_connect_timeout=5, health_check_interval=30)


def compress_job_id(video_id: str) -> str:
    return f"compress-{video_id}"


def reconstruct_job_id(video_id: str, reconstructor: str) -> str:
    return f"reconstruct-{video_id}-{reconstructor}"


@dataclass(frozen=True)
class JobSpec:
    queue: str
    func: str
    args: tuple[str, ...]
    job_id: str
    timeout_s: int
    description: str


def compress_spec(settings: Settings, video_id: str) -> JobSpec:
    return JobSpec(
        queue=COMPRESS_QUEUE,
        func=COMPRESS_FUNC,
        args=(video_id,),
        job_id=compress_job_id(video_id),
        timeout_s=settings.compress_timeout_s,
        description=f"compress {video_id}",
    )


def reconstruct_spec(settings: Settings, video_id: str, reconstructor: str) -> JobSpec:
    return JobSpec(
        queue=RECONSTRUCT_QUEUE,
        func=RECONSTRUCT_FUNC,
        args=(video_id, reconstructor),
        job_id=reconstruct_job_id(video_id, reconstructor),
        timeout_s=settings.reconstruct_timeout_s,
        description=f"reconstruct {video_id} with {reconstructor}",
    )


def webhook_job_id(event_id: str) -> str:
    """The RQ job id of the delivery of one event."""
    return f"webhook-{event_id}"


def enqueue_webhook(conn: Redis, settings: Settings, video_id: str, event_id: str) -> Job:
    """Queue the delivery of one stored event; RQ redelivers it after each failed attempt with
    the backoff of FRAMERS_WEBHOOK_RETRY_BACKOFF_S (one retry per entry)."""
    backoff = settings.webhook_retry_backoff_s
    return Queue(WEBHOOK_QUEUE, connection=conn).enqueue(
        DELIVER_FUNC,
        video_id,
        event_id,
        job_id=webhook_job_id(event_id),
        job_timeout=int(settings.webhook_timeout_s * 3) + 30,
        result_ttl=settings.result_ttl_s,
        failure_ttl=FAILED_JOB_TTL_S,
        retry=Retry(max=len(backoff), interval=backoff),
        description=f"webhook {event_id} of {video_id}",
    )


def job_status(conn: Redis, job_id: str) -> JobStatus | None:
    """Status of the job with this id, None when Redis has no such job."""
    try:
        job = Job.fetch(job_id, connection=conn)
    except NoSuchJobError:
        return None
    return job.get_status(refresh=False)


def enqueue(conn: Redis, settings: Settings, spec: JobSpec) -> Job:
    """Enqueue unconditionally (callers normally want `enqueue_once`)."""
    retry = Retry(max=settings.job_retries, interval=settings.retry_backoff_s) if settings.job_retries else None
    return Queue(spec.queue, connection=conn).enqueue(
        spec.func,
        *spec.args,
        job_id=spec.job_id,
        job_timeout=spec.timeout_s,
        result_ttl=settings.result_ttl_s,
        failure_ttl=FAILED_JOB_TTL_S,
        retry=retry,
        on_failure=Callback(FAILURE_CALLBACK),
        description=spec.description,
    )


def enqueue_once(
    conn: Redis, settings: Settings, spec: JobSpec, before_enqueue: Callable[[], None] | None = None
) -> bool:
    """Enqueue unless a run of this job id is queued, scheduled or running. True if enqueued.

    The lock makes check-then-enqueue atomic across gateway processes; the job status makes it
    correct across time (a lock expires, a queued job may wait for hours). `before_enqueue` runs
    under the lock only when a run is about to be enqueued (e.g. to write the "queued" state
    without clobbering the state of a run already under way).
    """
    with redis_lock(conn, f"enqueue:{spec.job_id}", ttl_s=30) as acquired:
        if not acquired:
            return False  # another request is enqueuing this very job right now
        status = job_status(conn, spec.job_id)
        if status in ACTIVE_STATUSES:
            return False
        if status is not None:
            # A finished/failed/stopped earlier run: drop it so the new run starts clean.
            with contextlib.suppress(NoSuchJobError):
                Job.fetch(spec.job_id, connection=conn).delete()
        if before_enqueue is not None:
            before_enqueue()
        enqueue(conn, settings, spec)
        return True


def cancel_job(conn: Redis, job_id: str) -> None:
    """Best effort: drop a queued/scheduled run (a running one notices its video is gone)."""
    with contextlib.suppress(NoSuchJobError):
        job = Job.fetch(job_id, connection=conn)
        if job.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
            job.delete()


@contextlib.contextmanager
def redis_lock(conn: Redis, name: str, ttl_s: float) -> Iterator[bool]:
    """Non-blocking lock (SET NX PX); yields whether it was acquired; released only by its owner."""
    key = f"{_KEY}:lock:{name}"
    token = uuid.uuid4().hex
    acquired = bool(conn.set(key, token, nx=True, px=int(ttl_s * 1000)))
    try:
        yield acquired
    finally:
        if acquired:
            conn.eval(_RELEASE_LOCK, 1, key, token)


def mark_deleted(conn: Redis, video_id: str) -> None:
    """Tombstone: tells running jobs of this video to stop and not write anything back."""
    conn.set(f"{_KEY}:deleted:{video_id}", 1, ex=TOMBSTONE_TTL_S)


def is_deleted(conn: Redis, video_id: str) -> bool:
    return bool(conn.exists(f"{_KEY}:deleted:{video_id}"))


def queue_depths(conn: Redis, queues: tuple[str, ...] = ALL_QUEUES) -> dict[str, dict[str, int]]:
    """Jobs waiting / scheduled for retry / running, per queue, without triggering RQ cleanups.

    (RQ's registry `count` runs a cleanup that may execute job callbacks; the gateway must not.)
    """
    with conn.pipeline() as pipe:
        for name in queues:
            queue = Queue(name, connection=conn)
            pipe.llen(queue.key)
            pipe.zcard(queue.scheduled_job_registry.key)
            pipe.zcard(queue.started_job_registry.key)
        values = pipe.execute()
    return {
        name: {"queued": int(values[3 * i]), "scheduled": int(values[3 * i + 1]), "running": int(values[3 * i + 2])}
        for i, name in enumerate(queues)
    }
