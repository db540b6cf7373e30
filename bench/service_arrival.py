"""``bench/service_load.py --arrival-rate``: jobs at a steady rate, RQ's waiting list sampled over
time (see that script's docstring)."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from redis import Redis
from service_harness import (
    Service,
    percentiles,
    running_service,
    upload,
    upload_many,
    wait_done,
)
from throughput import CACHE_DIR

# ---------------------------------------------------------------- arrival mode


@dataclass
class ArrivalConfig:
    rate_per_min: float
    seconds: float
    sample_s: float
    selector: str
    drain_timeout_s: float


async def sample_queue(conn: Redis, queue: str, every_s: float, stop: asyncio.Event,
                       started: float) -> list[dict[str, float]]:
    """Waiting (LLEN of RQ's list) and running (ZCARD of RQ's started registry) jobs over time."""
    samples = []
    while not stop.is_set():
        with conn.pipeline() as pipe:
            pipe.llen(f"rq:queue:{queue}")
            pipe.zcard(f"rq:wip:{queue}")
            waiting, running = pipe.execute()
        samples.append({"t": time.perf_counter() - started, "waiting": int(waiting), "running": int(running)})
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
    return samples


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute (0 with fewer than 2 points)."""
    if len(points) < 2:
        return 0.0
    mean_t = statistics.fmean(p[0] for p in points)
    mean_v = statistics.fmean(p[1] for p in points)
    var = sum((p[0] - mean_t) ** 2 for p in points)
    return 60 * sum((p[0] - mean_t) * (p[1] - mean_v) for p in points) / var if var else 0.0


async def run_arrivals(service: Service, redis_url: str, clip: bytes, cfg: ArrivalConfig) -> dict[str, Any]:
    """Warm-up job, then open-loop submissions at cfg.rate_per_min while sampling the queue."""
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=20)
    conn = Redis.from_url(redis_url)
    async with httpx.AsyncClient(base_url=service.url, timeout=120, limits=limits) as client:
        warm = await upload_many(client, clip, 1, cfg.selector)
        if not warm["ids"]:
            raise RuntimeError(f"warm-up upload refused: HTTP {warm['codes']}")
        await wait_done(client, warm["ids"], cfg.drain_timeout_s)
        loop = asyncio.get_running_loop()
        total = max(1, int(cfg.rate_per_min * cfg.seconds / 60))
        started = time.perf_counter()
        first = loop.time() + 0.1
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_queue(conn, "compress", cfg.sample_s, stop, started))

        async def one(i: int) -> tuple[int, float, str | None]:
            await asyncio.sleep(max(0.0, first + 60 * i / cfg.rate_per_min - loop.time()))
            return await upload(client, clip, f"arrival{i}.mp4", cfg.selector)

        answers = await asyncio.gather(*(one(i) for i in range(total)))
        last_arrival = time.perf_counter() - started
        ids = [vid for _, _, vid in answers if vid]
        states, _ = await wait_done(client, ids, cfg.drain_timeout_s)
        drained = time.perf_counter() - started
        stop.set()
        samples = await sampler
    conn.close()
    return arrival_summary(cfg, answers, states, samples, last_arrival, drained)


def arrival_summary(cfg: ArrivalConfig, answers: list[tuple[int, float, str | None]], states: dict[str, Any],
                    samples: list[dict[str, float]], last_arrival: float, drained: float) -> dict[str, Any]:
    done = [s for s in states.values() if s.get("status") == "done"]
    compress_s = [float(s["compress_seconds"]) for s in done if s.get("compress_seconds") is not None]
    window = [(s["t"], s["waiting"]) for s in samples if s["t"] <= last_arrival]
    return {
        "rate_per_min": cfg.rate_per_min,
        "arrival_seconds": cfg.seconds,
        "submitted": len(answers),
        "accepted": sum(1 for code, _, _ in answers if code == 202),
        "done": len(done),
        "failed": sum(1 for s in states.values() if s.get("status") == "failed"),
        "accept_s": percentiles([s for _, s, _ in answers]),
        "compress_seconds_median": statistics.median(compress_s) if compress_s else None,
        "waiting_max": max((s["waiting"] for s in samples), default=0),
        "waiting_at_last_arrival": window[-1][1] if window else 0,
        "waiting_growth_per_min": slope_per_min(window),
        "drain_after_last_arrival_s": drained - last_arrival,
        "completions_per_min": 60 * len(done) / drained if drained else 0.0,
        "samples": samples,
    }


def run_arrival_one(workers: int, clip: bytes, cfg: ArrivalConfig) -> dict[str, Any]:
    """One fresh service with its own Redis (so the queue can be read) for one arrival run."""
    from service.redis_server import RedisServer

    CACHE_DIR.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="framers-arrivals-", dir=CACHE_DIR.parent) as tmp:
        redis = RedisServer(Path(tmp) / "redis", persist=False)
        redis_url = redis.start()
        try:
            with running_service(workers, Path(tmp), redis_url=redis_url) as service:
                return asyncio.run(run_arrivals(service, redis_url, clip, cfg))
        except RuntimeError as exc:
            return {"error": str(exc)}
        finally:
            redis.stop()


def arrival_markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [
        f"Queue depth at a steady arrival rate (loopback, client on the same machine): job clip "
        f"{report['job_clip']}, {cfg['rate_per_min']:g} jobs/min for {cfg['seconds']:g} s, options "
        f"{'selector=' + cfg['selector'] if cfg['selector'] else 'service defaults'}; waiting = "
        f"`LLEN rq:queue:compress` every {cfg['sample_s']:g} s. Load average "
        f"{report['machine_before']['loadavg'][0]:.1f} at start, {report['machine_after']['loadavg'][0]:.1f} "
        f"at the end; {report['seconds']:.0f} s in all.",
        "",
        "| workers | jobs done / submitted | compress s (median) | completions/min | waiting: max, at last arrival, "
        "growth/min | drain after last arrival s |",
        "|---:|---|---:|---:|---|---:|",
    ]
    for n, r in report["by_workers"].items():
        if "error" in r:
            lines.append(f"| {n} | {r['error']} | | | | |")
            continue
        cs = f"{r['compress_seconds_median']:.2f}" if r["compress_seconds_median"] else "–"
        lines.append(
            f"| {n} | {r['done']} / {r['submitted']} | {cs} | {r['completions_per_min']:.1f} | "
            f"{r['waiting_max']}, {r['waiting_at_last_arrival']}, {r['waiting_growth_per_min']:+.1f} | "
            f"{r['drain_after_last_arrival_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


