"""``framers evaluate``: rate and quality of selector+reconstructor methods on a set of videos.

For every video and method (``SELECTOR+RECONSTRUCTOR``, e.g. ``uniform+linear``) the source is
compressed into a temporary bundle folder, and the frames rebuilt by
``pipeline.iter_reconstructed`` (before any mp4 encode) are compared with the source frames,
decoded again, frame by frame (docs/DESIGN.md, quality protocol). All methods of a video are
measured in one streaming pass over the source, so the reference frame's statistics are
computed once and memory holds one frame per method.

Methods with the same selector share one bundle (``uniform+hold`` and ``uniform+linear`` keep
the same frames), so it is compressed once. The H.264 reference point of a method is the whole
source encoded with libx264 (ABR, preset medium, 4:2:0) at the bundle's video bytes, re-encoded
with a corrected bitrate until its size is within 10 % of them; one encode serves every method
of a video whose bundle is within that tolerance. Its PSNR is measured like the methods' (SSIM
and MS-SSIM are not computed for it, to save time).

Rate: ``bpp`` counts the bundle's video part (keyframes + manifest); the audio track is copied
unchanged into bundles and is not what the quality numbers measure, so counting it would
penalise videos with sound. ``bpp_with_audio`` and ``bundle_bytes`` count everything.

With ``--max-frames N`` a longer video is cut to its first N frames, written losslessly (FFV1,
RGB) to a temporary file that stands in for the source (without audio); its source bytes are
then prorated (``source_bytes_prorated``).

Parts: methods, inputs and options in ``framers.evaluate_inputs``; the H.264 reference in
``framers.h264_reference``; summaries and the Markdown report in ``framers.evaluate_report``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import numpy as np
from tqdm import tqdm

from framers import __version__, defaults
from framers import bundle as fb
from framers.errors import FramersError, UnsupportedOptionError
from framers.evaluate_inputs import DEFAULT_METHODS, Options, find_videos, parse_methods, resumable, settings_of
from framers.evaluate_report import round_opt, summarize, to_markdown
from framers.h264_reference import H264_PRESET, H264Reference, make_h264_reference, within, write_trimmed
from framers.metrics import Reference, VideoQuality, bits_per_pixel, compare
from framers.pipeline import CompressResult, compress, iter_reconstructed
from framers.registry import get_reconstructor
from framers.video import FrameReader, probe
from framers.video_writer import output_pix_fmt


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# -- measuring --------------------------------------------------------------------------------------
class TimedStream:
    """An iterator of frames that records the time spent producing them and the first error."""

    def __init__(self, frames: Iterator[np.ndarray]) -> None:
        self._frames = frames
        self.seconds = 0.0
        self.error: str | None = None
        self.done = False

    def next(self) -> np.ndarray | None:
        """The next frame; None at the end or after an error (kept in ``error``)."""
        if self.done:
            return None
        started = time.perf_counter()
        try:
            return next(self._frames)
        except StopIteration:
            self.done = True
            return None
        except Exception as exc:  # a failing method is a result, not a crash
            self.done = True
            self.error = _error_text(exc)
            return None
        finally:
            self.seconds += time.perf_counter() - started

    def fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
        self.done = True

    def finish(self) -> None:
        """Drive the stream to its end (a reconstructor checks its frame count there)."""
        if self.next() is not None:
            self.fail("more frames rebuilt than the source has")


@contextlib.contextmanager
def _rebuilt_frames(bundle: Path, reconstructor: str) -> Iterator[Iterator[np.ndarray]]:
    with fb.open_bundle(bundle) as folder:
        manifest = fb.read_manifest(folder)
        yield iter_reconstructed(folder, manifest, get_reconstructor(reconstructor))


def _decoded(path: Path) -> Iterator[np.ndarray]:
    with FrameReader(path) as reader:
        for frame in reader.frames():
            yield frame.rgb


def _say(options: Options, message: str) -> None:
    """One line per stage in the progress output (long runs are read from a log)."""
    if options.progress:
        tqdm.write(f"{time.strftime('%H:%M:%S')} {message}")


def evaluate_video(path: Path, options: Options, workdir: Path) -> dict[str, Any]:
    """All methods on one video: compress each distinct bundle, encode the H.264 references,
    then measure every stream against the source in one pass."""
    info = probe(path)
    record: dict[str, Any] = {
        "video": path.name,
        "path": str(path),
        "width": info.width,
        "height": info.height,
        "fps": round_opt(info.fps),
        "source_frames": info.frames,
        "source_bytes": path.stat().st_size,
        "trimmed": False,
        "methods": {},
    }
    source = path
    source_bytes = float(path.stat().st_size)
    if options.max_frames and info.frames > options.max_frames:
        source = workdir / "source.mkv"
        kept_count = write_trimmed(path, options.max_frames, source)
        source_bytes = source_bytes * kept_count / max(1, info.frames)
        record.update(trimmed=True, source_bytes_prorated=True)

    # 1. bundles, one per distinct kept pattern
    bundles: dict[tuple[str, str], CompressResult | str] = {}
    for method in options.methods:
        key = method.bundle_key
        if key in bundles:
            continue
        folder = workdir / f"bundle-{len(bundles)}"
        try:
            bundles[key] = compress(
                source, folder, selector=method.selector, keep=options.keep, stride=options.stride,
                oracle_reconstructor=method.reconstructor, keyframe_codec=options.keyframe_codec,
                candidate_map=options.candidate_map,
            )
        except Exception as exc:  # recorded per method
            bundles[key] = _error_text(exc)
        result = bundles[key]
        _say(options, f"{path.name}: compress {method.selector}: "
             + (result if isinstance(result, str) else f"{result.seconds:.1f} s, {result.bundle_bytes} bytes"))

    # 2. H.264 references at each bundle's video bytes
    references: list[H264Reference] = []
    reference_of: dict[str, H264Reference] = {}
    if options.h264_reference:
        for method in options.methods:
            result = bundles[method.bundle_key]
            if isinstance(result, str):
                continue
            target = _video_bytes(result.bundle_path)
            match = next((r for r in references if within(r.bytes, target)), None)
            if match is None:
                try:
                    match = make_h264_reference(
                        source, workdir / f"h264-{len(references)}.mkv", result.width, result.height,
                        info.fps, result.frames, target,
                    )
                except Exception as exc:  # recorded per method
                    record["methods"].setdefault(method.name, {})["h264_error"] = _error_text(exc)
                    continue
                references.append(match)
                _say(options, f"{path.name}: H.264 reference {match.bytes} bytes (target {target}, "
                     f"{match.encodes} encodes, {match.seconds:.1f} s)")
            reference_of[method.name] = match

    # 3. one pass over the source: every method's rebuilt frames and every reference
    qualities: dict[str, VideoQuality] = {}
    streams: dict[str, TimedStream] = {}
    with contextlib.ExitStack() as stack:
        for method in options.methods:
            result = bundles[method.bundle_key]
            if isinstance(result, str):
                continue
            try:
                frames = stack.enter_context(_rebuilt_frames(result.bundle_path, method.reconstructor))
            except Exception as exc:  # e.g. a learned model that is not installed
                record["methods"][method.name] = {"error": _error_text(exc)}
                continue
            streams[method.name] = TimedStream(frames)
            qualities[method.name] = VideoQuality(structural_metrics=options.structural)
        ref_streams = {id(r): TimedStream(_decoded(r.path)) for r in references}

        n_source = 0
        total = _bundles_frames(bundles) or None
        bar = tqdm(_decoded(source), total=total, desc=f"  {path.name[:40]}", unit="frame",
                   leave=False, disable=not options.progress, mininterval=5)
        for rgb in bar:
            n_source += 1
            reference = Reference(rgb, structural=options.structural)
            for name, stream in streams.items():
                frame = stream.next()
                if frame is not None:
                    try:
                        qualities[name].add(reference, frame)
                    except ValueError as exc:  # e.g. a reconstructor returning the wrong size
                        stream.fail(_error_text(exc))
            for reference_h264 in references:
                frame = ref_streams[id(reference_h264)].next()
                if frame is not None:
                    reference_h264.quality.add_scores(compare(reference, frame, structural_metrics=False))
        for stream in [*streams.values(), *ref_streams.values()]:
            stream.finish()
        _say(options, f"{path.name}: measured {n_source} frames; rebuild seconds "
             + ", ".join(f"{name} {stream.seconds:.1f}" for name, stream in streams.items()))

    # 4. the record
    for method in options.methods:
        result = bundles[method.bundle_key]
        entry: dict[str, Any] = record["methods"].setdefault(method.name, {})
        entry.update(selector=method.selector, reconstructor=method.reconstructor)
        if isinstance(result, str):
            entry["error"] = result
            continue
        if "error" in entry:
            continue
        stream = streams[method.name]
        quality = qualities[method.name]
        if stream.error is None and quality.frames != n_source:
            stream.error = f"rebuilt {quality.frames} frames, the source has {n_source}"
        if stream.error is not None:
            entry["error"] = stream.error
            continue
        entry.update(_method_record(result, quality, stream.seconds, source_bytes, options))
        shared = [m.name for m in options.methods if m.bundle_key == method.bundle_key and m != method]
        if shared:
            entry["bundle_shared_with"] = shared
        h264 = reference_of.get(method.name)
        if h264 is not None:
            entry["h264"] = _h264_record(h264, result, ref_streams[id(h264)], n_source)
            entry["h264"]["rate_ratio"] = round_opt(h264.bytes / max(1, _video_bytes(result.bundle_path)))
    record["frames"] = n_source
    return record


def _bundles_frames(bundles: dict[tuple[str, str], CompressResult | str]) -> int:
    return next((r.frames for r in bundles.values() if not isinstance(r, str)), 0)


def _video_bytes(bundle: Path) -> int:
    """Bundle bytes as stored without the audio track (a .frs file: its size less the audio
    member as stored)."""
    total = fb.bundle_bytes(bundle)
    if Path(bundle).is_file():
        return total - fb.stored_sizes(bundle).get(fb.AUDIO, 0)
    audio = bundle / fb.AUDIO
    return total - (audio.stat().st_size if audio.is_file() else 0)


def _kept_indices(bundle: Path) -> list[int]:
    with fb.open_bundle(bundle) as folder:
        return fb.read_manifest(folder, verify=False).kept_indices()


def _method_record(
    result: CompressResult, quality: VideoQuality, seconds: float, source_bytes: float, options: Options
) -> dict[str, Any]:
    video_bytes = _video_bytes(result.bundle_path)
    pixels = (result.width, result.height, result.frames)
    return {
        "frames": result.frames,
        "kept_frames": result.kept_frames,
        "kept_ratio": round_opt(result.kept_frames / max(1, result.frames)),
        "bundle_bytes": result.bundle_bytes,
        "video_bytes": video_bytes,
        "audio_bytes": result.bundle_bytes - video_bytes,
        "source_bytes": round(source_bytes),
        "size_ratio": round_opt(result.bundle_bytes / source_bytes if source_bytes else float("nan"), 5),
        "bpp": round_opt(bits_per_pixel(video_bytes, *pixels), 5),
        "bpp_with_audio": round_opt(bits_per_pixel(result.bundle_bytes, *pixels), 5),
        "psnr": round_opt(quality.mean_psnr),
        "psnr_mean_mse": round_opt(quality.psnr_of_mean_mse),
        "ssim": round_opt(quality.mean_ssim, 5),
        "ms_ssim": round_opt(quality.mean_ms_ssim, 5),
        "compress_seconds": round_opt(result.seconds, 3),
        "compress_fps": round_opt(result.frames / result.seconds if result.seconds > 0 else None, 2),
        "reconstruct_seconds": round_opt(seconds, 3),
        "reconstruct_fps": round_opt(result.frames / seconds if seconds > 0 else None, 2),
        "keyframe_codec": options.keyframe_codec,
        "kept_indices": _kept_indices(result.bundle_path),
        "per_frame_psnr": [round(v, 3) for v in quality.psnr],
    }


def _h264_record(h264: H264Reference, result: CompressResult, stream: TimedStream, n_source: int) -> dict[str, Any]:
    quality = h264.quality
    record: dict[str, Any] = {
        "bytes": h264.bytes,
        "target_bytes": h264.target_bytes,
        "bitrate": round(h264.bitrate),
        "bpp": round_opt(bits_per_pixel(h264.bytes, result.width, result.height, result.frames), 5),
        "encodes": h264.encodes,
        "encode_seconds": round_opt(h264.seconds, 3),
        "preset": H264_PRESET,
        "pix_fmt": output_pix_fmt(result.width, result.height),
    }
    if stream.error is not None or quality.frames != n_source:
        record["error"] = stream.error or f"decoded {quality.frames} frames, the source has {n_source}"
        return record
    record.update(psnr=round_opt(quality.mean_psnr), psnr_mean_mse=round_opt(quality.psnr_of_mean_mse))
    return record


def build_report(videos: list[dict[str, Any]], options: Options, started: float) -> dict[str, Any]:
    names = [m.name for m in options.methods]
    return {
        "framers_version": __version__,
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(time.perf_counter() - started, 1),
        "settings": settings_of(options),
        "videos": videos,
        "summary": summarize(videos, names),
    }


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


# -- command line -------------------------------------------------------------------------------------
def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", type=Path, metavar="VIDEO_OR_DIR",
                        help="video files, or folders whose video files are all evaluated")
    parser.add_argument("--methods", default=DEFAULT_METHODS,
                        help=f"comma-separated SELECTOR+RECONSTRUCTOR list (default {DEFAULT_METHODS})")
    parser.add_argument("--json", required=True, type=Path, metavar="OUT.json", help="write the results here")
    parser.add_argument("--markdown", type=Path, metavar="OUT.md", help="also write a markdown report")
    parser.add_argument("--plots", type=Path, metavar="DIR",
                        help="write a rate-distortion plot and a per-frame PSNR plot here")
    parser.add_argument("--plot-video", metavar="NAME",
                        help="video (file name or part of it) for the per-frame plot (default: the first "
                             "video every method succeeded on)")
    parser.add_argument("--keyframe-codec", choices=sorted(fb.KEYFRAME_CODECS), default=fb.DEFAULT_KEYFRAME_CODEC)
    parser.add_argument("--max-frames", type=int, metavar="N",
                        help="evaluate only the first N frames of each video (a lossless cut stands in for it)")
    parser.add_argument("--keep", type=int, default=defaults.KEEP, help="slots kept per 16-frame clip (slot selectors)")
    parser.add_argument("--stride", type=int, default=defaults.STRIDE, help="keep every Nth frame (stride selector)")
    parser.add_argument("--candidate-map", action="store_true",
                        help="bundles with a candidate map (compress --candidate-map); it applies to framemae "
                             "only, whose bundle bytes then count it")
    parser.add_argument("--h264-reference", action=argparse.BooleanOptionalAction, default=True,
                        help="also encode each video with libx264 at each bundle's size and measure it")
    parser.add_argument("--ssim", action=argparse.BooleanOptionalAction, default=True,
                        help="compute SSIM and MS-SSIM (the slowest part)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the videos already in the --json report (same settings) and do the rest")
    parser.add_argument("--tmp-dir", type=Path, help="where temporary bundles go (default: the system's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run_evaluate(args: argparse.Namespace) -> int:
    try:
        methods = parse_methods(args.methods)
        videos = find_videos(args.videos)
    except (UnsupportedOptionError, FileNotFoundError) as exc:
        print(f"framers evaluate: {exc}", file=sys.stderr)
        return 2
    if not videos:
        print("framers evaluate: no video files found", file=sys.stderr)
        return 2
    if args.max_frames is not None and args.max_frames < 1:
        print("framers evaluate: --max-frames must be at least 1", file=sys.stderr)
        return 2
    options = Options(
        methods=methods, keyframe_codec=args.keyframe_codec, max_frames=args.max_frames, keep=args.keep,
        stride=args.stride, h264_reference=args.h264_reference, structural=args.ssim, progress=not args.quiet,
        candidate_map=args.candidate_map,
    )
    try:
        done = resumable(args.json, options) if args.resume else {}
    except UnsupportedOptionError as exc:
        print(f"framers evaluate: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    for path in tqdm(videos, desc="videos", unit="video", disable=not options.progress, mininterval=5):
        if str(path) in done:
            results.append(done[str(path)])
            continue
        with tempfile.TemporaryDirectory(prefix="framers-eval-", dir=args.tmp_dir) as tmp:
            try:
                results.append(evaluate_video(path, options, Path(tmp)))
            except (FramersError, OSError, av.error.FFmpegError, ValueError) as exc:
                # an unreadable video is recorded, the others still run
                results.append({"video": path.name, "path": str(path), "width": 0, "height": 0,
                                "error": _error_text(exc), "methods": {}})
                if not args.quiet:
                    traceback.print_exc()
        # after every video, so a long run can be read (or resumed) while it goes on
        partial = build_report(results, options, started)
        _write_text(args.json, json.dumps(partial, indent=1))
        if args.markdown:
            _write_text(args.markdown, to_markdown(partial))
    report = build_report(results, options, started)
    _write_text(args.json, json.dumps(report, indent=1))
    if args.markdown:
        _write_text(args.markdown, to_markdown(report))
    if args.plots:
        from framers.plots import write_plots

        for plot in write_plots(report, args.plots, prefix=args.json.stem, video=args.plot_video):
            print(f"plot: {plot}")
    failed = sum(s["errors"] for s in report["summary"].values())
    print(f"evaluated {len(results) - len(done)} videos ({len(done)} carried over) x {len(methods)} methods "
          f"in {report['seconds']:.0f} s "
          f"({failed} method errors); results in {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="framers evaluate", description=__doc__.splitlines()[0] if __doc__ else None)
    add_evaluate_arguments(parser)
    return parser


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Entry point: a parsed Namespace (from ``framers evaluate``) or an argv list."""
    if not isinstance(args, argparse.Namespace):
        args = build_parser().parse_args(None if args is None else list(args))
    return run_evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
