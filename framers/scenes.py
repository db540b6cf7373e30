"""Scene cuts and small analysis views of decoded pictures, with FFmpeg's ``scale`` and ``scdet``.

The encoder sees every frame, so it knows where shots change; the codec keeps the first frame of
every shot and the last frame before it, so no reconstructor ever blends two shots (a hard cut
would otherwise become a cross-dissolve). Cut detection is FFmpeg's ``scdet`` filter (scene
change score = mean absolute frame difference minus the previous one, 0–100) run through PyAV's
filter graph on a small copy of each picture, which the same graph yields as the analysis view;
the second of two back-to-back cuts, which that score misses, is found from the difference itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

#: ``scdet`` threshold (its default): a frame whose score exceeds it starts a new shot.
#: On ../shared/cases/c18 the cut scores 18.5 and every other frame ≤ 1.6 (fades, motion).
CUT_THRESHOLD = 10.0
#: a frame right after a cut scdet found whose own mean absolute difference (``lavfi.scd.mafd``,
#: 0-255 levels on the gray view) is over ``BACK_TO_BACK_MAFD`` and at least ``BACK_TO_BACK_SHARE``
#: of the cut's starts a shot too. scdet scores a frame by how much its difference exceeds the
#: previous one's, so the second of two back-to-back cuts (a one-frame shot: a flash, a title card)
#: scores near 0: a trial's 1-frame bars between two shots scored 29.5 then 7.8 (differences 30.3
#: and 38.1) and the next shot was rebuilt as a dissolve from the flash (4.8-21.5 dB). Fast
#: handheld motion after a repeated frame (scdet's own false cut) differs by 11-18 a frame
#: (`making_cake`, train), unrelated pictures by 30 and more; the rule does not chain.
BACK_TO_BACK_MAFD = 2 * CUT_THRESHOLD
BACK_TO_BACK_SHARE = 0.5
#: long side of the pictures scdet looks at (and of the analysis view): cut scores are
#: averages over the picture, so a small copy gives the same decisions for ~1/20 of the cost.
VIEW_LONG_SIDE = 256


def view_size(width: int, height: int, long_side: int = VIEW_LONG_SIDE) -> tuple[int, int]:
    """(width, height) of the analysis view: the picture scaled down (never up) so its long
    side is at most ``long_side``, both sides even and ≥ 2, aspect ratio kept."""
    scale = min(1.0, long_side / max(width, height))
    w = max(2, round(width * scale / 2) * 2)
    h = max(2, round(height * scale / 2) * 2)
    return w, h


@dataclass(frozen=True)
class ViewFrame:
    """One analysed picture: its index in the video, its scene-change score (``scdet``, 0–100),
    its analysis view, gray uint8 [h, w] (``view_size``) in decoded (stored) orientation, and
    whether it starts a shot (``cut``: the score over ``CUT_THRESHOLD``, or the second of two
    back-to-back cuts, ``SceneAnalyser.feed``)."""

    index: int
    score: float
    gray: np.ndarray
    cut: bool = False

    @property
    def is_cut(self) -> bool:
        return self.cut


class SceneAnalyser:
    """Feeds decoded pictures, in order, through ``scale → scdet``; yields ``ViewFrame``s.

    One instance per video (scdet compares each picture with the previous one). Frames must all
    have the size of the first one (the readers enforce it). Not thread-safe.
    """

    def __init__(self, long_side: int = VIEW_LONG_SIDE) -> None:
        self.long_side = long_side
        self._graph: av.filter.Graph | None = None
        self._index = 0
        self._last_cut_mafd: float | None = None  # the previous frame's difference, when it was a cut

    def _build(self, frame: av.VideoFrame) -> av.filter.Graph:
        w, h = view_size(frame.width, frame.height, self.long_side)
        graph = av.filter.Graph()
        source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                  time_base=frame.time_base or Fraction(1, 90000))
        scale = graph.add("scale", f"{w}:{h}:flags=area")
        gray = graph.add("format", "gray")
        detect = graph.add("scdet", f"threshold={CUT_THRESHOLD}")
        sink = graph.add("buffersink")
        source.link_to(scale)
        scale.link_to(gray)
        gray.link_to(detect)
        detect.link_to(sink)
        graph.configure()
        return graph

    def feed(self, frame: av.VideoFrame) -> ViewFrame:
        """Analyse the next picture of the video; returns its ``ViewFrame`` (the graph has no
        delay: one picture in, one out)."""
        if self._graph is None:
            self._graph = self._build(frame)
        # scdet needs increasing timestamps; the graph's own count keeps them so whatever the
        # source's pts are (missing, repeated).
        copy = frame.reformat()  # a new AVFrame: the caller's picture keeps its own pts
        copy.pts = self._index
        self._graph.push(copy)
        out = self._graph.pull()
        assert isinstance(out, av.VideoFrame)
        score = float(out.metadata.get("lavfi.scd.score", 0.0))
        mafd = float(out.metadata.get("lavfi.scd.mafd", 0.0))
        after = self._last_cut_mafd
        scored = self._index > 0 and score > CUT_THRESHOLD
        cut = scored or (after is not None and mafd > BACK_TO_BACK_MAFD and mafd >= BACK_TO_BACK_SHARE * after)
        self._last_cut_mafd = mafd if scored else None
        view = ViewFrame(self._index, score, np.ascontiguousarray(out.to_ndarray().reshape(out.height, out.width)), cut)
        self._index += 1
        return view


#: a frame shown this many times longer than the clip's median frame duration is a timing break
#: (a screen recording's held frame, a dropped stretch): like a cut, nothing is interpolated across
#: it, so the held frame is kept as is instead of being blended with content seconds later.
TIMING_GAP_RATIO = 2.5


def timing_breaks(pts: Sequence[int], previous: int | None = None) -> list[int]:
    """Positions i into ``pts`` (a clip's timestamps, increasing, any time base) whose frame starts
    after a gap ≥ TIMING_GAP_RATIO × the clip's median gap; ``previous``: the timestamp of the frame
    before the clip (so position 0 can be a break too)."""
    stamps = ([previous] if previous is not None else []) + list(pts)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    if len(gaps) < 2:
        return []
    typical = sorted(gaps)[(len(gaps) - 1) // 2]  # the lower median: robust to one long gap
    offset = 0 if previous is not None else 1
    return [k + offset for k, gap in enumerate(gaps) if typical > 0 and gap >= TIMING_GAP_RATIO * typical]


def shot_edges(cuts: Iterable[int]) -> set[int]:
    """Frames to keep around scene cuts: the last frame of the old shot and the first of the new
    one (so no kept-frame gap spans a cut and no rebuilt frame mixes two shots)."""
    return {f for c in cuts if c > 0 for f in (c - 1, c)}


__all__ = ["BACK_TO_BACK_MAFD", "BACK_TO_BACK_SHARE", "CUT_THRESHOLD", "SceneAnalyser", "ViewFrame", "shot_edges",
           "timing_breaks", "view_size"]
