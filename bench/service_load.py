"""Bounded loopback load test of ``framers serve`` (gateway + RQ workers + its own Redis).

Per worker count (default 1 and 2) a fresh ``framers serve --data-dir <tmp> --workers N --port <free>``
is started and, after ``/readyz`` answers 200 and one warm-up job is done:

1. ``GET /jobs/{id}`` latency at a steady open-loop rate (default 50 req/s for 20 s; requests are
   sent on schedule whether or not earlier ones returned), with the workers idle; p50/p95/p99/max.
2. Concurrent uploads: ``--uploads`` small clips POSTed at once; every answer must be 202; time
   to accept each and all. While these jobs run, the same latency probe again (workers busy).
3. Throughput: ``--jobs`` compress jobs of a small real clip submitted at once; completed jobs per
   minute from the first submit to the last job done.
Finally: every id accepted in any phase must reach ``done`` (nothing lost, nothing failed).
With ``--callbacks`` every upload carries a ``callback_url`` to a receiver on loopback
(bench/hook_receiver.py, signatures checked) and every accepted id must get its signed
``compress.done`` event (deduplicated by event id): none lost.

Arrival mode (``--arrival-rate`` jobs/min; replaces the phases above): after the warm-up job,
compress jobs are submitted open-loop at a steady rate for ``--arrival-seconds`` (job i at
start + i/rate, whatever happened before) with the service's default options unless
``--selector`` is given; every ``--sample-interval`` s the depth of RQ's waiting list
(``LLEN rq:queue:compress``) and the running jobs (``ZCARD rq:wip:compress``) are read from the
service's Redis, until every job is done. Reported: depth over time, its growth per minute
(least-squares slope over the arrival window), max depth, time to drain after the last arrival,
completions per minute, and the median compress seconds of a job.

The client runs on the same machine as the service, so it competes with it for CPU.

    .venv/bin/python bench/service_load.py --workers 1,2 --json bench/results/service_load.json \\
        --markdown bench/results/service_load.md
    .venv/bin/python bench/service_load.py --workers 1,2 --arrival-rate 6 --arrival-seconds 90 \\
        --json bench/results/service_arrivals.json --markdown bench/results/service_arrivals.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from redis import Redis
from throughput import CACHE_DIR, DEFAULT_SOURCE, cached_video, machine_info

ROOT = Path(__file__).resolve().parents[1]
FRAMERS = Path(sys.executable).with_name("framers")
TERMINAL = ("done", "failed", "canceled")
WEBHOOK_SECRET = "bench-webhook-secret"


# ---------------------------------------------------------------- service process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    started_s: float  # seconds from launch until /readyz answered 200


@contextmanager
def running_service(
    workers: int,
    data_dir: Path,
    ready_timeout_s: float = 180.0,
    redis_url: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Service]:
    """``framers serve`` in its own session; stopped with SIGINT (it stops its workers and, unless
    ``redis_url`` names one to use instead, its own Redis). ``extra_env``: more FRAMERS_* settings."""
    port = free_port()
    log = data_dir / "serve.log"
    cmd = [str(FRAMERS), "serve", "--data-dir", str(data_dir), "--workers", str(workers), "--port", str(port)]
    if redis_url:
        cmd += ["--redis-url", redis_url]
    env = {**os.environ, "FRAMERS_LOG_LEVEL": "WARNING", **(extra_env or {})}
    launched = time.perf_counter()
    with log.open("wb") as sink:
        process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                   start_new_session=True)
    service = Service(f"http://127.0.0.1:{port}", process, log, 0.0)
    try:
        wait_ready(service, ready_timeout_s)
        service.started_s = time.perf_counter() - launched
        yield service
    finally:
        stop_service(process)


def wait_ready(service: Service, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=service.url, timeout=5) as client:
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise RuntimeError(f"framers serve exited ({service.process.returncode}): {tail(service.log)}")
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
    raise RuntimeError(f"framers serve not ready after {timeout_s:.0f} s: {tail(service.log)}")


def stop_service(process: subprocess.Popen[bytes], grace_s: float = 40.0) -> None:
    """SIGINT to the serve process we started (by pid), SIGKILL to it only after a grace period."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "no log"


# ---------------------------------------------------------------- HTTP helpers


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "max": ordered[-1],
            "mean": statistics.fmean(ordered)}


CALLBACK_URL: dict[str, str] = {}  # set by --callbacks: {"url": receiver URL}


async def upload(client: httpx.AsyncClient, clip: bytes, name: str, selector: str) -> tuple[int, float, str | None]:
    """POST /compress (no selector field: the service's default options; with the receiver's
    callback_url under --callbacks); (status code, seconds, id or None)."""
    started = time.perf_counter()
    fields = {**({"selector": selector} if selector else {}),
              **({"callback_url": CALLBACK_URL["url"]} if CALLBACK_URL else {})}
    response = await client.post("/compress", files={"file": (name, clip, "video/mp4")}, data=fields)
    seconds = time.perf_counter() - started
    video_id = response.json().get("id") if response.status_code == 202 else None
    return response.status_code, seconds, video_id


async def upload_many(client: httpx.AsyncClient, clip: bytes, count: int, selector: str) -> dict[str, Any]:
    """``count`` uploads at once; codes, per-upload seconds, wall seconds, accepted ids."""
    started = time.perf_counter()
    answers = await asyncio.gather(*(upload(client, clip, f"clip{i}.mp4", selector) for i in range(count)))
    return {
        "count": count,
        "codes": [code for code, _, _ in answers],
        "accept_s": percentiles([s for _, s, _ in answers]),
        "wall_s": time.perf_counter() - started,
        "ids": [vid for _, _, vid in answers if vid],
        "submitted_at": started,
    }


async def job_states(client: httpx.AsyncClient, ids: list[str]) -> dict[str, dict[str, Any]]:
    answers = await asyncio.gather(*(client.get(f"/jobs/{vid}") for vid in ids))
    return {vid: (r.json() if r.status_code == 200 else {"status": f"http {r.status_code}"})
            for vid, r in zip(ids, answers, strict=True)}


async def wait_done(client: httpx.AsyncClient, ids: list[str], timeout_s: float) -> tuple[dict[str, Any], float]:
    """Poll until every id is terminal (or the timeout); final records and the time it took."""
    started = time.perf_counter()
    states: dict[str, dict[str, Any]] = {}
    while time.perf_counter() - started < timeout_s:
        states = await job_states(client, ids)
        if all(s.get("status") in TERMINAL for s in states.values()):
            break
        await asyncio.sleep(0.25)
    return states, time.perf_counter() - started


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far; None off Linux or when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def serial_probe(client: httpx.AsyncClient, path: str, count: int = 100,
                       gateway_pid: int | None = None) -> dict[str, Any]:
    """Closed loop, one request at a time: the gateway's own time per request, without queueing,
    and (``gateway_pid``: the process uvicorn serves in) its CPU time per request."""
    latencies = []
    cpu0 = process_cpu_s(gateway_pid) if gateway_pid else None
    for _ in range(count):
        t0 = time.perf_counter()
        response = await client.get(path)
        if response.status_code == 200:
            latencies.append(time.perf_counter() - t0)
    cpu1 = process_cpu_s(gateway_pid) if gateway_pid else None
    cpu_ms = 1000 * (cpu1 - cpu0) / count if cpu0 is not None and cpu1 is not None else None
    return {"requests": count, "ok": len(latencies), "gateway_cpu_ms_per_request": cpu_ms,
            "latency_ms": {k: 1000 * v for k, v in percentiles(latencies).items()}}


async def latency_probe(client: httpx.AsyncClient, path: str, rate: float, seconds: float) -> dict[str, Any]:
    """Open loop: request i is sent at start + i/rate whatever happened to the earlier ones.

    The requests go through aiohttp, not the phases' httpx client: on this 2-core machine httpx's
    connection pool cost ~3 ms of CPU per request at 200 req/s and, once one answer was late,
    grew with the open connections until the client itself lagged by seconds (measured: client
    87 % of a core, gateway 15 %, p50 50 s); aiohttp needs ~0.5 ms, so the figures are the
    gateway's."""
    import aiohttp

    loop = asyncio.get_running_loop()
    start = loop.time() + 0.1
    total = int(rate * seconds)
    headers = {k: v for k, v in client.headers.items() if k.lower() in ("x-api-key", "authorization")}
    async with aiohttp.ClientSession(str(client.base_url).rstrip("/"), headers=headers,
                                     connector=aiohttp.TCPConnector(limit=200)) as session:

        async def one(i: int) -> tuple[float, float, int]:
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            lag = loop.time() - (start + i / rate)
            t0 = time.perf_counter()
            try:
                async with session.get(path, timeout=aiohttp.ClientTimeout(total=60)) as response:
                    await response.read()
                    code = response.status
            except (aiohttp.ClientError, TimeoutError):
                code = 0
            return time.perf_counter() - t0, lag, code

        results = await asyncio.gather(*(one(i) for i in range(total)))
    ok = [lat for lat, _, code in results if code == 200]
    return {
        "rate": rate,
        "seconds": seconds,
        "requests": total,
        "ok": len(ok),
        "errors": total - len(ok),
        "latency_ms": {k: 1000 * v for k, v in percentiles(ok).items()},
        "client_lag_ms_p99": 1000 * percentiles([lag for _, lag, _ in results])["p99"],
    }


# ---------------------------------------------------------------- phases


@dataclass
class Config:
    rate: float
    probe_s: float
    uploads: int
    jobs: int
    selector: str
    drain_timeout_s: float


async def run_phases(service: Service, upload_clip: bytes, job_clip: bytes, cfg: Config) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(base_url=service.url, timeout=60, limits=limits) as client:
        warm = await upload_many(client, job_clip, 1, cfg.selector)
        if not warm["ids"]:
            raise RuntimeError(f"warm-up upload refused: HTTP {warm['codes']}")
        await wait_done(client, warm["ids"], cfg.drain_timeout_s)
        probe_path = f"/jobs/{warm['ids'][0]}"
        # with FRAMERS_GATEWAY_WORKERS > 1 uvicorn serves in child processes: no per-request CPU
        one_process = os.environ.get("FRAMERS_GATEWAY_WORKERS", "1") == "1"
        serial = await serial_probe(client, probe_path, count=500,
                                    gateway_pid=service.process.pid if one_process else None)
        idle = await latency_probe(client, probe_path, cfg.rate, cfg.probe_s)
        burst = await upload_many(client, upload_clip, cfg.uploads, cfg.selector)
        busy = await latency_probe(client, probe_path, cfg.rate, cfg.probe_s)
        await wait_done(client, burst["ids"], cfg.drain_timeout_s)
        jobs = await upload_many(client, job_clip, cfg.jobs, cfg.selector)
        job_final, _ = await wait_done(client, jobs["ids"], cfg.drain_timeout_s)
        jobs_finished = time.perf_counter()
        all_ids = warm["ids"] + burst["ids"] + jobs["ids"]
        final, _ = await wait_done(client, all_ids, cfg.drain_timeout_s)
    webhooks = await wait_events(all_ids, cfg.drain_timeout_s) if RECEIVER else None
    return {
        "webhooks": webhooks,
        "ready_s": service.started_s,
        "latency_serial": serial,
        "latency_idle": idle,
        "uploads": strip_ids(burst),
        "latency_busy": busy,
        "throughput": throughput_summary(jobs, job_final, jobs_finished),
        "drain": drain_summary(all_ids, [*warm["codes"], *burst["codes"], *jobs["codes"]], final),
    }


RECEIVER: list[Any] = []  # the HookReceiver under --callbacks


async def wait_events(ids: list[str], timeout_s: float) -> dict[str, Any]:
    """Wait until every id's compress.done event arrived (or the timeout); the receiver's summary."""
    started = time.perf_counter()
    while RECEIVER[0].summary(ids)["lost"] and time.perf_counter() - started < timeout_s:
        await asyncio.sleep(0.25)
    return dict(RECEIVER[0].summary(ids), wait_s=time.perf_counter() - started)


def strip_ids(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k not in ("ids", "submitted_at")} | {"accepted": len(batch["ids"])}


def throughput_summary(
    batch: dict[str, Any], states: dict[str, dict[str, Any]], finished_at: float
) -> dict[str, Any]:
    """Jobs per minute from the first submit until the client saw every job done (polled every 0.25 s)."""
    done = [s for s in states.values() if s.get("status") == "done"]
    compress_s = [float(s["compress_seconds"]) for s in done if s.get("compress_seconds") is not None]
    span = finished_at - batch["submitted_at"]
    return {
        "jobs": batch["count"],
        "done": len(done),
        "wall_s": span,
        "jobs_per_min": 60 * len(done) / span,
        "compress_seconds_median": statistics.median(compress_s) if compress_s else None,
        "accept_s": batch["accept_s"],
    }


def drain_summary(ids: list[str], codes: list[int], states: dict[str, dict[str, Any]]) -> dict[str, Any]:
    statuses = [s.get("status") for s in states.values()]
    return {
        "submitted": len(codes),
        "accepted": len(ids),
        "non_202": sum(1 for c in codes if c != 202),
        "done": statuses.count("done"),
        "failed": statuses.count("failed"),
        "not_terminal": sum(1 for s in statuses if s not in TERMINAL),
        "errors": sorted({str(s.get("error")) for s in states.values() if s.get("status") == "failed"}),
        "nothing_lost": len(ids) == len(codes) and statuses.count("done") == len(ids),
    }


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


# ---------------------------------------------------------------- report


def markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [
        f"Service load (loopback, client on the same machine): upload clip {report['upload_clip']}, "
        f"job clip {report['job_clip']}, selector `{cfg['selector']}`; GET /jobs/{{id}} at "
        f"{cfg['rate']:g} req/s for {cfg['probe_s']:g} s (open loop). Total {report['seconds']:.0f} s.",
        "",
        "| workers | GET /jobs one at a time, p50 / p99 ms | GET /jobs p50 / p95 / p99 / max ms, idle | "
        "same, during uploaded jobs | errors | "
        f"{cfg['uploads']} uploads at once: 202s, accept p50 / max s | {cfg['jobs']} jobs: jobs/min "
        "(compress s median) | drain: done / accepted, failed, lost | compress.done events: received / "
        "expected, lost, duplicates, bad signatures |",
        "|---:|---|---|---|---:|---|---|---|---|",
    ]
    for n, r in report["by_workers"].items():
        lines.append(row(n, r))
    return "\n".join(lines) + "\n"


def row(workers: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"| {workers} | {r['error']} | | | | | | | |"

    def lat(p: dict[str, Any]) -> str:
        m = p["latency_ms"]
        return f"{m['p50']:.1f} / {m['p95']:.1f} / {m['p99']:.1f} / {m['max']:.0f}" if m else "–"

    up, tp, dr = r["uploads"], r["throughput"], r["drain"]
    jpm = f"{tp['jobs_per_min']:.1f}" if tp["jobs_per_min"] else "–"
    cs = f"{tp['compress_seconds_median']:.2f}" if tp["compress_seconds_median"] else "–"
    lost = dr["accepted"] - dr["done"] - dr["failed"]
    serial = r["latency_serial"]["latency_ms"]
    return (
        f"| {workers} | {serial['p50']:.1f} / {serial['p99']:.1f} | "
        f"{lat(r['latency_idle'])} | {lat(r['latency_busy'])} | "
        f"{r['latency_idle']['errors'] + r['latency_busy']['errors']} | "
        f"{up['codes'].count(202)}/{up['count']}, {up['accept_s']['p50']:.2f} / {up['accept_s']['max']:.2f} | "
        f"{jpm} ({cs}) | {dr['done']} / {dr['accepted']}, {dr['failed']}, {lost} | {events(r.get('webhooks'))} |"
    )


def events(w: dict[str, Any] | None) -> str:
    if not w:
        return "off"
    return f"{w['received']} / {w['expected']}, {w['lost']}, {w['duplicates']}, {w['bad_signatures']}"


# ---------------------------------------------------------------- CLI


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="worker counts, one fresh service each")
    parser.add_argument("--rate", type=float, default=50.0, help="GET /jobs/{id} requests per second")
    parser.add_argument("--probe-seconds", type=float, default=20.0)
    parser.add_argument("--uploads", type=int, default=8, help="uploads sent at once")
    parser.add_argument("--jobs", type=int, default=12, help="compress jobs for the throughput phase")
    parser.add_argument("--selector", default="uniform")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--upload-res", default="240p")
    parser.add_argument("--job-res", default="240p")
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--arrival-rate", type=float, help="jobs/min: run the arrival mode instead of the phases")
    parser.add_argument("--arrival-seconds", type=float, default=90.0)
    parser.add_argument("--sample-interval", type=float, default=1.0)
    parser.add_argument("--callbacks", action="store_true",
                        help="uploads carry a callback_url to a signed-webhook receiver on loopback")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.arrival_rate:
        main_arrivals(args)
        return
    if args.callbacks:
        from hook_receiver import HookReceiver

        RECEIVER.append(HookReceiver(WEBHOOK_SECRET))
        CALLBACK_URL["url"] = RECEIVER[0].url
    upload_path = cached_video(args.source, args.upload_res, args.frames)
    job_path = cached_video(args.source, args.job_res, args.frames)
    cfg = Config(args.rate, args.probe_seconds, args.uploads, args.jobs, args.selector, args.drain_timeout)
    started, before = time.perf_counter(), machine_info()
    by_workers: dict[str, Any] = {}
    for n in (int(w) for w in args.workers.split(",")):
        print(f"workers={n}", flush=True)
        by_workers[str(n)] = run_one(n, upload_path.read_bytes(), job_path.read_bytes(), cfg)
        print(json.dumps(by_workers[str(n)], indent=1), flush=True)
    report = {
        "upload_clip": f"{upload_path.name} ({upload_path.stat().st_size} B)",
        "job_clip": f"{job_path.name} ({job_path.stat().st_size} B)",
        "config": vars(cfg), "callbacks": bool(args.callbacks), "seconds": time.perf_counter() - started,
        "machine_before": before, "machine_after": machine_info(), "by_workers": by_workers,
    }
    text = markdown(report)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)


def main_arrivals(args: argparse.Namespace) -> None:
    """The arrival mode: one fresh service per worker count; report as JSON and markdown."""
    job_path = cached_video(args.source, args.job_res, args.frames)
    # --selector's default (uniform) is for the phases; the arrival mode uses the service's
    # defaults unless a selector is named explicitly.
    selector = args.selector if "--selector" in sys.argv else ""
    cfg = ArrivalConfig(args.arrival_rate, args.arrival_seconds, args.sample_interval, selector, args.drain_timeout)
    started, before = time.perf_counter(), machine_info()
    by_workers: dict[str, Any] = {}
    for n in (int(w) for w in args.workers.split(",")):
        print(f"workers={n}", flush=True)
        by_workers[str(n)] = run_arrival_one(n, job_path.read_bytes(), cfg)
        print(json.dumps({k: v for k, v in by_workers[str(n)].items() if k != "samples"}, indent=1), flush=True)
    report = {"job_clip": f"{job_path.name} ({job_path.stat().st_size} B)", "config": vars(cfg),
              "seconds": time.perf_counter() - started, "machine_before": before, "machine_after": machine_info(),
              "by_workers": by_workers}
    text = arrival_markdown(report)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)


def run_one(workers: int, upload_clip: bytes, job_clip: bytes, cfg: Config) -> dict[str, Any]:
    CACHE_DIR.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="framers-load-", dir=CACHE_DIR.parent) as tmp:
        try:
            env = ({"FRAMERS_WEBHOOK_SECRET": WEBHOOK_SECRET, "FRAMERS_CALLBACK_ALLOWED_HOSTS": "127.0.0.1"}
                   if RECEIVER else None)
            with running_service(workers, Path(tmp), extra_env=env) as service:
                return asyncio.run(run_phases(service, upload_clip, job_clip, cfg))
        except RuntimeError as exc:
            return {"error": str(exc)}


if __name__ == "__main__":
    main()
