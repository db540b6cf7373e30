"""The worker process: `framers worker` or `python -m workers.main`.

One process = one job at a time, models kept loaded between jobs. Run several for parallelism
(`framers serve --workers N` does). SIGTERM/SIGINT: finish the current job, then exit; a second
signal exits at once (the interrupted job is retried by another worker).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Sequence

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.queues import ALL_QUEUES, worker_connection
from core.settings import Settings
from workers import limits
from workers.cli_args import add_arguments
from workers.context import configure
from workers.housekeeping import Housekeeper
from workers.scratch import sweep_dead
from workers.worker import FramersWorker

log = logging.getLogger("workers")


class RedisUnavailable(RuntimeError):
    """Redis did not answer within the startup grace period."""


def wait_for_redis(conn: Redis, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.ping()
            return
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"Redis did not answer for {timeout_s:.0f} s: {exc}") from exc
            time.sleep(0.5)


def build_worker(settings: Settings, queues: Sequence[str]) -> FramersWorker:
    """The RQ worker for `queues`, on a Redis connection of its own whose socket timeout outlasts
    RQ's blocking dequeue (core.queues.worker_connection): with redis-py's default 5 s a worker's
    first BLPOP timed out and RQ backed off for about a minute before taking any job.
    Jobs and housekeeping use the process context's connection (short command timeout)."""
    worker_ttl = max(30, settings.job_lease_s * 2)
    conn = worker_connection(settings, worker_ttl)
    wait_for_redis(conn)
    return FramersWorker(
        list(queues),
        connection=conn,
        name=f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}",
        lease_s=settings.job_lease_s,
        worker_ttl=worker_ttl,
        default_result_ttl=settings.result_ttl_s,
    )


def run_worker(settings: Settings, queues: Sequence[str] | None = None, *, burst: bool = False) -> int:
    """Run a worker until stopped (or until the queues are empty with burst=True)."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    names = list(queues or settings.worker_queues)
    unknown = set(names) - set(ALL_QUEUES)
    if unknown:
        log.error("unknown queue(s) %s; known: %s", ", ".join(sorted(unknown)), ", ".join(ALL_QUEUES))
        return 2
    limits.apply(settings)
    ctx = configure(settings)
    sweep_dead(settings.scratch_dir)
    try:
        wait_for_redis(ctx.redis)
        worker = build_worker(settings, names)
    except RedisUnavailable as exc:
        log.error("%s", exc)
        return 1
    stop = threading.Event()
    housekeeper = Housekeeper(ctx, worker, stop)
    housekeeper.start()
    _watch_parent(stop)
    log.info("worker %s listening on %s (storage: %s)", worker.name, ", ".join(names), settings.storage_backend)
    try:
        worker.work(burst=burst, logging_level=settings.log_level, with_scheduler=False)
    finally:
        stop.set()
        housekeeper.join(timeout=5)
    return 0


def _watch_parent(stop: threading.Event) -> None:
    """Under `framers serve` (FRAMERS_PARENT_PID set): stop when serve itself is gone, so a
    killed serve never leaves orphan workers behind. SIGTERM = finish the current job, then exit."""
    parent = os.environ.get("FRAMERS_PARENT_PID")
    if not parent or not parent.isdigit():
        return

    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != int(parent):
                log.warning("parent process %s is gone; stopping", parent)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    if getattr(args, "redis_url", None):
        overrides["redis_url"] = args.redis_url
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    return Settings(**overrides)  # type: ignore[arg-type]


def command(args: argparse.Namespace) -> int:
    return run_worker(settings_from_args(args), args.queues, burst=args.burst)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="framers worker", description=__doc__)
    add_arguments(parser)
    return command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
