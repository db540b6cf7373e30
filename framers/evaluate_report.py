"""Summaries and the Markdown report of ``framers evaluate`` (pure functions of its JSON)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def read_report(path: Path) -> dict[str, Any] | None:
    """An earlier JSON report at ``path`` (to resume), None when there is none or it is unreadable."""
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return report if isinstance(report, dict) else None


def round_opt(value: float | None, digits: int = 4) -> float | None:
    """``value`` rounded to ``digits``; None for None, NaN and infinities (JSON has no NaN)."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def mean_opt(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


SUMMARY_FIELDS = ("kept_ratio", "bpp", "bpp_with_audio", "size_ratio", "psnr", "psnr_mean_mse", "ssim", "ms_ssim")


def summarize(videos: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per method: means over the videos it ran on (a set's PSNR is the mean of its videos')."""
    summary: dict[str, dict[str, Any]] = {}
    for name in methods:
        ok = [v["methods"][name] for v in videos if "error" not in v["methods"].get(name, {"error": 1})]
        entry: dict[str, Any] = {"videos": len(ok), "errors": len(videos) - len(ok)}
        for key in SUMMARY_FIELDS:
            entry[key] = round_opt(mean_opt([r.get(key) for r in ok]), 5)
        frames = sum(r["frames"] for r in ok)
        compress_s = sum(r["compress_seconds"] for r in ok)
        reconstruct_s = sum(r["reconstruct_seconds"] for r in ok)
        entry["frames"] = frames
        entry["compress_fps"] = round_opt(frames / compress_s if compress_s else None, 2)
        entry["reconstruct_fps"] = round_opt(frames / reconstruct_s if reconstruct_s else None, 2)
        with_h264 = [r for r in ok if "psnr" in r.get("h264", {})]
        if with_h264:
            entry["h264"] = {
                "videos": len(with_h264),
                "bpp": round_opt(mean_opt([r["h264"]["bpp"] for r in with_h264]), 5),
                "psnr": round_opt(mean_opt([r["h264"]["psnr"] for r in with_h264])),
                "psnr_mean_mse": round_opt(mean_opt([r["h264"]["psnr_mean_mse"] for r in with_h264])),
                # over the same videos, so the difference is paired
                "psnr_method": round_opt(mean_opt([r["psnr"] for r in with_h264])),
            }
        summary[name] = entry
    return summary


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(report: dict[str, Any]) -> str:
    """The report of ``framers evaluate`` as Markdown: summary table, PSNR per video, errors."""
    settings = report["settings"]
    methods: list[str] = settings["methods"]
    videos: list[dict[str, Any]] = report["videos"]
    lines = [
        "# FrameRS evaluation",
        "",
        f"{len(videos)} videos; methods {', '.join(methods)}; keyframe codec {settings['keyframe_codec']}; "
        f"max frames {settings['max_frames'] or 'all'}; framers {report['framers_version']}; {report['created']}.",
        "",
        "PSNR: RGB, capped at 60 dB per frame, mean over frames, then over videos. "
        "PSNR(MSE): PSNR of a video's mean MSE. SSIM: Gaussian σ=1.5, RGB, full resolution. "
        "bpp: bundle video bytes (keyframes + manifest, no audio) · 8 / (W·H·frames). "
        "size: whole bundle / source file. H.264: the whole source with libx264 (ABR, medium, 4:2:0) at the "
        "bundle's video bytes (±10 %), PSNR over the same videos.",
        "",
        "## Summary (means over videos)",
        "",
        "| method | videos | kept | bpp | size | PSNR | PSNR(MSE) | SSIM | MS-SSIM | H.264 PSNR | "
        "H.264 PSNR(MSE) | compress fps | rebuild fps |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in methods:
        s = report["summary"][name]
        h = s.get("h264", {})
        lines.append(
            f"| {name} | {s['videos']}/{s['videos'] + s['errors']} | {_fmt(_pct(s['kept_ratio']), 1)} % "
            f"| {_fmt(s['bpp'], 4)} | {_fmt(s['size_ratio'], 3)} | {_fmt(s['psnr'])} | {_fmt(s['psnr_mean_mse'])} "
            f"| {_fmt(s['ssim'], 4)} | {_fmt(s['ms_ssim'], 4)} "
            f"| {_fmt(h.get('psnr'))} | {_fmt(h.get('psnr_mean_mse'))} "
            f"| {_fmt(s['compress_fps'], 1)} | {_fmt(s['reconstruct_fps'], 1)} |"
        )
    lines += ["", "## PSNR per video (dB)", "",
              "| video | size | frames | " + " | ".join(methods) + " | H.264 @ " + methods[0] + " |",
              "|---|---|---|" + "---|" * (len(methods) + 1)]
    for video in videos:
        cells = []
        for name in methods:
            entry = video["methods"].get(name, {})
            cells.append("error" if "error" in entry else _fmt(entry.get("psnr")))
        first = video["methods"].get(methods[0], {})
        h264 = first.get("h264", {}).get("psnr")
        frames = f"{video.get('frames', '–')}" + (" (cut)" if video.get("trimmed") else "")
        lines.append(
            f"| {video['video']} | {video['width']}x{video['height']} | {frames} | "
            + " | ".join(cells) + f" | {_fmt(h264)} |"
        )
    errors = [
        (video["video"], name, entry["error"])
        for video in videos
        for name, entry in video["methods"].items()
        if "error" in entry
    ]
    errors += [(video["video"], "-", video["error"]) for video in videos if "error" in video]
    if errors:
        lines += ["", "## Errors", ""]
        lines += [f"- {video} / {name}: {message}" for video, name, message in errors]
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value
