"""compress: source video -> keyframe bundle; reconstruct: bundle -> playable mp4 (or frames).

Both stream: one clip of frames in memory at a time (the oracle selector reads the source twice).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from framers import bundle as fb
from framers import defaults
from framers.adaptive.coding import codec_yuv
from framers.audio import audio_offset, extract_audio
from framers.clip import Clip
from framers.errors import BundleError, InvalidVideoError, UnsupportedOptionError
from framers.geometry import CLIP_LEN, SLOT_LEN
from framers.keyframes import KeyframeEncoder, iter_keyframes
from framers.outputs import output_warnings
from framers.reconstructors.base import KeptFrame, Reconstructor
from framers.registry import get_reconstructor, get_selector
from framers.scenes import SceneAnalyser, shot_edges, timing_breaks
from framers.selectors import Selector
from framers.significance import ChunkAccumulator, Significance, chunk_frames_for, frame_error
from framers.video import FrameReader, probe, source_facts
from framers.video_writer import BackgroundWrites, VideoWriter, writer_options

ProgressFn = Callable[[float], None]


@dataclass
class CompressResult:
    bundle_path: Path
    bundle_bytes: int
    source_bytes: int
    frames: int
    kept_frames: int
    width: int
    height: int
    fps: float
    seconds: float
    selector: str
    keep: int
    model_versions: dict[str, str] = field(default_factory=dict)
    cuts: list[int] = field(default_factory=list)
    adaptive: dict[str, Any] | None = None
    # deliberate changes to the source (deinterlaced, tone-mapped, alpha flattened, audio dropped)
    warnings: list[str] = field(default_factory=list)
    has_audio: bool = False  # the bundle holds audio (not only: the source had an audio stream)
    audio_bytes: int = 0  # of bundle_bytes, the audio track's (AAC): on short clips often most of it
    refresh: dict[str, Any] | None = None  # the manifest's refresh entry (``compress(refresh=…)``)
    #: the manifest's candidate map entry (``compress(candidate_map=True)``; None without one)
    candidate_map: dict[str, Any] | None = None
    duration: float = 0.0  # seconds the video plays (``Manifest.duration_seconds``)


@dataclass
class ReconstructResult:
    output_path: Path
    frames: int
    width: int
    height: int
    seconds: float
    reconstructor: str
    model_versions: dict[str, str] = field(default_factory=dict)
    kept: list[int] = field(default_factory=list)  # indices of the frames the bundle holds
    times: list[float] = field(default_factory=list)  # when each frame is shown (seconds)
    psnr: list[float] | None = None  # per frame against `reference` (capped at 60 dB), if given
    target_psnr: float | None = None  # the bundle's adaptive target, as asked
    #: what the rebuilt frames were foretold to reach when the bundle was made (manifest): the
    #: adaptive plan's PSNR estimated after coding (else a short video's measured PSNR, else an
    #: unreachable target's best plan)
    estimated_psnr: float | None = None
    #: with `reference`: the per-chunk MSE of the rebuilt frames (framers.significance, "exact")
    significance: Significance | None = None
    #: what the user must be told (a refresh layer not applied, …)
    warnings: list[str] = field(default_factory=list)


def _report(progress: ProgressFn | None, value: float) -> None:
    if progress is not None:
        progress(min(1.0, max(0.0, value)))


def compress(
    source: Path,
    bundle: Path,
    *,
    selector: str | Selector = defaults.SELECTOR,
    keep: int = defaults.KEEP,
    stride: int = defaults.STRIDE,
    oracle_reconstructor: str = defaults.ORACLE_RECONSTRUCTOR,
    keyframe_codec: str | None = None,
    keyframe_crf: int | None = None,
    target_psnr: float | None = None,
    target_kbps: float | None = None,
    refresh: float = 0.0,
    refresh_reconstructor: str = defaults.RECONSTRUCTOR,
    refresh_kbps: float | None = None,
    candidate_map: bool = False,
    progress: ProgressFn | None = None,
) -> CompressResult:
    """Choose the kept frames of ``source`` and write them as a bundle at ``bundle``.

    ``bundle`` ending in ``.frs`` gets the single-file form, anything else a folder.
    The defaults are the fixed pattern of ``framers.defaults`` (the CLI and the service add the
    adaptive default). ``oracle_reconstructor`` only matters for the ``oracle`` selector (the one it
    optimises for); ``keyframe_crf`` is the x264 CRF of the kept frames (None: the keyframe codec's
    default, ``defaults.KEYFRAME_CRF``). ``target_psnr`` (dB, mean per-frame PSNR of the rebuilt
    video) or ``target_kbps`` selects the content-adaptive mode (``framers.adaptive``): per segment
    a stride and a CRF, replacing ``selector``/``keep``/``stride``/``keyframe_crf``. Whatever the
    selector, the encoder detects scene cuts and also keeps the first and last frame of every shot
    (so nothing is extrapolated, and no rebuilt frame mixes two shots).
    ``refresh`` (share of the dropped frames' 16×16 blocks, in [0, 1); 0 = off; fixed patterns
    only) adds the refresh layer of ``framers.refresh``: the frames are rebuilt by
    ``refresh_reconstructor`` as the decoder will, and the worst blocks corrected by a second
    x264 stream (the source is read once more); the layer applies to that reconstructor only.
    ``refresh_kbps`` (kbit/s over the video's duration, > 0) is the layer's byte budget: x264's
    average-bitrate control replaces the layer's CRF (kept CRF + ``refresh.CRF_OFFSET``); alone it
    refreshes ``defaults.REFRESH_SHARE`` of the blocks.
    ``candidate_map`` adds the candidate map of ``framers.candidate_map`` (any keep pattern): the
    dropped frames are rebuilt by ``framemae`` as the decoder will, and per block of each the
    encoder signals the network's mix or a fixed weighting of its candidates (the source is read
    once more);
    it applies to ``framemae`` of the same model version only.
    Raises InvalidVideoError, UnsupportedOptionError, BundleError.
    """
    started = time.perf_counter()
    source = Path(source)
    bundle = Path(bundle)
    check_destination(source, bundle)
    if not 0.0 <= refresh < 1.0:
        raise UnsupportedOptionError(f"refresh must be in [0, 1) (a share of the dropped frames' blocks), "
                                     f"got {refresh}")
    if refresh_kbps is not None:
        if not MIN_REFRESH_KBPS <= refresh_kbps <= MAX_REFRESH_KBPS:
            raise UnsupportedOptionError(f"refresh_kbps must be in [{MIN_REFRESH_KBPS:g}, {MAX_REFRESH_KBPS:g}] "
                                         f"kbit/s, got {refresh_kbps:g}")
        refresh = refresh or defaults.REFRESH_SHARE
    crf_conflicts = defaults.option_conflicts(keyframe_codec=keyframe_codec, crf=keyframe_crf)
    if crf_conflicts:
        raise UnsupportedOptionError(f"keyframe_crf {keyframe_crf}: {crf_conflicts[0][1]}")
    if refresh and (target_psnr is not None or target_kbps is not None):
        raise UnsupportedOptionError("refresh works with the fixed patterns (--stride/--selector/--keep/--crf); "
                                     "the adaptive mode does not plan for it")
    outer_progress = progress
    if (refresh or candidate_map) and outer_progress is not None:
        # the refresh pass or the candidate map's (a rebuild and a second decode) gets the rest of
        # the progress (with both, the refresh pass reports: the map's runs before it, unreported)
        layer_start = REFRESH_PROGRESS_START if refresh else MAP_PROGRESS_START

        def progress(value: float) -> None:
            outer_progress(value * layer_start)
    info = probe(source)
    chooser: Selector
    if target_psnr is not None or target_kbps is not None:
        from framers.adaptive.selector import AdaptiveSelector

        if keyframe_codec not in (None, "x264"):
            raise UnsupportedOptionError(
                f"the adaptive mode codes kept frames with x264 at per-shot CRFs, not {keyframe_codec}"
            )
        chooser = AdaptiveSelector(target_psnr=target_psnr, target_kbps=target_kbps, fps=info.fps)
    elif isinstance(selector, Selector):
        chooser = selector
    else:
        chooser = get_selector(selector, keep=keep, stride=stride, oracle_reconstructor=oracle_reconstructor)
    codec = keyframe_codec or fb.DEFAULT_KEYFRAME_CODEC
    expected_clips = max(1, -(-info.frames // CLIP_LEN))

    with tempfile.TemporaryDirectory(prefix="framers-compress-", dir=_tmp_root(bundle)) as tmp:
        folder = Path(tmp) / "bundle"
        folder.mkdir()
        pts: list[int] = []
        kept_per_clip: list[list[int]] = []
        readers: list[FrameReader] = []
        cuts: list[int] = []
        scenes = SceneAnalyser()

        # The adaptive mode reads the source twice: its analysis pass gets the first
        # ANALYSIS_SHARE of the progress, so a job shows progress (and can be canceled, which the
        # worker checks in its progress callback) while it analyses.
        analysing = chooser.name == "adaptive"
        base = ANALYSIS_SHARE if analysing else 0.0

        def open_clips() -> Iterator[Clip]:
            reader = FrameReader(source)
            first_pass = not readers
            readers.append(reader)
            try:
                for k, clip in enumerate(reader.clips(CLIP_LEN)):
                    yield clip
                    if analysing and first_pass:
                        _report(progress, base * (k + 1) / max(expected_clips, k + 2))
            finally:
                reader.close()

        encoder: KeyframeEncoder | None = None
        kept_indices: list[int] = []  # video indices, in the order the encoder got them
        width = height = 0
        crf_of = getattr(chooser, "crf_of", None)

        # the share of the progress the coding pass under way moves through: a second coding of the
        # adaptive mode (``recode_plan``; about a quarter of val's points) gets the last stretch,
        # later ones hold it (a trial's job sat at 0.95 for 23 of its 60 s while it re-coded)
        coding_span = (base, FIRST_CODING_END if analysing else 0.95)

        def flush(clip: Clip, positions: set[int]) -> None:
            nonlocal encoder
            if encoder is None:
                encoder = KeyframeEncoder(folder, clip.width, clip.height, codec, keyframe_crf)
            ordered = sorted(positions)
            for p in ordered:
                picture = codec_yuv(clip, p) if encoder.takes_yuv else clip.frame(p)
                encoder.write(picture, crf_of(clip.start + p) if crf_of is not None else None)
                kept_indices.append(clip.start + p)
            kept_per_clip.append(ordered)
            # always reported, also where it holds: the service's worker checks for a cancel in its
            # progress callback
            lo, hi = coding_span
            _report(progress, lo + (hi - lo) * len(kept_per_clip) / max(expected_clips, len(kept_per_clip) + 1))

        def code_kept_frames() -> KeyframeEncoder:
            """The coding pass: every clip of the source, its kept frames into the keyframe file
            (a second call writes it anew)."""
            nonlocal encoder, height, width, scenes
            encoder = None
            for record in (kept_indices, kept_per_clip, pts, cuts):
                record.clear()
            scenes = SceneAnalyser()
            # One clip of delay: a cut at a clip's first frame also keeps the previous clip's last
            # frame, and only the end of the stream tells which clip holds the video's last frame.
            pending: tuple[Clip, set[int]] | None = None
            try:
                for clip, positions in chooser.select(open_clips):
                    if not kept_per_clip and pending is None:
                        height, width = clip.height, clip.width
                    keep_set = set(positions)
                    clip_cuts = _clip_cuts(chooser, scenes, clip, pts[-1] if pts else None)
                    cuts.extend(clip_cuts)
                    for c in shot_edges(clip_cuts) | ({0} if clip.start == 0 else set()):
                        if c >= clip.start:
                            keep_set.add(c - clip.start)
                        elif pending is not None:
                            pending[1].add(c - pending[0].start)
                    if pending is not None:
                        flush(*pending)
                    pts.extend(clip.pts)
                    pending = (clip, keep_set)
                if pending is not None:
                    pending[1].add(len(pending[0]) - 1)  # the video's last frame
                    flush(*pending)
            finally:
                if encoder is not None:
                    encoder.close()
            if encoder is None:
                raise InvalidVideoError(f"{source.name}: no frame could be decoded")
            return encoder

        coded = code_kept_frames()
        after_coding = getattr(chooser, "after_coding", None)  # the adaptive mode's

        def estimate_after_coding() -> None:
            """The plan estimated again with x264's measured error, checked on a sample of this
            coding's kept frames decoded and dropped frames rebuilt."""
            from framers.adaptive.rebuild_sample import measure_sample

            assert after_coding is not None
            # its read of the source holds the progress where the coding ended, still reported
            hold = functools.partial(_report, progress, coding_span[1])
            after_coding(kept_indices, coded.coding_mse,
                         functools.partial(measure_sample, source, coded.path, list(kept_indices), list(pts),
                                           tick=hold), frame_pixels=width * height)

        if after_coding is not None:
            estimate_after_coding()
            if chooser.recode_plan():  # type: ignore[attr-defined]  # short or over: once more, corrected
                coding_span = (coding_span[1], 0.95)
                first = _FirstCoding(coded, kept_indices, kept_per_clip, pts, cuts)
                coded = code_kept_frames()
                estimate_after_coding()
                coding_span = (0.95, 0.95)
                while chooser.bracket_plan():  # type: ignore[attr-defined]  # a surplus corrected into a miss
                    coded = code_kept_frames()  # again, at CRFs between the first and the last
                    estimate_after_coding()
                if chooser.keep_first_coding():  # type: ignore[attr-defined]  # the last came out worse
                    coded = first.restore(kept_indices, kept_per_clip, pts, cuts)
                first.discard()
        encoder = coded
        time_base = readers[-1].time_base
        fps = readers[-1].fps
        facts, audio = source_facts(readers[-1], extract_audio(source, folder / fb.AUDIO), info.has_audio)
        facts["warnings"] = [*facts["warnings"], *(
            truncation_warnings(info.frames, len(pts))
            or ends_early_warnings(info.duration, (float(pts[0] * time_base), float(
                (readers[-1].end_pts if readers[-1].end_pts is not None else pts[-1]) * time_base)),
                audio_span(folder / fb.AUDIO, audio_offset(audio))))]
        manifest = fb.Manifest(
            source={
                "filename": source.name,
                "bytes": source.stat().st_size,
                "width": width,
                "height": height,
                "codec": info.codec,
                "pix_fmt": info.pix_fmt,
                "rotation": info.rotation,
                "has_audio": info.has_audio,
                "decode_errors": sum(r.errors for r in readers[-1:]),
                **facts,
            },
            clip_len=CLIP_LEN,
            slot_len=SLOT_LEN,
            n_frames=len(pts),
            kept=kept_per_clip,
            time_base=time_base,
            pts=pts,
            fps=fps,
            keyframes=encoder.settings,
            selection=chooser.describe(),
            audio=audio,
            models=chooser.model_versions,
            cuts=sorted(cuts),
            adaptive=chooser.manifest_entry() if hasattr(chooser, "manifest_entry") else None,
        )
        fb.write_manifest(folder, manifest)
        if candidate_map:  # before the refresh layer, which corrects the frames the map makes
            manifest.candidate_map = add_candidate_map(folder, manifest, source,
                                                       None if refresh else outer_progress)
            fb.write_manifest(folder, manifest)
        if refresh:
            manifest.refresh = add_refresh(folder, manifest, source, refresh, refresh_reconstructor, outer_progress,
                                           refresh_kbps)
            fb.write_manifest(folder, manifest)
        audio_file = folder / fb.AUDIO
        audio_bytes = audio_file.stat().st_size if audio_file.is_file() else 0
        kept_file = folder / fb.KEYFRAMES_H264  # what target_kbps budgets (x264 kept frames)
        kept_bytes = kept_file.stat().st_size if kept_file.is_file() else 0
        _place(folder, bundle)
    _report(outer_progress, 1.0)  # the whole job's end (``progress`` may be the first pass's share only)
    bundle_bytes, source_bytes = fb.bundle_bytes(bundle), source.stat().st_size
    return CompressResult(
        bundle_path=bundle,
        bundle_bytes=bundle_bytes,
        source_bytes=source_bytes,
        frames=manifest.n_frames,
        kept_frames=len(manifest.kept_indices()),
        width=width,
        height=height,
        fps=fps,
        seconds=time.perf_counter() - started,
        selector=chooser.name,
        keep=getattr(chooser, "keep", 0),
        # the selector's models, and those that made the refresh layer and the candidate map (they
        # ran at encode time)
        model_versions={**manifest.models, **{layer["reconstructor"]: layer["model"]
                                              for layer in (manifest.refresh, manifest.candidate_map)
                                              if layer and layer.get("model")}},
        cuts=manifest.cuts,
        adaptive=chooser.report() if hasattr(chooser, "report") else None,
        warnings=[*facts["warnings"], *_adaptive_warnings(chooser),
                  *refresh_layer_warnings(manifest.refresh, bool(refresh)),
                  *size_warnings(bundle_bytes, source_bytes, audio_bytes, manifest),
                  *gap_warnings(kept_indices, pts, time_base, manifest.adaptive is not None),
                  *budget_warnings(target_kbps, kept_bytes, manifest.duration_seconds())],
        has_audio=bool(facts["has_audio"]),
        audio_bytes=audio_bytes,
        refresh=manifest.refresh,
        candidate_map=manifest.candidate_map,
        duration=manifest.duration_seconds(),
    )


class _FirstCoding:
    """The first coding pass's keyframe file (moved aside) and records, while the adaptive mode
    codes the kept frames a second time: ``restore`` puts them back when the first was better."""

    def __init__(self, coded: KeyframeEncoder, kept_indices: list[int], kept_per_clip: list[list[int]],
                 pts: list[int], cuts: list[int]) -> None:
        self.coded = coded
        self.records = (list(kept_indices), [list(k) for k in kept_per_clip], list(pts), list(cuts))
        self.aside = coded.path.with_name(coded.path.name + ".first")
        coded.path.replace(self.aside)

    def restore(self, kept_indices: list[int], kept_per_clip: list[list[int]], pts: list[int],
                cuts: list[int]) -> KeyframeEncoder:
        """The first coding back in place (its file over the second's, the records refilled):
        its encoder."""
        self.aside.replace(self.coded.path)
        kept_indices[:], kept_per_clip[:], pts[:], cuts[:] = self.records
        return self.coded

    def discard(self) -> None:
        """Remove the first coding's file when the second one is kept."""
        self.aside.unlink(missing_ok=True)


def size_warnings(bundle_bytes: int, source_bytes: int, audio_bytes: int, manifest: fb.Manifest) -> list[str]:
    """Said when the bundle came out larger than the source file (bytes): a source already coded
    below the asked quality (the adaptive mode then keeps every frame at a finer CRF than the
    source's own) or a short clip whose audio and manifest outweigh its video (a fresh-user trial:
    129 % and 195 % of two small sources, unsaid)."""
    if bundle_bytes <= source_bytes:
        return []
    if audio_bytes >= bundle_bytes // 2:  # the kept frames are not what to change
        return [f"the bundle ({bundle_bytes} bytes) is larger than the source ({source_bytes} bytes): its audio "
                f"track alone, re-encoded as AAC for the output, is {audio_bytes} bytes"]
    by_rate = bool(manifest.selection.get("target_kbps"))
    fix = ("lower --target-kbps (the service's target_kbps)" if manifest.adaptive and by_rate else
           "lower --target-psnr (the service's target_psnr)" if manifest.adaptive else
           "keep fewer frames (--stride, --keep; the service's stride, keep) or code them with x264 "
           "(ffv1 is lossless)" if manifest.keyframes.get("codec") == "ffv1" else
           "raise --crf (the service's crf) or keep fewer frames")
    return [f"the bundle ({bundle_bytes} bytes) is larger than the source ({source_bytes} bytes): the source is "
            f"already coded more coarsely than the kept frames; {fix} for a smaller bundle"]


#: a --target-kbps result this far over its budget is said (x264's rate is not exact, the model's less)
BUDGET_TOLERANCE = 0.10


#: seconds between two kept frames with dropped frames between them over which a fixed pattern is
#: said to blend pictures that far apart (every 4th frame of a 1 fps slideshow: 3 s, rebuilt at
#: 13.7 dB in a fresh-user trial, unsaid); the adaptive mode decides by measured quality instead
WIDE_GAP_SECONDS = 1.0


def gap_warnings(kept: Sequence[int], pts: Sequence[int], time_base: Fraction, adaptive: bool) -> list[str]:
    """Said when a fixed pattern keeps two frames (``kept``: indices into ``pts``, the frames'
    timestamps in ``time_base``) more than ``WIDE_GAP_SECONDS`` apart with frames rebuilt between
    them: a slow frame rate and a wide stride make the rebuilt frames blends of pictures seconds apart."""
    if adaptive:
        return []
    order = sorted(set(kept))
    widest = max((float((pts[b] - pts[a]) * time_base) for a, b in itertools.pairwise(order) if b - a > 1),
                 default=0.0)
    if widest <= WIDE_GAP_SECONDS:
        return []
    return [f"kept frames lie up to {widest:.1f} s apart: the frames rebuilt between them blend pictures that far "
            "apart (a low frame rate and a wide pattern); keep more frames (--stride, --keep) or use the "
            "adaptive mode (--target-psnr), which keeps what the quality needs"]


def budget_warnings(target_kbps: float | None, kept_bytes: int, seconds: float) -> list[str]:
    """Said when the kept frames' stream (``kept_bytes``, what ``target_kbps`` budgets) came out
    more than ``BUDGET_TOLERANCE`` over ``target_kbps`` (kbit/s) over the video's ``seconds`` (a
    fresh-user trial: 5 kbit/s asked, 85 % more made, unsaid)."""
    if target_kbps is None or seconds <= 0:
        return []
    made = kept_bytes * 8 / 1000 / seconds
    if made <= target_kbps * (1 + BUDGET_TOLERANCE):
        return []
    return [f"the kept frames came out at {made:.1f} kbit/s, {100 * (made / target_kbps - 1):.0f} % over "
            f"target_kbps {target_kbps:g} (the rate model's prediction is not exact); ask for less to fit"]


#: bits per refreshed block below which a byte budget's blocks come out too coarse to help: on
#: small_robot's first 60 frames (share 0.1, kept CRF 20; bench/refresh_budget.py --kbps,
#: BENCHMARKS.md section 8b) 6.4 bits per block lost 0.45 dB against no layer, 11.5 broke even,
#: 17.2 gained 0.25 dB and 28.4 gained 0.56 dB
MIN_BITS_PER_BLOCK = 16.0


def refresh_layer_warnings(layer: dict[str, Any] | None, asked: bool) -> list[str]:
    """What the user must be told about the refresh layer: none was made though one was
    ``asked`` (every frame kept, or a share too small for one block), or its stream leaves
    under ``MIN_BITS_PER_BLOCK`` bits per refreshed block (too coarse to help, in either form)."""
    if not layer:
        return ["no refresh layer was made: no frame is rebuilt (every frame kept) or the share (refresh) is "
                "too small for one block"] if asked else []
    if not layer.get("blocks"):
        return []
    per_block = 8.0 * int(layer["bytes"]) / int(layer["blocks"])
    if per_block >= MIN_BITS_PER_BLOCK:
        return []
    head = (f"refresh_kbps {layer['kbps']:g}" if layer.get("kbps") else f"the refresh layer's CRF {layer.get('crf')}")
    fix = ("raise refresh_kbps or lower the share (refresh)" if layer.get("kbps") else
           "lower crf (the layer follows the kept frames' CRF) or the share (refresh)")
    return [f"{head} leaves {per_block:.1f} bits per refreshed block (under {MIN_BITS_PER_BLOCK:g}): blocks that "
            f"coarse can make the video worse than no layer; {fix}"]


def _adaptive_warnings(chooser: Selector) -> list[str]:
    """What the adaptive mode could not do as asked (said in the CLI output and the job record):
    an unreachable target, or kept frames that came out coarser than planned."""
    target, estimate = getattr(chooser, "target_psnr", None), getattr(chooser, "estimated_psnr", None)
    capped = bool(getattr(chooser, "capped", False))
    if getattr(chooser, "short_of_target", False) and target is not None and estimate is not None:
        return [f"the kept frames came out coarser than planned (x264's own error of them): the video is "
                f"estimated at {estimate:.1f} dB for target_psnr {target:g} dB; content whose error rises "
                f"fast with the CRF (screen recordings, synthetic pictures) fools the prediction; ask about "
                f"{target + (target - estimate):.0f} dB to reach {target:g} dB"]
    if not capped or target is None:
        return []
    best = getattr(chooser, "best_psnr", 0.0)
    verified = getattr(chooser, "verified", None)
    if verified is not None:
        return [f"target_psnr {target:g} dB is out of reach for this video: measured "
                f"{verified['measured_psnr']:.1f} dB at CRF {verified['crf']}, the finest of "
                f"{verified['encodes']} trial encodes"]
    # two decimals: a best of 34.96 dB for a 35 dB target printed as "35.0" read as a contradiction
    after = "" if estimate is None else f"; once coded, estimated at {estimate:.2f} dB" + (
        " (the target after all)" if estimate >= target else "")
    where = "out of reach for" if target > best else "at the limit of"
    aimed = getattr(chooser, "aimed_psnr", None) or best
    return [f"target_psnr {target:g} dB is {where} this video (best predicted {best:.2f} dB, every frame kept at "
            f"the finest CRF; {_limit_of(chooser, best)}); aimed at {aimed:.2f} dB instead, where the last "
            f"fraction of a dB would cost the most bytes{after}"]


#: how close (dB) the colour path's own PSNR must lie above the best plan's to be named its limit
COLOUR_LIMIT_DB = 3.0


def _limit_of(chooser: Selector, best: float) -> str:
    """What keeps an unreachable target out of reach, for its warning: the colour path's loss
    (``AdaptiveSelector.colour_path_psnr``) when it alone lies within ``COLOUR_LIMIT_DB`` of the
    best plan, else x264's own error at the finest CRF."""
    colour = getattr(chooser, "colour_path_psnr", None)
    if colour is not None and colour - best < COLOUR_LIMIT_DB:
        return (f"converting to the codec's 8-bit YUV and back alone allows {colour:.1f} dB here: colour "
                "detail that chroma subsampling and 8 bits cannot hold")
    return "x264's own error at its finest CRF limits it, not the colour conversion"


def _clip_cuts(chooser: Selector, scenes: SceneAnalyser, clip: Clip, previous_pts: int | None) -> list[int]:
    """Shot boundaries inside ``clip``: scene cuts (``scenes``, fed every picture in order) and
    timing breaks (``scenes.timing_breaks``), or the selector's own when it found them already
    (adaptive mode). ``previous_pts``: the timestamp of the frame before the clip."""
    known = getattr(chooser, "known_cuts", None)
    if known is not None:
        return [c for c in known if clip.start <= c < clip.stop]
    cuts = {clip.start + i for i, picture in enumerate(clip.pictures()) if scenes.feed(picture).is_cut}
    cuts.update(clip.start + i for i in timing_breaks(clip.pts, previous_pts))
    return sorted(c for c in cuts if c > 0)


def _tmp_root(dest: Path) -> Path | None:
    parent = dest.parent
    return parent if parent.exists() else None


def check_destination(source: Path, dest: Path) -> None:
    """Refuse (UnsupportedOptionError) a bundle path whose writing would destroy something that is
    not a bundle: the source itself, a folder holding other files (a bundle folder is written
    whole; a fresh-user trial's `-o` to a folder of notes deleted them), or a file that is not a
    bundle. An existing bundle, in either form, is replaced."""
    if dest.exists() and source.exists() and dest.resolve() == source.resolve():
        raise UnsupportedOptionError(f"-o {dest}: the output is the source itself (it would be replaced)")
    if dest.is_dir() and any(dest.iterdir()) and not fb.holds_bundle(dest):
        raise UnsupportedOptionError(f"-o {dest}: a folder holding other files (a bundle folder is written whole "
                                     "and would replace them); name a new or empty folder, or a .frs file")
    if dest.is_file() and not fb.holds_bundle(dest):
        raise UnsupportedOptionError(f"-o {dest}: a file that is not a bundle (it would be replaced); name a new "
                                     "path")
    if dest.suffix.lower() == ".zip":
        raise UnsupportedOptionError(f"-o {dest}: a bundle is a .frs file (a ZIP archive) or a folder; "
                                     f"did you mean {dest.with_suffix(fb.SINGLE_FILE_SUFFIX)}?")


def check_video_destination(bundle: Path, output: Path) -> None:
    """Refuse (UnsupportedOptionError), before anything is rebuilt, an output video path that
    would destroy a bundle (the one being read, a file inside its folder, or another bundle) or
    that is a folder (a fresh-user trial's `reconstruct r.frs -o r.frs` replaced the bundle with
    the video, exit 0; `-o` the bundle folder failed only after the whole rebuild)."""
    if output.is_dir():
        raise UnsupportedOptionError(f"-o {output}: a folder; name the video file to write")
    inside = bundle.is_dir() and output.resolve().is_relative_to(bundle.resolve())
    if inside or (output.exists() and output.resolve() == bundle.resolve()):
        raise UnsupportedOptionError(f"-o {output}: the bundle being read (it would be replaced)")
    if output.is_file() and fb.holds_bundle(output):
        raise UnsupportedOptionError(f"-o {output}: a bundle (it would be replaced by the video); name another path")


def _place(folder: Path, dest: Path) -> None:
    """Move a finished bundle folder to ``dest`` (packing it for a .frs path)."""
    if dest.suffix == fb.SINGLE_FILE_SUFFIX:
        partial = dest.with_name(dest.name + ".partial")
        fb.pack(folder, partial)
        partial.replace(dest)
        return
    if dest.exists():
        shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
    shutil.move(str(folder), str(dest))


#: the refresh byte budget's range (kbit/s): x264's rate control works in whole kbit/s (and a
#: layer's pictures cost ~10 kbit/s at its coarsest quantiser anyway); its top is near 1 Gbit/s
MIN_REFRESH_KBPS = 1.0
MAX_REFRESH_KBPS = 1_000_000.0
#: share of ``compress``'s progress reached when the refresh pass starts
REFRESH_PROGRESS_START = 0.5
#: ... and when the candidate map's pass starts: with the map a fixed pattern takes 3.3× (480p) to
#: 3.9× (1080p) as long (BENCHMARKS.md section 2f), so the map's pass is ~70-75 % of the time
MAP_PROGRESS_START = 0.25
#: where the adaptive mode's first coding of the kept frames ends its share of the progress (a
#: second coding, ``recode_plan``, goes on to 0.95)
FIRST_CODING_END = 0.85


def add_refresh(folder: Path, manifest: fb.Manifest, source: Path, share: float, reconstructor: str,
                progress: ProgressFn | None = None, kbps: float | None = None) -> dict[str, Any] | None:
    """Write the refresh layer (``framers.refresh``) of an opened, complete bundle folder: rebuild
    its frames with ``reconstructor`` exactly as the decoder will, read the source again
    alongside, and code the residual of the worst ``share`` of blocks per clip into
    ``fb.REFRESH``, at the kept frames' CRF + ``CRF_OFFSET`` or, with ``kbps``, at that average
    bitrate over the video's duration (x264 ABR). Returns the manifest's ``refresh`` entry (None
    when every frame is kept or the share is too small for one block: nothing to refresh). Raises
    BundleError when the source no longer gives the frames the bundle was made from, ModelError
    without the model."""
    from framers.refresh import BLOCK, CRF_OFFSET, FEATHER, YUV_RESIDUAL, RefreshWriter, encode_refresh
    from framers.refresh_map import RANGE, BlockMapWriter

    rebuilder = get_reconstructor(reconstructor)
    crf = int(manifest.keyframes.get("crf") or defaults.KEYFRAME_CRF) + CRF_OFFSET
    width, height = int(manifest.keyframes["width"]), int(manifest.keyframes["height"])
    n = manifest.n_frames
    bits_per_picture = None
    if kbps is not None:
        # the budget over the video's duration (by its timestamps: a held frame of a variable-rate
        # video counts as long as it shows), spread over the pictures (one per dropped frame)
        dropped = max(1, n - len(manifest.kept_indices()))
        bits_per_picture = kbps * 1000.0 * manifest.duration_seconds() / dropped
    writer = RefreshWriter(folder / fb.REFRESH, width, height, min(crf, 51), bits_per_picture)
    block_map = BlockMapWriter(folder / fb.REFRESH_MAP, RANGE)

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        with FrameReader(source) as reader:
            originals = (frame.rgb for frame in reader.frames())
            for i, rebuilt in enumerate(iter_reconstructed(folder, manifest, rebuilder)):
                original = next(originals, None)
                if original is None or original.shape != rebuilt.shape:
                    raise BundleError(f"refresh pass: the source's frame {i} is missing or of another size")
                if i % 16 == 0:
                    _report(progress, REFRESH_PROGRESS_START + (0.95 - REFRESH_PROGRESS_START) * i / max(1, n))
                yield original, rebuilt

    try:
        pictures, blocks = encode_refresh(pairs(), set(manifest.kept_indices()), n, manifest.clip_len, share,
                                          writer.write, block_map.write)
    finally:
        n_bytes = writer.close()
        map_bytes = block_map.close()
    if pictures == 0 or blocks == 0:  # every frame kept, or a share too small for one block
        (folder / fb.REFRESH).unlink()
        (folder / fb.REFRESH_MAP).unlink()
        return None
    budget = {"kbps": kbps} if kbps is not None else {"crf": min(crf, 51)}
    # the map lets the decoder add the residual only at the blocks and their ramp (v5; range-coded: v6)
    return {"file": fb.REFRESH, "map": fb.REFRESH_MAP, "map_coding": RANGE, "residual": YUV_RESIDUAL,
            "share": share, "block": BLOCK,
            "feather": FEATHER, **budget, "reconstructor": rebuilder.name,
            "model": rebuilder.model_versions.get(rebuilder.name), "pictures": pictures, "blocks": blocks,
            "bytes": n_bytes, "map_bytes": map_bytes}


def add_candidate_map(folder: Path, manifest: fb.Manifest, source: Path,
                      progress: ProgressFn | None = None) -> dict[str, Any] | None:
    """Write the candidate map (``framers.candidate_map``) of an opened, complete bundle folder:
    rebuild its dropped frames with ``framemae`` exactly as the decoder will, read the source
    again alongside, and choose per block the network's mix or a fixed weighting of its candidates
    (``candidate_map.CODEBOOK``) at the kept frames' trade-off (``lagrangian`` of their coding
    error so far and their stream's bits). Returns the manifest's ``candidate_map`` entry (None
    when ``framemae`` mixes no frame). Raises BundleError when the source no longer gives the
    frames the bundle was made from, ModelError without the model."""
    from framers.candidate_map import (
        CODEBOOK,
        SWITCH_BITS,
        CandidateMapWriter,
        cell_size,
        choose_blocks,
        grid_shape,
        lagrangian,
    )
    from framers.metrics import sq_error_sum
    from framers.motion import net_scale

    rebuilder = get_reconstructor("framemae")
    width, height = int(manifest.keyframes["width"]), int(manifest.keyframes["height"])
    scale = net_scale(height, width)
    net_shape, cell = (height // scale, width // scale), cell_size(height, width)
    rows, cols = grid_shape(*net_shape, cell)
    kept_set = set(manifest.kept_indices())
    n, n_kept = manifest.n_frames, len(kept_set)
    kept_bits = 8.0 * fb.keyframes_path(folder, manifest).stat().st_size
    decoded: dict[int, np.ndarray] = {}  # kept frames read by the rebuild, until their source frame comes

    def kept_frames() -> Iterator[KeptFrame]:
        for frame in iter_kept(folder, manifest):
            decoded[frame.index] = frame.rgb
            yield frame

    codebook = CODEBOOK
    writer = CandidateMapWriter(folder / fb.CANDIDATE_MAP, 1 + len(codebook))
    mixed_frames = 0
    kept_error, kept_seen = 0.0, 0
    try:
        with FrameReader(source) as reader:
            originals = (frame.rgb for frame in reader.frames())
            mixes = rebuilder.mixes(kept_frames(), n, manifest.clip_len, manifest.pts)  # type: ignore[attr-defined]
            for i, mixed in enumerate(mixes):
                original = next(originals, None)
                if original is None or original.shape[:2] != (height, width):
                    raise BundleError(f"candidate map pass: the source's frame {i} is missing or of another size")
                if i % 16 == 0:  # before the kept frames are passed over: every 16th is one at strides 2-16
                    _report(progress, MAP_PROGRESS_START + (0.95 - MAP_PROGRESS_START) * i / max(1, n))
                if i in kept_set:  # the kept frames' coding error so far sets the trade-off
                    if i in decoded:  # read by the rebuild before its window's frames come
                        kept_error += float(sq_error_sum(decoded.pop(i), original))
                        kept_seen += 1
                    continue
                if mixed is None:
                    writer.write(np.zeros((rows, cols), np.uint8))
                    continue
                lam = lagrangian(kept_error / max(1, kept_seen) * n_kept, kept_bits)
                writer.write(choose_blocks(mixed.weights, mixed.candidates, original, net_shape, cell,
                                           SWITCH_BITS * lam, codebook))
                mixed_frames += 1
    finally:
        n_bytes = writer.close()
    if mixed_frames == 0:
        (folder / fb.CANDIDATE_MAP).unlink()
        return None
    return {"file": fb.CANDIDATE_MAP, "reconstructor": rebuilder.name,
            "model": rebuilder.model_versions.get(rebuilder.name), "codebook": codebook.tolist(),
            "cell": cell, "rows": rows, "cols": cols,
            "block_px": round(cell * scale), "maps": writer.count, "mixed": mixed_frames,
            "switched": writer.switched, "bytes": n_bytes}


def candidate_map_applies(manifest: fb.Manifest, rebuilder: Reconstructor) -> bool:
    """Whether the bundle's candidate map (if any) is for ``rebuilder``: made on the weights of
    this reconstructor and model version, and only those."""
    entry = manifest.candidate_map
    if not entry:
        return False
    if not isinstance(entry, dict):
        raise BundleError(f"manifest's candidate_map: expected an object, got {type(entry).__name__}")
    return rebuilder.name == entry.get("reconstructor") and \
        rebuilder.model_versions.get(rebuilder.name) == entry.get("model")


def iter_kept(folder: Path, manifest: fb.Manifest) -> Iterator[KeptFrame]:
    indices = manifest.kept_indices()
    frames = iter_keyframes(fb.keyframes_path(folder, manifest), len(indices))
    for index, rgb in zip(indices, frames, strict=True):
        yield KeptFrame(index, rgb)


def refresh_applies(manifest: fb.Manifest, rebuilder: Reconstructor) -> bool:
    """Whether the bundle's refresh layer (if any) corrects frames rebuilt by ``rebuilder``: it
    holds the residual of the reconstructor the encoder ran, and only of that one."""
    layer = manifest.refresh
    if not layer:
        return False
    return bool(rebuilder.name == layer.get("reconstructor"))


def candidate_map_warnings(manifest: fb.Manifest, rebuilder: Reconstructor) -> list[str]:
    """What the user must be told about the bundle's candidate map with this reconstructor."""
    entry = manifest.candidate_map
    if not entry or candidate_map_applies(manifest, rebuilder):
        return []
    made_for = f"{entry.get('reconstructor')} {entry.get('model')}"
    return [f"the bundle's candidate map was made for {made_for}'s mixing, so it is not applied to "
            f"{rebuilder.name} {rebuilder.model_versions.get(rebuilder.name, '')}".rstrip()
            + f" (rebuild with {made_for} for the mapped quality)"]


def refresh_warnings(manifest: fb.Manifest, rebuilder: Reconstructor) -> list[str]:
    """What the user must be told about the bundle's refresh layer with this reconstructor."""
    layer = manifest.refresh
    if not layer:
        return []
    made_by = str(layer.get("reconstructor"))
    if rebuilder.name != made_by:
        return [f"the bundle's refresh layer corrects {made_by}'s frames, so it is not applied to "
                f"{rebuilder.name}'s (rebuild with {made_by} for the refreshed quality)"]
    model, now = layer.get("model"), rebuilder.model_versions.get(made_by)
    if model and now and model != now:
        return [f"the refresh layer was made with {made_by} {model}, this reconstruction uses {now}: "
                "refreshed blocks may not fit the rebuilt frames exactly"]
    return []


def rebuilder_for(manifest: fb.Manifest, name: str) -> Reconstructor:
    """The reconstructor ``name`` for this bundle: the model version its refresh layer was made
    with, when the layer was made by ``name`` and the store still holds that version (the layer
    corrects that model's frames; another version's frames would get the wrong corrections), else
    the newest. Raises UnsupportedOptionError for an unknown name, ModelError without the model."""
    from framers.model_store import list_versions

    layer = manifest.refresh or {}
    version = layer.get("model")
    if layer.get("reconstructor") == name and version and str(version) in list_versions(name):
        return get_reconstructor(name, str(version))
    return get_reconstructor(name)


def iter_reconstructed(folder: Path, manifest: fb.Manifest, rebuilder: Reconstructor) -> Iterator[np.ndarray]:
    """All frames of the video rebuilt from an opened bundle folder, in order; with the bundle's
    refresh layer added to the dropped frames when it was made for ``rebuilder``
    (``refresh_applies``)."""
    import av.error

    from framers.refresh import YUV_RESIDUAL, apply_residual_yuv, iter_pictures, mid_grey_yuv, support
    from framers.refresh_map import DEFLATE, iter_block_maps

    rebuilder.check_pattern(manifest.kept_indices(), manifest.n_frames, manifest.clip_len)
    count = 0
    residuals: Iterator[Any] | None = None
    kept: set[int] = set()
    legacy = False  # the first layers coded an RGB residual around mid-grey (its YUV is the zero)
    maps: Iterator[np.ndarray] | None = None
    block = feather = 0
    if refresh_applies(manifest, rebuilder):
        assert manifest.refresh is not None
        legacy = manifest.refresh.get("residual") != YUV_RESIDUAL
        kept = set(manifest.kept_indices())
        residuals = iter_pictures(folder / str(manifest.refresh.get("file", fb.REFRESH)),
                                  int(manifest.refresh["pictures"]))
        if manifest.refresh.get("map"):  # v5: add only at the chosen blocks and their ramp
            block = int(manifest.refresh.get("block", 16))
            feather = int(manifest.refresh.get("feather", 0))
            height, width = int(manifest.keyframes["height"]), int(manifest.keyframes["width"])
            maps = iter_block_maps(folder / str(manifest.refresh["map"]), -(-height // block), -(-width // block),
                                   int(manifest.refresh["pictures"]), str(manifest.refresh.get("map_coding", DEFLATE)))
    extra: dict[str, Any] = {}
    choices = None
    if candidate_map_applies(manifest, rebuilder):
        from framers.candidate_map import ChoiceReader, MapLayout, iter_candidate_maps

        try:
            layout = MapLayout.from_entry(manifest.candidate_map or {}, fb.CANDIDATE_MAP)
        except ValueError as exc:
            raise BundleError(f"manifest's candidate_map: {exc}") from exc
        candidate_maps = iter_candidate_maps(folder / fb.CANDIDATE_MAP, layout.rows, layout.cols, layout.maps,
                                             1 + len(layout.codebook))
        choices = extra["choices"] = ChoiceReader(candidate_maps, set(manifest.kept_indices()), manifest.n_frames,
                                                  layout.cell, layout.codebook)
    # timestamps: interpolation weights follow when frames are shown where the rate varies (c12)
    for frame in rebuilder.reconstruct(iter_kept(folder, manifest), manifest.n_frames, manifest.clip_len,
                                       manifest.pts, **extra):
        if residuals is not None and count not in kept:
            try:
                picture = next(residuals, None)
                if picture is None:
                    raise BundleError(f"refresh stream ends before frame {count}")
                inside = None
                if maps is not None:
                    mask = next(maps, None)
                    if mask is None:
                        raise BundleError(f"refresh map ends before frame {count}")
                    inside = support(mask, frame.shape[0], frame.shape[1], feather, block)
                frame = apply_residual_yuv(frame, picture, mid_grey_yuv(picture.format.name) if legacy else None,
                                           inside)
            except (ValueError, av.error.FFmpegError) as exc:
                raise BundleError(f"refresh stream unusable at frame {count}: {exc}") from exc
        yield frame
        count += 1
    if residuals is not None:
        try:
            for _ in residuals:  # checks the stream holds exactly the pictures the manifest says
                pass
            for _ in maps or ():  # and the map
                pass
        except (ValueError, av.error.FFmpegError) as exc:
            raise BundleError(f"refresh stream: {exc}") from exc
    if count != manifest.n_frames:
        raise UnsupportedOptionError(f"{rebuilder.name} produced {count} frames, expected {manifest.n_frames}")
    if choices is not None:
        choices.finish()


def reconstruct(
    bundle: Path,
    output: Path,
    *,
    reconstructor: str | Reconstructor = defaults.RECONSTRUCTOR,
    output_crf: int = defaults.OUTPUT_CRF,
    progress: ProgressFn | None = None,
    codec: str = "h264",
    container: str = "mp4",
    reference: Path | None = None,
) -> ReconstructResult:
    """Rebuild every frame from a bundle and write a video with the source's timing and audio.

    ``output_crf``: CRF of the output video (0 = lossless for x264). The output is H.264 in mp4
    unless ``codec`` (h264, vp9, av1) and ``container`` (mp4, webm) say otherwise
    (framers.outputs). With ``reference`` (the source video), the result holds each frame's PSNR
    against it (``psnr``; the rebuilt frames as decoded from the bundle, before the output's own
    encoding) and the per-chunk error map (``significance``, ``framers.significance``).
    Raises BundleError, UnsupportedOptionError, ModelError, InvalidVideoError (an unreadable
    reference)."""
    from framers.metrics import psnr_from_mse

    started = time.perf_counter()
    output = Path(output)
    check_video_destination(Path(bundle), output)
    scores: list[float] | None = None
    chunks: ChunkAccumulator | None = None
    with fb.open_bundle(Path(bundle)) as folder, contextlib.ExitStack() as stack:
        manifest = fb.read_manifest(folder)
        rebuilder = (reconstructor if isinstance(reconstructor, Reconstructor)
                     else rebuilder_for(manifest, reconstructor))
        width, height = int(manifest.source["width"]), int(manifest.source["height"])
        audio = folder / fb.AUDIO if manifest.audio else None
        originals: Iterator[np.ndarray] | None = None
        if reference is not None:
            reader = stack.enter_context(FrameReader(Path(reference)))
            originals = (frame.rgb for frame in reader.frames())
            scores, chunks = [], ChunkAccumulator(frames=chunk_frames_for(manifest.n_frames, height, width))
        partial = output.with_name(f"{output.name}.partial.{container}")
        try:
            with VideoWriter(partial, width, height, manifest.time_base, manifest.fps, audio, crf=output_crf,
                             codec=codec, container=container, audio_offset=audio_offset(manifest.audio),
                             **writer_options(manifest.source)) as writer:
                writes = BackgroundWrites(writer)
                try:
                    for i, frame in enumerate(iter_reconstructed(folder, manifest, rebuilder)):
                        writes.write(frame, manifest.pts[i])
                        if originals is not None and scores is not None and chunks is not None:
                            original = next(originals, None)
                            if original is None or original.shape != frame.shape:
                                originals, scores, chunks = None, None, None  # the source does not match
                            else:
                                error = frame_error(original, frame)  # one pass for PSNR and chunks
                                scores.append(round(psnr_from_mse(float(error.mean(dtype=np.float64))), 3))
                                chunks.add(i, error)
                        if i % 16 == 0:
                            _report(progress, i / manifest.n_frames)
                except BaseException:
                    writes.abort()
                    raise
                writes.finish()
            width, height = writer.output_size
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)
    _report(progress, 1.0)
    return ReconstructResult(
        output_path=output,
        frames=manifest.n_frames,
        width=width,
        height=height,
        seconds=time.perf_counter() - started,
        reconstructor=rebuilder.name,
        model_versions={**manifest.models, **rebuilder.model_versions},
        kept=manifest.kept_indices(),
        times=[round(float(p * manifest.time_base), 6) for p in manifest.pts],
        psnr=scores,
        # the target asked for, and what the rebuilt frames were foretold to reach: the estimate
        # after coding, else a short video's measured PSNR, else an unreachable target's best plan
        # (a fresh-user trial: the best plan's 34.91 dB was called "the bundle's target" for 35)
        target_psnr=manifest.selection.get("target_psnr"),
        estimated_psnr=_foretold_psnr(manifest.selection),
        significance=Significance(
            str(manifest.source.get("filename") or Path(bundle).name), "exact", chunks.result(), manifest.n_frames,
            chunks.pixel_shape[1], chunks.pixel_shape[0],
            {"reconstructor": rebuilder.name, "kept": manifest.kept_indices()}, chunks.frames,
        ) if chunks is not None and scores else None,
        warnings=[*refresh_warnings(manifest, rebuilder), *candidate_map_warnings(manifest, rebuilder),
                  *output_warnings(codec, width, height)],
    )


def _foretold_psnr(selection: dict[str, Any]) -> float | None:
    """What an adaptive bundle's manifest foretells of its rebuilt frames' mean PSNR (dB): the
    estimate after coding, else the measured PSNR of a short video's trial encodes, else the best
    predicted PSNR of an unreachable target; None for other bundles."""
    for value in (selection.get("estimated_psnr"), (selection.get("verified") or {}).get("measured_psnr"),
                  (selection.get("unreachable") or {}).get("aimed_at")):
        if value is not None:
            return float(value)
    return None


#: share of the progress the adaptive mode's analysis pass reports (about half its time at 480p)
ANALYSIS_SHARE = 0.5
#: decoding fewer frames than the container declares is a truncated file (not an edit list that
#: hides a few leading frames) once this share and count are missing
TRUNCATION_SHARE = 0.1
TRUNCATION_FRAMES = 3


#: a source whose streams end this long (s) and this share before its header's duration is cut off
TRUNCATION_SECONDS = 0.5


def audio_span(path: Path, offset: float = 0.0) -> tuple[float, float] | None:
    """(earliest start, latest end) in seconds of the audio streams of a bundle's ``.m4a`` on the
    source's timeline (less the manifest's ``audio.timeline_offset``, ``offset``); None without
    one (or without timing)."""
    if not path.is_file():
        return None
    with av.open(str(path)) as container:
        spans = [(float(s.start_time * s.time_base), float((s.start_time + s.duration) * s.time_base))
                 for s in container.streams.audio if s.start_time is not None and s.duration and s.time_base]
    return (min(a for a, _ in spans) - offset, max(b for _, b in spans) - offset) if spans else None


def ends_early_warnings(declared: float, video: tuple[float, float], audio: tuple[float, float] | None) -> list[str]:
    """A warning when the source's streams (``video`` and ``audio``: (start, end) in seconds) end
    clearly before the duration its header declares (``declared``, s): a Matroska or WebM file
    cut off keeps its header's duration but has no frame count to compare (a fresh-user trial's
    file, cut at 60 %, read as a complete 1.2 s video). Audio longer than the video is not a cut."""
    start, end = video
    if audio is not None:
        start, end = min(start, audio[0]), max(end, audio[1])
    missing = declared - (end - start)
    if missing > max(TRUNCATION_SECONDS, TRUNCATION_SHARE * declared):
        return [f"the source declares {declared:.2f} s but its streams end after {end - start:.2f} s "
                "(the file is probably truncated): the bundle holds what could be decoded"]
    return []


def truncation_warnings(declared: int, decoded: int) -> list[str]:
    """A warning when the source's header declares clearly more frames than could be decoded (a
    file cut off after its index, e.g. a faststart mp4 whose data ends early): the bundle holds
    only what decoded, which the user must be told."""
    missing = declared - decoded
    if missing >= TRUNCATION_FRAMES and missing > TRUNCATION_SHARE * declared:
        return [f"the source declares {declared} frames but only {decoded} could be decoded "
                "(the file is probably truncated): the bundle holds those"]
    return []
