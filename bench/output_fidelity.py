"""What the output file holds against what the target promises: the mean PSNR (RGB, capped at
60 dB per frame) of the rebuilt frames (what ``--target-psnr`` aims at and ``bench/rd.py``
measures) next to that of the output video as a player decodes it, at ``reconstruct --crf 0``
(lossless x264: only the RGB → 4:2:0 conversion) and at the default output CRF (``--crfs``: others).

    python bench/output_fidelity.py ../shared/data/videos/val/sleap__tests_data_videos_small_robot.mp4 \
        ../shared/data/videos/val/cotracker__gradio_demo_videos_cat.mp4 --targets 34,40 \
        --json bench/results/output_fidelity.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framers import defaults  # noqa: E402
from framers.metrics import psnr  # noqa: E402
from framers.pipeline import compress, reconstruct  # noqa: E402
from framers.video import FrameReader  # noqa: E402


def mean_psnr_and_shift(source: Path, video: Path) -> tuple[float, float]:
    """Mean per-frame PSNR (dB) of ``video`` against ``source`` and the mean difference of their
    pixel values (gray levels; negative = darker), both decoded to RGB by ``FrameReader``."""
    scores, shifts = [], []
    with FrameReader(source) as a, FrameReader(video) as b:
        for fa, fb in zip(a.frames(), b.frames(), strict=False):
            scores.append(psnr(fa.rgb, fb.rgb))
            shifts.append(float(np.mean(fb.rgb.astype(np.float32) - fa.rgb)))
    return float(np.mean(scores)), float(np.mean(shifts))


def measure(source: Path, target: float, work: Path, crfs: Sequence[int] = (0, defaults.OUTPUT_CRF)) -> dict[str, Any]:
    bundle = work / "b.frs"
    compress(source, bundle, target_psnr=target)
    row: dict[str, Any] = {"video": source.name, "target_psnr": target}
    for crf in crfs:
        out = work / f"out{crf}.mp4"
        first = "rebuilt_psnr" not in row  # the rebuilt frames are the same at any output CRF
        result = reconstruct(bundle, out, output_crf=crf, reference=source if first else None)
        if first:
            assert result.psnr is not None
            row["rebuilt_psnr"] = round(float(np.mean(result.psnr)), 3)
        output_psnr, shift = mean_psnr_and_shift(source, out)
        row[f"output_crf{crf}_psnr"] = round(output_psnr, 3)
        row[f"output_crf{crf}_mean_shift"] = round(shift, 3)
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--targets", default="34,40")
    parser.add_argument("--crfs", default=f"0,{defaults.OUTPUT_CRF}", help="output CRFs (reconstruct --crf)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = []
    for video in args.videos:
        for target in (float(t) for t in args.targets.split(",")):
            with tempfile.TemporaryDirectory(prefix="framers-fidelity-") as tmp:
                rows.append(measure(video, target, Path(tmp), [int(c) for c in args.crfs.split(",")]))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"output_crf_default": defaults.OUTPUT_CRF, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
