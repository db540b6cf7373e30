"""A sample of the dropped frames rebuilt after coding, to check the plan's interpolation error.

The rate model predicts a dropped frame's rebuild error from features of small gray views
(``analysis.gap_features``) fitted on natural train video; on synthetic pictures (FFmpeg's
``testsrc2``, cases c00/c18) it was 1.0-1.6 dB optimistic, which the estimate after coding did not
see, so such misses were neither re-coded nor said. Once the kept frames are coded, a few dropped
frames per segment are rebuilt exactly as the decoder will (``framemae`` from the decoded kept
frames on either side) and compared with the source: the measured error corrects the prediction
(``ratemodel.interp_error_ratio``).

``sample_gaps`` (pure) picks the frames; ``rebuilt_errors`` (I/O: a read of the source and of the
keyframe stream, one gap held in memory at a time) measures them.
"""

from __future__ import annotations

import itertools
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

Gap = tuple[int, int, list[int]]


def sample_gaps(segments: Sequence[tuple[int, int, int]], kept: Sequence[int]) -> list[Gap]:
    """The gaps to rebuild: for each segment ``(start, stop, stride)`` with ``stride > 1``, up to
    ``GAPS_PER_SEGMENT`` pairs of consecutive kept frames ``(left, right)`` (video indices, both
    in ``kept``, the frames the pipeline really kept) with dropped frames between, nearest to even
    shares of the segment (a third and two thirds), each with up to ``FRAMES_PER_GAP`` dropped frames
    around the gap's middle. Sorted, disjoint; empty when nothing is dropped."""
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
    return [gaps[k] for k in sorted(gaps)]


def rebuilt_errors(source: Path, keyframes: Path, kept: Sequence[int], times: Sequence[float],
                   gaps: Sequence[Gap], tick: Callable[[], None] | None = None) -> dict[int, float]:
    """RGB MSE (gray levels²) of each frame in ``gaps`` rebuilt by the default reconstructor
    (``framemae``, weights by ``times``: every frame's timestamp in time-base ticks) from the
    decoded kept frames on either side, against the source's frame. ``keyframes``: the coded kept
    frames (``kept``: their video indices, in stream order). Reads both streams once, in step;
    holds one gap. ``tick`` is called once per clip of the source read (a caller's progress
    report, where a service worker checks for a cancel). Raises BundleError on a short keyframe
    stream, ModelError when the model cannot load."""
    from framers import defaults
    from framers.keyframes import iter_keyframes
    from framers.reconstructors.base import KeptFrame, WindowReconstructor
    from framers.registry import get_reconstructor
    from framers.video import FrameReader

    if not gaps:
        return {}
    rebuilder = get_reconstructor(defaults.RECONSTRUCTOR)
    assert isinstance(rebuilder, WindowReconstructor)
    ends = {i for left, right, _ in gaps for i in (left, right)}
    wanted = {i for _, _, frames in gaps for i in frames}
    decoded: dict[int, np.ndarray] = {}
    originals: dict[int, np.ndarray] = {}
    errors: dict[int, float] = {}
    keyframe_stream = zip(kept, iter_keyframes(keyframes, len(kept)), strict=True)
    pending = list(gaps)

    def take_keyframes(upto: int) -> None:
        for index, rgb in keyframe_stream:
            if index in ends:
                decoded[index] = rgb
            if index >= upto:
                return

    with FrameReader(source) as reader:
        for index, rgb in _source_frames(reader.clips(CLIP_LEN), wanted, tick):
            originals[index] = rgb
            while pending and all(i in originals for i in pending[0][2]):
                left, right, frames = pending.pop(0)
                take_keyframes(right)
                window = rebuilder.reconstruct_window([KeptFrame(left, decoded.pop(left)),
                                                       KeptFrame(right, decoded[right])],
                                                      frames[0], frames[-1] + 1, times)
                for k, i in enumerate(frames):
                    errors[i] = mse(originals.pop(i), window[k])
            if not pending:
                break
    return errors


def _source_frames(clips: Iterator[Clip], wanted: set[int],
                   tick: Callable[[], None] | None) -> Iterator[tuple[int, np.ndarray]]:
    """(video index, RGB) of the ``wanted`` frames of a stream of clips, converting only those."""
    for clip in clips:
        if tick is not None:
            tick()
        for p in range(len(clip)):
            if clip.start + p in wanted:
                yield clip.start + p, clip.frame(p)
