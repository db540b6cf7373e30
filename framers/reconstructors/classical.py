"""Classical reconstructors: ``hold`` (repeat the last kept frame) and ``linear``
(per-pixel linear interpolation between the kept frames on either side, across clip borders)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from framers.reconstructors.base import KeptFrame, WindowReconstructor, position


def neighbours(kept: Sequence[KeptFrame], index: int) -> tuple[KeptFrame | None, KeptFrame | None]:
    """The nearest kept frame at or before ``index`` and the nearest at or after it."""
    before: KeptFrame | None = None
    after: KeptFrame | None = None
    for frame in kept:
        if frame.index <= index:
            before = frame
        if frame.index >= index:
            after = frame
            break
    return before, after


def linear_prior(kept: Sequence[KeptFrame], start: int, stop: int) -> np.ndarray:
    """Linear interpolation of frames start..stop-1 from the kept frames, as float32 [n, H, W, 3].

    Between two kept frames a < t < b the frame is (1-w)·a + w·b with w = (t-a)/(b-a);
    before the first kept frame or after the last one the nearest kept frame is held.
    """
    first = kept[0].rgb
    out = np.empty((stop - start, *first.shape), dtype=np.float32)
    for offset, index in enumerate(range(start, stop)):
        before, after = neighbours(kept, index)
        if before is None:
            assert after is not None
            out[offset] = after.rgb
        elif after is None or after.index == before.index:
            out[offset] = before.rgb
        else:
            weight = (index - before.index) / (after.index - before.index)
            out[offset] = before.rgb.astype(np.float32) * (1.0 - weight)
            out[offset] += after.rgb.astype(np.float32) * weight
    return out


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Round and clip float pixels to uint8."""
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


class LinearReconstructor(WindowReconstructor):
    name = "linear"
    local = True

    def reconstruct_window(self, kept: Sequence[KeptFrame], start: int, stop: int,
                           times: Sequence[float] | None = None) -> np.ndarray:
        # Frame by frame on uint8 with OpenCV: ~20x faster and a fraction of the memory of the
        # float32 clip that linear_prior builds (the same values up to rounding).
        first = kept[0].rgb
        out = np.empty((stop - start, *first.shape), dtype=np.uint8)
        for offset, index in enumerate(range(start, stop)):
            before, after = neighbours(kept, index)
            if before is None or after is None or after.index == before.index:
                source = before if before is not None else after
                assert source is not None
                out[offset] = source.rgb
            else:
                weight = position(index, before.index, after.index, times)
                cv2.addWeighted(before.rgb, 1.0 - weight, after.rgb, weight, 0.0, dst=out[offset])
        return out


class HoldReconstructor(WindowReconstructor):
    """Repeat the last kept frame (the first kept frame before any kept frame appears)."""

    name = "hold"
    local = True

    def reconstruct_window(self, kept: Sequence[KeptFrame], start: int, stop: int,
                           times: Sequence[float] | None = None) -> np.ndarray:
        frames = []
        for index in range(start, stop):
            before, after = neighbours(kept, index)
            source = before if before is not None else after
            assert source is not None
            frames.append(source.rgb)
        return np.stack(frames)
