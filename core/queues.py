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


COMMAND_TIMEOUT_S = 5.0


def connect(settings: Settings, *, socket_timeout: float = COMMAND_TIMEOUT_S) -> Redis:
    """A Redis client for RQ (bytes responses, as RQ expects), with explicit network timeouts.

    `socket_timeout` bounds every command (redis-py's own default is 5 s). A connection that an RQ
    worker dequeues on must wait longer than RQ's blocking dequeue (BLPOP of up to
    `worker_ttl - 15` s): see `worker_connection`.
    """
    return Redis.from_url(
        settings.redis_url, socket_connect_timeout=5, socket_timeout=socket_timeout, health_check_interval=30
    )


def worker_connection(settings: Settings, worker_ttl: int) -> Redis:
    """The connection an RQ worker dequeues on: its socket timeout outlasts RQ's blocking dequeue.

    RQ raises the pool's `socket_timeout` to `dequeue timeout + 10` s, but only for connections made
    after the worker is built; a connection already in the pool (a startup ping) keeps redis-py's
    5 s, so its BLPOP times out, and RQ backs off 1+2+4+8+16+32 s before it takes a job. Setting
    the timeout when the client is made leaves no such connection.
    """
    return connect(settings, socket_timeout=float(worker_ttl + 10))


def compress_job_id(video_id: str) -> str:
    return f"compress-{video_id}"


def reconstruct_job_id(video_id: str, variant: str) -> str:
    """The RQ job id of one reconstruction (a reconstructor plus output options, core.outputs)."""
    return f"reconstruct-{video_id}-{variant}"


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


def reconstruct_spec(settings: Settings, video_id: str, variant: str) -> JobSpec:
    """The job of one reconstruction; `variant` names the reconstructor and output (core.outputs)."""
    return JobSpec(
        queue=RECONSTRUCT_QUEUE,
        func=RECONSTRUCT_FUNC,
        args=(video_id, variant),
        job_id=reconstruct_job_id(video_id, variant),
        timeout_s=settings.reconstruct_timeout_s,
        description=f"reconstruct {video_id} as {variant}",
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
    conn.delete(_cancel_key(spec.job_id))  # a new run is not canceled by an earlier run's request
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
    conn: Redis,
    settings: Settings,
    spec: JobSpec,
    before_enqueue: Callable[[], None] | None = None,
    needed: Callable[[], bool] | None = None,
) -> bool:
    """Enqueue unless a run of this job id is queued, scheduled or running. True if enqueued.

    The lock makes check-then-enqueue atomic across gateway processes; the job status makes it
    correct across time (a lock expires, a queued job may wait for hours). `needed`, checked under
    the lock once no run is active, says whether a new run is still wanted: a caller that saw no
    result a moment ago may meet a run that has just finished and made it (False: nothing is
    enqueued). `before_enqueue` runs under the lock only when a run is about to be enqueued (e.g.
    to write the "queued" state without clobbering the state of a run already under way).
    """
    with redis_lock(conn, f"enqueue:{spec.job_id}", ttl_s=30) as acquired:
        if not acquired:
            return False  # another request is enqueuing this very job right now
        status = job_status(conn, spec.job_id)
        if status in ACTIVE_STATUSES:
            return False
        if needed is not None and not needed():
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


def _cancel_key(job_id: str) -> str:
    return f"{_KEY}:cancel:{job_id}"


def request_cancel(conn: Redis, job_id: str, ttl_s: int = TOMBSTONE_TTL_S) -> None:
    """Ask the run of this job to stop: a running job checks the flag between frames.

    (RQ's `send_stop_job_command` kills a forked work horse; our SimpleWorker runs jobs in its own
    process, where RQ's stop command does nothing, so the stop is cooperative.)"""
    conn.set(_cancel_key(job_id), 1, ex=ttl_s)


def cancel_requested(conn: Redis, job_id: str) -> bool:
    """Whether someone asked the current run of this job to stop."""
    return bool(conn.exists(_cancel_key(job_id)))


def clear_cancel(conn: Redis, job_id: str) -> None:
    """Forget a cancel request (the run stopped)."""
    conn.delete(_cancel_key(job_id))


def take_waiting_job(conn: Redis, spec: JobSpec) -> bool:
    """Atomically take a job that no worker has started out of its queue (or out of the retry
    schedule): True if this call removed it, so no worker will ever run it; False if it is not
    waiting (running, finished, unknown)."""
    queue = Queue(spec.queue, connection=conn)
    removed = int(conn.lrem(queue.key, 0, spec.job_id)) + int(conn.zrem(queue.scheduled_job_registry.key, spec.job_id))
    if removed:
        with contextlib.suppress(NoSuchJobError):
            Job.fetch(spec.job_id, connection=conn).delete()
    return removed > 0


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


def connected_workers(conn: Redis) -> dict[str, int]:
    """How many live RQ workers listen on each queue ("*": all workers). A worker counts while its
    heartbeat key exists (RQ expires it `worker_ttl` after the last beat; a dead worker's entry in
    the registry set is dropped on the way)."""
    from rq import Worker

    counts: dict[str, int] = {"*": 0}
    for worker in Worker.all(connection=conn):
        counts["*"] += 1
        for name in worker.queue_names():
            counts[name] = counts.get(name, 0) + 1
    return counts


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
