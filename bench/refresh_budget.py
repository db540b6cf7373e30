"""The refresh layer's byte budget (issue 15, ``compress --refresh-kbps``): how closely x264's
average-bitrate control meets the asked kbit/s, and what the budget form costs in PSNR against the
CRF form at the bytes the CRF form spent.

Per video (first ``--frames`` frames, lossless cut): every 4th frame kept at ``--crf``, refresh
share 0.1 at the layer's CRF (kept CRF + ``refresh.CRF_OFFSET``) gives the layer's rate K0 (its
bytes × 8 over the cut's duration); then the same with ``refresh_kbps`` = f × K0 for each
``--factors`` f. Reported: the layer's achieved kbit/s against the asked, and the mean PSNR of the
``framemae`` rebuild (RGB, capped at 60 dB) of each. A factor of 1 compares the two forms at about
equal bytes. ``--kbps`` adds budgets in kbit/s against the same pattern without a layer, with the
bits each refreshed block got (where ``pipeline.MIN_BITS_PER_BLOCK`` comes from).

    python bench/refresh_budget.py ../shared/data/videos/val --max-videos 8 \\
        --json bench/results/refresh_budget.json --md bench/results/refresh_budget.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from framers import bundle as fb
from framers import pipeline
from framers.evaluate_inputs import find_videos
from framers.h264_reference import write_trimmed
from framers.metrics import psnr_from_mse
from framers.registry import get_reconstructor
from framers.video import FrameReader, probe


def layer_point(source: Path, reference: list[np.ndarray], bundle: Path, seconds: float,
                **options: Any) -> dict[str, float]:
    """The refresh layer's kbit/s and the rebuilt video's mean PSNR (dB) of one encode."""
    result = pipeline.compress(source, bundle, selector="stride", stride=4, **options)
    with fb.open_bundle(bundle) as folder:
        manifest = fb.read_manifest(folder)
        frames = list(pipeline.iter_reconstructed(folder, manifest, get_reconstructor("framemae")))
    psnr = [min(60.0, psnr_from_mse(float(np.mean((a.astype(np.float32) - b) ** 2))))
            for a, b in zip(reference, frames, strict=True)]
    layer_bytes = result.refresh["bytes"] if result.refresh else 0
    blocks = result.refresh["blocks"] if result.refresh else 0
    bundle.unlink()
    return {"layer_kbps": round(layer_bytes * 8 / 1000 / seconds, 2), "psnr": round(float(np.mean(psnr)), 3),
            "bits_per_block": round(8 * layer_bytes / blocks, 1) if blocks else 0.0}


def markdown(rows: list[dict[str, Any]], factors: list[float]) -> str:
    head = "| video | CRF form: layer kbit/s, PSNR | " + " | ".join(
        f"budget {f:g}×: achieved/asked, PSNR" for f in factors) + " |"
    lines = [head, "|" + "---|" * (2 + len(factors))]
    for row in rows:
        cells = [f"{row['crf_form']['layer_kbps']:.1f}, {row['crf_form']['psnr']:.2f} dB"]
        for f in factors:
            p = row["budget"][f"{f:g}"]
            cells.append(f"{p['layer_kbps'] / p['asked_kbps']:.2f}, {p['psnr']:.2f} dB")
        lines.append(f"| {row['video']} | " + " | ".join(cells) + " |")
    ratios = {f: [r["budget"][f"{f:g}"]["layer_kbps"] / r["budget"][f"{f:g}"]["asked_kbps"] for r in rows]
              for f in factors}
    lines.append("")
    lines.append("Achieved / asked, median (min–max): " + "; ".join(
        f"{f:g}×: {statistics.median(v):.2f} ({min(v):.2f}–{max(v):.2f})" for f, v in ratios.items()))
    if 1.0 in factors:
        delta = [r["budget"]["1"]["psnr"] - r["crf_form"]["psnr"] for r in rows]
        lines.append(f"PSNR of the budget form at 1× minus the CRF form: mean {statistics.mean(delta):+.2f} dB "
                     f"(min {min(delta):+.2f}, max {max(delta):+.2f})")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("videos", type=Path, nargs="+", help="video files or folders")
    parser.add_argument("--max-videos", type=int, default=None)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--crf", type=int, default=22, help="kept-frame CRF (default %(default)s)")
    parser.add_argument("--factors", default="0.5,1,2", help="budgets as multiples of the CRF form's layer rate")
    parser.add_argument("--kbps", default="", help="also these budgets (kbit/s), against no layer")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args(argv)
    factors = [float(f) for f in args.factors.split(",") if f]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for video in find_videos(args.videos)[: args.max_videos]:
            source = Path(tmp) / f"{video.stem}.mkv"
            write_trimmed(video, args.frames, source)
            reference = [f.rgb for f in FrameReader(source).frames()]
            fps = probe(source).fps
            seconds = len(reference) / max(fps, 1e-3)
            bundle = Path(tmp) / "b.frs"
            crf_form = layer_point(source, reference, bundle, seconds, keyframe_crf=args.crf, refresh=0.1)
            if crf_form["layer_kbps"] <= 0:
                print(f"{video.name}: no refresh layer (nothing to refresh)", flush=True)
                continue
            budget = {}
            for f in factors:
                asked = round(crf_form["layer_kbps"] * f, 2)
                point = layer_point(source, reference, bundle, seconds, keyframe_crf=args.crf, refresh=0.1,
                                    refresh_kbps=asked)
                budget[f"{f:g}"] = {"asked_kbps": asked, **point}
            absolute: dict[str, Any] = {}
            if args.kbps:
                absolute["none"] = layer_point(source, reference, bundle, seconds, keyframe_crf=args.crf)
                for kbps in (float(k) for k in args.kbps.split(",")):
                    absolute[f"{kbps:g}"] = layer_point(source, reference, bundle, seconds, keyframe_crf=args.crf,
                                                        refresh=0.1, refresh_kbps=kbps)
                print(video.name, "absolute budgets:", absolute, flush=True)
            rows.append({"video": video.name, "crf_form": crf_form, "budget": budget, "absolute": absolute})
            print(video.name, crf_form, budget, flush=True)
            if args.json:
                args.json.write_text(json.dumps({"settings": {"frames": args.frames, "crf": args.crf,
                                                              "factors": factors}, "videos": rows}, indent=1) + "\n")
    if args.md and rows:
        args.md.write_text("# Refresh layer: byte budget against the CRF form (bench/refresh_budget.py)\n\n"
                           + markdown(rows, factors))
    if rows:
        print(markdown(rows, factors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
