"""Peak memory of compress and reconstruct: does it grow with the length of the video?

Every measurement runs in a fresh child process (this script with ``--child``), which reports its
own peak resident set size (``VmHWM``, the kernel's high-water mark behind ``ru_maxrss``). Each method
runs on a short and a long version of the same real clip (default 480p, 64 vs 512 frames, i.e.
8x longer); a streaming implementation shows a growth ratio near 1. ``import`` is a child that
only imports the codec (the interpreter + libraries floor); ``decode`` and ``decode+encode`` are
the same baselines as in ``throughput.py``.

    .venv/bin/python bench/memory.py --resolution 480p --short 64 --long 512 \\
        --json bench/results/memory.json --markdown bench/results/memory.md
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from throughput import (
    CACHE_DIR,
    DEFAULT_SOURCE,
    RECONSTRUCTORS,
    SELECTORS,
    available_reconstructors,
    available_selectors,
    cached_video,
    decode_encode,
    decode_only,
    machine_info,
    pick_bundle,
    skipped_lines,
)

from framers.pipeline import compress, reconstruct

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- child side


def run_op(op: str, video: Path, bundle: Path | None, work: Path) -> int:
    """Run one operation; ``op`` is ``import``, ``decode``, ``decode+encode``, ``compress/<sel>``
    or ``reconstruct/<rec>`` (reads ``bundle``). Returns the number of frames handled."""
    if op == "import":
        return 0
    if op == "decode":
        return decode_only(video)
    if op == "decode+encode":
        return decode_encode(video, work / "decode_encode.mp4")
    kind, name = op.split("/", 1)
    if kind == "compress":
        return compress(video, work / "bundle", selector=name).frames
    if kind == "reconstruct" and bundle is not None:
        return reconstruct(bundle, work / "out.mp4", reconstructor=name).frames
    raise ValueError(f"unknown op {op!r}")


def peak_rss_mib() -> float:
    """Peak RSS of this process (``VmHWM``, KiB).

    Not ``ru_maxrss``: Linux carries the parent's peak across fork+exec into it, so a child of
    a big parent would report the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="framers-mem-", dir=CACHE_DIR.parent) as tmp:
        frames = run_op(args.child, args.video, args.bundle, Path(tmp))
    result = {"frames": frames, "seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib()}
    print(json.dumps(result))


# ---------------------------------------------------------------- parent side


def measure(op: str, video: Path, bundle: Path | None) -> dict[str, Any]:
    """Run ``op`` in a fresh interpreter and return what it reports."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", op, "--video", str(video)]
    if bundle is not None:
        cmd += ["--bundle", str(bundle)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"rc {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def reference_bundles(video: Path, selectors: list[str], work: Path) -> dict[str, Path]:
    bundles = {}
    for sel in selectors:
        bundles[sel] = work / f"{video.stem}_{sel}"
        compress(video, bundles[sel], selector=sel)
    return bundles


def plan_ops(selectors: list[str], reconstructors: list[str]) -> list[str]:
    ops = ["import", "decode", "decode+encode"]
    ops += [f"compress/{s}" for s in selectors]
    ops += [f"reconstruct/{r}" for r in reconstructors]
    return ops


def measure_length(
    video: Path, ops: list[str], selectors: list[str], runs: int, work: Path
) -> dict[str, dict[str, Any]]:
    """Peak RSS (max over ``runs``) of every op on one video."""
    bundles = reference_bundles(video, selectors, work)
    out: dict[str, dict[str, Any]] = {}
    for op in ops:
        bundle, note = None, ""
        if op.startswith("reconstruct/"):
            sel = pick_bundle(op.split("/", 1)[1], bundles)
            if sel is None:
                out[op] = {"error": "no compatible bundle"}
                continue
            bundle, note = bundles[sel], f"{sel} bundle"
        samples = [measure(op, video, bundle) for _ in range(runs)]
        good = [s for s in samples if "error" not in s]
        out[op] = samples[0] if not good else max(good, key=lambda s: s["peak_rss_mib"])
        out[op]["note"] = note
        print(f"  {video.name} {op:22} {out[op].get('peak_rss_mib', float('nan')):7.1f} MiB", flush=True)
    return out


def rows_for(short: dict[str, dict[str, Any]], long: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    base_short = short["import"].get("peak_rss_mib", 0.0)
    base_long = long["import"].get("peak_rss_mib", 0.0)
    rows = []
    for op in short:
        s, g = short[op], long.get(op, {})
        row: dict[str, Any] = {"method": op, "note": s.get("note", "")}
        if "peak_rss_mib" in s and "peak_rss_mib" in g:
            row |= {
                "short_mib": s["peak_rss_mib"],
                "long_mib": g["peak_rss_mib"],
                "growth": g["peak_rss_mib"] / s["peak_rss_mib"],
                "short_above_import_mib": s["peak_rss_mib"] - base_short,
                "long_above_import_mib": g["peak_rss_mib"] - base_long,
                "short_seconds": s["seconds"],
                "long_seconds": g["seconds"],
            }
        else:
            row["error"] = s.get("error") or g.get("error")
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]], short_frames: int, long_frames: int) -> str:
    lines = [
        f"| method | peak RSS {short_frames} f (MiB) | peak RSS {long_frames} f (MiB) | growth × | "
        f"above import, {short_frames} f → {long_frames} f (MiB) | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "growth" not in r:
            lines.append(f"| {r['method']} | – | – | – | – | {r.get('error', '')} |")
            continue
        lines.append(
            f"| {r['method']} | {r['short_mib']:.0f} | {r['long_mib']:.0f} | {r['growth']:.2f} | "
            f"{r['short_above_import_mib']:.0f} → {r['long_above_import_mib']:.0f} | {r['note']} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--resolution", default="480p")
    parser.add_argument("--short", type=int, default=64, help="frames of the short video")
    parser.add_argument("--long", type=int, default=512, help="frames of the long video")
    parser.add_argument("--runs", type=int, default=1, help="runs per measurement (the max is kept)")
    parser.add_argument("--selectors", default=",".join(SELECTORS))
    parser.add_argument("--reconstructors", default=",".join(RECONSTRUCTORS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--video", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        child_main(args)
        return
    selectors, skipped = available_selectors(tuple(args.selectors.split(",")))
    reconstructors, skipped_rec = available_reconstructors(tuple(args.reconstructors.split(",")))
    skipped |= skipped_rec
    ops = plan_ops(selectors, reconstructors)
    before, started = machine_info(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="framers-mem-", dir=CACHE_DIR.parent) as tmp:
        results = {
            n: measure_length(cached_video(args.source, args.resolution, n), ops, selectors, args.runs, Path(tmp))
            for n in (args.short, args.long)
        }
    rows = rows_for(results[args.short], results[args.long])
    table = markdown_table(rows, args.short, args.long)
    report = {
        "source": str(args.source), "resolution": args.resolution, "short": args.short, "long": args.long,
        "runs": args.runs, "seconds": time.perf_counter() - started, "machine_before": before,
        "skipped": skipped, "rows": rows,
    }
    print(table)
    print(skipped_lines(skipped))
    write_outputs(args, report, table)


def write_outputs(args: argparse.Namespace, report: dict[str, Any], table: str) -> None:
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    if args.markdown:
        m = report["machine_before"]
        head = (
            f"Peak RSS: {Path(report['source']).name} at {report['resolution']}, {report['short']} vs "
            f"{report['long']} frames, fresh process per measurement (max of {report['runs']} run(s)); "
            f"{m['cpus']} CPUs, load average {m['loadavg'][0]:.1f} at start, training job running: "
            f"{m['training_job_running']}. Total {report['seconds']:.0f} s.\n\n"
        )
        tail = skipped_lines(report["skipped"])
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(head + table + ("\n\n" + tail if tail else "") + "\n")


if __name__ == "__main__":
    main()
