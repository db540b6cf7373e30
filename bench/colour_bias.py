"""The YUV → RGB conversion's bias, measured: swscale's default yuv420p → rgb24 (PyAV's
``to_ndarray``, which the codec uses everywhere today) against an exact float BT.601/BT.709
conversion, and what one RGB → 4:2:0 → RGB trip costs with each set of swscale flags.

For the first ``--frames`` pictures of each video: (1) the mean difference (gray levels) of each
conversion's RGB from the float reference (limited range, bilinear chroma upsampling, clipped to
[0, 255]); (2) a trip: the picture's RGB (by that conversion) → yuv420p with swscale's default
encoder → back with the same conversion: PSNR and mean shift against the RGB it started from.
The bias of BENCHMARKS.md section 0b comes from here.

    python bench/colour_bias.py ../shared/data/videos/val/cotracker__gradio_demo_videos_cat.mp4 \
        ../shared/data/videos/val/sleap__tests_data_videos_small_robot.mp4 --json bench/results/colour_bias.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

#: FFmpeg AVColorSpace ids -> (Kr, Kb) of the luma equation
MATRICES = {1: (0.2126, 0.0722), 5: (0.299, 0.114), 6: (0.299, 0.114)}
FLAGS: dict[str, Interpolation | None] = {
    "default": None,
    "bilinear+accurate_rnd+full_chr_h_int": Interpolation.BILINEAR | Interpolation.ACCURATE_RND
    | Interpolation.FULL_CHR_H_INT,
}


def planes(frame: av.VideoFrame) -> list[np.ndarray]:
    return [np.frombuffer(memoryview(p), np.uint8).reshape(p.height, p.line_size)[:, : p.width].astype(np.float64)
            for p in frame.planes]


def exact_rgb(frame: av.VideoFrame, matrix: int) -> np.ndarray:
    """Float reference: limited-range YUV 4:2:0 → RGB [H, W, 3] float64 in [0, 255], chroma
    upsampled bilinearly (OpenCV), luma equation of ``matrix`` (BT.601 when untagged)."""
    kr, kb = MATRICES.get(matrix, MATRICES[5])
    y, u, v = planes(frame)
    u = cv2.resize(u, (y.shape[1], y.shape[0]), interpolation=cv2.INTER_LINEAR)
    v = cv2.resize(v, (y.shape[1], y.shape[0]), interpolation=cv2.INTER_LINEAR)
    yc, uc, vc = (y - 16) * 255 / 219, (u - 128) * 255 / 224, (v - 128) * 255 / 224
    kg = 1 - kr - kb
    r = yc + 2 * (1 - kr) * vc
    b = yc + 2 * (1 - kb) * uc
    g = (yc - kr * r - kb * b) / kg
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255)


def measure(path: Path, frames: int) -> dict[str, Any]:
    conv = VideoReformatter()
    rows: dict[str, dict[str, list[float]]] = {name: {"shift": [], "trip_mse": [], "trip_shift": []} for name in FLAGS}
    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k >= frames:
                break
            if frame.format.name != "yuv420p":
                raise SystemExit(f"{path.name}: {frame.format.name}, this probe reads yuv420p only")
            matrix = int(frame.colorspace) if int(frame.colorspace) in MATRICES else 5
            reference = exact_rgb(frame, matrix)
            for name, flags in FLAGS.items():
                rgb = conv.reformat(frame, format="rgb24", src_colorspace=matrix, src_color_range=1,
                                    interpolation=flags).to_ndarray()
                rows[name]["shift"].append(float(np.mean(rgb - reference)))
                yuv = conv.reformat(av.VideoFrame.from_ndarray(rgb, format="rgb24"), format="yuv420p",
                                    dst_colorspace=matrix, dst_color_range=1)
                back = conv.reformat(yuv, format="rgb24", src_colorspace=matrix, src_color_range=1,
                                     interpolation=flags).to_ndarray().astype(np.float64)
                rows[name]["trip_mse"].append(float(np.mean((back - rgb) ** 2)))
                rows[name]["trip_shift"].append(float(np.mean(back - rgb)))
    return {name: {"shift_vs_exact": round(float(np.mean(r["shift"])), 3),
                   "trip_psnr": round(float(10 * np.log10(255**2 / max(float(np.mean(r["trip_mse"])), 1e-9))), 2),
                   "trip_shift": round(float(np.mean(r["trip_shift"])), 3)} for name, r in rows.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = {video.name: measure(video, args.frames) for video in args.videos}
    print("| video | conversion | mean shift vs exact (levels) | RGB→4:2:0→RGB trip PSNR (dB) | trip shift |")
    print("|---|---|---|---|---|")
    for video, rows in report.items():
        for name, r in rows.items():
            print(f"| {video} | {name} | {r['shift_vs_exact']:+.3f} | {r['trip_psnr']:.2f} | {r['trip_shift']:+.3f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
