"""Compressed-domain cues (IMRNet's seed) against the adaptive mode's view features: cost and accuracy.

For each clip (first ``--frames`` frames), per 16-frame window with every 4th frame kept:

* truth: the real ``framemae`` rebuild error of the dropped frames (RGB MSE, kept frames lossless);
* ``mv``: the mean motion-vector length (pixels, per frame) that FFmpeg's H.264/MPEG decoders export
  as side data (``flags2=+export_mvs``): no RGB conversion, no optical flow;
* ``views``: the rate model's prediction from the gray analysis views (``framers.adaptive``: scdet
  scaling, DIS flow, linear and motion-compensated interpolation errors, detail).

Reported: Spearman rank correlation of each cue with the truth over all windows, and the cost per
frame of each path (decode with MV export vs plain decode vs decode + view features), same run.

    python bench/mv_cues.py ../shared/data/videos/val --frames 64 --json bench/results/mv_cues.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framers.adaptive import analysis, ratemodel
from framers.adaptive.selector import load_rate_model
from framers.evaluate_inputs import find_videos
from framers.reconstructors.base import KeptFrame
from framers.registry import get_reconstructor
from framers.rgb import to_rgb
from framers.scenes import SceneAnalyser

WINDOW = 16
STRIDE = 4


def mv_lengths(path: Path, frames: int) -> tuple[list[float], float]:
    """Mean motion-vector length per frame (0 for intra frames / no vectors) and seconds/frame."""
    out: list[float] = []
    started = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.options = {"flags2": "+export_mvs"}
        for frame in container.decode(stream):
            length = 0.0
            for data in frame.side_data:
                if "MOTION" in str(data.type).upper():
                    mv = data.to_ndarray()
                    if len(mv):
                        scale = np.maximum(mv["motion_scale"], 1)
                        length = float(np.mean(np.hypot(mv["motion_x"] / scale, mv["motion_y"] / scale)))
            out.append(length)
            if len(out) == frames:
                break
    return out, (time.perf_counter() - started) / max(1, len(out))


def plain_decode_cost(path: Path, frames: int) -> float:
    started = time.perf_counter()
    n = 0
    with av.open(str(path)) as container:
        for _ in container.decode(video=0):
            n += 1
            if n == frames:
                break
    return (time.perf_counter() - started) / max(1, n)


def measure(path: Path, frames: int, model: ratemodel.RateModel) -> dict[str, Any]:
    mvs, mv_cost = mv_lengths(path, frames)
    decode_cost = plain_decode_cost(path, frames)
    rgb: list[np.ndarray] = []
    views: dict[int, np.ndarray] = {}
    details: dict[int, float] = {}
    scenes = SceneAnalyser()
    view_seconds = 0.0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            started = time.perf_counter()
            view = scenes.feed(frame)
            views[view.index] = view.gray
            details[view.index] = analysis.detail_energy(frame.to_ndarray(format="gray"), view.gray)
            view_seconds += time.perf_counter() - started
            rgb.append(to_rgb(frame))
            if len(rgb) == frames:
                break
    rebuilder = get_reconstructor("framemae")
    rows = []
    for start in range(0, len(rgb) - WINDOW, WINDOW):
        segment = analysis.Segment(start, start + WINDOW, closed=False)
        anchors = segment.anchors(STRIDE)
        started = time.perf_counter()
        feats = analysis.gap_features(views, anchors)
        view_seconds += time.perf_counter() - started
        x = ratemodel.interp_features(feats.linear, feats.motion, np.array([details[i] for i in feats.index]),
                                      feats.gap, feats.t)
        predicted = float(np.mean(model.interp_mse(x)))
        kept = [KeptFrame(i, rgb[i]) for i in anchors]
        rebuilt = rebuilder.reconstruct_window(kept, start, start + WINDOW)
        dropped = [i for i in range(start, start + WINDOW) if i not in anchors]
        truth = float(np.mean([np.mean((rebuilt[i - start].astype(np.float32) - rgb[i]) ** 2) for i in dropped]))
        rows.append({"start": start, "truth_mse": truth, "views_mse": predicted,
                     "mv": float(np.mean(mvs[start + 1 : start + WINDOW + 1]))})
    return {"video": path.name, "frames": len(rgb), "windows": rows, "mv_ms_per_frame": 1000 * mv_cost,
            "decode_ms_per_frame": 1000 * decode_cost,
            "views_ms_per_frame": 1000 * (decode_cost + view_seconds / max(1, len(rgb)))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*", default=["../shared/data/videos/val"])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--json", default="bench/results/mv_cues.json")
    args = parser.parse_args(argv)
    model, _ = load_rate_model()
    clips = []
    for path in find_videos([Path(v) for v in args.videos]):
        try:
            clips.append(measure(path, args.frames, model))
        except (av.error.FFmpegError, ValueError) as exc:
            print(f"{path.name}: skipped ({exc})", flush=True)
            continue
        print(f"{path.name}: {len(clips[-1]['windows'])} windows", flush=True)
    windows = [w for c in clips for w in c["windows"]]
    truth = [np.log1p(w["truth_mse"]) for w in windows]
    summary = {
        "windows": len(windows),
        "spearman_mv": float(spearmanr([w["mv"] for w in windows], truth).statistic),
        "spearman_views": float(spearmanr([w["views_mse"] for w in windows], truth).statistic),
        "median_ms_per_frame": {k: float(np.median([c[k] for c in clips]))
                                for k in ("decode_ms_per_frame", "mv_ms_per_frame", "views_ms_per_frame")},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"summary": summary, "clips": clips}, indent=1))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
