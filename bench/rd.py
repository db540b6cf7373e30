"""Rate–distortion of FrameRS against x264 on the same frames: RD points, Bjøntegaard deltas, plots.

Protocol (docs/DESIGN.md, "Quality protocol" and "Rate–distortion against x264"; issue 12):

* Each video is cut to its first ``--frames`` frames (default 96) losslessly
  (``framers.h264_reference.write_trimmed``: FFV1, RGB). That cut is the source of every point, and its
  decoded RGB frames are the reference.
* Anchor: libx264 preset medium, default GOP settings, yuv420p (yuv444p for an odd width or
  height, as ``framers.video_writer.output_pix_fmt``), at each CRF of ``--anchor-crfs``. The decoded RGB
  frames are converted to YUV by ``framers.rgb.to_yuv`` (chroma averaged, the inverse of the
  reader's repetition) — the colour path the bundle's keyframe encoder uses (PyAV's default
  reformatter until the twelfth session, on both sides). Bytes = the raw video bitstream (sum of
  the packet sizes, no container).
* Methods: lists of ``framers.pipeline.compress`` keyword sets. ``strideN[+RECON]`` keeps every
  Nth frame at each kept-frame CRF of ``--keyframe-crfs``; ``adaptive[+RECON]`` calls
  ``compress(source, bundle, target_psnr=T)`` for each T of ``--targets`` (only when
  ``compress`` has that keyword: detected with ``inspect.signature``; otherwise the method is
  skipped with a note). RECON (default ``framemae``) rebuilds the frames. Bytes = the single-file bundle (.frs) as
  stored, less its audio member (keyframe stream + deflated manifest + ZIP headers; as
  ``framers evaluate`` counts it).
* Quality: per frame RGB PSNR (peak 255, capped at 60 dB; ``framers.metrics``) of the frames
  rebuilt by ``pipeline.iter_reconstructed`` (anchor: as decoded) against the reference; a
  point's PSNR is the mean over frames; also the PSNR of the mean MSE.
* Per clip and method: Bjøntegaard delta rate and PSNR against the anchor (``framers.bdrate``,
  ``--bd-method cubic`` = VCEG-M33, or ``pchip`` = JVET CTC), over all of the method's points;
  also the BD-rate of the upper convex hull of (anchor ∪ method) points — what switching per
  clip between the method and x264 could give. Over clips: median, mean, best, worst, clips
  that beat x264 (BD-rate < 0). Adaptive: the share of (clip, target) points whose achieved PSNR
  is ≥ target − 0.5 dB.

Output: ``--json`` (rewritten after every clip; a later run with the same frames and anchor
settings keeps the clips and methods it already holds and measures only the rest — ``--fresh``
starts over), ``--md`` (tables), ``--plots DIR`` (``rd_<clip>.png`` per clip, log-rate axis,
and ``rd_summary.png``). ``--jobs N`` measures N clips at once in worker processes.

    .venv/bin/python bench/rd.py ../shared/data/videos/val --methods stride4,stride2,adaptive \\
        --json bench/results/rd_val.json --md bench/results/rd_val.md --plots bench/results/rd_val
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from framers import __version__, bdrate, pipeline
from framers.evaluate_inputs import find_videos
from framers.evaluate_report import read_report, round_opt
from framers.h264_reference import write_trimmed
from framers.video import probe

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is a folder of scripts, not a package
from rd_measure import ANCHOR_PRESET, MethodSpec, Point, measure_anchor, measure_point, source_frames
from rd_report import RATE_KEYS, add_bd, summarize, to_markdown, write_plots

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VIDEOS = ROOT.parent / "shared" / "data" / "videos" / "val"
DEFAULT_FRAMES = 96
DEFAULT_ANCHOR_CRFS = (14, 18, 22, 26, 30, 34, 38, 42, 46)
DEFAULT_KEYFRAME_CRFS = (14, 20, 26, 32, 38)
DEFAULT_TARGETS = (28.0, 30.0, 32.0, 34.0, 36.0, 38.0, 40.0)
DEFAULT_METHODS = "stride4,stride2,adaptive"
DEFAULT_RECONSTRUCTOR = "framemae"
METHOD_PATTERN = re.compile(r"^(?:stride(?P<stride>\d+)|(?P<adaptive>adaptive))(?:\+(?P<recon>[a-z0-9_]+))?"
                            r"(?::refresh(?P<refresh>0?\.\d+))?(?P<cmap>:cmap)?$")


def adaptive_available() -> bool:
    """True when ``framers.pipeline.compress`` accepts ``target_psnr`` (the adaptive mode of issue 12)."""
    return "target_psnr" in inspect.signature(pipeline.compress).parameters


def parse_methods(
    text: str,
    keyframe_crfs: Sequence[int] = DEFAULT_KEYFRAME_CRFS,
    targets: Sequence[float] = DEFAULT_TARGETS,
) -> list[MethodSpec]:
    """``"stride4,stride2+linear,adaptive"`` → method specs.

    ``strideN`` (N ≥ 1) is the stride selector at every CRF of ``keyframe_crfs``; ``adaptive`` is
    ``target_psnr=T`` for every T of ``targets``; ``+RECON`` picks the reconstructor (default
    framemae); ``:refreshR`` (fixed strides only, 0 < R < 1) adds the refresh layer for RECON
    (``compress(refresh=R)``, issue 15); ``:cmap`` (either kind) adds the candidate map
    (``compress(candidate_map=True)``). Raises ``ValueError`` for an unknown or duplicate item
    or an empty list.
    """
    from framers.registry import RECONSTRUCTORS

    methods: list[MethodSpec] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = METHOD_PATTERN.match(item)
        recon = (match.group("recon") if match else None) or DEFAULT_RECONSTRUCTOR
        if match is None or recon not in RECONSTRUCTORS or (match.group("stride") and int(match.group("stride")) < 1):
            raise ValueError(f"method {item!r}: expected strideN[+RECON][:refreshR][:cmap] or "
                             f"adaptive[+RECON][:cmap], RECON in {', '.join(RECONSTRUCTORS)}")
        refresh = float(match.group("refresh")) if match.group("refresh") else 0.0
        if refresh and (match.group("adaptive") or not 0 < refresh < 1):
            raise ValueError(f"method {item!r}: :refreshR goes with strideN only, 0 < R < 1")
        cmap = {"candidate_map": True} if match.group("cmap") else {}
        suffix = ":cmap" if cmap else ""
        if match.group("adaptive"):
            name = f"adaptive+{recon}{suffix}"
            points = tuple(Point(f"t{t:g}", {"target_psnr": float(t), **cmap}) for t in targets)
            spec = MethodSpec(name, "adaptive", recon, points)
        else:
            stride = int(match.group("stride"))
            name = f"stride{stride}+{recon}" + (f":refresh{refresh:g}" if refresh else "") + suffix
            layer = {"refresh": refresh, "refresh_reconstructor": recon} if refresh else {}
            points = tuple(Point(f"crf{c}", {"selector": "stride", "stride": stride, "keyframe_crf": int(c), **layer,
                                             **cmap})
                           for c in keyframe_crfs)
            spec = MethodSpec(name, "fixed", recon, points)
        if any(m.name == spec.name for m in methods):
            raise ValueError(f"method {spec.name} given twice")
        methods.append(spec)
    if not methods:
        raise ValueError("no methods given")
    return methods


@dataclass
class Config:
    """Everything a worker needs to measure one clip (picklable)."""

    frames: int
    anchor_crfs: tuple[int, ...]
    methods: tuple[MethodSpec, ...]
    bd_method: str = "cubic"
    rate: str = "bundle"
    tmp_dir: Path | None = None
    verbose: bool = True

    def anchor_settings(self) -> dict[str, Any]:
        return {"codec": "libx264", "preset": ANCHOR_PRESET, "crfs": list(self.anchor_crfs),
                "pix_fmt": "yuv420p (yuv444p for odd sizes)", "input": "framers.rgb.to_yuv"}


def _say(config: Config, message: str) -> None:
    if config.verbose:
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def measure_clip(path: Path, config: Config, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """All anchor and method points of one video, and its BD numbers (see the module docstring).

    ``previous``: this clip's record from an earlier run with the same frames and anchor settings;
    its anchor and every method with unchanged settings are kept, the rest measured.
    A failing point is recorded with ``error`` and left out of the BD fits.
    """
    info_src = probe(path)
    record: dict[str, Any] = previous or {}
    record.update(video=path.name, path=str(path), source_frames=info_src.frames)
    record.setdefault("methods", {})
    with tempfile.TemporaryDirectory(prefix="framers-rd-", dir=config.tmp_dir) as tmp:
        workdir = Path(tmp)
        source = workdir / "source.mkv"
        frames = write_trimmed(path, config.frames, source)
        info = {"width": info_src.width, "height": info_src.height, "fps": info_src.fps}
        frames_iter = source_frames(source)
        first = next(frames_iter)
        frames_iter.close()
        info["height"], info["width"] = first.shape[:2]  # display orientation, as measured
        record.update(frames=frames, width=info["width"], height=info["height"], fps=round_opt(info["fps"], 3))
        _say(config, f"{path.name}: {frames} frames {info['width']}x{info['height']} @ {info['fps']:.2f} fps")

        if record.get("anchor", {}).get("settings") != config.anchor_settings():
            points = []
            for crf in config.anchor_crfs:
                try:
                    anchor_point = measure_anchor(source, workdir, crf, info)
                except Exception as exc:  # a point's failure is a result
                    anchor_point = {"crf": crf, "error": _error_text(exc)}
                points.append(anchor_point)
                _say(config, f"  x264 crf {crf}: " + (anchor_point.get("error") or
                     f"{anchor_point['kbps']:.0f} kbps, {anchor_point['psnr']:.2f} dB "
                     f"({anchor_point['seconds']:.1f} s)"))
            record["anchor"] = {"settings": config.anchor_settings(), "points": points}

        for spec in config.methods:
            old = record["methods"].get(spec.name)
            if old is not None and not _has_work({"methods": {spec.name: old}}, [spec]):
                continue
            entry: dict[str, Any] = {"settings": spec.settings(), "points": []}
            record["methods"][spec.name] = entry
            if spec.kind == "adaptive" and not adaptive_available():
                entry["skipped"] = "framers.pipeline.compress has no target_psnr keyword yet (issue 12)"
                _say(config, f"  {spec.name}: skipped ({entry['skipped']})")
                continue
            for point in spec.points:
                try:
                    result = measure_point(source, workdir, spec, point, info)
                except Exception as exc:  # a point's failure is a result
                    result = {"label": point.label, "params": dict(point.kwargs), "error": _error_text(exc)}
                    if config.verbose:
                        traceback.print_exc()
                entry["points"].append(result)
                _say(config, f"  {spec.name} {point.label}: " + (result.get("error") or
                     f"{result['kbps']:.0f} kbps, {result['psnr']:.2f} dB ({result['seconds']:.1f} s)"))
    add_bd(record, config.bd_method, config.rate)
    return record


# -- reports ------------------------------------------------------------------------------------------
def build_report(clips: list[dict[str, Any]], config: Config, started: float, notes: list[str]) -> dict[str, Any]:
    """The JSON document: settings, per-clip records (in input order) and the summary."""
    names = [m.name for m in config.methods]
    return {
        "framers_version": __version__,
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(time.perf_counter() - started, 1),
        "measured_seconds": round(sum(p.get("seconds") or 0.0 for c in clips
                                      for p in [*c.get("anchor", {}).get("points", []),
                                                *(q for m in c.get("methods", {}).values() for q in m["points"])]), 1),
        "settings": {"frames": config.frames, "anchor": config.anchor_settings(), "bd_method": config.bd_method,
                     "rate_basis": config.rate, "methods": {m.name: m.settings() for m in config.methods},
                     "psnr_cap_db": 60.0,
                     "rate": "bytes: x264 packets / the .frs bundle file without audio (keyframes + deflated "
                             "manifest + ZIP headers); bitstream_bytes: "
                             "packets + codec extradata of the kept frames (manifest: manifest_bytes)"},
        "notes": notes,
        "clips": clips,
        "summary": summarize(clips, names),
    }


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


def load_previous(path: Path, config: Config) -> dict[str, dict[str, Any]]:
    """Clip records of an earlier report at ``path`` with the same frames and anchor, by path.

    Raises ``ValueError`` when the report was made with another frame count or anchor (start a
    new file or pass ``--fresh``). Records that failed as a whole are not carried over.
    """
    old = read_report(path)
    if old is None:
        return {}
    settings = old.get("settings", {})
    if settings.get("frames") != config.frames or settings.get("anchor") != config.anchor_settings():
        raise ValueError(f"{path} was made with other frames/anchor settings; use another --json or --fresh")
    return {c["path"]: c for c in old.get("clips", []) if "error" not in c}


# -- command line -------------------------------------------------------------------------------------
def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("videos", nargs="*", type=Path, default=[DEFAULT_VIDEOS], metavar="VIDEO_OR_DIR",
                        help=f"video files or folders (default {DEFAULT_VIDEOS})")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="first F frames of each video (default 96)")
    parser.add_argument("--anchor-crfs", type=_ints, default=DEFAULT_ANCHOR_CRFS, metavar="LIST",
                        help="x264 CRF sweep (default %(default)s)")
    parser.add_argument("--keyframe-crfs", type=_ints, default=DEFAULT_KEYFRAME_CRFS, metavar="LIST",
                        help="kept-frame CRF sweep of the strideN methods (default %(default)s)")
    parser.add_argument("--targets", type=_floats, default=DEFAULT_TARGETS, metavar="LIST",
                        help="target PSNRs (dB) of the adaptive method (default %(default)s)")
    parser.add_argument("--methods", default=DEFAULT_METHODS,
                        help="comma-separated strideN[+RECON] / adaptive[+RECON] (default %(default)s)")
    parser.add_argument("--bd-method", choices=bdrate.METHODS, default="cubic",
                        help="cubic (VCEG-M33, default) or pchip (JVET CTC)")
    parser.add_argument("--rate", choices=sorted(RATE_KEYS), default="bundle",
                        help="bytes for BD: bundle (x264 packets vs the .frs file as stored, default) or "
                             "bitstream (no container overhead on either side)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "rd.json", metavar="OUT.json",
                        help="results; clips already in it (same frames/anchor) are kept (default %(default)s)")
    parser.add_argument("--md", type=Path, metavar="OUT.md", help="also write markdown tables")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write rd_<clip>.png and rd_summary.png here")
    parser.add_argument("--jobs", type=int, default=1, help="clips measured at once (worker processes; default 1)")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing --json (measure everything)")
    parser.add_argument("--tmp-dir", type=Path, help="where the cut sources and bundles go (default: the system's)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (2 for bad arguments)."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    try:
        methods = parse_methods(args.methods, args.keyframe_crfs, args.targets)
        videos = find_videos(args.videos)
        if args.frames < 1 or args.jobs < 1 or not args.anchor_crfs:
            raise ValueError("--frames and --jobs must be ≥ 1 and --anchor-crfs non-empty")
    except (ValueError, FileNotFoundError) as exc:
        print(f"rd: {exc}", file=sys.stderr)
        return 2
    if not videos:
        print("rd: no video files found", file=sys.stderr)
        return 2
    config = Config(frames=args.frames, anchor_crfs=tuple(args.anchor_crfs), methods=tuple(methods),
                    bd_method=args.bd_method, rate=args.rate, tmp_dir=args.tmp_dir, verbose=not args.quiet)
    try:
        previous = {} if args.fresh else load_previous(args.json, config)
    except ValueError as exc:
        print(f"rd: {exc}", file=sys.stderr)
        return 2
    notes: list[str] = []
    if any(m.kind == "adaptive" for m in methods) and not adaptive_available():
        notes.append("adaptive skipped: framers.pipeline.compress has no target_psnr keyword yet (issue 12)")
        print(f"rd: note: {notes[-1]}", flush=True)
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}

    def complete(done: int) -> None:
        ordered = [results[str(v)] for v in videos if str(v) in results]
        report = build_report(ordered, config, started, notes)
        _write_text(args.json, json.dumps(report, indent=1))
        if args.md:
            _write_text(args.md, to_markdown(report))
        if config.verbose:
            print(f"{time.strftime('%H:%M:%S')} [{done}/{len(videos)} clips] written {args.json}", flush=True)

    todo = []
    for path in videos:
        record = previous.get(str(path))
        if record is None or _has_work(record, methods):
            todo.append(path)
        else:
            add_bd(record, config.bd_method, config.rate)
            results[str(path)] = record
    if results:
        print(f"rd: {len(results)} clips carried over from {args.json}", flush=True)

    def failed(path: Path, exc: BaseException) -> dict[str, Any]:
        return {"video": path.name, "path": str(path), "error": _error_text(exc), "methods": {}}

    done = len(results)
    if args.jobs == 1:
        for path in todo:
            try:
                results[str(path)] = measure_clip(path, config, previous.get(str(path)))
            except Exception as exc:  # an unreadable video is recorded, the others still run
                results[str(path)] = failed(path, exc)
                traceback.print_exc()
            done += 1
            complete(done)
    else:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = {pool.submit(measure_clip, p, config, previous.get(str(p))): p for p in todo}
            for future in as_completed(futures):
                path = futures[future]
                try:
                    results[str(path)] = future.result()
                except Exception as exc:
                    results[str(path)] = failed(path, exc)
                done += 1
                complete(done)
    if not todo:
        complete(done)
    report = json.loads(args.json.read_text())
    if args.plots:
        for plot in write_plots(report, args.plots):
            if config.verbose:
                print(f"plot: {plot}")
    if config.verbose:
        print(to_markdown(report).split("## BD-rate per clip")[0].rstrip())
    return 0


def _has_work(record: dict[str, Any], methods: Sequence[MethodSpec]) -> bool:
    """True when a carried-over clip still has work: a missing/changed method, or an adaptive method
    that was skipped before and can run now."""
    for m in methods:
        old = record.get("methods", {}).get(m.name)
        if old is None or old.get("settings") != m.settings():
            return True
        if "skipped" in old and adaptive_available():
            return True
    return False


if __name__ == "__main__":
    sys.exit(main())
