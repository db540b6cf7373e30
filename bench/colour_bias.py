"""YUV -> RGB conversions measured: their bias, and what the codec's two RGB <-> YUV trips cost.

Three conversions of yuv420p pictures: swscale's default (PyAV's ``to_ndarray(format="rgb24")``,
what the codec used before), swscale's accurate path (``BILINEAR | ACCURATE_RND |
FULL_CHR_H_INT``: exact arithmetic, chroma upsampled bilinearly) and ``framers.rgb.to_rgb``
(chroma repeated, then swscale's accurate 4:4:4 conversion; what the codec uses). For the first
``--frames`` pictures of each video:

1. ``shift``: the mean difference (gray levels) of the conversion's RGB from an exact float
   BT.601/BT.709 conversion (limited range, clipped to [0, 255]);
2. ``two trips``: the codec converts a source picture to RGB, codes it as a kept frame (RGB ->
   4:2:0 by swscale's default encoder path), decodes it to RGB, and the output file converts
   it to 4:2:0 again. Here the two trips without any coding: source 4:2:0 -> RGB -> 4:2:0 ->
   RGB -> 4:2:0, compared with the source *in the YUV domain* (what a player shows from both
   files alike, whatever its own conversion): luma PSNR, chroma PSNR (mean of U and V MSE) and
   the luma shift (levels).

    python bench/colour_bias.py ../shared/data/videos/val/cotracker__gradio_demo_videos_cat.mp4 \
        ../shared/cases/c00_baseline.mp4 --json bench/results/colour_bias.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from av.video.reformatter import Interpolation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from framers.rgb import to_rgb

#: FFmpeg AVColorSpace ids -> (Kr, Kb) of the luma equation
MATRICES = {1: (0.2126, 0.0722), 5: (0.299, 0.114), 6: (0.299, 0.114)}
SWSCALE_ACCURATE = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
Conversion = Callable[[av.VideoFrame, int], np.ndarray]
CONVERSIONS: dict[str, Conversion] = {
    "swscale default": lambda f, m: f.reformat(format="rgb24", src_colorspace=m, src_color_range=1).to_ndarray(),
    "swscale accurate (bilinear chroma)": lambda f, m: f.reformat(
        format="rgb24", src_colorspace=m, src_color_range=1, interpolation=SWSCALE_ACCURATE).to_ndarray(),
    "framers.rgb.to_rgb (repeated chroma)": lambda f, m: to_rgb(f, src_colorspace=m, src_color_range=1),
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


def _psnr(mses: list[float]) -> float:
    return round(float(10 * np.log10(255**2 / max(float(np.mean(mses)), 1e-9))), 2)


def measure(path: Path, frames: int) -> dict[str, Any]:
    """Per conversion: mean shift vs the exact conversion, and the two-trip YUV-domain figures."""
    rows: dict[str, dict[str, list[float]]] = {
        name: {"shift": [], "luma_mse": [], "chroma_mse": [], "luma_shift": []} for name in CONVERSIONS}
    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k >= frames:
                break
            if frame.format.name != "yuv420p" or int(frame.color_range) == 2:
                raise SystemExit(f"{path.name}: {frame.format.name}, this probe reads limited-range yuv420p only")
            matrix = int(frame.colorspace) if int(frame.colorspace) in MATRICES else 5
            reference = exact_rgb(frame, matrix)
            source = planes(frame)
            for name, convert in CONVERSIONS.items():
                rows[name]["shift"].append(float(np.mean(convert(frame, matrix) - reference)))
                current = frame
                for _ in range(2):
                    rgb = convert(current, matrix)
                    current = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                        format="yuv420p", dst_colorspace=matrix, dst_color_range=1)
                y, u, v = planes(current)
                rows[name]["luma_mse"].append(float(np.mean((y - source[0]) ** 2)))
                chroma = (np.mean((u - source[1]) ** 2) + np.mean((v - source[2]) ** 2)) / 2
                rows[name]["chroma_mse"].append(float(chroma))
                rows[name]["luma_shift"].append(float(np.mean(y - source[0])))
    return {name: {"shift_vs_exact": round(float(np.mean(r["shift"])), 3),
                   "two_trips_luma_psnr": _psnr(r["luma_mse"]),
                   "two_trips_chroma_psnr": _psnr(r["chroma_mse"]),
                   "two_trips_luma_shift": round(float(np.mean(r["luma_shift"])), 3)} for name, r in rows.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = {video.name: measure(video, args.frames) for video in args.videos}
    print("| video | YUV → RGB | shift vs exact (levels) | two trips: luma PSNR | chroma PSNR | luma shift |")
    print("|---|---|---|---|---|---|")
    for video, rows in report.items():
        for name, r in rows.items():
            print(f"| {video} | {name} | {r['shift_vs_exact']:+.3f} | {r['two_trips_luma_psnr']:.2f} dB "
                  f"| {r['two_trips_chroma_psnr']:.2f} dB | {r['two_trips_luma_shift']:+.3f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
