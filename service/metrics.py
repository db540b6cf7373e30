"""Prometheus metrics of the gateway: requests, plus queue depth and job metrics read from Redis.

Job durations and frames processed are recorded by the workers in Redis (core.job_metrics)
because workers may run on other machines; the collector below turns them into Prometheus
families at scrape time, together with the current queue depths.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.job_metrics import read_job_metrics
from core.queues import queue_depths

log = logging.getLogger(__name__)


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
    """One registry per app, so several apps in one process (tests) do not collide."""

    def __init__(self, redis: Redis) -> None:
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
        self.registry.register(_RedisCollector(redis))

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
