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
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from service_arrival import ArrivalConfig, arrival_markdown, run_arrival_one, sample_queue, slope_per_min
from service_harness import (
    CALLBACK_URL,
    ROOT,
    TERMINAL,
    WEBHOOK_SECRET,
    Service,
    free_port,
    latency_probe,
    percentiles,
    running_service,
    serial_probe,
    upload_many,
    wait_done,
)
from throughput import CACHE_DIR, DEFAULT_SOURCE, cached_video, machine_info

from core.settings import Settings
from service.serve import gateway_processes

__all__ = ["ROOT", "ArrivalConfig", "free_port", "percentiles", "sample_queue", "slope_per_min"]

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
        # with several gateway processes (the default on >= 2 cores) uvicorn serves in child
        # processes: no per-request CPU figure
        one_process = gateway_processes(Settings()) == 1
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
    write_report(args, report, text)


def write_report(args: argparse.Namespace, report: dict[str, Any], text: str) -> None:
    """The report as JSON (--json) and its tables as markdown (--markdown), where asked."""
    for path, content in ((args.json, json.dumps(report, indent=1)), (args.markdown, text)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)


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
    write_report(args, report, text)


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
