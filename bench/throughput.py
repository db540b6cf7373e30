"""Codec throughput per resolution: decode, decode+encode, compress and reconstruct fps.

Test videos are a real val clip resized with PyAV (``reformat``) to 240p/480p/720p/1080p and
encoded once as H.264 CRF 18 into a cache under ``out/bench/``. For every resolution, all
methods are timed in the same run, interleaved (run 1 of every method, then run 2, ...), so a
change in background load hits them alike; the median of ``--runs`` runs is reported.

- ``decode``: FrameReader -> RGB, nothing else (the ceiling of anything that reads a video).
- ``decode+encode``: FrameReader -> VideoWriter (H.264 CRF 18 veryfast, as reconstruct writes):
  the physical floor of any reconstruction, which has to encode every frame.
- ``compress/<selector>``: ``framers.pipeline.compress`` to a bundle folder (``adaptive``: the
  default of ``framers compress``, ``target_psnr=defaults.TARGET_PSNR``; ``stride+refresh``: every
  4th frame with a refresh layer, ``refresh=defaults.REFRESH_SHARE``).
- ``reconstruct/<reconstructor>``: ``framers.pipeline.reconstruct`` of the first bundle it accepts
  to an mp4 (``--rebuild-from``: of each named bundle, ``reconstruct/<reconstructor> [<selector>]``);
  ``--baseline ROOT`` adds ``… @baseline``, the same by the checkout at ROOT in a child process
  (``throughput_baseline.py``), interleaved: before/after a change under one load and floor.

Each also as a ratio of its fps to decode-only and to decode+encode fps of the same resolution.
Wall-clock fps depends on the load of the machine; CPU ms per frame (process time of all
threads) is reported next to it and is less sensitive to other processes.

    .venv/bin/python bench/throughput.py --resolutions 240p,480p,720p,1080p --runs 3 --frames 96 \\
        --json bench/results/throughput.json --markdown bench/results/throughput.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from framers import bundle as fb
from framers import defaults
from framers.errors import FramersError
from framers.pipeline import compress, reconstruct
from framers.registry import get_reconstructor, get_selector
from framers.video import FrameReader
from framers.video_writer import VideoWriter

ROOT = Path(__file__).resolve().parents[1]
# ../shared next to the repository root (the data shared between checkouts)
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "videos" / "val" / "sam2__demo_data_gallery_02_cups.mp4"
CACHE_DIR = ROOT / "out" / "bench" / "videos"
RESOLUTIONS: dict[str, tuple[int, int]] = {
    "240p": (426, 240),
    "480p": (854, 480),
    "720p": (1280, 720),
    "1080p": (1920, 1080),
}
SELECTORS = ("uniform", "stride", "framers")
RECONSTRUCTORS = ("linear", "hold", "mci", "framemae")


# ---------------------------------------------------------------- test videos


def cached_video(source: Path, resolution: str, frames: int, cache_dir: Path = CACHE_DIR) -> Path:
    """``frames`` frames of ``source`` resized to ``resolution``, H.264 CRF 18; built once."""
    width, height = RESOLUTIONS[resolution]
    path = cache_dir / f"{source.stem}_{resolution}_{frames}f.mp4"
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.stem + ".partial.mp4")
        _encode_resized(source, partial, width, height, frames)
        partial.replace(path)
    return path


def _looped_frames(source: Path) -> Iterator[av.VideoFrame]:
    """The source's video frames, restarted from the first frame at its end, forever."""
    while True:
        count = 0
        with av.open(str(source)) as container:
            for frame in container.decode(video=0):
                count += 1
                yield frame
        if count == 0:
            raise ValueError(f"{source}: no decodable frame")


def _encode_resized(source: Path, dest: Path, width: int, height: int, frames: int) -> None:
    with av.open(str(source)) as probe_container:
        rate = probe_container.streams.video[0].average_rate or Fraction(30)
    with av.open(str(dest), mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "medium"}
        for index, frame in zip(range(frames), _looped_frames(source), strict=False):
            resized = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BICUBIC")
            resized.pts = index
            resized.time_base = Fraction(1, 1) / Fraction(rate)
            for packet in stream.encode(resized):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


# ---------------------------------------------------------------- timing


@dataclass
class Sample:
    wall_s: float
    cpu_s: float
    frames: int


def timed(fn: Callable[[], int | Sample]) -> Sample:
    """Run ``fn`` (returns the number of frames it handled); wall and CPU seconds of this process.
    A job timed elsewhere (the baseline's child process) returns its own Sample."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    frames = fn()
    if isinstance(frames, Sample):
        return frames
    return Sample(time.perf_counter() - wall0, time.process_time() - cpu0, frames)


def decode_only(video: Path) -> int:
    with FrameReader(video) as reader:
        return sum(1 for _ in reader.frames())


def decode_encode(video: Path, output: Path) -> int:
    with FrameReader(video) as reader:
        frames = reader.frames()
        first = next(frames)
        height, width = first.rgb.shape[:2]
        with VideoWriter(output, width, height, reader.time_base, reader.fps) as writer:
            writer.write(first.rgb, first.pts)
            for frame in frames:
                writer.write(frame.rgb, frame.pts)
            return writer.frames_written


#: a selector name with this suffix also gets the refresh layer (``compress(refresh=…)``, issue 15)
REFRESH_SUFFIX = "+refresh"


def compress_options(selector: str) -> dict[str, Any]:
    """``compress`` keyword arguments of a selector name (``adaptive``: the CLI's default mode;
    ``<selector>+refresh``: that fixed pattern with a refresh layer of ``defaults.REFRESH_SHARE``)."""
    if selector.endswith(REFRESH_SUFFIX):
        return {**compress_options(selector.removesuffix(REFRESH_SUFFIX)), "refresh": defaults.REFRESH_SHARE}
    if selector == "adaptive":
        return {"target_psnr": defaults.TARGET_PSNR}
    return {"selector": selector}


def compress_frames(video: Path, bundle: Path, selector: str) -> int:
    return compress(video, bundle, **compress_options(selector)).frames


def reconstruct_frames(bundle: Path, output: Path, reconstructor: str) -> int:
    return reconstruct(bundle, output, reconstructor=reconstructor).frames


# ---------------------------------------------------------------- method availability


def available_selectors(names: tuple[str, ...] = SELECTORS) -> tuple[list[str], dict[str, str]]:
    """Selectors that can be built now, and a reason for each one that cannot."""
    ok: list[str] = []
    skipped: dict[str, str] = {}
    for name in names:
        try:
            if name.removesuffix(REFRESH_SUFFIX) != "adaptive":
                get_selector(name.removesuffix(REFRESH_SUFFIX))
            ok.append(name)
        except (ImportError, FramersError, OSError) as exc:
            skipped[name] = f"{type(exc).__name__}: {exc}"
    return ok, skipped


def available_reconstructors(names: tuple[str, ...] = RECONSTRUCTORS) -> tuple[list[str], dict[str, str]]:
    """Reconstructors that load now (learned ones load their model here, outside the timing)."""
    ok: list[str] = []
    skipped: dict[str, str] = {}
    for name in names:
        try:
            get_reconstructor(name)
            ok.append(name)
        except (ImportError, FramersError, OSError) as exc:
            skipped[name] = f"{type(exc).__name__}: {exc}"
    return ok, skipped


def pick_bundle(reconstructor: str, bundles: dict[str, Path]) -> str | None:
    """The first bundle (by selector, in order) whose kept pattern ``reconstructor`` accepts."""
    rebuilder = get_reconstructor(reconstructor)
    for selector, path in bundles.items():
        manifest = fb.read_manifest(path)
        try:
            rebuilder.check_pattern(manifest.kept_indices(), manifest.n_frames, manifest.clip_len)
        except FramersError:
            continue
        return selector
    return None


# ---------------------------------------------------------------- one resolution


@dataclass
class MethodResult:
    method: str
    runs: list[Sample] = field(default_factory=list)
    note: str = ""

    @property
    def fps(self) -> float:
        return statistics.median(s.frames / s.wall_s for s in self.runs)

    @property
    def cpu_ms_per_frame(self) -> float:
        return statistics.median(1000 * s.cpu_s / s.frames for s in self.runs)


def plan_methods(
    video: Path, work: Path, selectors: list[str], reconstructors: list[str],
    rebuild_from: list[str] | None = None, baseline: Any = None,
) -> tuple[dict[str, Callable[[], int | Sample]], dict[str, str]]:
    """Name -> zero-argument job for every method, plus notes (e.g. which bundle a reconstructor
    reads); ``rebuild_from`` and ``baseline`` (a ``BaselineWorker``): as ``--rebuild-from``, ``--baseline``."""
    jobs: dict[str, Callable[[], int | Sample]] = {
        "decode": lambda: decode_only(video),
        "decode+encode": lambda: decode_encode(video, work / "decode_encode.mp4"),
    }
    notes: dict[str, str] = {}
    bundles: dict[str, Path] = {}
    for sel in selectors:
        bundles[sel] = work / f"bundle_{sel}"
        compress(video, bundles[sel], **compress_options(sel))  # reference bundle for the reconstructors
        jobs[f"compress/{sel}"] = _bind(compress_frames, video, work / f"timed_{sel}", sel)
    for rec in reconstructors:
        picked = pick_bundle(rec, bundles)
        if picked is None:
            notes[f"reconstruct/{rec}"] = "no compatible bundle"
            continue
        for sel in rebuild_from or [picked]:
            name = f"reconstruct/{rec}" + (f" [{sel}]" if rebuild_from else "")
            kept = len(fb.read_manifest(bundles[sel]).kept_indices())
            jobs[name] = _bind(reconstruct_frames, bundles[sel], work / f"out_{rec}_{sel}.mp4", rec)
            notes[name] = f"{sel} bundle ({kept} kept)"
            if baseline is not None:  # (wall_s, cpu_s, frames) of the child process
                jobs[f"{name} @baseline"] = _bind(lambda *a: Sample(*baseline.reconstruct(*a)), bundles[sel],
                                                  work / f"base_{rec}_{sel}.mp4", rec)
                notes[f"{name} @baseline"] = f"{notes[name]}, {baseline.root}"
    return jobs, notes


def _bind(fn: Callable[[Path, Path, str], int | Sample], a: Path, b: Path, name: str) -> Callable[[], int | Sample]:
    return lambda: fn(a, b, name)


def bench_resolution(
    video: Path,
    runs: int,
    selectors: list[str],
    reconstructors: list[str],
    max_run_s: float,
    log: Callable[[str], None],
    rebuild_from: list[str] | None = None,
    baseline: Any = None,
) -> list[MethodResult]:
    """Interleaved runs of every method; a method whose run takes over ``max_run_s`` is not run again."""
    with tempfile.TemporaryDirectory(prefix="framers-bench-", dir=CACHE_DIR.parent) as tmp:
        jobs, notes = plan_methods(video, Path(tmp), selectors, reconstructors, rebuild_from, baseline)
        results = {name: MethodResult(name, note=notes.get(name, "")) for name in jobs}
        for run in range(runs):
            for name, job in jobs.items():
                if run > 0 and results[name].runs[-1].wall_s > max_run_s:
                    continue
                sample = timed(job)
                results[name].runs.append(sample)
                log(f"  run {run + 1}/{runs} {name:22} {sample.frames / sample.wall_s:7.1f} fps")
        for r in results.values():
            if len(r.runs) < runs:
                r.note = "; ".join(x for x in (r.note, f"{len(r.runs)} run: took > {max_run_s:g} s") if x)
        for name, note in notes.items():
            if name not in results:
                results[name] = MethodResult(name, note=note)
    return list(results.values())


# ---------------------------------------------------------------- report


def rows_for(resolution: str, results: list[MethodResult]) -> list[dict[str, Any]]:
    by_name = {r.method: r for r in results}
    decode_fps = by_name["decode"].fps
    floor_fps = by_name["decode+encode"].fps
    rows = []
    for r in results:
        row: dict[str, Any] = {"resolution": resolution, "method": r.method, "note": r.note}
        if r.runs:
            row |= {
                "fps": r.fps,
                "cpu_ms_per_frame": r.cpu_ms_per_frame,
                "vs_decode": r.fps / decode_fps,
                "vs_decode_encode": r.fps / floor_fps,
                "frames": r.runs[0].frames,
                "runs_fps": [s.frames / s.wall_s for s in r.runs],
                "runs_wall_s": [s.wall_s for s in r.runs],
                "runs_cpu_s": [s.cpu_s for s in r.runs],
            }
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| resolution | method | fps (median) | CPU ms/frame | × decode | × decode+encode | runs (fps) | note |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        if "fps" not in row:
            lines.append(f"| {row['resolution']} | {row['method']} | – | – | – | – | – | {row['note']} |")
            continue
        lines.append(
            f"| {row['resolution']} | {row['method']} | {row['fps']:.1f} | {row['cpu_ms_per_frame']:.1f} | "
            f"{row['vs_decode']:.2f} | {row['vs_decode_encode']:.2f} | "
            f"{' / '.join(f'{v:.1f}' for v in row['runs_fps'])} | {row['note']} |"
        )
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    """What else ran on the machine: CPU count, load averages, other busy Python jobs."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pyav": av.__version__,
        "loadavg": os.getloadavg(),
        "training_job_running": training_running(),
    }


def training_running() -> bool:
    """Whether a training or label job (``training.*``) is running; one paused with SIGSTOP for
    the benchmark (state T) takes no CPU and does not count."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if (b"training." in cmdline or b"training/" in cmdline) and b"python" in cmdline and state != "T":
            return True
    return False


def model_versions(reconstructors: list[str], selectors: list[str]) -> dict[str, dict[str, str]]:
    """Versions of the learned models behind the methods benchmarked ({} for classical ones)."""
    out = {f"reconstruct/{r}": get_reconstructor(r).model_versions for r in reconstructors}
    out |= {f"compress/{s}": get_selector(s.removesuffix(REFRESH_SUFFIX)).model_versions for s in selectors
            if s.removesuffix(REFRESH_SUFFIX) != "adaptive"}
    return {k: v for k, v in out.items() if v}


def skipped_lines(skipped: dict[str, str]) -> str:
    return "\n".join(f"- `{name}` skipped: {reason}" for name, reason in skipped.items())


# ---------------------------------------------------------------- CLI


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="real clip to resize")
    parser.add_argument("--resolutions", default="240p,480p,720p,1080p")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--selectors", default=",".join(SELECTORS))
    parser.add_argument("--reconstructors", default=",".join(RECONSTRUCTORS))
    parser.add_argument("--max-run-seconds", type=float, default=60.0,
                        help="a method whose run takes longer is not repeated at that resolution (bounds runtime)")
    parser.add_argument("--rebuild-from", default="", help="selectors whose bundles every reconstructor rebuilds")
    parser.add_argument("--baseline", type=Path, help="another checkout whose reconstruction is timed too")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    selectors, skipped = available_selectors(tuple(args.selectors.split(",")))
    reconstructors, skipped_rec = available_reconstructors(tuple(args.reconstructors.split(",")))
    skipped |= skipped_rec
    rebuild_from, baseline = [s for s in args.rebuild_from.split(",") if s] or None, None
    if args.baseline is not None:
        from throughput_baseline import BaselineWorker

        baseline = BaselineWorker(args.baseline)
    before = machine_info()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for resolution in args.resolutions.split(","):
        video = cached_video(args.source, resolution, args.frames)
        print(f"{resolution}: {video.name}", flush=True)
        results = bench_resolution(
            video, args.runs, selectors, reconstructors, args.max_run_seconds, lambda s: print(s, flush=True),
            rebuild_from, baseline,
        )
        rows += rows_for(resolution, results)
    if baseline is not None:
        baseline.close()
    report = {
        "source": str(args.source),
        "frames": args.frames,
        "runs": args.runs,
        "max_run_seconds": args.max_run_seconds,
        "seconds": time.perf_counter() - started,
        "machine_before": before,
        "machine_after": machine_info(),
        "skipped": skipped,
        "rebuild_from": rebuild_from,
        "baseline": None if baseline is None else {"root": str(baseline.root), "framers": baseline.framers_file},
        "models": model_versions(reconstructors, selectors),
        "rows": rows,
    }
    table = markdown_table(rows)
    print(table)
    print(skipped_lines(skipped))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=_json_default))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown_report(report, table))


def markdown_report(report: dict[str, Any], table: str) -> str:
    m = report["machine_before"]
    head = (
        f"Throughput: {Path(report['source']).name} resized, {report['frames']} frames per video, "
        f"median of {report['runs']} interleaved runs (a method whose run took over "
        f"{report.get('max_run_seconds', float('inf')):g} s was not repeated), {m['cpus']} CPUs, load average "
        f"{m['loadavg'][0]:.1f} at start, training job running: {m['training_job_running']}. "
        f"Total {report['seconds']:.0f} s.\n\n"
    )
    models = ", ".join(f"{k}: {v}" for k, v in report.get("models", {}).items())
    tail = skipped_lines(report["skipped"]) + (f"\n- models: {models}" if models else "")
    return head + table + ("\n\n" + tail if tail else "") + "\n"


def _json_default(obj: object) -> object:
    if isinstance(obj, Sample):
        return asdict(obj)
    raise TypeError(type(obj).__name__)


if __name__ == "__main__":
    main()
