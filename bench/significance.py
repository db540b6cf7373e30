"""Chunk significance (issue 15): how few random masks keep CARV's ranking, how the masked estimate
relates to the encoder's exact error map, and what each costs against decoding alone.

Per video (first ``--frames`` frames):

* ``masked`` significance (``framers.significance.masked_significance``: whole frames hidden at
  ``--hide``, rebuilt by ``framemae`` from the uncoded source) with ``--reference-samples`` masks
  (default 32) as the reference ranking, and with each of ``--samples`` (default 2,4,8): Spearman
  rank correlation of the per-chunk values against the reference (chunks both measured), and the
  overlap of the top 10 % chunks;
* ``exact`` significance (compress at ``--target-psnr``, rebuild, per-chunk MSE) and its rank
  correlation with the masked reference;
* seconds of each, and of decoding the same frames alone (``FrameReader``, RGB), medians of
  ``--repeats`` runs, measured in the same run.

    python bench/significance.py ../shared/data/videos/val/sleap__tests_data_videos_small_robot.mp4 \\
        ../shared/data/videos/val/cotracker__gradio_demo_videos_cat.mp4 --json bench/results/significance.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framers import significance as sig  # noqa: E402


def top_overlap(a: np.ndarray, b: np.ndarray, share: float = 0.1) -> float:
    """Share of the top ``share`` chunks of ``a`` that are also in the top ``share`` of ``b``."""
    both = np.isfinite(a) & np.isfinite(b)
    x, y = a[both], b[both]
    k = max(1, round(share * x.size))
    top_a, top_b = set(np.argsort(-x)[:k].tolist()), set(np.argsort(-y)[:k].tolist())
    return len(top_a & top_b) / k


def timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """fn's last result and its median wall time (s) over ``repeats`` runs."""
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return result, statistics.median(seconds)


def measure(video: Path, args: argparse.Namespace) -> dict[str, Any]:
    _, decode_s = timed(lambda: sum(1 for _ in sig.source_frames(video, args.frames)), args.repeats)
    reference, reference_s = timed(lambda: sig.masked_significance(
        video, max_frames=args.frames, samples=args.reference_samples, hide=args.hide), 1)
    record: dict[str, Any] = {
        "video": video.name, "frames": reference.frames, "width": reference.width, "height": reference.height,
        "decode_s": round(decode_s, 3),
        "reference": {"samples": args.reference_samples, "seconds": round(reference_s, 2),
                      "summary": sig.summarize(reference.values)},
        "masked": [],
    }
    for samples in args.samples:
        estimate, seconds = timed(lambda s=samples: sig.masked_significance(
            video, max_frames=args.frames, samples=s, hide=args.hide, seed=1), args.repeats)
        record["masked"].append({
            "samples": samples, "seconds": round(seconds, 2), "x_decode": round(seconds / decode_s, 1),
            "spearman_vs_reference": round(sig.ranking_agreement(estimate.values, reference.values), 3),
            "top10_overlap": round(top_overlap(estimate.values, reference.values), 3),
            "coverage": round(float(np.isfinite(estimate.values).mean()), 3),
        })
    exact, exact_s = timed(lambda: sig.exact_significance(video, max_frames=args.frames,
                                                          target_psnr=args.target_psnr), args.repeats)
    record["exact"] = {
        "target_psnr": args.target_psnr, "seconds": round(exact_s, 2), "x_decode": round(exact_s / decode_s, 1),
        "kept": len(exact.settings["kept"]),
        "spearman_vs_masked_reference": round(sig.ranking_agreement(exact.values, reference.values), 3),
        "top10_overlap_vs_masked_reference": round(top_overlap(exact.values, reference.values), 3),
        "summary": sig.summarize(exact.values),
    }
    if args.png_dir:
        args.png_dir.mkdir(parents=True, exist_ok=True)
        for result in (reference, exact):
            png = args.png_dir / f"significance_{result.method}_{video.stem}.png"
            sig.heatmap_png(result, png, sig.source_frames(video, result.frames))
            record.setdefault("png", []).append(str(png))
    return record


def to_markdown(records: Sequence[dict[str, Any]]) -> str:
    lines = ["| video | frames | decode s | masked K | s (× decode) | Spearman vs K=ref | top-10 % overlap | "
             "exact s (× decode) | exact vs masked Spearman |", "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        for m in r["masked"]:
            lines.append(f"| {r['video']} | {r['frames']} | {r['decode_s']} | {m['samples']} (ref "
                         f"{r['reference']['samples']}) | {m['seconds']} ({m['x_decode']}×) | "
                         f"{m['spearman_vs_reference']} | {m['top10_overlap']} | {r['exact']['seconds']} "
                         f"({r['exact']['x_decode']}×) | {r['exact']['spearman_vs_masked_reference']} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--samples", type=lambda t: [int(v) for v in t.split(",")], default=[2, 4, 8])
    parser.add_argument("--reference-samples", type=int, default=32)
    parser.add_argument("--hide", type=float, default=0.75)
    parser.add_argument("--target-psnr", type=float, default=34.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    parser.add_argument("--png-dir", type=Path, help="write the reference and exact heatmaps here")
    args = parser.parse_args(argv)
    records = []
    for video in args.videos:
        records.append(measure(video, args))
        print(json.dumps({k: v for k, v in records[-1].items() if k != "png"}), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                             "videos": records}, indent=1) + "\n")
    markdown = to_markdown(records)
    print(markdown)
    if args.md:
        args.md.write_text(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
