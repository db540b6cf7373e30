"""The adaptive mode's one analysis pass over the source: everything the rate model needs.

While decoding, per frame: scene-cut detection on a small gray view (``framers.scenes``) and the
timing breaks of the clip's timestamps; every ``DETAIL_EVERY``-th frame the detail energy of the
picture beyond its view; every ``FLOOR_EVERY``-th frame the colour path's own error; and probe
encodes (x264 at one CRF, the preset and error measure the rate model was calibrated with) of
each stride's kept frames, and, for a rate model that takes CRF slopes, a second probe of every
frame (stride 1) at another CRF. Segments are
only cut after the pass (``analysis.split_segments``), but they start at multiples of
``analysis.BLOCK`` frames from their shot's start, so the kept frames of stride N are known while
streaming: the shot's grid start + k·N, plus the shot's last frame, coded one frame late, when the
next frame turns out to start a new shot (or the video ends). The interpolation features of the
dropped frames are measured per block of ``BLOCK`` frames, whose gaps never cross a segment
boundary. The probes code on a worker thread (``coding.ProbeSet``) while this pass goes on.
Memory: the views of one block, one full-size frame and the probes' queue (``ProbeSet.QUEUE_FRAMES``
frames), whatever the video's length.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from framers.adaptive import analysis
from framers.adaptive.coding import Coded, ProbeSet, conversion_mse, decoded_codec_yuv, to_codec_yuv
from framers.adaptive.ratemodel import Probe
from framers.scenes import SceneAnalyser, timing_breaks
from framers.selectors import ClipSource

#: detail energy is measured on every DETAIL_EVERY-th picture (it changes slowly within a shot)
DETAIL_EVERY = 4
#: the colour path's error (``coding.conversion_mse``) on every FLOOR_EVERY-th picture
FLOOR_EVERY = 8
#: the ``ProbeSet`` key of the second stride-1 probe (strides are ≥ 1)
SLOPE_PROBE_KEY = 0


@dataclass
class Measurements:
    """What the analysis pass found in a video of ``n_frames`` frames.

    ``cuts``: sorted indices of frames that start a shot (scene cuts and timing breaks; not 0).
    ``detail``: frame index → detail energy (gray levels², ``analysis.detail_energy``).
    ``floors``: frame index → colour-path MSE (RGB gray levels², ``coding.conversion_mse``).
    ``coded``: stride → probe encode of that stride's kept frames (every segmentation of
    ``split_segments(cuts, n_frames)`` keeps exactly these).
    ``features``: stride (> 1) → interpolation features of every frame that stride drops.
    ``slope_probe``: the second probe of every frame at ``slope_crf`` (None when not asked for).
    """

    n_frames: int
    cuts: list[int]
    detail: dict[int, float]
    floors: dict[int, float]
    coded: dict[int, Coded]
    features: dict[int, analysis.GapFeatures]
    slope_probe: Coded | None = None
    slope_crf: int | None = None


class _Block:
    """The views of the current block (BLOCK frames of one shot from ``start``)."""

    def __init__(self, start: int, shot_start: int) -> None:
        self.start = start
        self.shot_start = shot_start
        self.views: dict[int, np.ndarray] = {}

    def features(self, last_kept: int | None) -> dict[int, analysis.GapFeatures]:
        """Gap features of each stride > 1, anchors on the shot's grid plus ``last_kept`` (the next
        block's first frame, or the shot's last frame when the shot ends here)."""
        out = {}
        for n in analysis.STRIDES[1:]:
            anchors = [i for i in sorted(self.views) if analysis.on_grid(i, self.shot_start, n)]
            if last_kept is not None and last_kept != anchors[-1]:
                anchors.append(last_kept)
            out[n] = analysis.gap_features(self.views, anchors)
        return out


def measure(open_clips: ClipSource, probe_crf: int, probe: Probe | None = None,
            slope_crf: int | None = None) -> Measurements:
    """Decode the source once (``open_clips``) and measure it; see the module docstring. The probes
    code at ``probe_crf`` with the settings of ``probe`` (default ``Probe()``), which must be those
    the rate model was calibrated with; ``slope_crf``: every frame is also coded at that CRF
    (``Measurements.slope_probe``, for a model with ``slope_typical``).

    Raises whatever decoding raises (``framers.errors``); a video without frames gives
    ``n_frames`` 0 and empty measurements."""
    scenes = SceneAnalyser()
    cuts: list[int] = []
    detail: dict[int, float] = {}
    floors: dict[int, float] = {}
    probes = ProbeSet(probe_crf, probe or Probe(), {SLOPE_PROBE_KEY: slope_crf} if slope_crf is not None else None)
    parts: dict[int, list[analysis.GapFeatures]] = {n: [] for n in analysis.STRIDES[1:]}
    block: _Block | None = None
    held: tuple[int, av.VideoFrame] | None = None  # the previous frame, coded late if it ends a shot
    n = 0
    last_pts: int | None = None

    def code(index: int, yuv: av.VideoFrame, shot_start: int, shot_end: bool) -> None:
        keys = [s for s in analysis.STRIDES if analysis.on_grid(index, shot_start, s) != shot_end]
        if slope_crf is not None and 1 in keys:
            keys.append(SLOPE_PROBE_KEY)
        probes.write(keys, index, yuv)

    def close_shot() -> None:
        """The held frame is its shot's last: code it where the grid missed it, measure the block."""
        assert block is not None and held is not None
        code(held[0], held[1], block.shot_start, shot_end=True)
        for stride, feats in block.features(held[0]).items():
            parts[stride].append(feats)

    try:
        for clip in open_clips():
            breaks = {clip.start + i for i in timing_breaks(clip.pts, last_pts)}
            last_pts = clip.pts[-1]
            for i, picture in enumerate(clip.shown_pictures()):  # HDR / alpha: what is shown
                index = clip.start + i
                view = scenes.feed(picture)
                if index > 0 and (view.is_cut or index in breaks):
                    cuts.append(index)
                    close_shot()
                    block = None
                if block is None:
                    block = _Block(index, index)
                elif index - block.start == analysis.BLOCK:
                    block.views[index] = view.gray
                    for stride, feats in block.features(index).items():
                        parts[stride].append(feats)
                    block = _Block(index, block.shot_start)
                block.views[index] = view.gray
                if index % DETAIL_EVERY == 0:
                    detail[index] = analysis.detail_energy(picture.to_ndarray(format="gray"), view.gray)
                # converted (if at all) once for every probe that codes it
                yuv = decoded_codec_yuv(clip, i)
                if yuv is not None:  # the codec's own YUV as decoded: no colour-path error to measure
                    if index % FLOOR_EVERY == 0:
                        floors[index] = 0.0
                else:
                    yuv = to_codec_yuv(clip.frame(i))
                    if index % FLOOR_EVERY == 0:
                        floors[index] = conversion_mse(clip.frame(i), yuv)  # before the probes' thread gets it
                code(index, yuv, block.shot_start, shot_end=False)
                held = (index, yuv)
                n = index + 1
        if held is not None:
            close_shot()
        coded = probes.finish()
    finally:
        probes.close()  # a decoding error: stop the probes' thread
    slope_probe = coded.pop(SLOPE_PROBE_KEY, None)
    return Measurements(n, cuts, detail, floors, coded,
                        {s: analysis.GapFeatures.concat(f) for s, f in parts.items()},
                        slope_probe, slope_crf if slope_probe is not None else None)
