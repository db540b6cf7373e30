"""The ``framers`` command line: compress, reconstruct, evaluate, plus verbs that installed
packages register under the ``framers.commands`` entry-point group (the service adds serve,
worker and client verbs there, so the codec never imports the service)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path

from tqdm import tqdm

from framers import defaults
from framers.errors import FramersError, UnsupportedOptionError

log = logging.getLogger("framers")


def _progress_bar(desc: str, enabled: bool) -> tuple[Callable[[float], None], Callable[[], None]]:
    """(update, close) of a progress bar on stderr that appears with the first progress report, so
    an input refused before any work starts prints its error line alone."""
    bars: list[tqdm] = []

    def update(fraction: float) -> None:
        if not bars:
            # percent done, no rate: a "%/s" rate reads as nonsense
            bars.append(tqdm(total=100, desc=desc, unit="%", disable=not enabled, leave=False,
                             bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} % [{elapsed}<{remaining}]"))
        bars[0].update(int(fraction * 100) - bars[0].n)

    def close() -> None:
        for bar in bars:
            bar.close()

    return update, close


def cmd_compress(args: argparse.Namespace) -> int:
    from framers.adaptive.selector import ESTIMATE_SURPLUS_DB
    from framers.evaluate_inputs import VIDEO_SUFFIXES
    from framers.pipeline import compress

    # a video's name is not a bundle's: `compress -o x.mp4` made a bundle folder named x.mp4
    if Path(args.output).suffix.lower() in VIDEO_SUFFIXES | {".gif"}:
        raise UnsupportedOptionError(
            f"-o {args.output}: a bundle is a .frs file or a folder, not a video "
            f"(did you mean {Path(args.output).with_suffix('.frs')}? `framers reconstruct` writes videos)")

    if args.refresh == 0:
        if args.refresh_kbps is not None:
            raise UnsupportedOptionError("--refresh 0 turns the refresh layer off; --refresh-kbps asks for one "
                                         "(drop one of them)")
        args.refresh = None  # off: as if not given
    given = {name for name in defaults.FIXED_PATTERN_OPTIONS if getattr(args, name) is not None}
    selector = defaults.selector_for(args.selector, args.keep is not None)
    fixed = bool(given)
    target_psnr = args.target_psnr
    if target_psnr is None and args.target_kbps is None and defaults.adaptive_by_default(given, args.keyframe_codec):
        target_psnr = defaults.TARGET_PSNR
    adaptive = target_psnr is not None or args.target_kbps is not None
    if not adaptive and not fixed and args.keyframe_codec not in (None, defaults.KEYFRAME_CODEC):
        print(f"note: {args.keyframe_codec} kept frames have no CRF for the adaptive mode to choose: "
              f"the fixed pattern runs (every {defaults.STRIDE}th frame)")
    if args.reconstructor and not (args.refresh or args.refresh_kbps is not None) and selector != "oracle":
        print(f"note: --reconstructor {args.reconstructor} is ignored: compress uses it only for --selector oracle "
              "or a refresh layer (--refresh/--refresh-kbps); choose the reconstructor at `framers reconstruct`")
    conflicts = defaults.option_conflicts(
        selector=args.selector, keep_given=args.keep is not None, stride_given=args.stride is not None,
        reconstructor=(args.reconstructor or defaults.ORACLE_RECONSTRUCTOR) if selector == "oracle" else None,
        keyframe_codec=args.keyframe_codec, crf=args.crf)
    if conflicts:
        raise UnsupportedOptionError("; ".join(f"--{name.replace('_', '-')}: {why}" for name, why in conflicts))
    if adaptive and fixed:
        raise UnsupportedOptionError(
            "--target-psnr/--target-kbps choose the kept frames and their CRF per segment; "
            "drop --selector/--keep/--stride/--crf/--refresh/--refresh-kbps (or drop the target for a fixed pattern)"
        )
    _make_parent(Path(args.output))
    update, close = _progress_bar("compress", not args.quiet)
    try:
        result = compress(
            Path(args.input),
            Path(args.output),
            selector=selector,
            keep=args.keep if args.keep is not None else defaults.KEEP,
            stride=args.stride if args.stride is not None else defaults.STRIDE,
            oracle_reconstructor=args.reconstructor or defaults.ORACLE_RECONSTRUCTOR,
            keyframe_codec=args.keyframe_codec,
            keyframe_crf=args.crf,
            target_psnr=target_psnr,
            target_kbps=args.target_kbps,
            refresh=args.refresh or 0.0,
            refresh_reconstructor=args.reconstructor or defaults.RECONSTRUCTOR,
            refresh_kbps=args.refresh_kbps,
            candidate_map=defaults.CANDIDATE_MAP if args.candidate_map is None else args.candidate_map,
            progress=update,
        )
    finally:
        close()
    print(
        f"{result.bundle_path}: kept {result.kept_frames}/{result.frames} frames "
        f"({result.selector}), {result.bundle_bytes} bytes "
        f"({result.bundle_bytes / max(1, result.source_bytes):.1%} of source"
        + (f"; audio {result.audio_bytes} bytes of it" if result.audio_bytes else "")
        + f"), {result.seconds:.1f} s"
    )
    for note in getattr(result, "warnings", []):
        print(f"warning: {note}")
    if result.refresh:
        layer = result.refresh
        print(f"  refresh: {layer['blocks']} blocks of {layer['block']}x{layer['block']} px in {layer['pictures']} "
              f"rebuilt frames ({layer['share']:.0%} of their blocks), {layer['bytes']} bytes "
              + (f"({layer['bytes'] * 8 / 1000 / max(result.duration, 1e-3):.0f} kbit/s of "
                 f"{layer['kbps']:g} asked)" if layer.get("kbps") else f"at CRF {layer['crf']}")
              + (f" + a {layer['map_bytes']}-byte block map" if layer.get("map_bytes") else "")
              + f", for {layer['reconstructor']}")
    if result.candidate_map:
        entry = result.candidate_map
        blocks = entry["mixed"] * entry["rows"] * entry["cols"]
        mixed = entry["mixed"]
        print(f"  candidate map: {entry['switched']} of {blocks} blocks (~{entry['block_px']} px) of {mixed} "
              f"mixed frame{'s' if mixed != 1 else ''} given a fixed weighting of the candidates, "
              f"{entry['bytes']} bytes, for {entry['reconstructor']} {entry['model']}")
    elif getattr(args, "candidate_map", None):
        print("  candidate map: none made (framemae mixes no frame of this video: every frame kept, held or "
              "rebuilt by linear)")
    if result.cuts:
        # both kinds start a shot: a scene cut, or a timing break (a frame shown much longer than its neighbours)
        print(f"  new shot (scene cut or timing break) at frame{'s' if len(result.cuts) > 1 else ''} "
              f"{', '.join(map(str, result.cuts[:20]))}{' …' if len(result.cuts) > 20 else ''}")
    if result.adaptive:
        report = result.adaptive
        target = f"{report['target_psnr']} dB" if report["target_psnr"] else f"{report['target_kbps']} kbps"
        verified = report.get("verified")
        # what was made next to the prediction: the rate model's bytes can be far off (2-3x on
        # synthetic clips in a fresh-user trial)
        made = f"{(result.bundle_bytes - result.audio_bytes) / 1000:.1f} kB made (bundle less audio)"
        if verified:  # a short video: measured by trial encodes, not predicted
            print(f"  adaptive: measured mean PSNR {verified['measured_psnr']:.2f} dB at CRF {verified['crf']} "
                  f"({verified['encodes']} trial encodes; the model planned CRF {verified['planned_crf']}), "
                  f"kept frames ~{report['predicted_bytes'] / 1000:.1f} kB predicted, {made} (target {target})")
        else:
            after = (f" (after coding the kept frames: {report['estimated_psnr']:.2f} dB estimated)"
                     if report.get("estimated_psnr") is not None else "")
            # a surplus left is why a lower target can make a larger bundle (a fresh-user trial
            # saw it only without -q): with -q, said on this line (without, a line below says it)
            left_over = report.get("surplus_left") if args.quiet else None
            extra = (f"; {left_over['over_db']:.2f} dB over it, not coded again within twice x264 medium's time"
                     if left_over else "")
            print(f"  adaptive: predicted mean PSNR {report['predicted_psnr']:.2f} dB{after}, kept frames "
                  f"~{report['predicted_bytes'] / 1000:.1f} kB predicted, {made} (target {target}{extra})")
        recoded = report.get("recoded")
        if args.quiet:  # the estimate above is the result; how it was reached is detail
            return 0
        if recoded:
            over = recoded.get("reason") == "over"
            brackets = int(recoded.get("brackets", 1 if recoded.get("bracketed") else 0))
            times = ("twice", "three times", "four times", f"{brackets + 2} times")[min(brackets, 3)]
            print(f"  coded {times}: the first coding was estimated at {recoded['first_estimate']:.2f} dB"
                  + (" (more than 1 dB over the target" if over else " (short of the target")
                  + (f"; its rebuilt frames' interpolation error {recoded['interp_error_ratio']:.1f}x the prediction"
                     if "interp_error_ratio" in recoded else "")
                  + "), so the plan was made again with the measured errors"
                  + (", a coarser CRF for fewer bytes" if over else ""))
            if recoded.get("bracketed"):
                print(f"  the second coding was estimated at {recoded['second_estimate']:.2f} dB, short of the target: "
                      "coded a third time at CRFs between the two"
                      + (f" ({recoded['third_estimate']:.2f} dB estimated)" if "third_estimate" in recoded else ""))
            if brackets >= 2:
                print("  the third coding was still short: coded a fourth time between it and the first"
                      + (f" ({recoded['fourth_estimate']:.2f} dB estimated)" if "fourth_estimate" in recoded else ""))
            if recoded.get("kept_first"):
                ordinal, key = (("second", "second_estimate"), ("third", "third_estimate"),
                                ("fourth", "fourth_estimate"))[min(brackets, 2)]
                print(f"  the {ordinal} coding was estimated at {recoded.get(key, recoded['second_estimate']):.2f} dB, "
                      "short of the target: the first is kept (segments below)")
        estimate, target_db = report.get("estimated_psnr"), report.get("target_psnr")
        if (recoded and recoded.get("reason") == "short" and estimate is not None and target_db
                and estimate > target_db + ESTIMATE_SURPLUS_DB):
            print(f"  the second coding came out {estimate - target_db:.2f} dB over the target: a shortfall is "
                  "coded again once only, towards more bytes rather than another miss")
        elif (recoded and recoded.get("reason") == "over" and estimate is not None and target_db
              and estimate > target_db + ESTIMATE_SURPLUS_DB):  # a fresh-user trial's grain clip: 3.3 dB, unsaid
            print(f"  still {estimate - target_db:.2f} dB over the target after coding again: a surplus moves the CRF "
                  "only part of the way at once (content whose error rises fast with the CRF fell far under the "
                  "target otherwise); ask for less to get fewer bytes")
        left = report.get("surplus_left")
        if left:
            print(f"  {left['over_db']:.2f} dB over the target, not coded again: with {left['kept_share']:.0%} of the "
                  "frames kept a second coding would take the compression past twice x264 medium's time")
        sample = report.get("rebuild_sample")
        if sample:
            rebuilt = (f", {sample['frames']} dropped frames rebuilt (interpolation error "
                       f"{sample['interp_error_ratio']:.2f}x the prediction)" if sample.get("frames") else "")
            print(f"  the estimate checked on the {'coding kept' if recoded else 'coded video'}: "
                  f"{sample['kept_frames']} kept frames decoded (x264's error {sample['coding_error_ratio']:.2f}x "
                  f"in RGB){rebuilt}")
        for seg in report["segments"][:12]:
            # the plan's own prediction per segment: the estimate after coding is the video's only
            after = f", {seg['estimated_psnr']:.1f} dB estimated once coded" if "estimated_psnr" in seg else ""
            # a segment of a few frames keeps them all whatever its stride (its first and last are kept)
            frames = seg["stop"] - seg["start"]
            every = ("every frame kept" if seg.get("kept") == frames
                     else f"every {seg['stride']} kept" + (f" ({seg['kept']} of {frames})" if "kept" in seg else ""))
            print(f"    frames {seg['start']}-{seg['stop'] - 1}: {every}, CRF {seg['crf']}, "
                  f"~{seg['predicted_psnr']:.1f} dB planned{after}")
        if len(report["segments"]) > 12:
            print(f"    … {len(report['segments']) - 12} more segments (manifest 'adaptive')")
    return 0


_CODEC_NAMES = {"h264": "x264", "vp9": "VP9", "av1": "AV1"}


def _make_parent(output: Path) -> None:
    """The output's folder, made before any work (a missing one failed only once the work was
    done). Raises UnsupportedOptionError when it cannot be made."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UnsupportedOptionError(f"cannot make the output's folder {output.parent}: {exc.strerror}") from exc


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from framers.outputs import check_container
    from framers.pipeline import reconstruct

    suffix = Path(args.output).suffix.lower()
    container = args.container or ("webm" if suffix == ".webm" else "mp4")
    # WebM holds VP9 or AV1: a .webm name without --codec means VP9 (a fresh-user trial: a traceback)
    codec = args.codec or ("vp9" if container == "webm" else "h264")
    check_container(codec, container)  # before any work
    if suffix != f".{container}":
        print(f"warning: writing {container.upper()} to {args.output} (its name says {suffix or 'nothing'})")
    _make_parent(Path(args.output))
    update, close = _progress_bar("reconstruct", not args.quiet)
    try:
        result = reconstruct(Path(args.bundle), Path(args.output), reconstructor=args.reconstructor,
                             output_crf=args.crf, progress=update, codec=codec, container=container)
    finally:
        close()
    print(
        f"{result.output_path}: {result.frames} frames {result.width}x{result.height} "
        f"({result.reconstructor}), {result.seconds:.1f} s ({result.frames / max(result.seconds, 1e-9):.1f} fps)"
    )
    for note in result.warnings:
        print(f"warning: {note}")
    target, estimate = result.target_psnr, result.estimated_psnr
    if target is not None and args.crf == defaults.OUTPUT_CRF:
        # below the target at all, the estimate is what the user gets told (its error is ~0.25 dB
        # on natural clips, more where frames are dropped from synthetic pictures)
        reach = (f"the bundle's target ({target:g} dB) is what the rebuilt frames reach"
                 if estimate is None or estimate >= target else
                 f"the rebuilt frames were estimated at {estimate:.1f} dB when the bundle was made (its target: "
                 f"{target:g} dB)")
        cost = ("(on 4 natural clips 0.3-1.4 dB at 34 dB, 1.8-4.3 dB at 40 dB, more on fine synthetic detail; "
                "at --crf 10: 0.1-0.7 and 0.5-2.3 dB, in a larger file: BENCHMARKS.md section 0b)"
                if codec == "h264" else "(measured for x264 in BENCHMARKS.md section 0b; lower --crf for less)")
        print(f"note: {reach}; this file's own {_CODEC_NAMES[codec]} encode at CRF {args.crf} costs more {cost}")
    return 0


def cmd_significance(args: argparse.Namespace) -> int:
    import json

    from framers import significance as sig

    video = Path(args.input)
    if args.frames is not None and args.frames < 1:
        raise UnsupportedOptionError(f"--frames must be at least 1 (got {args.frames})")
    if args.method == "masked":
        try:
            result = sig.masked_significance(video, max_frames=args.frames or 64, samples=args.samples,
                                             hide=args.hide, reconstructor=args.reconstructor)
        except ValueError as exc:
            raise UnsupportedOptionError(str(exc)) from exc
    else:
        target = args.target_psnr if args.target_psnr is not None or args.stride else defaults.TARGET_PSNR
        options = {"selector": "stride", "stride": args.stride} if args.stride else {"target_psnr": target}
        result = sig.exact_significance(video, max_frames=args.frames, reconstructor=args.reconstructor, **options)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result.to_json(), separators=(",", ":")))
    summary = sig.summarize(result.values)
    t, rows, cols = result.values.shape
    print(f"{args.json}: {args.method} significance of {result.frames} frames, {t}x{rows}x{cols} chunks "
          f"({result.chunk_frames} frames x {sig.CHUNK_PX}x{sig.CHUNK_PX} px); mean MSE {summary.get('mean_mse')}, "
          f"95th percentile {summary.get('p95_mse')}, {summary.get('share_below_30db', 0):.1%} of chunks under 30 dB")
    if args.png:
        frames = sig.source_frames(video, result.frames)
        print(f"{sig.heatmap_png(result, Path(args.png), frames)}: heatmap")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="framers", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="keep some of a video's frames (per scene, or a fixed pattern) as a bundle")
    p.add_argument("input", help="source video (any container/codec FFmpeg reads)")
    p.add_argument("-o", "--output", required=True, help="bundle folder, or a single file ending in .frs")
    p.add_argument("--selector", default=None,
                   help="stride (every Nth frame: the fixed pattern measured best) | framers (learned, 2 of 8 slots; "
                   "the default when only --keep is given) | oracle | uniform | random")
    p.add_argument("--keep", type=int, default=None,
                   help=f"slots kept of 8 per 16-frame clip (default {defaults.KEEP}); alone, selects with "
                   f"{defaults.SLOT_SELECTOR}")
    p.add_argument("--stride", type=int, default=None,
                   help=f"for --selector stride: keep every Nth frame (default {defaults.STRIDE})")
    p.add_argument("--reconstructor", default=None,
                   help="for --selector oracle: the reconstructor it optimises for (default "
                   f"{defaults.ORACLE_RECONSTRUCTOR}); for --refresh: the one the layer is made for (default "
                   f"{defaults.RECONSTRUCTOR})")
    p.add_argument("--keyframe-codec", choices=["x264", "ffv1"], default=None,
                   help=f"kept-frame codec (default {defaults.KEYFRAME_CODEC}); ffv1 (lossless) has no CRF for "
                   "the adaptive mode to choose, so it keeps the fixed pattern (every "
                   f"{defaults.STRIDE}th frame) unless a target is given")
    p.add_argument("--crf", type=int, default=None, help=f"x264 CRF for kept frames (default {defaults.KEYFRAME_CRF})")
    p.add_argument("--target-psnr", type=float, default=None, metavar="DB",
                   help="content-adaptive mode: per segment, keep every Nth frame (N in 1,2,4,8,16) and a CRF, "
                   "for the fewest bytes at this mean PSNR of the rebuilt video (framemae); the default "
                   f"({defaults.TARGET_PSNR:g} dB) when no --selector/--keep/--stride/--crf is given (and the "
                   "keyframe codec is x264). The target is the PSNR of the rebuilt frames; the output "
                   "file's own 4:2:0 encode (reconstruct --crf) costs more: BENCHMARKS.md section 0b")
    p.add_argument("--target-kbps", type=float, default=None, metavar="K",
                   help="content-adaptive mode for a bitrate: best predicted PSNR within K kbit/s of kept frames")
    p.add_argument("--refresh", type=float, default=None, metavar="R",
                   help="refresh layer: the encoder rebuilds the dropped frames as the decoder will "
                   "and corrects their worst R of 16x16 blocks per clip with a second x264 stream (R in "
                   "[0, 1); 0 = off, as if not given; otherwise fixed patterns only, so --refresh alone runs the "
                   "fixed default, every 4th frame). Only that reconstructor (--reconstructor, default framemae) "
                   "uses the layer. Gains and losses at equal bytes: BENCHMARKS.md section 8b")
    p.add_argument("--refresh-kbps", type=float, default=None, metavar="K",
                   help="the refresh layer's byte budget: K kbit/s over the video's duration for its stream (x264's "
                   "average-bitrate control instead of the layer's CRF; its block map, printed apart, comes on top); "
                   "alone, refreshes "
                   f"{defaults.REFRESH_SHARE:g} of the blocks (as --refresh {defaults.REFRESH_SHARE:g})")
    p.add_argument("--candidate-map", action=argparse.BooleanOptionalAction, default=None,
                   help="candidate map: the encoder rebuilds the dropped frames as framemae will and, per ~16-px "
                   "block, signals the network's mix or a fixed weighting of its candidates where that is closer "
                   "to the source by more than its bits cost at the kept frames' CRF (any keep pattern; the source is "
                   f"read once more). Default: {'on' if defaults.CANDIDATE_MAP else 'off'}. Only framemae of "
                   "the same model version uses it. Gains at equal bytes: BENCHMARKS.md section 2f")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar, no info logs and, in adaptive mode, no per-segment detail (the result, "
                        "the adaptive estimate and any warnings are still printed)")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("reconstruct", help="rebuild a playable mp4 from a bundle")
    p.add_argument("bundle", help="bundle folder or .frs file")
    p.add_argument("-o", "--output", required=True, help="output .mp4")
    p.add_argument("--reconstructor", default=defaults.RECONSTRUCTOR,
                   help="framemae (default, learned) | linear | hold | mci")
    p.add_argument("--crf", type=int, default=defaults.OUTPUT_CRF,
                   help="CRF of the output video, on its encoder's scale (x264: 0 = lossless)")
    p.add_argument("--codec", choices=("h264", "vp9", "av1"),
                   help="output video codec (default: h264; vp9 for a WebM output)")
    p.add_argument("--container", choices=("mp4", "webm"),
                   help="default: from the output's suffix (.webm), else mp4")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar and no info logs (the result and any warnings are still printed)")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("significance", help="how badly each 2-frame x 16x16 chunk is rebuilt (JSON, heatmap PNG)")
    p.add_argument("input", help="source video")
    p.add_argument("--json", required=True, metavar="OUT.json", help="per-chunk values (MSE) and a summary")
    p.add_argument("--png", metavar="OUT.png", help="also draw a heatmap")
    p.add_argument("--method", choices=("exact", "masked"), default="exact",
                   help="exact (default): the error of the video as compress + reconstruct rebuild it; masked: "
                   "CARV's mean loss over random masks (whole frames hidden, rebuilt from the uncoded source)")
    p.add_argument("--frames", type=int, default=None,
                   help="first N frames only (default: all for exact, 64 for masked)")
    p.add_argument("--target-psnr", type=float, default=None, metavar="DB",
                   help=f"exact: compress's adaptive target (default {defaults.TARGET_PSNR:g} dB)")
    p.add_argument("--stride", type=int, default=None, help="exact: keep every Nth frame instead of a target")
    p.add_argument("--samples", type=int, default=8, help="masked: random masks averaged (default 8)")
    p.add_argument("--hide", type=float, default=0.75, help="masked: share of frames each mask hides (default 0.75)")
    p.add_argument("--reconstructor", default=defaults.RECONSTRUCTOR, help="what rebuilds the hidden frames")
    p.add_argument("-q", "--quiet", action="store_true", help="no info logs")
    p.set_defaults(func=cmd_significance)

    try:
        from framers.evaluate import add_evaluate_arguments, run_evaluate

        p = sub.add_parser("evaluate", help="quality/size/speed of methods over videos")
        add_evaluate_arguments(p)
        p.set_defaults(func=run_evaluate)
    except ImportError as exc:  # pragma: no cover - evaluate needs matplotlib etc.
        log.debug("evaluate unavailable: %s", exc)

    for entry in entry_points(group="framers.commands"):
        try:
            entry.load()(sub)
        except ImportError as exc:
            log.debug("plugin %s unavailable: %s", entry.name, exc)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    if not args.verbose:
        # the HTTP client logs every request at INFO: the remote-* verbs print only their result
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except FramersError as exc:
        print(f"framers: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a place that cannot be written or read (a fresh-user trial: -o /proc/x.frs gave
        # a 19-line traceback); the message names the path
        print(f"framers: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
