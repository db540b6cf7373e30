"""Refresh layer against the same pattern without it, at equal bytes (issue 15), from a ``bench/rd.py`` report.

(Also the candidate map: ``M:cmap`` against ``M``, the same columns.)
For every clip holding both ``M`` and ``M:refreshR`` (e.g. ``stride4+framemae`` and
``stride4+framemae:refresh0.1``, each over the same kept-frame CRFs): Bjøntegaard delta PSNR
(dB at equal bytes, positive = the refresh layer is better) and delta rate of the refresh curve
against the plain one (``framers.bdrate``, VCEG-M33 cubic), and each method's BD-rate against
x264 (as ``rd.py`` stored it). Over clips: mean and median; the issue's goal is a mean gain of
≥ 1 dB at equal bytes for ``refresh0.1`` against plain every-4th-frame.

    python bench/rd.py ../shared/data/videos/val --frames 64 --methods stride4,stride4:refresh0.1 \\
        --keyframe-crfs 18,22,26,30,34 --rate bitstream --json bench/results/rd_refresh.json
    python bench/refresh_compare.py bench/results/rd_refresh.json --md bench/results/refresh_compare.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is a folder of scripts

from rd_report import RATE_KEYS

from framers import bdrate


def _curve(points: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    ok = [p for p in points if "error" not in p and p.get("psnr") is not None and (p.get(key) or 0) > 0]
    return [float(p[key]) for p in ok], [float(p["psnr"]) for p in ok]


def compare(report: dict[str, Any], rate: str = "bitstream") -> list[dict[str, Any]]:
    """Per (clip, refresh method): the BD-PSNR (dB) and BD-rate (%) of the refresh curve against
    its plain method, both methods' BD-rate against x264, and the median ratio of compression
    times (refresh / plain, same CRF). Raises KeyError for an unknown ``rate`` basis."""
    key = RATE_KEYS[rate]
    rows = []
    for clip in report.get("clips", []):
        methods = clip.get("methods", {})
        for name, method in methods.items():
            # the layer's own suffix off: ``M:refreshR`` against ``M``, ``M:cmap`` against ``M``
            # (``M:refreshR:cmap`` against ``M:refreshR``)
            plain_name = name[:-len(":cmap")] if name.endswith(":cmap") else name.split(":refresh")[0]
            if plain_name == name:
                continue
            plain = methods.get(plain_name)
            if plain is None:
                continue
            row: dict[str, Any] = {"video": clip["video"], "method": name, "plain": plain_name,
                                   "bd_rate_vs_x264": method.get("bd_rate"),
                                   "plain_bd_rate_vs_x264": plain.get("bd_rate")}
            times = [(p.get("compress_seconds"), q.get("compress_seconds"))
                     for p, q in zip(plain["points"], method["points"], strict=False)]
            ratios = [b / a for a, b in times if a and b]
            if ratios:
                row["compress_time_ratio"] = round(statistics.median(ratios), 2)
            pr, pq = _curve(plain["points"], key)
            rr, rq = _curve(method["points"], key)
            try:
                row["bd_psnr_db"] = round(bdrate.bd_psnr(pr, pq, rr, rq), 3)
            except ValueError as exc:
                row["error"] = str(exc)
            try:  # needs overlapping PSNR ranges, which a large gain can leave too short
                row["bd_rate_pct"] = round(bdrate.bd_rate(pr, pq, rr, rq), 2)
            except ValueError:
                row["bd_rate_pct"] = None
            rows.append(row)
    return rows


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per refresh method: clips, mean and median BD-PSNR (dB), median BD-rate (%), clips that
    gain, median compression-time ratio."""
    out: dict[str, dict[str, float]] = {}
    for name in sorted({r["method"] for r in rows}):
        ok = [r for r in rows if r["method"] == name and "bd_psnr_db" in r]
        if not ok:
            continue
        gains = [r["bd_psnr_db"] for r in ok]
        out[name] = {"clips": len(ok), "bd_psnr_mean": round(statistics.fmean(gains), 3),
                     "bd_psnr_median": round(statistics.median(gains), 3),
                     "bd_rate_median": round(statistics.median(
                         [r["bd_rate_pct"] for r in ok if r["bd_rate_pct"] is not None] or [math.nan]), 2),
                     "clips_gaining": sum(g > 0 for g in gains),
                     "compress_time_ratio": round(statistics.median(
                         [r["compress_time_ratio"] for r in ok if "compress_time_ratio" in r] or [math.nan]), 2)}
    return out


def to_markdown(rows: Sequence[dict[str, Any]], totals: dict[str, dict[str, float]], rate: str) -> str:
    lines = [f"# Refresh layer or candidate map vs the same pattern without it (rate basis: {rate})", "",
             "| method | clips | BD-PSNR mean (dB, equal bytes) | median | BD-rate median | clips gaining "
             "| compress time / plain |",
             "|---|---|---|---|---|---|---|"]
    for name, t in totals.items():
        lines.append(f"| {name} | {t['clips']:.0f} | {t['bd_psnr_mean']:+.2f} | {t['bd_psnr_median']:+.2f} | "
                     f"{t['bd_rate_median']:+.1f} % | {t['clips_gaining']:.0f} | {t['compress_time_ratio']:.2f}x |")
    lines += ["", "| video | method | BD-PSNR vs plain (dB) | BD-rate vs plain | plain vs x264 | refresh vs x264 |",
              "|---|---|---|---|---|---|"]

    def pct(value: Any) -> str:
        return "–" if value is None else f"{value:+.1f} %"

    for r in rows:
        gain = r.get("error") or f"{r['bd_psnr_db']:+.2f}"
        lines.append(f"| {r['video']} | {r['method']} | {gain} | {pct(r.get('bd_rate_pct'))} | "
                     f"{pct(r['plain_bd_rate_vs_x264'])} | {pct(r['bd_rate_vs_x264'])} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("report", type=Path, help="a bench/rd.py --json report")
    parser.add_argument("--rate", choices=sorted(RATE_KEYS), default="bitstream")
    parser.add_argument("--md", type=Path, help="write the tables here")
    parser.add_argument("--exclude", default="", metavar="NAMES",
                        help="comma-separated video names left out of the summary (e.g. the clips the constants "
                        "were chosen on); the per-clip table keeps them")
    args = parser.parse_args(argv)
    rows = compare(json.loads(args.report.read_text()), args.rate)
    left_out = {name for name in args.exclude.split(",") if name}
    totals = summary([r for r in rows if r["video"] not in left_out])
    text = to_markdown(rows, totals, args.rate)
    if left_out:
        text = text.replace("\n\n", f"\n\nSummary without {', '.join(sorted(left_out))}.\n\n", 1)
    if args.md:
        args.md.write_text(text)
    print(text)
    return 0 if totals else 1


if __name__ == "__main__":
    sys.exit(main())
