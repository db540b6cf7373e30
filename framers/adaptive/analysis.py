"""Segments, kept-frame patterns and cheap motion features for the content-adaptive mode.

A video is cut into *shots* at scene cuts (``framers.scenes``) and every shot into *segments* of
at most ``SEGMENT_LEN`` frames; each segment gets its own frame stride N (keep every Nth frame,
N = 1 keeps all). A segment always keeps its first frame; a segment that ends a shot (or the
video) also keeps its last frame, so interpolation never crosses a cut and never extrapolates.

How well the decoder will rebuild the dropped frames of a segment at stride N is predicted from
features measured on the small gray analysis views (``scenes.view_size``): the error of linear
interpolation and of a bidirectional motion-compensated interpolation (OpenCV DIS flow, the same
family of candidates ``framemae`` mixes) between the kept views, per dropped frame, plus how much
detail the full picture has beyond its view. ``framers.adaptive.ratemodel`` maps them to the
full-resolution error (a regression fitted by ``training/rd_calibrate.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from framers.motion import dis_flow

#: strides the adaptive mode chooses from (issue 12: at least {1, 2, 4, 8, 16})
STRIDES: tuple[int, ...] = (1, 2, 4, 8, 16)
#: frames per decision unit inside a shot: long enough that every stride keeps ≥ 2 frames and
#: that per-segment noise in the predictions averages out, short enough to follow content.
SEGMENT_LEN = 48
#: segments start at multiples of BLOCK frames from their shot's start (the largest stride)
BLOCK = max(STRIDES)


@dataclass(frozen=True)
class Segment:
    """Frames [start, stop) of one shot; ``closed`` when ``stop`` is a cut or the video's end
    (then the last frame is kept, as no later kept frame of the same shot follows)."""

    start: int
    stop: int
    closed: bool

    def __len__(self) -> int:
        return self.stop - self.start

    def kept(self, stride: int) -> list[int]:
        """Kept frame indices of this segment at ``stride``: start, start+N, … (+ last if closed)."""
        kept = list(range(self.start, self.stop, stride))
        if self.closed and kept[-1] != self.stop - 1:
            kept.append(self.stop - 1)
        return kept

    def anchors(self, stride: int) -> list[int]:
        """Kept indices plus the next segment's first frame when the shot continues (the right
        neighbour of this segment's last dropped frames)."""
        kept = self.kept(stride)
        return kept if self.closed else [*kept, self.stop]


def split_segments(cuts: Sequence[int], n_frames: int, length: int = SEGMENT_LEN) -> list[Segment]:
    """Segments of a video of ``n_frames`` frames with shots starting at ``cuts``.

    A shot is cut into blocks of ``BLOCK`` frames from its first frame (the last block may be
    shorter), and the blocks into ceil(blocks / (length / BLOCK)) segments of near-equal block
    counts (larger first). Segment starts are then multiples of BLOCK from the shot start, so
    every stride's kept frames (start + k·N, N | BLOCK) lie on one grid per shot: the analysis
    pass can code and measure them while cut detection runs, before the segments are known.
    Raises ValueError for n_frames < 1 or a ``length`` that is not a multiple of BLOCK."""
    if n_frames < 1:
        raise ValueError("a video needs at least one frame")
    if length % BLOCK or length < BLOCK:
        raise ValueError(f"segment length {length} is not a multiple of {BLOCK}")
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < n_frames), n_frames]
    segments: list[Segment] = []
    for a, b in itertools.pairwise(bounds):
        blocks = -(-(b - a) // BLOCK)
        parts = -(-blocks // (length // BLOCK))
        sizes = [blocks // parts + (1 if i < blocks % parts else 0) for i in range(parts)]
        edges = [a + BLOCK * sum(sizes[:i]) for i in range(parts)] + [b]
        for i in range(parts):
            segments.append(Segment(edges[i], edges[i + 1], closed=i == parts - 1))
    return segments


def on_grid(index: int, shot_start: int, stride: int) -> bool:
    """Whether frame ``index`` of the shot starting at ``shot_start`` is kept at ``stride`` by
    every segmentation of ``split_segments`` (the shot's last frame, kept too, is not on it)."""
    return (index - shot_start) % stride == 0


def _dis() -> cv2.DISOpticalFlow:
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)  # type: ignore[attr-defined]


@dataclass
class GapFeatures:
    """Per dropped frame of one stride: linear and motion-compensated interpolation MSE on the
    views (gray levels², float), the gap length and the frame's relative position t in (0, 1)."""

    index: np.ndarray  # [n] int: frame indices in the video
    linear: np.ndarray  # [n] float64
    motion: np.ndarray  # [n] float64
    gap: np.ndarray  # [n] int: distance between the two kept frames around the frame
    t: np.ndarray  # [n] float64

    @staticmethod
    def empty() -> GapFeatures:
        """No dropped frames."""
        nothing = np.zeros(0)
        return GapFeatures(nothing.astype(int), nothing, nothing, nothing.astype(int), nothing)

    @staticmethod
    def concat(parts: Sequence[GapFeatures]) -> GapFeatures:
        """Rows of ``parts`` one after another (e.g. the blocks of a video, in order)."""
        if not parts:
            return GapFeatures.empty()
        return GapFeatures(*(np.concatenate([getattr(p, f) for p in parts])
                             for f in ("index", "linear", "motion", "gap", "t")))

    def within(self, start: int, stop: int) -> GapFeatures:
        """Rows of the dropped frames in [start, stop)."""
        inside = (self.index >= start) & (self.index < stop)
        return GapFeatures(self.index[inside], self.linear[inside], self.motion[inside], self.gap[inside],
                           self.t[inside])


def gap_features(views: dict[int, np.ndarray], anchors: Sequence[int]) -> GapFeatures:
    """Interpolation errors of every frame strictly between consecutive ``anchors``.

    ``views``: frame index → gray uint8 view [h, w] (every frame from anchors[0] to anchors[-1]).
    Motion-compensated estimate of frame a < i < b, t = (i-a)/(b-a): view a backward-warped with
    t·F(b→a) and view b with (1-t)·F(a→b), blended (1-t, t) (DIS flow, ultrafast preset).
    """
    rows: list[tuple[int, float, float, int, float]] = []
    dis = _dis()
    for a, b in itertools.pairwise(anchors):
        if b - a < 2:
            continue
        va, vb = views[a], views[b]
        fa = va.astype(np.float32)
        fb = vb.astype(np.float32)
        flow_ab = dis_flow(dis, va, vb)  # va(x) ≈ vb(x + F)
        flow_ba = dis_flow(dis, vb, va)
        h, w = va.shape
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        for i in range(a + 1, b):
            t = (i - a) / (b - a)
            truth = views[i].astype(np.float32)
            lin = cv2.addWeighted(fa, 1.0 - t, fb, t, 0.0)
            from_a = cv2.remap(fa, gx + t * flow_ba[..., 0], gy + t * flow_ba[..., 1], cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
            from_b = cv2.remap(fb, gx + (1 - t) * flow_ab[..., 0], gy + (1 - t) * flow_ab[..., 1],
                               cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            mc = cv2.addWeighted(from_a, 1.0 - t, from_b, t, 0.0)
            # OpenCV's squared norms: float64 sums without numpy's temporaries (this loop runs for
            # every frame of the video at two strides)
            rows.append((i, cv2.norm(lin, truth, cv2.NORM_L2SQR) / truth.size,
                         cv2.norm(mc, truth, cv2.NORM_L2SQR) / truth.size, b - a, t))
    if not rows:
        return GapFeatures.empty()
    arr = np.array(rows, dtype=np.float64)
    return GapFeatures(arr[:, 0].astype(int), arr[:, 1], arr[:, 2], arr[:, 3].astype(int), arr[:, 4])


def detail_energy(luma: np.ndarray, view: np.ndarray) -> float:
    """Mean squared difference (gray levels²) between a full-resolution luma plane [H, W] uint8
    and its analysis view [h, w] upscaled bilinearly: the detail that the view's features miss."""
    h, w = luma.shape
    up = cv2.resize(view, (w, h), interpolation=cv2.INTER_LINEAR)
    diff = cv2.absdiff(luma, up)
    return float(np.mean(np.square(diff, dtype=np.float32)))
