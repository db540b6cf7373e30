"""ms per frame of framemae's composition step (issue 17): numpy/OpenCV (framers.motion) against the
ONNX graph framemae_compose (framers.reconstructors.compose_onnx), on the same window.

One 17-frame window, kept frames every 4 (the stride-4 bundle: 12 mixed frames), random softmax
weights at the network's resolution. Timed: everything from the window's DIS flows (computed
once, outside the timing) to the 12 uint8 frames: flow resize, kept frames to float, warps,
linear candidate, mixing, rounding; every repetition starts from fresh caches. Median of
``--runs``. Providers: onnxruntime's first preferred (CUDA where present; ``--provider cpu``
forces the CPU one); threads: onnxruntime's and OpenCV's defaults (FRAMERS_ORT_THREADS applies).

    nice -n 10 python bench/compose_paths.py --resolutions 480p,1080p --runs 5 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from framers import motion, runtime
from framers.reconstructors import compose_onnx
from framers.reconstructors.base import KeptFrame

SIZES = {"240p": (240, 426), "480p": (480, 854), "720p": (720, 1280), "1080p": (1080, 1920)}
KEPT = [0, 4, 8, 12, 16]


def frames_of(h: int, w: int, n: int = 17, seed: int = 0) -> np.ndarray:
    """A smooth random texture panning (3, 1) px per frame (the timing does not depend on content)."""
    rng = np.random.default_rng(seed)
    base = rng.random(((h + 64) // 8, (w + 64) // 8, 3)).astype(np.float32) * 255
    texture = cv2.resize(base, (w + 64, h + 64), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
    return np.stack([texture[i : i + h, 3 * i : 3 * i + w] for i in range(n)])


def window(h: int, w: int) -> tuple[list[KeptFrame], dict[Any, Any], list[motion.FramePlan], np.ndarray]:
    frames = frames_of(h, w)
    kept = [KeptFrame(i, frames[i]) for i in KEPT]
    cache = motion.FrameCache()
    flows = motion.WindowFlows(kept, cache=cache)
    for a in range(len(KEPT) - 1):
        flows.pair(a, a + 1)
    plans = [p for p in motion.plan_window(KEPT, 0, KEPT[-1] + 1) if p.interpolated]
    scale = motion.net_scale(h, w)
    logits = np.random.default_rng(1).normal(size=(3, len(plans), h // scale, w // scale))
    weights = np.exp(logits)
    weights = (weights / weights.sum(axis=0, keepdims=True)).astype(np.float32)
    return kept, {key: value for key, value in cache.items() if key[0] == "flow"}, plans, weights


def fresh_flows(kept: list[KeptFrame], pairs: dict[Any, Any]) -> motion.WindowFlows:
    """A window whose DIS flows are reused; resized flows and float frames start cold."""
    cache = motion.FrameCache()
    cache.update(pairs)
    return motion.WindowFlows(kept, cache=cache)


def numpy_path(flows: motion.WindowFlows, plans: list[motion.FramePlan], weights: np.ndarray) -> np.ndarray:
    """What ``FrameMAEReconstructor.frame`` does for each interpolated frame (OpenCV/numpy)."""
    return np.stack([flows.interpolate(p, weights[:, j]) for j, p in enumerate(plans)])


def measure(res: str, runs: int) -> dict[str, Any]:
    h, w = SIZES[res]
    kept, pairs, plans, weights = window(h, w)
    composer = compose_onnx.composer()
    paths = {"numpy": lambda f: numpy_path(f, plans, weights),
             "onnx": lambda f: composer.compose_frames(f, plans, weights)}
    samples: dict[str, list[float]] = {name: [] for name in paths}
    outputs = {name: fn(fresh_flows(kept, pairs)) for name, fn in paths.items()}  # warm-up
    for _ in range(runs):
        for name, fn in paths.items():  # interleaved, so load changes hit both paths alike
            flows = fresh_flows(kept, pairs)
            t0 = time.perf_counter()
            fn(flows)
            samples[name].append(time.perf_counter() - t0)
    diff = np.abs(outputs["numpy"].astype(np.int16) - outputs["onnx"])
    return {"size": f"{w}x{h}", "frames": len(plans), "onnx_provider": composer.provider,
            "ms_per_frame": {name: 1000 * statistics.median(s) / len(plans) for name, s in samples.items()},
            "max_abs_diff": int(diff.max()), "mean_abs_diff": float(diff.mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", default="480p,1080p")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--provider", choices=("default", "cpu"), default="default")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.provider == "cpu":
        runtime.PREFERRED_PROVIDERS = ("CPUExecutionProvider",)
    report = {"load_average": os.getloadavg(), "cpus": os.cpu_count(), "runs": args.runs,
              "results": {res: measure(res, args.runs) for res in args.resolutions.split(",")}}
    print("| resolution | frames | numpy ms/frame | onnx ms/frame | onnx provider | max/mean abs diff |")
    print("|---|---|---|---|---|---|")
    for res, row in report["results"].items():
        ms = row["ms_per_frame"]
        print(f"| {res} ({row['size']}) | {row['frames']} | {ms['numpy']:.1f} | {ms['onnx']:.1f} | "
              f"{row['onnx_provider']} | {row['max_abs_diff']} / {row['mean_abs_diff']:.1e} |")
    print(f"load average {report['load_average']}, {report['cpus']} CPUs")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
