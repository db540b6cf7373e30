"""Clips: up to 16 consecutive decoded frames, converted to RGB only when asked, and the
learned selector's small global view of each frame.

Frames are RGB uint8 [H, W, 3] in display orientation (rotation metadata or the decode plan's
display matrix applied).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from framers.fidelity import DecodePlan, FrameConverter, apply_orientation
from framers.rgb import to_rgb


@dataclass(frozen=True)
class Frame:
    index: int
    rgb: np.ndarray  # [H, W, 3] uint8, display orientation
    pts: int  # in the reader's time base


class Clip:
    """Up to CLIP_LEN consecutive frames; the last clip of a video may be shorter.

    A clip read from a video holds its *decoded* frames and converts a frame to RGB only when
    asked (``frame(i)``, ``frames``): the ``uniform``, ``stride`` and ``framers`` selectors never
    convert the three quarters of the frames they drop, and ``view`` makes the learned selector's
    small global view straight from the decoded picture (``framers.clip.global_view``).
    A clip made from an RGB array (tests, tools) behaves the same.
    """

    __slots__ = ("_convert", "_decoded", "_plan", "_rgb", "_rotation", "_size", "_stacked", "index", "pts",
                 "start")

    def __init__(self, index: int, start: int, frames: np.ndarray | Sequence[av.VideoFrame],
                 pts: tuple[int, ...], rotation: int = 0, plan: DecodePlan | None = None) -> None:
        self.index = index
        self.start = start
        self.pts = tuple(pts)
        self._rotation = rotation
        # a DecodePlan (source colours, display matrix with flips, HDR, alpha) replaces ``rotation``
        self._plan = plan
        self._convert: FrameConverter | None = plan.to_rgb if plan is not None else None
        self._rgb: list[np.ndarray | None]
        self._stacked: np.ndarray | None = None
        if isinstance(frames, np.ndarray):
            self._decoded: tuple[av.VideoFrame, ...] = ()
            self._stacked = frames
            self._rgb = list(frames)
            self._size = (int(frames.shape[1]), int(frames.shape[2]))
        else:
            self._decoded = tuple(frames)
            self._rgb = [None] * len(self._decoded)
            first = self._decoded[0]
            quarter = ("transpose" in plan.ops) if plan is not None else (rotation // 90) % 2
            self._size = (first.width, first.height) if quarter else (first.height, first.width)
        if len(self._rgb) != len(self.pts):
            raise ValueError(f"clip has {len(self._rgb)} frames but {len(self.pts)} timestamps")

    def __len__(self) -> int:
        return len(self._rgb)

    @property
    def stop(self) -> int:
        return self.start + len(self)

    @property
    def height(self) -> int:
        return self._size[0]

    @property
    def width(self) -> int:
        return self._size[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the clip as RGB (what ``frames`` would hold)."""
        return len(self) * self.height * self.width * 3

    def frame(self, i: int) -> np.ndarray:
        """Frame i as RGB uint8 [H, W, 3] in display orientation (converted once, then kept)."""
        rgb = self._rgb[i]
        if rgb is None:
            if self._convert is not None:
                rgb = self._convert(self._decoded[i])
            else:
                rgb = rotate_rgb(to_rgb(self._decoded[i]), self._rotation)
            self._rgb[i] = rgb
        return rgb

    def stored_as_shown(self, i: int) -> tuple[av.VideoFrame, int, int] | None:
        """Frame i's decoded picture with the YUV matrix and range (AVColorSpace, AVColorRange ids)
        that ``frame(i)`` converts it with, when ``frame(i)`` is that picture's plain conversion:
        no orientation op, tone map or alpha; None otherwise (and for a clip made from RGB).
        Lets a consumer of the picture in another colour path skip RGB (``coding.codec_yuv``)."""
        if not self._decoded:
            return None
        picture = self._decoded[i]
        if self._plan is not None:
            if self._plan.special or self._plan.ops:
                return None
            return picture, self._plan.matrix, self._plan.range
        if self._rotation % 360:
            return None
        matrix = int(picture.colorspace)
        # to_rgb without tags: swscale's BT.601 for an unspecified matrix, limited unless tagged full
        return picture, (6 if matrix == 2 else matrix), (2 if int(picture.color_range) == 2 else 1)

    @property
    def frames(self) -> np.ndarray:
        """All frames as RGB [n, H, W, 3] uint8 (converts the ones not converted yet)."""
        if self._stacked is None:
            self._stacked = np.stack([self.frame(i) for i in range(len(self))])
            self._rgb = list(self._stacked)  # one copy of the pixels, not two
        return self._stacked

    def pictures(self) -> tuple[av.VideoFrame, ...]:
        """The clip's decoded pictures (stored orientation, decoder's pixel format); a clip made
        from an RGB array gets RGB pictures of its frames."""
        if self._decoded:
            return self._decoded
        return tuple(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24") for f in self.frames)

    def shown_pictures(self) -> tuple[av.VideoFrame, ...]:
        """Pictures of what the codec keeps and shows, for analysis: the decoded pictures
        (``pictures``), except where the shown frame is not the decoded picture's colour (HDR:
        tone-mapped; alpha: composited), which get RGB pictures of ``frame``: the colour under a
        transparent pixel or a PQ code value would otherwise be measured as content (a fresh-user
        trial: an alpha video's target missed by 5 dB)."""
        if self._decoded and self._plan is not None and self._plan.special:
            return tuple(av.VideoFrame.from_ndarray(np.ascontiguousarray(self.frame(i)), format="rgb24")
                         for i in range(len(self)))
        return self.pictures()

    def view(self, size: int) -> np.ndarray:
        """[n, size, size, 3] uint8: every whole frame area-resized to a square (``global_view``)."""
        if not self._decoded or (self._plan is not None and self._plan.special):
            return global_view(self.frames, size)  # HDR / alpha: the view of what is shown
        if self._plan is not None:
            return np.stack([apply_orientation(_view_of_frame(f, size), self._plan.ops) for f in self._decoded])
        return np.stack([
            rotate_rgb(_view_of_frame(f, size), self._rotation) for f in self._decoded
        ])


#: the global view is made in two steps: FFmpeg's area scaler to VIEW_STEP × the view side (also
#: the YUV → RGB conversion when the source is a decoded picture), then an exact box filter
#: (cv2.INTER_AREA at an integer ratio) down to the view. One step with either scaler is worse:
#: FFmpeg's area filter aliases at ratios ≥ 8, and cv2's INTER_AREA at non-integer ratios costs
#: 10× more than this whole path (2.6 vs 0.25 ms per 480p frame).
VIEW_STEP = 2


_view_scaler = threading.local()


def _scaler() -> VideoReformatter:
    scaler = getattr(_view_scaler, "value", None)
    if scaler is None:  # one per thread: a reformatter caches its FFmpeg context, not thread-safe
        scaler = _view_scaler.value = VideoReformatter()
    return scaler


def _view_of_frame(frame: av.VideoFrame, size: int) -> np.ndarray:
    big = _scaler().reformat(frame, width=size * VIEW_STEP, height=size * VIEW_STEP, format="rgb24",
                             interpolation="AREA").to_ndarray()
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)


def global_view(frames: np.ndarray, size: int) -> np.ndarray:
    """[n, H, W, 3] RGB uint8 → [n, size, size, 3] uint8: each whole frame area-resized to a
    square, as ``Clip.view`` does from decoded pictures (within about one gray level)."""
    return np.stack([
        _view_of_frame(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24"), size)
        for f in frames
    ])


def rotate_rgb(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (degrees counter-clockwise, multiples of 90) to an image."""
    quarter_turns = (rotation // 90) % 4
    if quarter_turns == 0:
        return rgb
    return np.ascontiguousarray(np.rot90(rgb, k=quarter_turns))
