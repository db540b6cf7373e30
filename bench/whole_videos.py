"""Issue 12's claims on whole videos, not 64-frame cuts: adaptive compression time against x264
medium of every frame in the same run, how often the kept frames were coded, and the achieved
PSNR of the rebuilt frames against the target.

``bench/rd.py`` and ``bench/compress_speed.py`` measure cuts of 64 frames, where a video is one or
two segments and one CRF group; a platform sends whole videos. Per video, in one process:

* ``x264_medium``: decode + libx264 preset medium at CRF ``--x264-crf`` (23) of every frame
  (``compress_speed.x264_medium``: the same colour path as the bundle's kept frames);
* ``adaptive``: ``framers.pipeline.compress(video, bundle, target_psnr=--target)``, its time, the
  bundle's bytes and how the kept frames were coded (``codings``: 1 + a second coding + brackets);
* ``achieved``: ``framers.pipeline.reconstruct(bundle, out, reference=video)``'s mean per-frame
  PSNR (RGB, capped at 60 dB) of the frames it rebuilt, against the job's ``estimated_psnr``.

The two timed parts alternate over ``--repeats`` runs (medians); the reconstruction runs once. The
ratio ``adaptive / x264_medium`` is issue 12's bound (≤ 2).

    .venv/bin/python bench/whole_videos.py ../shared/data/videos/val/deeplabcut__*.mp4 \\
        ../shared/data/videos/val/pyscenedetect__testvideo.mp4 ../shared/data/videos/val/askanything__*.mp4 \\
        --json bench/results/whole_videos.json --md bench/results/whole_videos.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from compress_speed import timed, x264_medium  # noqa: E402

from framers import __version__, pipeline  # noqa: E402


def codings_of(report: dict[str, Any]) -> int:
    """How many times the kept frames were coded (the job's ``adaptive`` record)."""
    recoded = report.get("recoded")
    if not recoded:
        return 1
    return 2 + int(recoded.get("brackets", 1 if recoded.get("bracketed") else 0))


def measure_video(video: Path, target: float, x264_crf: int, repeats: int, workdir: Path) -> dict[str, Any]:
    """One video: medians of ``repeats`` interleaved x264 / adaptive runs, then one rebuild."""
    x264_runs, adaptive_runs = [], []
    result: Any = None
    bundle = workdir / "b.frs"
    for _ in range(repeats):
        x264_runs.append(timed(lambda: x264_medium(video, workdir, x264_crf)))

        def adaptive() -> int:
            nonlocal result
            bundle.unlink(missing_ok=True)
            result = pipeline.compress(video, bundle, target_psnr=target)
            return int(result.frames)

        adaptive_runs.append(timed(adaptive))
    rebuilt = pipeline.reconstruct(bundle, workdir / "out.mp4", reference=video)
    report = result.adaptive or {}
    x264_s = statistics.median(r["wall_s"] for r in x264_runs)
    adaptive_s = statistics.median(r["wall_s"] for r in adaptive_runs)
    segments = report.get("segments") or []
    return {
        "video": video.name, "frames": int(result.frames), "width": int(rebuilt.width), "height": int(rebuilt.height),
        "x264_medium_s": round(x264_s, 2), "adaptive_s": round(adaptive_s, 2),
        "ratio": round(adaptive_s / x264_s, 2), "codings": codings_of(report),
        "surplus_left": report.get("surplus_left") is not None,
        "bundle_bytes": int(result.bundle_bytes), "audio_bytes": int(result.audio_bytes),
        "kept_frames": int(result.kept_frames),
        "strides": sorted({int(s["stride"]) for s in segments}), "crfs": sorted({int(s["crf"]) for s in segments}),
        "target_psnr": target, "estimated_psnr": report.get("estimated_psnr"),
        "achieved_psnr": round(statistics.fmean(rebuilt.psnr), 2) if rebuilt.psnr else None,
    }


def to_markdown(report: dict[str, Any]) -> str:
    """The report as a table."""
    lines = [
        "# Whole videos: adaptive compression against x264 medium (bench/whole_videos.py)", "",
        f"Target {report['target_psnr']:g} dB; x264 medium CRF {report['x264_crf']} of every frame in the same "
        f"run; medians of {report['repeats']} interleaved runs; framers {report['framers_version']}, "
        f"{report['created']}.", "",
        "| video | frames | size | x264 medium s | adaptive s | ratio (≤ 2) | codings | kept | strides | CRFs "
        "| bundle bytes (audio) | estimated dB | achieved dB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in report["videos"]:
        lines.append(
            f"| {v['video']} | {v['frames']} | {v['width']}x{v['height']} | {v['x264_medium_s']:.1f} "
            f"| {v['adaptive_s']:.1f} | {v['ratio']:.2f} | {v['codings']}"
            + (" (surplus left)" if v["surplus_left"] else "")
            + f" | {v['kept_frames']} | {', '.join(map(str, v['strides']))} | {', '.join(map(str, v['crfs']))} "
            f"| {v['bundle_bytes']} ({v['audio_bytes']})"
            f" | {v['estimated_psnr']} | {v['achieved_psnr']} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--target", type=float, default=35.0, help="target PSNR (dB; default %(default)s)")
    parser.add_argument("--x264-crf", type=int, default=23)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args(argv)
    videos = []
    for video in args.videos:
        workdir = Path(tempfile.mkdtemp(prefix="whole-video-"))
        try:
            videos.append(measure_video(video, args.target, args.x264_crf, max(1, args.repeats), workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(json.dumps(videos[-1]), flush=True)
    report = {"framers_version": __version__, "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "target_psnr": args.target, "x264_crf": args.x264_crf, "repeats": max(1, args.repeats),
              "videos": videos}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.md:
        args.md.write_text(to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
