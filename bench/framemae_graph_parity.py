"""Parity of ``framemae`` on the CPU graph against the stored model.onnx (issue 17, BENCHMARKS 5c).

    python bench/framemae_graph_parity.py sam2__demo_data_gallery_02_cups.mp4 askanything__yoga.mp4 \
        --frames 64 --json bench/results/framemae_graph_parity.json

For each val clip (``--val`` folder): its first ``--frames`` frames (a lossless cut, so that the
source is exactly what was compressed), an every-4th-frame bundle and the default adaptive
bundle (``defaults.TARGET_PSNR``); each bundle rebuilt twice, as before (model.onnx, one
onnxruntime thread: ``FRAMERS_CPU_GRAPH=0 FRAMERS_ORT_THREADS=1``) and as now (the config's
``cpu_graph``, ``framemae.NET_THREADS``). Per frame: PSNR(now) − PSNR(before) against the source;
reported: mean and worst frame (bound of the issue: |mean| ≤ 0.02 dB, worst ≥ −0.1 dB), the
largest pixel difference and the share of pixels that differ.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import av
import numpy as np

from framers import bundle as fb
from framers import runtime
from framers.defaults import TARGET_PSNR
from framers.metrics import psnr
from framers.pipeline import compress, iter_reconstructed
from framers.reconstructors.framemae import FrameMAEReconstructor
from framers.video import FrameReader

VAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / "val"


def lossless_cut(src: Path, dst: Path, frames: int) -> np.ndarray:
    """Write the first ``frames`` frames of ``src`` to ``dst`` (x264 RGB, lossless) and return
    them, uint8 [n, H, W, 3]."""
    with FrameReader(src) as reader:
        cut = []
        for frame in reader.frames():
            cut.append(frame.rgb)
            if len(cut) == frames:
                break
    video = np.stack(cut)
    with av.open(str(dst), "w") as container:
        stream: Any = container.add_stream("libx264rgb", rate=25)
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "rgb24"
        stream.options = {"crf": "0"}
        for rgb in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return video


def rebuild(bundle: Path, before: bool) -> np.ndarray:
    """The frames of ``bundle`` rebuilt by ``framemae`` on the stored graph with one thread
    (``before``) or as configured now, uint8 [n, H, W, 3]."""
    saved = {k: os.environ.get(k) for k in (runtime.CPU_GRAPH_ENV, runtime.THREADS_ENV)}
    if before:
        os.environ[runtime.CPU_GRAPH_ENV], os.environ[runtime.THREADS_ENV] = "0", "1"
    else:
        for key in saved:
            os.environ.pop(key, None)
    runtime.clear_cache()
    try:
        return np.stack(list(iter_reconstructed(bundle, fb.read_manifest(bundle), FrameMAEReconstructor())))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        runtime.clear_cache()


def compare(source: np.ndarray, before: np.ndarray, now: np.ndarray) -> dict[str, Any]:
    """Per-frame PSNR gaps (dB) and pixel differences of ``now`` against ``before``."""
    n = min(len(source), len(before), len(now))
    gaps = np.array([0.0 if np.array_equal(now[i], before[i]) else psnr(source[i], now[i]) - psnr(source[i], before[i])
                     for i in range(n)])
    diff = np.abs(now[:n].astype(np.int16) - before[:n])
    return {"frames": n, "mean_db": float(gaps.mean()), "worst_db": float(gaps.min()), "best_db": float(gaps.max()),
            "max_level": int(diff.max()), "pixels_differ": float((diff > 0).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="+", help="file names in --val")
    parser.add_argument("--val", type=Path, default=VAL)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.clips:
            cut = Path(tmp) / f"{Path(name).stem}.mkv"
            source = lossless_cut(args.val / name, cut, args.frames)
            for mode in ("stride4", "adaptive"):
                bundle = Path(tmp) / f"{Path(name).stem}_{mode}"
                if mode == "stride4":
                    compress(cut, bundle, selector="stride", stride=4)
                else:
                    compress(cut, bundle, target_psnr=TARGET_PSNR)
                row = {"clip": name, "bundle": mode,
                       **compare(source, rebuild(bundle, before=True), rebuild(bundle, before=False))}
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
