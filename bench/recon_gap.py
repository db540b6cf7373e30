"""FrameMAE against the classical reconstructors on the same bundles (issue 13's table), from
``framers evaluate`` reports.

For each report (one stride each): mean PSNR, PSNR of the mean MSE and SSIM per reconstructor over
the videos all of them finished, the margins of ``framemae`` over ``mci`` and ``linear`` against
the issue's goals (+1.0 dB and +1.5 dB), and the clips where ``framemae`` gains least over
``mci``.

    for s in 4 8; do python -m framers.cli evaluate ../shared/data/videos/val \\
        --methods stride+linear,stride+mci,stride+framemae --stride $s --max-frames 128 --ssim \\
        --no-h264-reference --json bench/results/recon_val_stride$s.json; done
    python bench/recon_gap.py bench/results/recon_val_stride4.json bench/results/recon_val_stride8.json \\
        --md bench/results/recon_gap.md

A new FrameMAE is measured alone (``--methods stride+framemae``, same command) and set beside the
classical methods of the earlier reports with ``--framemae NEW_STRIDE4.json NEW_STRIDE8.json``: its
entry replaces ``stride+framemae`` per video, by stride. The bundles are made again in that run:
the same kept frames up to x264's own run-to-run variation (CRF mode is not always
byte-identical; the kept frames' PSNR is in both reports).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

METHODS = ("stride+linear", "stride+mci", "stride+framemae")
GOALS = {"stride+mci": 1.0, "stride+linear": 1.5}


def gap_table(report: dict[str, Any]) -> dict[str, Any]:
    """Means per method (psnr, psnr_mean_mse, ssim) over the videos every method of ``METHODS``
    finished, and per video framemae − mci and framemae − linear (dB), sorted by the former."""
    rows = []
    for video in report.get("videos", []):
        methods = video.get("methods", {})
        if not all(m in methods and methods[m].get("psnr") is not None for m in METHODS):
            continue
        psnr = {m: float(methods[m]["psnr"]) for m in METHODS}
        rows.append({"video": video["video"], "frames": video.get("frames"), **{m: psnr[m] for m in METHODS},
                     "vs_mci": round(psnr["stride+framemae"] - psnr["stride+mci"], 3),
                     "vs_linear": round(psnr["stride+framemae"] - psnr["stride+linear"], 3)})
        for m in METHODS:
            rows[-1][f"{m}:mse"] = methods[m].get("psnr_mean_mse")
            rows[-1][f"{m}:ssim"] = methods[m].get("ssim")
    means: dict[str, dict[str, float | None]] = {}
    for m in METHODS:
        means[m] = {}
        for key, column in (("psnr", m), ("psnr_mean_mse", f"{m}:mse"), ("ssim", f"{m}:ssim")):
            values = [r[column] for r in rows if r.get(column) is not None]
            means[m][key] = round(statistics.fmean(values), 4) if values else None
    rows.sort(key=lambda r: r["vs_mci"])
    return {"videos": len(rows), "means": means, "rows": rows,
            "stride": report.get("settings", {}).get("stride")}


def with_framemae_of(report: dict[str, Any], others: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``report`` with each video's ``stride+framemae`` taken from the report in ``others`` of the
    same stride (the report unchanged when none has it; a video the other lacks loses its entry,
    so that ``gap_table`` leaves it out). Also names the replacement's FrameMAE version."""
    stride = report.get("settings", {}).get("stride")
    other = next((o for o in others if o.get("settings", {}).get("stride") == stride), None)
    if other is None:
        return report
    new = {v["video"]: v.get("methods", {}).get("stride+framemae") for v in other.get("videos", [])}
    videos = []
    for video in report.get("videos", []):
        methods = {k: v for k, v in video.get("methods", {}).items() if k != "stride+framemae"}
        if new.get(video["video"]) is not None:
            methods["stride+framemae"] = new[video["video"]]
        videos.append({**video, "methods": methods})
    return {**report, "videos": videos}


def to_markdown(tables: Sequence[tuple[str, dict[str, Any]]], worst: int = 5) -> str:
    lines = ["# framemae vs mci vs linear on the same bundles", "",
             "| report | stride | videos | linear | mci | framemae | framemae − mci (goal +1.0) "
             "| framemae − linear (goal +1.5) | SSIM linear / mci / framemae |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, t in tables:
        m = t["means"]
        p = {k: m[k]["psnr"] for k in METHODS}
        if None in p.values():
            continue
        ssim = " / ".join("–" if m[k]["ssim"] is None else f"{m[k]['ssim']:.4f}" for k in METHODS)
        lines.append(f"| {name} | {t['stride']} | {t['videos']} | {p['stride+linear']:.2f} | {p['stride+mci']:.2f} | "
                     f"{p['stride+framemae']:.2f} | {p['stride+framemae'] - p['stride+mci']:+.2f} | "
                     f"{p['stride+framemae'] - p['stride+linear']:+.2f} | {ssim} |")
    lines += ["", "PSNR of the mean MSE (dB): " + "; ".join(
        f"{name}: " + ", ".join(f"{k.split('+')[1]} {t['means'][k]['psnr_mean_mse']}" for k in METHODS)
        for name, t in tables)]
    for name, t in tables:
        lines += ["", f"Least gain over mci ({name}):", "",
                  "| video | frames | linear | mci | framemae | framemae − mci |", "|---|---|---|---|---|---|"]
        for r in t["rows"][:worst]:
            lines.append(f"| {r['video']} | {r['frames']} | {r['stride+linear']:.2f} | {r['stride+mci']:.2f} | "
                         f"{r['stride+framemae']:.2f} | {r['vs_mci']:+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="FrameMAE against the classical reconstructors on the same "
                                                 "bundles (issue 13's table), from framers evaluate reports.")
    parser.add_argument("reports", type=Path, nargs="+", help="framers evaluate --json reports")
    parser.add_argument("--md", type=Path)
    parser.add_argument("--framemae", type=Path, nargs="*", default=[],
                        help="reports of stride+framemae alone, replacing it in the reports of the same stride")
    args = parser.parse_args(argv)
    replacements = [json.loads(p.read_text()) for p in args.framemae]
    tables = [(p.stem, gap_table(with_framemae_of(json.loads(p.read_text()), replacements))) for p in args.reports]
    text = to_markdown(tables)
    if args.md:
        args.md.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
