"""The pieces of ``bench/service_load.py`` that start ``framers serve`` and talk to it: a service
on a free port until ``/readyz`` is 200, uploads, job polling, the serial and open-loop status
probes, percentiles."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

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


