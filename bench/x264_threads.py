"""x264's bytes and reproducibility against its thread count (why ``X264_THREADS`` is fixed).

    python bench/x264_threads.py --runs 30 --json bench/results/x264_threads.json --md bench/results/x264_threads.md

For each clip (first ``--frames`` frames, the codec's YUV) and each thread count (0 = x264's own
choice: 1.5 × cores, capped by the picture height), ``--runs`` fresh encoders at CRF ``--crf``,
preset medium, code the same pictures as ``framers.adaptive.coding.x264_context`` does but for the
thread count, SEI dropped, each run from a fresh conversion of the RGB frames (as the codec
converts them). Reported: the number of distinct streams (sha256) and the median bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framers.adaptive.coding import to_codec_yuv  # noqa: E402
from framers.h264_sei import SeiDropper  # noqa: E402
from framers.video import FrameReader  # noqa: E402
from framers.video_writer import output_pix_fmt as _pix_fmt  # noqa: E402

VAL = ROOT.parent / "shared" / "data" / "videos" / "val"
DEFAULT_CLIPS = (VAL / "sleap__tests_data_videos_small_robot.mp4", VAL / "cotracker__gradio_demo_videos_bear.mp4")


def encode(pictures: Sequence[av.VideoFrame], threads: int, crf: int) -> bytes:
    """One x264 stream of ``pictures`` (codec YUV) on ``threads`` threads (0: x264's choice)."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height = pictures[0].width, pictures[0].height
    ctx.pix_fmt = _pix_fmt(ctx.width, ctx.height)
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"crf": str(crf), "preset": "medium"}
    if threads:
        ctx.thread_count = threads
    sei = SeiDropper()
    out = bytearray()
    for i, picture in enumerate(pictures):
        picture.pts = i
        out += b"".join(bytes(p) for p in sei.filter(ctx.encode(picture)))
    out += b"".join(bytes(p) for p in sei.filter(ctx.encode(None)) + sei.flush())
    return bytes(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="x264's bytes and reproducibility against its thread count")
    parser.add_argument("clips", type=Path, nargs="*", default=list(DEFAULT_CLIPS))
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--threads", default="0,1,2,3,4")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--crf", type=int, default=26)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for clip in args.clips:
        frames = []
        with FrameReader(clip) as reader:
            for frame in reader.frames():
                frames.append(frame.rgb)
                if len(frames) >= args.frames:
                    break

        for threads in (int(t) for t in args.threads.split(",")):
            streams = [encode([to_codec_yuv(rgb) for rgb in frames], threads, args.crf) for _ in range(args.runs)]
            row = {"clip": clip.name, "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}", "frames": len(frames),
                   "threads": threads or "x264's own", "runs": args.runs,
                   "distinct_streams": len({hashlib.sha256(s).hexdigest() for s in streams}),
                   "median_bytes": int(statistics.median(len(s) for s in streams))}
            print(json.dumps(row), flush=True)
            rows.append(row)
    lines = ["| clip | size | frames | threads | runs | distinct streams | median bytes |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['clip']} | {r['size']} | {r['frames']} | {r['threads']} | {r['runs']} | {r['distinct_streams']} "
              f"| {r['median_bytes']} |" for r in rows]
    text = "\n".join(lines) + "\n"
    if args.json:
        args.json.write_text(json.dumps({"crf": args.crf, "rows": rows}, indent=1))
    if args.md:
        args.md.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
