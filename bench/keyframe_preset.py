"""Which x264 preset for the kept frames: bytes against encode time (veryfast / medium / slow).

For each clip (first ``--frames`` frames), the kept frames of every ``--stride``-th frame are coded
with each preset over a CRF sweep, 4:2:0 as the bundle stores them (``framers.adaptive.coding``);
quality = PSNR of the kept frames (RGB error estimated on the YUV planes plus the colour path's
own error, capped at 60 dB). Reported per preset: BD-rate against medium (negative = fewer bytes
at equal PSNR) and encode time relative to medium, medians over clips.

    python bench/keyframe_preset.py ../shared/data/videos/val --max-videos 8 --json bench/results/keyframe_preset.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framers.adaptive.coding import code_frames, conversion_mse
from framers.adaptive.ratemodel import psnr_of
from framers.bdrate import bd_rate
from framers.evaluate_inputs import find_videos
from framers.rgb import to_rgb

PRESETS = ("veryfast", "medium", "slow")
CRFS = (16, 22, 28, 34, 40)


def kept_frames(path: Path, frames: int, stride: int) -> list[np.ndarray]:
    out = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= frames:
                break
            if i % stride == 0:
                out.append(to_rgb(frame))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*", default=["../shared/data/videos/val"])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--max-videos", type=int, default=8)
    parser.add_argument("--json", default="bench/results/keyframe_preset.json")
    args = parser.parse_args(argv)
    clips = []
    for path in find_videos([Path(v) for v in args.videos])[: args.max_videos]:
        frames = kept_frames(path, args.frames, args.stride)
        floor = float(np.mean([conversion_mse(f) for f in frames]))
        curves: dict[str, dict[str, list[float]]] = {}
        for preset in PRESETS:
            curve: dict[str, list[float]] = {"bytes": [], "psnr": [], "seconds": []}
            for crf in CRFS:
                started = time.perf_counter()
                coded = code_frames(frames, crf, preset)
                curve["seconds"].append(time.perf_counter() - started)
                curve["bytes"].append(float(coded.bytes.sum()))
                curve["psnr"].append(float(psnr_of(coded.mse + floor).mean()))
            curves[preset] = curve
        entry = {"video": path.name, "kept": len(frames), "curves": curves, "vs_medium": {}}
        for preset in PRESETS:
            entry["vs_medium"][preset] = {
                "bd_rate_pct": bd_rate(curves["medium"]["bytes"], curves["medium"]["psnr"],
                                             curves[preset]["bytes"], curves[preset]["psnr"]),
                "time_ratio": sum(curves[preset]["seconds"]) / sum(curves["medium"]["seconds"]),
            }
        clips.append(entry)
        print(path.name, {p: {k: round(v, 3) for k, v in e.items()} for p, e in entry["vs_medium"].items()},
              flush=True)
    summary = {p: {"bd_rate_pct_median": float(np.median([c["vs_medium"][p]["bd_rate_pct"] for c in clips])),
                   "time_ratio_median": float(np.median([c["vs_medium"][p]["time_ratio"] for c in clips]))}
               for p in PRESETS}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"summary": summary, "clips": clips}, indent=1))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
