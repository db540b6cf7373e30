"""Optical-flow candidates for frame reconstruction (numpy + OpenCV, no torch).

For every frame of a clip the FrameMAE ``flowmix`` reconstructor mixes ``K`` candidates:

* ``linear``    – ``framers.reconstructors.classical.linear_prior`` (the ``linear`` reconstructor),
* ``prev_warp`` – the previous kept frame ``a`` backward-warped with ``t·F(b→a)``,
* ``next_warp`` – the next kept frame ``b`` backward-warped with ``(1-t)·F(a→b)``,

where ``t = (i - a) / (b - a)`` and ``F`` is OpenCV's DIS optical flow computed at a reduced
resolution (``flow_scale``). Kept frames and frames outside the span of kept frames get the
same image in every candidate, so any mixing of them returns the kept / held frame exactly.

The network sees the candidates of all frames downscaled by ``net_scale`` (``net_input``) and
predicts per-pixel mixing weights; ``mix`` applies them at full resolution. Training
(``training/``) calls these same functions, so training and inference compute the prior
identically.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from framers.reconstructors.base import KeptFrame

CANDIDATES: tuple[str, ...] = ("linear", "prev_warp", "next_warp")
N_CANDIDATES = len(CANDIDATES)
#: network input channels per frame: 3 per candidate, the kept flag, the position t
IN_CHANNELS = 3 * N_CANDIDATES + 2

_local = threading.local()


def net_scale(height: int, width: int) -> int:
    """Downscale factor of the network's input: the short side becomes ~96–191 pixels."""
    return max(1, min(height, width) // 96)


def flow_scale(height: int, width: int) -> int:
    """Downscale factor of the frames the optical flow is computed on."""
    return max(1, min(height, width) // 240)


def _dis() -> cv2.DISOpticalFlow:
    """A fresh DIS object per call: a reused one keeps state between frame sizes (its results
    then depend on earlier calls); creating one costs ~0.1 ms."""
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)  # type: ignore[attr-defined]


def _calc(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """DIS flow F with src(x) ≈ dst(x + F(x)) at the size of the (gray uint8) inputs."""
    return np.asarray(_dis().calc(src, dst, None))  # type: ignore[call-overload]


def _gray_small(rgb: np.ndarray, scale: int) -> np.ndarray:
    gray = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    if scale > 1:
        h, w = gray.shape
        gray = cv2.resize(gray, (max(1, w // scale), max(1, h // scale)), interpolation=cv2.INTER_AREA)
    return gray








def _remap2(image: np.ndarray, grid: np.ndarray, flow: np.ndarray, amount: float) -> np.ndarray:
    """image(x + amount·flow(x)) with a two-channel float map (bilinear, replicated borders)."""
    mapping = np.asarray(cv2.scaleAdd(flow, amount, grid))
    return np.asarray(
        cv2.remap(
            image,
            mapping,
            None,
            interpolation=cv2.INTER_LINEAR,  # type: ignore[call-overload]
            borderMode=cv2.BORDER_REPLICATE,
        )
    )


def _grid2(h: int, w: int) -> np.ndarray:
    cache = getattr(_local, "grid2", None)
    if cache is None or cache.shape[:2] != (h, w):
        gx, gy = _grid(h, w)
        cache = np.ascontiguousarray(np.stack([gx, gy], axis=-1))
        _local.grid2 = cache
    return cache


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    cache = getattr(_local, "grid", None)
    if cache is None or cache[0].shape != (h, w):
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        cache = (gx, gy)
        _local.grid = cache
    return cache


@dataclass(frozen=True)
class FramePlan:
    """Where frame ``index`` sits between kept frames (positions into the kept list)."""

    index: int
    before: int | None
    after: int | None
    t: float
    is_kept: bool

    @property
    def interpolated(self) -> bool:
        return not self.is_kept and self.before is not None and self.after is not None


def plan_window(kept_indices: Sequence[int], start: int, stop: int) -> list[FramePlan]:
    """One FramePlan per frame of [start, stop) for the sorted kept indices."""
    plans = []
    for index in range(start, stop):
        before = after = None
        for pos, k in enumerate(kept_indices):
            if k <= index:
                before = pos
            if k >= index:
                after = pos
                break
        is_kept = before is not None and kept_indices[before] == index
        t = 0.0
        if before is not None and after is not None and after != before:
            t = (index - kept_indices[before]) / (kept_indices[after] - kept_indices[before])
        plans.append(FramePlan(index, before, after, t, is_kept))
    return plans


class WindowFlows:
    """Flows between consecutive kept frames of a window, computed once per pair at the flow
    scale, and candidates of any frame at full resolution or downscaled by ``scale``."""

    def __init__(self, kept: Sequence[KeptFrame], scale_of_flow: int | None = None):
        """``scale_of_flow``: the flow scale of the whole frame when ``kept`` holds crops of it
        (training); by default ``flow_scale`` of the kept frames' size."""
        self.kept = kept
        self.height, self.width = kept[0].rgb.shape[:2]
        self.flow_scale = scale_of_flow or flow_scale(self.height, self.width)
        self._flows: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._images: dict[tuple[int, int], np.ndarray] = {}
        self._resized: dict[tuple[int, int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._explains: dict[tuple[int, int, float, float], bool] = {}

    def image(self, pos: int, scale: int = 1) -> np.ndarray:
        """Kept frame ``pos`` as float32, area-downscaled by ``scale``."""
        key = (pos, scale)
        if key not in self._images:
            self._images[key] = downscale(self.kept[pos].rgb, scale).astype(np.float32)
        return self._images[key]

    def pair(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(F(b→a), F(a→b)) for kept positions a < b, at the flow scale (small pixels)."""
        if (a, b) not in self._flows:
            ga = _gray_small(self.kept[a].rgb, self.flow_scale)
            gb = _gray_small(self.kept[b].rgb, self.flow_scale)
            self._flows[(a, b)] = (_calc(gb, ga), _calc(ga, gb))
        return self._flows[(a, b)]

    def flow_explains(self, a: int, b: int, ratio: float = 0.8, min_diff: float = 4.0) -> bool:
        """False when the flow does not explain the change between kept frames a and b (a scene
        cut, flicker, a fade): warping a along F(b→a) leaves a mean absolute gray error of at
        least ``ratio`` times that of a versus b, and that difference is at least ``min_diff``
        gray levels. Computed at the flow scale; the reconstructor then uses ``linear``."""
        key = (a, b, ratio, min_diff)
        if key not in self._explains:
            ga = _gray_small(self.kept[a].rgb, self.flow_scale).astype(np.float32)
            gb = _gray_small(self.kept[b].rgb, self.flow_scale).astype(np.float32)
            f_ba, _ = self.pair(a, b)
            h, w = ga.shape
            warped = _remap2(ga, _grid2(h, w), f_ba, 1.0)
            err = float(np.abs(warped - gb).mean())
            diff = float(np.abs(ga - gb).mean())
            self._explains[key] = not (diff >= min_diff and err >= ratio * diff)
        return self._explains[key]

    def resized_pair(self, a: int, b: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """The pair's flows resized to [h, w] (pixels of that size), cached."""
        key = (a, b, h, w)
        if key not in self._resized:
            f_ba, f_ab = self.pair(a, b)
            self._resized[key] = (self._resize_flow(f_ba, h, w), self._resize_flow(f_ab, h, w))
        return self._resized[key]

    def _resize_flow(self, flow: np.ndarray, h: int, w: int) -> np.ndarray:
        fh, fw = flow.shape[:2]
        if (fh, fw) == (h, w):
            return flow
        out = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
        out[..., 0] *= w / fw
        out[..., 1] *= h / fh
        return out

    def candidates(
        self,
        plan: FramePlan,
        scale: int = 1,
        region: tuple[int, int, int, int] | None = None,
        as_list: bool = False,
    ) -> Any:
        """float32 [K, h, w, 3] candidates of one frame, downscaled by ``scale`` (the kept frames
        are area-downscaled first, then warped with the resized flow) or, at full resolution,
        only the pixels of ``region`` = (y, x, height, width); a list of K arrays if ``as_list``."""
        if scale == 1:
            lin = self._linear_small(plan, 1)
        else:
            lin = self._linear_small(plan, scale)
            region = None
        if region is not None:
            ry, rx, rh, rw = region
            lin = lin[ry : ry + rh, rx : rx + rw]
        if not plan.interpolated:
            return [lin] * N_CANDIDATES if as_list else np.stack([lin] * N_CANDIDATES)
        assert plan.before is not None and plan.after is not None
        h, w = (self.height // scale, self.width // scale) if scale > 1 else (self.height, self.width)
        fba, fab = self.resized_pair(plan.before, plan.after, h, w)
        grid = _grid2(h, w)
        if region is not None:
            sl = (slice(ry, ry + rh), slice(rx, rx + rw))
            fba, fab, grid = fba[sl], fab[sl], grid[sl]
        prev = _remap2(self.image(plan.before, scale), grid, fba, plan.t)
        nxt = _remap2(self.image(plan.after, scale), grid, fab, 1.0 - plan.t)
        return [lin, prev, nxt] if as_list else np.stack([lin, prev, nxt])

    def _linear_small(self, plan: FramePlan, scale: int) -> np.ndarray:
        if plan.before is None or plan.after is None:
            pos = plan.after if plan.before is None else plan.before
            assert pos is not None
            return self.image(pos, scale)
        if plan.before == plan.after:
            return self.image(plan.before, scale)
        a, b = self.image(plan.before, scale), self.image(plan.after, scale)
        return np.asarray(cv2.addWeighted(a, 1.0 - plan.t, b, plan.t, 0.0))




def net_input_window(flows: WindowFlows, plans: Sequence[FramePlan], scale: int) -> np.ndarray:
    """Network input of a window: float32 [IN_CHANNELS, n, h, w], candidates built at 1/scale."""
    frames = []
    for plan in plans:
        small = flows.candidates(plan, scale)
        h, w = small.shape[1:3]
        chans = [c.transpose(2, 0, 1) * (1.0 / 255.0) - 0.5 for c in small]
        chans.append(np.full((1, h, w), 1.0 if plan.is_kept else 0.0, np.float32))
        chans.append(np.full((1, h, w), plan.t, np.float32))
        frames.append(np.concatenate(chans))
    return np.stack(frames, axis=1).astype(np.float32, copy=False)


def downscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Area downscale by an integer factor (floor of the size)."""
    if scale == 1:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, w // scale), max(1, h // scale)), interpolation=cv2.INTER_AREA)




def mix(cands: Sequence[np.ndarray] | np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ_k w_k·c_k: candidates [K, H, W, 3] and low-resolution weights [K, h, w] → [H, W, 3].

    The weights are upscaled bilinearly (half-pixel centres, as the training's
    ``F.interpolate(align_corners=False)``); softmax weights sum to one, so the result is
    computed as c_0 + Σ_{k>0} w_k·(c_k − c_0)."""
    height, width = cands[0].shape[:2]
    rest = np.ascontiguousarray(weights[1:].transpose(1, 2, 0), dtype=np.float32)  # [h, w, K-1]
    full = cv2.resize(rest, (width, height), interpolation=cv2.INTER_LINEAR)
    if full.ndim == 2:
        full = full[..., None]
    out: Any = np.asarray(cands[0], dtype=np.float32)
    for k in range(1, len(cands)):
        w3 = cv2.merge([np.ascontiguousarray(full[..., k - 1])] * 3)
        out = cv2.add(out, cv2.multiply(cv2.subtract(np.asarray(cands[k], np.float32), cands[0]), w3))
    return np.asarray(out)
