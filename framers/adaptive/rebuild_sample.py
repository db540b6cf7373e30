"""A sample of the video decoded and rebuilt after coding, to check the estimate's two parts.

The estimate after coding (``selector.AdaptiveSelector.after_coding``) turns x264's own error of
each kept frame (its per-plane SSE, taken before deblocking on pictures no other refers to) into
RGB error, and predicts a dropped frame's rebuild error from features of small gray views
(``analysis.gap_features``) fitted on natural train video. Both can miss: on synthetic pictures
(FFmpeg's ``testsrc2``, cases c00/c18) the rebuild error was 1.0-1.6 dB worse than foretold,
unseen, so such misses were neither re-coded nor said; on saturated synthetic colour (a
``mandelbrot`` clip, every frame kept) x264's error read 0.6 dB optimistic in RGB (fresh-user
trials). Once the kept frames are coded, a few kept frames are decoded as a reader will, and a few
dropped frames per segment are rebuilt exactly as the decoder will (``framemae`` from the decoded
kept frames on either side); both compared with the source, they correct the two parts
(``ratemodel.interp_error_sums``, the kept frames' ratio in the selector).

``sample_gaps`` and ``sample_kept`` (pure) pick the frames; ``measure_sample`` (I/O: a read of the
source and of the keyframe stream, in step, one gap held in memory at a time) measures them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from framers.clip import Clip
from framers.geometry import CLIP_LEN
from framers.metrics import mse

#: gaps sampled per segment that drops frames (spread evenly: at a third and two thirds) and frames
#: rebuilt per gap (around its middle, where the error peaks): at most 4 of a 48-frame segment,
#: ~8 % of its frames rebuilt once more
GAPS_PER_SEGMENT = 2
FRAMES_PER_GAP = 2
#: kept frames decoded per segment that keeps every frame (spread evenly); in the others, the
#: sampled gaps' ends
KEPT_PER_SEGMENT = 4
#: source pixels (frames × width × height) per sampled gap, and the fewest gaps (``gap_budget``):
#: a gap (~0.15 s on 2 cores, whatever the frame size) costs about what x264 medium takes for ~4 M
#: pixels here. 480p and larger keep 2 gaps per 48-frame segment, smaller videos fewer, and every
#: 64-frame cut of the RD bench all 4 of its gaps: at 20 M pixels a gap and 2 at least, the
#: estimate's error on val went from sd 0.07 to 0.17 dB and a static camera's 31 dB point
#: (`video_with_failing_audio`, 640x360) came out 1.7 dB over unseen (its BD-rate −21 → −6 %)
PIXELS_PER_GAP = 10_000_000
MIN_GAPS = 4

Gap = tuple[int, int, list[int]]
#: ``measure_sample`` bound to a video and its coded kept frames: (gaps, kept checks) →
#: (kept frames' RGB MSE, rebuilt frames' RGB MSE), by video index
Sampler = Callable[[list[Gap], list[int]], tuple[dict[int, float], dict[int, float]]]


def sample_gaps(segments: Sequence[tuple[int, int, int]], kept: Sequence[int], limit: int | None = None) -> list[Gap]:
    """The gaps to rebuild: for each segment ``(start, stop, stride)`` with ``stride > 1``, up to
    ``GAPS_PER_SEGMENT`` pairs of consecutive kept frames ``(left, right)`` (video indices, both
    in ``kept``, the frames the pipeline really kept) with dropped frames between, nearest to even
    shares of the segment (a third and two thirds), each with up to ``FRAMES_PER_GAP`` dropped frames
    around the gap's middle; ``limit``: at most that many of them, spread evenly over the video.
    Sorted, disjoint; empty when nothing is dropped."""
    kept_sorted = np.asarray(sorted(set(kept)), dtype=np.int64)
    gaps: dict[int, Gap] = {}
    for start, stop, stride in segments:
        if stride <= 1:
            continue
        inside = kept_sorted[(kept_sorted >= start) & (kept_sorted < stop)]
        lefts = [int(a) for a, b in itertools.pairwise(inside) if b - a > 1]
        for share in np.linspace(0.0, 1.0, GAPS_PER_SEGMENT + 2)[1:-1]:
            if not lefts:
                break
            aim = start + share * (stop - start)
            left = min(lefts, key=lambda a: abs(a - aim))
            lefts.remove(left)
            right = int(kept_sorted[np.searchsorted(kept_sorted, left) + 1])
            middle = (left + right) // 2
            first = max(left + 1, middle - (FRAMES_PER_GAP - 1) // 2)
            gaps[left] = (left, right, list(range(first, min(right, first + FRAMES_PER_GAP))))
    chosen = [gaps[k] for k in sorted(gaps)]
    if limit is not None and len(chosen) > limit:
        picks = np.linspace(0, len(chosen) - 1, max(0, limit)).round().astype(int)
        chosen = [chosen[k] for k in sorted(set(picks.tolist()))]
    return chosen


def gap_budget(n_frames: int, frame_pixels: int) -> int:
    """How many gaps ``sample_gaps`` may rebuild in a video of ``n_frames`` frames of
    ``frame_pixels`` pixels: one per ``PIXELS_PER_GAP`` source pixels, at least ``MIN_GAPS``.
    The rebuild's network scales its input to a ~96-191 px short side, so a gap costs about the
    same at every frame size while x264's coding of the video scales with its pixels: without a
    budget the sample cost a 340x256 video (12 gaps) more than x264 medium's whole coding of it."""
    return max(MIN_GAPS, math.ceil(n_frames * frame_pixels / PIXELS_PER_GAP))


def sample_kept(segments: Sequence[tuple[int, int, int]], kept: Sequence[int], gaps: Sequence[Gap]) -> list[int]:
    """Kept frames to decode and compare: the ends of ``gaps`` and, in each segment ``(start,
    stop, stride)`` without a gap, up to ``KEPT_PER_SEGMENT`` of its kept frames (``kept``: the
    video indices the pipeline kept) spread evenly. Sorted."""
    kept_sorted = np.asarray(sorted(set(kept)), dtype=np.int64)
    chosen = {i for left, right, _ in gaps for i in (left, right)}
    for start, stop, _ in segments:
        if any(start <= left < stop for left, _, _ in gaps):
            continue
        inside = kept_sorted[(kept_sorted >= start) & (kept_sorted < stop)]
        if len(inside):
            picks = np.linspace(0, len(inside) - 1, min(KEPT_PER_SEGMENT, len(inside))).round().astype(int)
            chosen.update(int(inside[k]) for k in picks)
    return sorted(chosen)


def measure_sample(source: Path, keyframes: Path, kept: Sequence[int], times: Sequence[float],
                   gaps: Sequence[Gap], checks: Sequence[int],
                   tick: Callable[[], None] | None = None) -> tuple[dict[int, float], dict[int, float]]:
    """RGB MSE (gray levels²) against the source's frames of (1) each kept frame in ``checks`` as
    decoded from ``keyframes`` (the coded kept frames; ``kept``: their video indices, in stream
    order) and (2) each frame in ``gaps`` rebuilt by the default reconstructor (``framemae``,
    weights by ``times``: every frame's timestamp in time-base ticks) from the decoded kept frames
    on either side: (kept errors, rebuilt errors), by video index. Reads both streams once, in
    step, up to the last frame sampled; holds one gap. ``tick`` is called once per clip of the
    source read (a caller's progress report, where a service worker checks for a cancel). Raises
    BundleError on a short keyframe stream, ModelError when the model cannot load."""
    from framers import defaults
    from framers.keyframes import iter_keyframes_selected
    from framers.reconstructors.base import KeptFrame, WindowReconstructor
    from framers.registry import get_reconstructor
    from framers.video import FrameReader

    ends = {i for left, right, _ in gaps for i in (left, right)}
    check_set = set(checks)
    decoded: dict[int, np.ndarray] = {}
    originals: dict[int, np.ndarray] = {}
    coded: dict[int, float] = {}
    rebuilt: dict[int, float] = {}
    if not gaps and not checks:
        return coded, rebuilt
    rebuilder = get_reconstructor(defaults.RECONSTRUCTOR) if gaps else None
    keyframe_stream = iter_keyframes_selected(keyframes, list(kept), ends | check_set)
    pending = list(gaps)

    def take_keyframes(upto: int) -> None:
        """Decoded kept frames (ends and checks) up to video index ``upto``, into ``decoded``."""
        if upto in decoded:
            return
        for index, rgb in keyframe_stream:
            decoded[index] = rgb
            if index >= upto:
                return

    def release(index: int) -> None:
        """Drop a decoded kept frame once its check is done and no pending gap needs it."""
        if (index not in check_set or index in coded) and not any(index in g[:2] for g in pending[:2]):
            decoded.pop(index, None)

    wanted = check_set | {i for _, _, frames in gaps for i in frames}
    try:
        with FrameReader(source) as reader:
            for index, rgb in _source_frames(reader.clips(CLIP_LEN), wanted, tick):
                if index in check_set:
                    take_keyframes(index)
                    coded[index] = mse(rgb, decoded[index])
                    release(index)
                else:
                    originals[index] = rgb
                while pending and all(i in originals for i in pending[0][2]):
                    left, right, frames = pending.pop(0)
                    take_keyframes(right)
                    assert isinstance(rebuilder, WindowReconstructor)
                    ends_kept = [KeptFrame(left, decoded[left]), KeptFrame(right, decoded[right])]
                    window = rebuilder.reconstruct_window(ends_kept, frames[0], frames[-1] + 1, times)
                    for k, i in enumerate(frames):
                        rebuilt[i] = mse(originals.pop(i), window[k])
                    release(left)
                    release(right)
                if not pending and len(coded) == len(check_set):
                    break
    finally:
        keyframe_stream.close()  # stops its decoding thread
    return coded, rebuilt


def _source_frames(clips: Iterator[Clip], wanted: set[int],
                   tick: Callable[[], None] | None) -> Iterator[tuple[int, np.ndarray]]:
    """(video index, RGB) of the ``wanted`` frames of a stream of clips, converting only those."""
    for clip in clips:
        if tick is not None:
            tick()
        for p in range(len(clip)):
            if clip.start + p in wanted:
                yield clip.start + p, clip.frame(p)
