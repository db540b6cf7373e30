"""CPU priority and thread budget of a worker process (issue 18).

A worker runs at ``worker_nice`` above the gateway's niceness, so that the kernel gives the gateway
the CPU whenever it has a request to answer (status polls, health probes), and with
``worker_threads`` threads per library, so that the workers of one machine together fill its
cores without oversubscribing them. ``framers serve`` picks ``worker_threads`` = cores / workers
when it is 0; in containers set it to the CPU limit.
"""

from __future__ import annotations

import logging
import os

from core.settings import Settings

log = logging.getLogger("workers")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; cgroup quotas are not seen)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Threads each of ``workers`` workers gets so that together they use ``cores`` (≥ 1 each)."""
    return max(1, (cores or available_cores()) // max(1, workers))


def apply(settings: Settings) -> None:
    """Lower this process's priority and set the libraries' thread counts (before any model or
    codec is opened). A niceness the OS refuses is logged, not fatal."""
    if settings.worker_nice:
        try:
            now = os.nice(settings.worker_nice)
            log.info("worker niceness %d", now)
        except OSError as exc:
            log.warning("could not lower the worker's CPU priority: %s", exc)
    if settings.worker_threads:
        os.environ.setdefault("FRAMERS_CODEC_THREADS", str(settings.worker_threads))
        os.environ.setdefault("FRAMERS_ORT_THREADS", str(settings.worker_threads))
    from framers.threads import codec_threads, limit_opencv

    limit_opencv()
    log.info("worker threads: codec %s, onnxruntime %s", codec_threads() or "default",
             os.environ.get("FRAMERS_ORT_THREADS") or "default")
