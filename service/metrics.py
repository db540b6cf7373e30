"""Prometheus metrics of the gateway: requests, plus queue depth and job metrics read from Redis.

Job durations and frames processed are recorded by the workers in Redis (core.job_metrics)
because workers may run on other machines; the collector below turns them into Prometheus
families at scrape time, together with the current queue depths.

Several gateway processes (uvicorn workers, issue 18) share one port, and a scrape reaches
whichever process the kernel hands the connection to. So with more than one, prometheus_client's
multiprocess mode is on (PROMETHEUS_MULTIPROC_DIR, set by ``framers serve`` or the deployment
before the gateway starts): each process writes its counters and histograms to its own mmap file
in that folder and /metrics returns their sum over all processes, alive or dead (a count that
happened stays counted). The Redis collector is not per process: the answering process reads
Redis once per scrape, so those families appear once. A Gauge added to GatewayMetrics must name a
``multiprocess_mode`` (e.g. "livesum"), or every process's value is reported with a pid label.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.job_metrics import read_job_metrics
from core.queues import queue_depths

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LEGACY_MULTIPROC_ENV = "prometheus_multiproc_dir"  # still read by prometheus_client (deprecated)


def multiprocess_dir_from_env() -> Path | None:
    """The folder named by PROMETHEUS_MULTIPROC_DIR (or its deprecated lower-case form), else None."""
    raw = os.environ.get(MULTIPROC_ENV) or os.environ.get(_LEGACY_MULTIPROC_ENV)
    return Path(raw) if raw else None


def active_multiprocess_dir() -> Path | None:
    """The folder of prometheus_client's multiprocess mode when that mode is on in this process.

    prometheus_client picks how metric values are stored once, when it is imported: the variable
    must be set before that (an env var of the process, or set by ``framers serve`` before it
    spawns the gateway processes). Set only later it cannot take effect, so this logs a warning
    and returns None: the process reports its own metrics, as without the variable."""
    path = multiprocess_dir_from_env()
    if path is None:
        return None
    if not getattr(values.ValueClass, "_multiprocess", False):
        log.warning("%s was set after prometheus_client was imported: /metrics reports this process only",
                    MULTIPROC_ENV)
        return None
    return path


def clear_multiprocess_dir(path: Path) -> None:
    """Create ``path`` if missing and delete the metric files (``*.db``) of an earlier run in it.

    Must run before any gateway process of this run creates its metrics: prometheus_client sums
    every file in the folder, so an earlier run's counts would be added to this one's (and a
    reused pid would continue from them). Only ``*.db`` files are removed: the folder may be a
    mounted volume the deployment owns."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def forget_dead_processes(path: Path, live_pids: Collection[int]) -> list[int]:
    """``mark_process_dead`` for every process that left live-gauge files in ``path`` (a
    multiprocess folder) and whose pid is not in ``live_pids``; returns those pids, sorted.

    Only "live*" gauges (one value per running process) are dropped; counters and histograms of a
    dead process stay in the sum on purpose. The gateway defines no gauge today, so this is
    bookkeeping for one added later, done by the process that supervises the gateway's."""
    dead = set()
    for file in path.glob("gauge_live*_*.db"):  # gauge_<mode>_<pid>.db
        tail = file.stem.rsplit("_", 1)[-1]
        if tail.isdigit() and int(tail) not in live_pids:
            dead.add(int(tail))
    for pid in dead:
        mark_process_dead(pid, str(path))
    return sorted(dead)


class _RedisCollector(Collector):
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def describe(self) -> Iterator[Metric]:
        # Without this the registry calls collect() at registration, i.e. reads Redis at startup.
        yield from self._families()

    def _families(self) -> tuple[GaugeMetricFamily, HistogramMetricFamily, CounterMetricFamily, GaugeMetricFamily]:
        depth = GaugeMetricFamily("framers_queue_jobs", "Jobs per queue and state", labels=["queue", "state"])
        durations = HistogramMetricFamily(
            "framers_job_duration_seconds", "Duration of job runs", labels=["queue", "outcome"]
        )
        frames = CounterMetricFamily("framers_frames_processed", "Video frames processed by jobs", labels=["queue"])
        up = GaugeMetricFamily("framers_redis_up", "Whether the gateway could read Redis at this scrape")
        return depth, durations, frames, up

    def collect(self) -> Iterator[Metric]:
        depth, durations, frames, up = self._families()
        try:
            for queue, states in queue_depths(self.redis).items():
                for state, value in states.items():
                    depth.add_metric([queue, state], value)
            stats = read_job_metrics(self.redis)
            for (queue, outcome), hist in sorted(stats.durations.items()):
                buckets = sorted(hist.buckets.items(), key=lambda kv: float(kv[0]))
                durations.add_metric([queue, outcome], buckets=buckets, sum_value=hist.sum)
            for queue, count in sorted(stats.frames.items()):
                frames.add_metric([queue], count)
            up.add_metric([], 1)
        except RedisError as exc:
            log.warning("metrics: Redis unavailable: %s", exc)
            up.add_metric([], 0)
        yield from (depth, durations, frames, up)


class GatewayMetrics:
    """The gateway's metrics; one registry per app, so several apps in one process (tests) do not
    collide (in multiprocess mode they would: values are kept per process, not per registry).

    ``multiprocess_dir``: None, /metrics renders this process's registry (one gateway process);
    a folder (see ``active_multiprocess_dir()``), /metrics renders the sum of the metric files there
    plus, once, the Redis families. The folder is created if missing, before the first value
    file is opened."""

    def __init__(self, redis: Redis, multiprocess_dir: Path | None = None) -> None:
        if multiprocess_dir is not None:
            multiprocess_dir.mkdir(parents=True, exist_ok=True)
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "framers_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "framers_http_request_duration_seconds",
            "Time to the end of the response",
            ["method", "route"],
            registry=self.registry,
        )
        self.uploads = Counter("framers_uploads", "Upload attempts by outcome", ["outcome"], registry=self.registry)
        self.upload_bytes = Counter("framers_upload_bytes", "Bytes of accepted uploads", registry=self.registry)
        self.multiprocess_dir = multiprocess_dir
        if multiprocess_dir is None:
            self._scraped = self.registry
        else:
            # Not self.registry: its counters are this process's share, already in the files.
            self._scraped = CollectorRegistry()  # no auto-describe: no file reads at startup
            MultiProcessCollector(self._scraped, path=str(multiprocess_dir))
        self._scraped.register(_RedisCollector(redis))

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4) of everything above, read now."""
        return generate_latest(self._scraped)


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware) so streamed downloads are not buffered or delayed."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        method = scope.get("method", "")  # before HEAD is routed as GET (service.head)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # The route template ("/jobs/{video_id}"), never the raw path: bounded label values.
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(method, path, str(status)).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - started)
