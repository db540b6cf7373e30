"""Reconstruction speed of ``framemae`` vs ``linear`` at 480p and 720p, next to decode + encode.

    python bench/bench_framemae.py [--frames 96] [--repeats 3] [--json bench/results/framemae_speed.json]

Sources: a 480p and a 720p val clip (first --frames frames, decoded once into memory). For each
reconstructor and keep pattern (uniform slots (1, 5); stride 4) the whole clip is rebuilt from
its kept frames (in memory, no I/O) --repeats times; reported: median wall fps and fps per CPU
second of this process (CPU time, less sensitive to other load on a shared machine). Decode:
PyAV to RGB; encode: ``framers.video_writer.VideoWriter`` (libx264 veryfast, crf 18) to a temp file.
Threads: ONNX Runtime from FRAMERS_ORT_THREADS (default: its own), OpenCV default.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framers.reconstructors.base import KeptFrame, Reconstructor  # noqa: E402
from framers.reconstructors.classical import LinearReconstructor  # noqa: E402
from framers.reconstructors.framemae import FrameMAEReconstructor  # noqa: E402
from framers.video_writer import VideoWriter  # noqa: E402
from training.cache import DATA_ROOT, decode_rgb  # noqa: E402

VAL = DATA_ROOT / "val"
SOURCES = {"480p": VAL / "cotracker__gradio_demo_videos_bear.mp4", "720p": VAL / "imageio__cockatoo.mp4"}
PATTERNS = {"uniform": (2, 3, 10, 11), "stride": (0, 4, 8, 12)}


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def reconstruct_all(rec: Reconstructor, frames: np.ndarray, offsets: tuple[int, ...]) -> None:
    n = len(frames)
    kept = [KeptFrame(c + o, frames[c + o]) for c in range(0, n, 16) for o in offsets if c + o < n]
    for _ in rec.reconstruct(iter(kept), n, 16):
        pass


def encode_all(frames: np.ndarray, path: Path) -> None:
    h, w = frames.shape[1:3]
    with VideoWriter(path, w, h, Fraction(1, 30), 30.0) as writer:
        for i, frame in enumerate(frames):
            writer.write(frame, i)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/framemae_speed.json")
    args = parser.parse_args()
    framemae = FrameMAEReconstructor()
    recs: dict[str, Reconstructor] = {"linear": LinearReconstructor(), "framemae": framemae}
    report: dict[str, object] = {
        "model": framemae.model_versions,
        "cpu_count": os.cpu_count(),
        "load_avg_start": os.getloadavg(),
        "results": [],
    }
    rows = report["results"]
    assert isinstance(rows, list)
    for label, path in SOURCES.items():
        frames = decode_rgb(path, args.frames)
        n = len(frames)

        def run_decode(path: Path = path) -> None:
            decode_rgb(path, args.frames)

        with tempfile.TemporaryDirectory() as tmp:

            def run_encode(frames: np.ndarray = frames, tmp: str = tmp) -> None:
                encode_all(frames, Path(tmp) / "o.mp4")

            jobs: dict[tuple[str, str], Callable[[], None]] = {("decode", "-"): run_decode, ("encode", "-"): run_encode}
            for name, rec in recs.items():
                for pattern, offsets in PATTERNS.items():

                    def run_rec(
                        rec: Reconstructor = rec, offsets: tuple[int, ...] = offsets, frames: np.ndarray = frames
                    ) -> None:
                        reconstruct_all(rec, frames, offsets)

                    jobs[(name, pattern)] = run_rec
            reconstruct_all(framemae, frames[:32], PATTERNS["uniform"])  # warm-up: session load
            for (name, pattern), job in jobs.items():
                runs = [timed(job) for _ in range(args.repeats)]
                wall = statistics.median(r[0] for r in runs)
                cpu = statistics.median(r[1] for r in runs)
                row = {
                    "source": label,
                    "size": f"{frames.shape[2]}x{frames.shape[1]}",
                    "frames": n,
                    "stage": name,
                    "pattern": pattern,
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "fps_wall": n / wall,
                    "fps_per_cpu_s": n / cpu,
                }
                rows.append(row)
                print(f"{label} {name:8s} {pattern:8s} {n / wall:7.1f} fps wall  {n / cpu:7.1f} fps/CPU-s", flush=True)
    report["load_avg_end"] = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    lines = ["| source | stage | pattern | fps (wall, median) | fps per CPU second |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['source']} {r['size']} | {r['stage']} | {r['pattern']} | {r['fps_wall']:.1f} | "
            f"{r['fps_per_cpu_s']:.1f} |"
        )
    args.json.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
