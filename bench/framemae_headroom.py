"""How much FrameMAE's mixing leaves on the table (issue 13): per dropped frame, the PSNR of each of
its three candidates (``framers.motion.CANDIDATES``), of the best one, of ``framemae``'s mix, and of
a per-pixel oracle that takes, at every pixel, the candidate closest to the true frame.

    python bench/framemae_headroom.py ../shared/data/videos/val --strides 4,8 --frames 64 \\
        --json bench/results/framemae_headroom.json --md bench/results/framemae_headroom.md

Kept frames: every Nth frame and the last, through x264 (CRF ``--crf``, preset medium) as a bundle
stores them. PSNR: RGB, per dropped frame, capped at 60 dB, mean over a clip's dropped frames, then
over clips. The per-pixel oracle is an upper bound of any mixing of these candidates, and a loose
one: choosing the closest of three noisy values per pixel also picks noise. A mix near the best
single candidate and far below the oracle says the mixing, not only the flow, has room; a small
oracle margin says the candidates themselves must get better.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framers import motion  # noqa: E402
from framers.adaptive.coding import x264_round_trip  # noqa: E402
from framers.geometry import CLIP_LEN  # noqa: E402
from framers.metrics import mse, psnr_from_mse  # noqa: E402
from framers.reconstructors.base import KeptFrame  # noqa: E402
from framers.registry import get_reconstructor  # noqa: E402
from framers.video import FrameReader  # noqa: E402

SUMMARY_COLUMNS = ("best_candidate", "framemae", "pixel_oracle")


def columns(candidate_set: str) -> tuple[str, ...]:
    """The bench's columns for a candidate set (``motion.CANDIDATE_SETS``): its candidates, then
    ``SUMMARY_COLUMNS``."""
    return (*motion.CANDIDATE_SETS[candidate_set], *SUMMARY_COLUMNS)


COLUMNS = columns(motion.DEFAULT_CANDIDATES)
VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".webm", ".mov", ".264", ".h264", ".y4m", ".gif"}


def first_frames(path: Path, count: int) -> list[np.ndarray]:
    """The first ``count`` frames of a video, RGB uint8 [H, W, 3]."""
    frames: list[np.ndarray] = []
    with FrameReader(path) as reader:
        for frame in reader.frames():
            frames.append(frame.rgb)
            if len(frames) >= count:
                break
    return frames


def headroom(video: Sequence[np.ndarray], stride: int, crf: int,
             candidate_set: str | None = None) -> dict[str, float]:
    """Mean PSNR (dB) over the dropped frames of ``video`` for every column of
    ``columns(candidate_set)`` (None: the stored framemae's own set; ``framemae`` is always the
    stored model's frames)."""
    n = len(video)
    kept_idx = list(range(0, n, stride)) + ([n - 1] if (n - 1) % stride else [])
    decoded, _ = x264_round_trip([video[i] for i in kept_idx], crf, "medium")
    kept = [KeptFrame(i, d) for i, d in zip(kept_idx, decoded, strict=True)]
    rebuilder = get_reconstructor("framemae")
    rebuilt = list(rebuilder.reconstruct(iter(kept), n, CLIP_LEN))
    candidate_set = str(candidate_set or getattr(rebuilder, "candidate_set", motion.DEFAULT_CANDIDATES))
    names = columns(candidate_set)
    flows = motion.WindowFlows(kept, preset=getattr(rebuilder, "flow_preset", motion.DEFAULT_FLOW_PRESET),
                               candidate_set=candidate_set)
    psnr: dict[str, list[float]] = {c: [] for c in names}
    for plan in motion.plan_window(kept_idx, 0, n):
        if not plan.interpolated:
            continue
        candidates = flows.candidates(plan, 1)  # float32 [3, H, W, 3]
        target = video[plan.index].astype(np.float32)
        errors = [float(np.mean((c - target) ** 2)) for c in candidates]
        for name, err in zip(names[:3], errors, strict=True):
            psnr[name].append(psnr_from_mse(err))
        psnr["best_candidate"].append(psnr_from_mse(min(errors)))
        psnr["framemae"].append(psnr_from_mse(mse(rebuilt[plan.index], video[plan.index])))
        closest = np.sum((candidates - target) ** 2, axis=-1).argmin(axis=0)  # [H, W]
        oracle = np.take_along_axis(candidates, closest[None, ..., None].repeat(3, axis=-1), axis=0)[0]
        psnr["pixel_oracle"].append(psnr_from_mse(mse(np.clip(np.rint(oracle), 0, 255).astype(np.uint8),
                                                      video[plan.index])))
    return {c: float(np.mean(v)) for c, v in psnr.items() if v}


def to_markdown(rows: list[dict[str, Any]], strides: Sequence[int], cols: Sequence[str] = COLUMNS) -> str:
    lines = ["# FrameMAE mixing headroom (bench/framemae_headroom.py)", "",
             "| stride | clips | " + " | ".join(cols) + " | framemae − best candidate | oracle − framemae |",
             "|---|---|" + "---|" * (len(cols) + 2)]
    for s, sub, means in stride_means(rows, strides, cols):
        lines.append(f"| {s} | {len(sub)} | " + " | ".join(f"{means[c]:.2f}" for c in cols)
                     + f" | {means['framemae'] - means['best_candidate']:+.2f}"
                     + f" | {means['pixel_oracle'] - means['framemae']:+.2f} |")
    return "\n".join(lines + clip_lines(rows, cols)) + "\n"


def stride_means(rows: list[dict[str, Any]], strides: Sequence[int],
                 cols: Sequence[str]) -> Iterator[tuple[int, list[dict[str, Any]], dict[str, float]]]:
    """Per stride with measured rows: (stride, its rows, the mean of each column over them)."""
    for s in strides:
        sub = [r for r in rows if r["stride"] == s and "framemae" in r]
        if sub:
            yield s, sub, {c: statistics.fmean(r[c] for r in sub) for c in cols}


def clip_lines(rows: list[dict[str, Any]], cols: Sequence[str]) -> list[str]:
    """The per-clip table (a blank line first) of the rows that were measured."""
    lines = ["", "| clip | stride | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for r in rows:
        if "framemae" in r:
            lines.append(f"| {r['clip']} | {r['stride']} | " + " | ".join(f"{r[c]:.2f}" for c in cols) + " |")
    return lines


def add_clip_arguments(parser: argparse.ArgumentParser) -> None:
    """The inputs and kept-frame settings this bench and ``consistency_mix.py`` share."""
    parser.add_argument("inputs", type=Path, nargs="+", help="videos or folders of videos")
    parser.add_argument("--strides", default="4,8")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--crf", type=int, default=20)


def video_paths(inputs: Sequence[Path]) -> list[Path]:
    """The videos of ``inputs`` (files, or every video file in a folder), sorted."""
    return sorted(p for i in inputs for p in (i.iterdir() if i.is_dir() else [i])
                  if p.suffix.lower() in VIDEO_SUFFIXES)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_clip_arguments(parser)
    parser.add_argument("--candidates", choices=sorted(motion.CANDIDATE_SETS), default=None,
                        help="the candidate set of the candidate and oracle columns (default: the stored "
                        "framemae's own)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args(argv)
    strides = [int(s) for s in args.strides.split(",")]
    videos = video_paths(args.inputs)
    candidate_set = args.candidates or getattr(get_reconstructor("framemae"), "candidate_set",
                                               motion.DEFAULT_CANDIDATES)
    rows: list[dict[str, Any]] = []
    for path in videos:
        frames = first_frames(path, args.frames)
        for s in strides:
            row: dict[str, Any] = {"clip": path.name, "stride": s, "frames": len(frames)}
            if len(frames) > s:
                row.update({k: round(v, 3) for k, v in headroom(frames, s, args.crf, candidate_set).items()})
            print(json.dumps(row), flush=True)
            rows.append(row)
    text = to_markdown(rows, strides, columns(candidate_set))
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"inputs": [str(i) for i in args.inputs],
                                                                   "json": None, "md": None},
                                         "rows": rows}, indent=1, default=str))
    if args.md:
        args.md.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
