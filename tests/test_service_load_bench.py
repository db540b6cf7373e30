"""bench/service_load.py's arrival mode: the queue sampler reads RQ's real keys, and the
summary's growth rate is a least-squares slope."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from redis import Redis
from rq import Queue

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    sys.path.insert(0, str(ROOT / "bench"))  # service_load imports its sibling `throughput`
    try:
        spec = importlib.util.spec_from_file_location("bench_service_load", ROOT / "bench" / "service_load.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_slope_per_min(bench: ModuleType) -> None:
    assert bench.slope_per_min([(0, 0), (30, 1), (60, 2)]) == pytest.approx(2.0)
    assert bench.slope_per_min([(0, 5), (60, 5)]) == 0.0
    assert bench.slope_per_min([(0, 5)]) == 0.0


def test_sampler_reads_rq_waiting_and_running_jobs(bench: ModuleType, redis_url: str) -> None:
    conn = Redis.from_url(redis_url)
    queue = Queue("compress", connection=conn)
    for i in range(3):
        queue.enqueue("workers.jobs.compress_video", f"v{i}", job_id=f"compress-v{i}")
    conn.zadd(queue.started_job_registry.key, {"compress-x:exec": 1e12})  # one running job

    async def sample() -> list[dict[str, Any]]:
        stop = asyncio.Event()
        task = asyncio.create_task(bench.sample_queue(conn, "compress", 0.05, stop, 0.0))
        await asyncio.sleep(0.2)
        stop.set()
        return await task

    samples = asyncio.run(sample())
    conn.flushdb()
    assert samples and all(s["waiting"] == 3 and s["running"] == 1 for s in samples)
