"""Plots of an evaluation report (``framers evaluate --plots DIR``), drawn with matplotlib's Agg backend.

* ``<prefix>_rd.png``: rate–distortion — PSNR against bits per pixel, one small point per
  video and method, a large marker at each method's mean, and each method's H.264 reference at
  the same bytes (hollow marker, dotted line from the method's mean).
* ``<prefix>_frames_<video>.png``: per-frame PSNR along one video for every method, with the
  kept frames marked on each curve and the 16-frame clip borders drawn.

Works from the report dictionary alone (the JSON written by ``framers evaluate``), so plots can
be redrawn from a saved report: ``python -m framers.plots OUT.json DIR``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt

from framers.geometry import CLIP_LEN

#: frames shown in the per-frame plot: beyond ~6 clips five curves and their kept-frame dots blur together
MAX_PLOT_FRAMES = 96


def _ok(entry: dict[str, Any]) -> bool:
    return "error" not in entry and entry.get("psnr") is not None


def plot_rate_distortion(report: dict[str, Any], path: Path) -> Path:
    methods: list[str] = report["settings"]["methods"]
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for i, name in enumerate(methods):
        colour = colours(i % 10)
        entries = [v["methods"][name] for v in report["videos"] if _ok(v["methods"].get(name, {"error": 1}))]
        if not entries:
            continue
        ax.scatter([e["bpp"] for e in entries], [e["psnr"] for e in entries], s=12, alpha=0.35, color=colour)
        summary = report["summary"][name]
        ax.scatter([summary["bpp"]], [summary["psnr"]], s=90, color=colour, edgecolor="black",
                   label=f"{name} (mean of {summary['videos']})", zorder=3)
        h264 = summary.get("h264")
        if h264 and h264.get("psnr") is not None:
            ax.scatter([h264["bpp"]], [h264["psnr"]], s=90, facecolor="none", edgecolor=colour, linewidth=2,
                       zorder=3)
            ax.plot([summary["bpp"], h264["bpp"]], [summary["psnr"], h264["psnr"]], ":", color=colour)
    ax.scatter([], [], s=90, facecolor="none", edgecolor="grey", linewidth=2, label="H.264 at the same bytes (mean)")
    xs = [e["bpp"] for v in report["videos"] for e in v["methods"].values() if _ok(e)]
    if xs and max(xs) > 4 * min(xs):  # a log axis only pays off over a wide range of rates
        ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (bundle without audio)")
    ax.set_ylabel("PSNR (dB, mean over frames, capped at 60)")
    ax.set_title(f"Rate–distortion, {len(report['videos'])} videos")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def choose_video(report: dict[str, Any], wanted: str | None = None) -> dict[str, Any] | None:
    """The video named (exactly or by a part of its name), else the first one every method succeeded on."""
    videos: list[dict[str, Any]] = report["videos"]
    if wanted:
        exact = [v for v in videos if v["video"] == wanted]
        partial = [v for v in videos if wanted in v["video"]]
        matches = exact or partial
        return matches[0] if matches else None
    methods = report["settings"]["methods"]
    for video in videos:
        if all(_ok(video["methods"].get(name, {"error": 1})) for name in methods):
            return video
    return next((v for v in videos if any(_ok(e) for e in v["methods"].values())), None)


def plot_per_frame(video: dict[str, Any], path: Path, max_frames: int = MAX_PLOT_FRAMES) -> Path:
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=120)
    shown = 0
    for i, (name, entry) in enumerate(video["methods"].items()):
        if not _ok(entry) or "per_frame_psnr" not in entry:
            continue
        values = entry["per_frame_psnr"][:max_frames]
        shown = max(shown, len(values))
        colour = colours(i % 10)
        ax.plot(range(len(values)), values, color=colour, linewidth=1.2,
                label=f"{name} ({entry['psnr']:.2f} dB)")
        kept = [k for k in entry.get("kept_indices", []) if k < len(values)]
        ax.scatter(kept, [values[k] for k in kept], s=10, color=colour, zorder=3)
    for border in range(CLIP_LEN, shown, CLIP_LEN):
        ax.axvline(border, color="grey", alpha=0.25, linewidth=0.8)
    ax.set_xlabel("frame (dots: kept frames; grey lines: 16-frame clip borders)")
    ax.set_ylabel("PSNR (dB, capped at 60)")
    cut = f", first {shown} of {video.get('frames')} frames" if shown < (video.get("frames") or 0) else ""
    ax.set_title(f"Per-frame PSNR: {video['video']} ({video['width']}x{video['height']}{cut})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem)[:60]


def write_plots(report: dict[str, Any], folder: Path, prefix: str = "eval", video: str | None = None) -> list[Path]:
    written = [plot_rate_distortion(report, Path(folder) / f"{prefix}_rd.png")]
    chosen = choose_video(report, video)
    if chosen is not None:
        written.append(plot_per_frame(chosen, Path(folder) / f"{prefix}_frames_{_slug(chosen['video'])}.png"))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (2, 3):
        print("usage: python -m framers.plots REPORT.json DIR [VIDEO]", file=sys.stderr)
        return 2
    report_path = Path(args[0])
    report = json.loads(report_path.read_text())
    for path in write_plots(report, Path(args[1]), prefix=report_path.stem, video=args[2] if len(args) == 3 else None):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
