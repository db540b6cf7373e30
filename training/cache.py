"""Decode the train clips once into ``data/cache/<split>/<name>.npy`` (uint8 [T, H, W, 3]).

Run: ``python -m training.cache --split train [--max-frames 360]``. Training memory-maps the files.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import av
import numpy as np

from framers.rgb import to_rgb
from training.paths import CACHE_ROOT, DATA_ROOT

__all__ = ["CACHE_ROOT", "DATA_ROOT", "decode_rgb", "split_files"]


def decode_rgb(path: Path, max_frames: int | None = None) -> np.ndarray:
    """All (or the first ``max_frames``) frames of a video as uint8 [T, H, W, 3] RGB."""
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frames.append(to_rgb(frame))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"no frames in {path}")
    return np.stack(frames)


def split_files(split: str) -> list[Path]:
    with open(DATA_ROOT / "manifest.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == split]
    return [DATA_ROOT / row["file"] for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split", default="train")
    parser.add_argument("--max-frames", type=int, default=360)
    args = parser.parse_args()
    out_dir = CACHE_ROOT / args.split
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in split_files(args.split):
        target = out_dir / (path.name + ".npy")
        if target.exists():
            continue
        frames = decode_rgb(path, args.max_frames)
        if len(frames) < 16:
            print(f"skip {path.name}: {len(frames)} frames")
            continue
        np.save(target.with_suffix(".tmp.npy"), frames)
        target.with_suffix(".tmp.npy").rename(target)
        print(f"{path.name}: {frames.shape}", flush=True)


if __name__ == "__main__":
    main()
