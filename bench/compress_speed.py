"""Compression speed in one run: decode alone, x264 medium of every frame, framers compress
(fixed default, and the adaptive ``target_psnr`` mode when it exists), at 480p and 1080p.

Issue 12's budget: adaptive compression may take at most twice as long as x264 medium encoding
every frame of the same video, measured in the same run. Everything here is timed in the same
process, interleaved (repeat 1 of every method, then repeat 2, ...) so a change of background
load hits all alike; the median of ``--repeats`` is reported, with CPU ms per frame (process time
of all threads) beside the wall-clock fps.

* Inputs: a val clip (default ``sam2__notebooks_videos_blackswan_blackswan.mp4``, 854x480, 50
  frames) scaled with PyAV's reformatter (bicubic) to each resolution and encoded once with x264
  CRF 12 (yuv420p, preset medium) into ``out/bench/videos/``; ``--frames`` (default 64) frames,
  played forward and then backward when the clip is shorter (no artificial scene cut).
* ``decode``: ``FrameReader`` → RGB, nothing else.
* ``x264_medium``: decode + libx264 preset medium, CRF ``--x264-crf`` (default 23, x264's own
  default), yuv420p, default GOP, every frame; RGB converted by ``framers.rgb.to_yuv`` (the bundle's
  keyframe encoder's colour path, ``video_writer.mux_rgb``). Written to Matroska.
* ``fixed``: ``framers.pipeline.compress(src, bundle, selector="stride", stride=4)`` — the CLI
  default (every 4th frame, kept frames x264 CRF 20 veryfast).
* ``adaptive``: ``compress(src, bundle, target_psnr=--target)`` (default 34 dB), only when
  ``compress`` has that keyword (issue 12; skipped with a note otherwise); the report says
  whether the kept frames were coded once or twice (``recoded``) and how many dropped frames
  were rebuilt after coding (``rebuild_sample``), both part of its time.
* ``fixed+cmap`` (``--candidate-map``): ``fixed`` with ``candidate_map=True`` (the map's encoder
  pass: every dropped frame rebuilt at full resolution and compared with the source).
* ``analysis V`` (``--analysis``): the adaptive mode's analysis pass alone with the probe of rate
  model V (``analysis_only``), to compare probes in the same run.

Reported per resolution: fps and CPU ms/frame of each, and ``adaptive / x264_medium`` and
``fixed / x264_medium`` time ratios (≤ 2 is the issue's goal for adaptive).

    .venv/bin/python bench/compress_speed.py --repeats 3 --analysis 1.2.0,1.3.0 \\
        --json bench/results/compress_speed.json --md bench/results/compress_speed.md
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from framers import __version__, pipeline
from framers.video import FrameReader
from framers.video_writer import mux_rgb

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "videos" / "val" / "sam2__notebooks_videos_blackswan_blackswan.mp4"
CACHE_DIR = ROOT / "out" / "bench" / "videos"
RESOLUTIONS: dict[str, tuple[int, int]] = {"480p": (854, 480), "1080p": (1920, 1080)}
INPUT_CRF = 12


# -- inputs ---------------------------------------------------------------------------------------------
def _ping_pong(frames: list[av.VideoFrame], count: int) -> Iterator[av.VideoFrame]:
    """``count`` frames: forward, then backward, then forward ... (no jump at the turns)."""
    if not frames:
        raise ValueError("no decodable frame")
    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    order = order or [0]
    for i in range(count):
        yield frames[order[i % len(order)]]


def make_input(source: Path, resolution: str, frames: int, cache_dir: Path = CACHE_DIR) -> Path:
    """``frames`` frames of ``source`` scaled to ``resolution`` (bicubic, PyAV), x264 CRF 12 yuv420p
    medium in mp4; built once into ``cache_dir`` and reused. Returns the path."""
    width, height = RESOLUTIONS[resolution]
    path = cache_dir / f"{source.stem}_{resolution}_{frames}f_crf{INPUT_CRF}.mp4"
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or Fraction(30)
        decoded = [f.reformat(width=width, height=height, format="yuv420p", interpolation="BICUBIC")
                   for f in container.decode(stream)][: frames]
    partial = path.with_name(path.stem + ".partial.mp4")
    with av.open(str(partial), mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(INPUT_CRF), "preset": "medium"}
        for index, frame in enumerate(_ping_pong(decoded, frames)):
            frame = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
            frame.pts = index
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    partial.replace(path)
    return path


# -- the timed methods ----------------------------------------------------------------------------------
def decode_only(video: Path, workdir: Path) -> int:
    """Decode every frame to RGB; returns the frame count."""
    with FrameReader(video) as reader:
        return sum(1 for _ in reader.frames())


def x264_medium(video: Path, workdir: Path, crf: int = 23) -> int:
    """Decode and re-encode every frame with libx264 preset medium (yuv420p, default GOP)."""
    count = 0
    with FrameReader(video) as reader, av.open(str(workdir / "x264.mkv"), mode="w", format="matroska") as out:
        stream: Any = None
        for frame in reader.frames():
            if stream is None:
                stream = out.add_stream("libx264", rate=Fraction(reader.fps).limit_denominator(1001))
                stream.height, stream.width = frame.rgb.shape[:2]
                stream.pix_fmt = "yuv420p" if stream.width % 2 == 0 and stream.height % 2 == 0 else "yuv444p"
                stream.options = {"crf": str(crf), "preset": "medium"}
            mux_rgb(out, stream, frame.rgb, count)
            count += 1
        if stream is not None:
            mux_rgb(out, stream, None)
    return count


def _compress(video: Path, workdir: Path, **kwargs: Any) -> int:
    bundle = workdir / "bundle"
    try:
        return pipeline.compress(video, bundle, **kwargs).frames
    finally:
        shutil.rmtree(bundle, ignore_errors=True)


class AdaptiveRun:
    """``compress(video, bundle, target_psnr=target)``, noting per run how often the kept frames
    were coded (``codings``: "once", or "twice (short|over)", the first kept or not) and how many
    dropped frames were rebuilt after coding to check the estimate: what a run's time includes."""

    def __init__(self, target: float) -> None:
        self.target = target
        self.codings: list[str] = []
        self.sampled: list[int] = []

    def __call__(self, video: Path, workdir: Path) -> int:
        bundle = workdir / "bundle"
        try:
            result = pipeline.compress(video, bundle, target_psnr=self.target)
        finally:
            shutil.rmtree(bundle, ignore_errors=True)
        report = result.adaptive or {}
        recoded = report.get("recoded")
        self.codings.append("once" if not recoded else f"twice ({recoded.get('reason', 'short')}"
                            + (", the first kept)" if recoded.get("kept_first") else ")"))
        self.sampled.append(int((report.get("rebuild_sample") or {}).get("frames", 0)))
        return result.frames


def analysis_only(video: Path, workdir: Path, version: str, target: float) -> int:
    """The adaptive mode's analysis pass alone (``framers.adaptive.measure``: decode, scene cuts,
    views and interpolation features, probe encodes) with the probe of rate model ``version``, at
    the probe CRF of ``target`` (and, for a model with CRF slopes, the second stride-1 probe);
    returns the frame count. Isolates what a probe costs."""
    from framers.adaptive import ratemodel
    from framers.adaptive.measure import measure
    from framers.adaptive.selector import load_rate_model
    from framers.geometry import CLIP_LEN

    model, _ = load_rate_model(version)

    def clips() -> Iterator[Any]:
        with FrameReader(video) as reader:
            yield from reader.clips(CLIP_LEN)

    slope_crf = ratemodel.slope_probe_crf_for(target) if model.coding_slopes else None
    return measure(clips, ratemodel.probe_crf_for(target), model.probe, slope_crf).n_frames


def adaptive_available() -> bool:
    """True when ``framers.pipeline.compress`` accepts ``target_psnr``."""
    return "target_psnr" in inspect.signature(pipeline.compress).parameters


def plan(x264_crf: int, target: float, analysis: Sequence[str] = (),
         candidate_map: bool = False) -> tuple[dict[str, Callable[[Path, Path], int]], list[str]]:
    """The methods to time, and notes on what is skipped; ``analysis``: rate model versions whose
    analysis pass is timed alone too (``analysis_only``); ``candidate_map``: the fixed default
    with ``--candidate-map`` too (``fixed+cmap``)."""
    methods: dict[str, Callable[[Path, Path], int]] = {
        "decode": decode_only,
        "x264_medium": lambda v, w: x264_medium(v, w, x264_crf),
        "fixed": lambda v, w: _compress(v, w, selector="stride", stride=4),
    }
    if candidate_map:
        methods["fixed+cmap"] = lambda v, w: _compress(v, w, selector="stride", stride=4, candidate_map=True)
    notes: list[str] = []
    if adaptive_available():
        methods["adaptive"] = AdaptiveRun(target)
    else:
        notes.append("adaptive skipped: framers.pipeline.compress has no target_psnr keyword yet (issue 12)")
    for version in analysis:
        methods[f"analysis {version}"] = functools.partial(analysis_only, version=version, target=target)
    return methods, notes


def timed(fn: Callable[[], int]) -> dict[str, float]:
    """Wall and CPU seconds (all threads of this process) of ``fn()``, and the frames it returned."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    frames = fn()
    return {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0, "frames": frames}


def bench_resolution(video: Path, methods: dict[str, Callable[[Path, Path], int]], repeats: int,
                     verbose: bool = True) -> dict[str, Any]:
    """Interleaved repeats of every method on ``video``; medians, fps, ratios to x264 medium."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in methods}
    errors: dict[str, str] = {}
    for repeat in range(repeats):
        for name, fn in methods.items():
            if name in errors:
                continue
            with tempfile.TemporaryDirectory(prefix="framers-speed-") as tmp:
                try:
                    sample = timed(functools.partial(fn, video, Path(tmp)))
                except Exception as exc:  # a failing method is reported, the rest still run
                    errors[name] = f"{type(exc).__name__}: {exc}"
                    continue
            samples[name].append(sample)
            if verbose:
                print(f"{time.strftime('%H:%M:%S')}   {video.name} run {repeat + 1}: {name} "
                      f"{sample['wall_s']:.2f} s ({sample['frames'] / sample['wall_s']:.1f} fps)", flush=True)
    rows: dict[str, Any] = {}
    for name, runs in samples.items():
        if not runs:
            rows[name] = {"error": errors.get(name, "no run")}
            continue
        wall = statistics.median(r["wall_s"] for r in runs)
        cpu = statistics.median(r["cpu_s"] for r in runs)
        frames = int(runs[0]["frames"])
        rows[name] = {"frames": frames, "runs": len(runs), "wall_s": round(wall, 4), "cpu_s": round(cpu, 4),
                      "fps": round(frames / wall, 2), "cpu_ms_per_frame": round(1000 * cpu / frames, 2),
                      "wall_s_all": [round(r["wall_s"], 4) for r in runs]}
        if name in errors:
            rows[name]["error"] = errors[name]
        run = methods[name]
        if isinstance(run, AdaptiveRun):  # what the runs did (a second coding costs a pass)
            rows[name].update(codings=sorted(set(run.codings)), sampled_frames=sorted(set(run.sampled)))
            run.codings.clear()
            run.sampled.clear()
    base = rows.get("x264_medium", {}).get("wall_s")
    ratios = {f"{name}_over_x264_medium": round(rows[name]["wall_s"] / base, 3)
              for name in rows if name != "x264_medium" and base and "wall_s" in rows[name]}
    return {"video": str(video), "methods": rows, "ratios": ratios}


def to_markdown(report: dict[str, Any]) -> str:
    """One table: per resolution and method, fps, CPU ms/frame and time relative to x264 medium."""
    s = report["settings"]
    lines = ["# Compression speed (bench/compress_speed.py)", "",
             f"Source {Path(s['source']).name} scaled to each resolution, {s['frames']} frames; median of "
             f"{s['repeats']} interleaved runs; x264 medium CRF {s['x264_crf']}; adaptive target "
             f"{s['target_psnr']} dB; framers {report['framers_version']}, {report['created']}; "
             f"load average at start {report['machine']['loadavg_start']}, at end {report['machine']['loadavg_end']}.",
             ""]
    lines += [f"Note: {n}" for n in report["notes"]]
    if report["notes"]:
        lines.append("")
    lines += ["| resolution | method | fps | CPU ms/frame | time / x264 medium |", "|---|---|---|---|---|"]
    for resolution, result in report["results"].items():
        base = result["methods"].get("x264_medium", {}).get("wall_s")
        for name, row in result["methods"].items():
            if "wall_s" not in row:
                lines.append(f"| {resolution} | {name} | error: {row['error']} | | |")
                continue
            ratio = f"{row['wall_s'] / base:.2f}" if base else "–"
            did = (f" (kept frames coded {', '.join(row['codings'])}; {'/'.join(map(str, row['sampled_frames']))} "
                   "dropped frames rebuilt to check the estimate)" if "codings" in row else "")
            lines.append(f"| {resolution} | {name}{did} | {row['fps']:.1f} | {row['cpu_ms_per_frame']:.1f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="val clip to scale (default %(default)s)")
    parser.add_argument("--resolutions", default="480p,1080p", help=f"from {', '.join(RESOLUTIONS)}")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--x264-crf", type=int, default=23)
    parser.add_argument("--target", type=float, default=34.0, help="target PSNR of the adaptive mode (dB)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "compress_speed.json")
    parser.add_argument("--md", type=Path)
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    parser.add_argument("--analysis", default="", help="rate model versions (comma-separated) whose analysis "
                                                        "pass alone is timed too, e.g. 1.1.0,1.2.0")
    parser.add_argument("--candidate-map", action="store_true",
                        help="time the fixed default with the candidate map too (fixed+cmap)")
    parser.add_argument("--methods", default="", help="only these methods (comma-separated names, "
                                                       "e.g. x264_medium,fixed,fixed+cmap); default all")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(None if argv is None else list(argv))
    resolutions = [r.strip() for r in args.resolutions.split(",") if r.strip()]
    if not resolutions or any(r not in RESOLUTIONS for r in resolutions) or args.repeats < 1 or args.frames < 1:
        print(f"compress_speed: resolutions from {', '.join(RESOLUTIONS)}, repeats and frames ≥ 1", file=sys.stderr)
        return 2
    if not args.source.is_file():
        print(f"compress_speed: {args.source}: no such file", file=sys.stderr)
        return 2
    methods, notes = plan(args.x264_crf, args.target, [v.strip() for v in args.analysis.split(",") if v.strip()],
                          args.candidate_map)
    only = [m.strip() for m in args.methods.split(",") if m.strip()]
    if unknown := [m for m in only if m not in methods]:
        print(f"compress_speed: unknown methods {', '.join(unknown)} (choose from {', '.join(methods)})",
              file=sys.stderr)
        return 2
    if only:
        methods = {name: fn for name, fn in methods.items() if name in only}
    for note in notes:
        print(f"compress_speed: note: {note}", flush=True)
    load_start = os.getloadavg()
    results: dict[str, Any] = {}
    for resolution in resolutions:
        video = make_input(args.source, resolution, args.frames, args.cache_dir)
        if not args.quiet:
            print(f"{time.strftime('%H:%M:%S')} {resolution}: {video}", flush=True)
        results[resolution] = bench_resolution(video, methods, args.repeats, verbose=not args.quiet)
    report = {
        "framers_version": __version__,
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": {"source": str(args.source), "frames": args.frames, "repeats": args.repeats,
                     "x264_crf": args.x264_crf, "target_psnr": args.target, "resolutions": resolutions,
                     "input": f"bicubic scale, x264 CRF {INPUT_CRF} yuv420p medium, ping-pong when short"},
        "machine": {"cpus": os.cpu_count(), "loadavg_start": [round(v, 2) for v in load_start],
                    "loadavg_end": [round(v, 2) for v in os.getloadavg()], "pyav": av.__version__},
        "notes": notes,
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    markdown = to_markdown(report)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(markdown)
    if not args.quiet:
        print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
