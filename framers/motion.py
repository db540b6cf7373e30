"""Optical-flow candidates for frame reconstruction (numpy + OpenCV, no torch).

For every frame of a clip the FrameMAE ``flowmix`` reconstructor mixes ``K`` candidates:

* ``linear``    – ``framers.reconstructors.classical.linear_prior`` (the ``linear`` reconstructor),
* ``prev_warp`` – the previous kept frame ``a`` backward-warped with ``t·F(b→a)``,
* ``next_warp`` – the next kept frame ``b`` backward-warped with ``(1-t)·F(a→b)``,

or, for a model whose config names the ``trajectory`` set (``CANDIDATE_SETS``), ``linear`` and

* ``prev_traj`` – ``(1-t)·a(x + t·F(b→a)) + t·b(x − (1-t)·F(b→a))``: both kept frames sampled
  along the one straight trajectory through x that F(b→a) gives,
* ``next_traj`` – ``(1-t)·a(x − t·F(a→b)) + t·b(x + (1-t)·F(a→b))``, the same along F(a→b);

where a one-sided warp copies whatever the flow points at (a wrong flow shows as a sharp wrong
picture), a trajectory mean is a blend of two samples that agree where the flow is right
(``bench/framemae_headroom.py``),

where ``t = (i - a) / (b - a)`` and ``F`` is OpenCV's DIS optical flow computed at a reduced
resolution (``flow_scale``) with the preset the model was trained with (``FLOW_PRESETS``). Kept
frames and frames outside the span of kept frames get the same image in every candidate, so any
mixing of them returns the kept / held frame exactly.

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

from framers.reconstructors.base import KeptFrame, position

CANDIDATES: tuple[str, ...] = ("linear", "prev_warp", "next_warp")
#: the candidate sets a model's config may name (``prior.candidates``): FrameMAE 1.0.0 mixes
#: ``warp``; ``trajectory`` replaces each one-sided warp by the time-weighted mean of both kept
#: frames sampled along the same flow (``WindowFlows.candidates``)
CANDIDATE_SETS: dict[str, tuple[str, ...]] = {
    "warp": CANDIDATES,
    "trajectory": ("linear", "prev_traj", "next_traj"),
}
DEFAULT_CANDIDATES = "warp"


def candidate_set_named(names: Sequence[str] | None) -> str:
    """The key of ``CANDIDATE_SETS`` whose candidates are ``names`` in that order (a model or
    graph config's ``candidates`` list; None or empty: ``DEFAULT_CANDIDATES``, what configs
    before the sets named none hold). Raises KeyError for a list that is no known set."""
    wanted = tuple(names or CANDIDATE_SETS[DEFAULT_CANDIDATES])
    for key, members in CANDIDATE_SETS.items():
        if wanted == members:
            return key
    raise KeyError(f"unknown candidates {list(wanted)} (known sets: "
                   f"{'; '.join(', '.join(v) for v in CANDIDATE_SETS.values())})")
N_CANDIDATES = len(CANDIDATES)
#: network input channels per frame: 3 per candidate, the kept flag, the position t
IN_CHANNELS = 3 * N_CANDIDATES + 2
#: extra input channels of a model whose config sets ``prior.disagreement`` (trajectory set only):
#: per trajectory, how far its two samples differ (``WindowFlows.disagreement``)
DISAGREEMENT_CHANNELS = 2
#: gray levels of sample difference that make one unit of a disagreement channel (clipped at 4)
DISAGREEMENT_UNIT = 32.0

_local = threading.local()
#: rows per band of ``WindowFlows.interpolate`` (its buffers: ~1.4 MB at 1920 px, cache-resident)
BAND_ROWS = 16


def net_scale(height: int, width: int) -> int:
    """Downscale factor of the network's input: the short side becomes ~96–191 pixels."""
    return max(1, min(height, width) // 96)


def flow_scale(height: int, width: int) -> int:
    """Downscale factor of the frames the optical flow is computed on."""
    return max(1, min(height, width) // 240)


#: OpenCV DIS presets a model's config may name (``prior.flow_preset``); a model without one was
#: trained with ``fast`` (FrameMAE 1.0.0).
FLOW_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
DEFAULT_FLOW_PRESET = "fast"


def _dis(preset: str = DEFAULT_FLOW_PRESET) -> cv2.DISOpticalFlow:
    """A fresh DIS object per call: a reused one keeps state between frame sizes (its results
    then depend on earlier calls); creating one costs ~0.1 ms. KeyError for an unknown preset."""
    return cv2.DISOpticalFlow_create(FLOW_PRESETS[preset])  # type: ignore[attr-defined]


#: DIS (OpenCV 4.9–5.1) raises on, or crashes the process (a segmentation fault) with, pictures
#: whose short side is small against the long one: 12×40 and 24×80 with the fast presets, 11×64
#: with every preset (a scratch scan; a fresh-user trial's 8×8 and 64×2 videos). Every short side
#: ≥ 32 with an aspect ratio ≤ 8 ran, up to 240×1920, with the three presets.
MIN_FLOW_SIDE = 32
MAX_FLOW_ASPECT = 8


def dis_flow(dis: cv2.DISOpticalFlow, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """DIS flow F [h, w, 2] float32 (pixels) with src(x) ≈ dst(x + F(x)), for gray uint8 pictures
    [h, w] of any size ≥ 1×1: ones DIS cannot take (``MIN_FLOW_SIDE``, ``MAX_FLOW_ASPECT``) are
    padded at the bottom and right with their edge pixels first, and the flow cut back to [h, w].
    Pictures it can take are passed as they are (the same flow as ``dis.calc``)."""
    h, w = src.shape[:2]
    ph = max(h, MIN_FLOW_SIDE, -(-w // MAX_FLOW_ASPECT))
    pw = max(w, MIN_FLOW_SIDE, -(-h // MAX_FLOW_ASPECT))
    if (ph, pw) == (h, w):
        return np.asarray(dis.calc(src, dst, None))  # type: ignore[call-overload]
    pad = (0, ph - h, 0, pw - w)
    flow = dis.calc(cv2.copyMakeBorder(src, *pad, cv2.BORDER_REPLICATE),  # type: ignore[call-overload]
                    cv2.copyMakeBorder(dst, *pad, cv2.BORDER_REPLICATE), None)
    return np.ascontiguousarray(np.asarray(flow)[:h, :w])


def _calc(src: np.ndarray, dst: np.ndarray, preset: str = DEFAULT_FLOW_PRESET) -> np.ndarray:
    """DIS flow F with src(x) ≈ dst(x + F(x)) at the size of the (gray uint8) inputs."""
    return dis_flow(_dis(preset), src, dst)


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
            interpolation=cv2.INTER_LINEAR,  # type: ignore[call-overload, unused-ignore]  # stubs differ across OpenCV 4 and 5
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


def plan_window(kept_indices: Sequence[int], start: int, stop: int,
                times: Sequence[float] | None = None) -> list[FramePlan]:
    """One FramePlan per frame of [start, stop) for the sorted kept indices; ``t`` by frame count,
    or by ``times`` (every frame's timestamp) where they are uneven (``base.position``)."""
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
            t = position(index, kept_indices[before], kept_indices[after], times)
        plans.append(FramePlan(index, before, after, t, is_kept))
    return plans


class FrameCache(dict[tuple[Any, ...], Any]):
    """What ``WindowFlows`` computes from kept frames (images, flows, gates), keyed by
    ``(kind, frame indices, parameters)``; ``lock`` guards what compose threads add."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def forget_before(self, index: int) -> None:
        """Drop everything computed only from frames before ``index`` (no later window needs it)."""
        with self.lock:  # list(self): a snapshot taken atomically while other threads add keys
            for key in [k for k in list(self) if max(k[1]) < index]:
                self.pop(key, None)


class WindowFlows:
    """Flows between consecutive kept frames of a window, computed once per pair at the flow
    scale, and candidates of any frame at full resolution or downscaled by ``scale``."""

    def __init__(self, kept: Sequence[KeptFrame], scale_of_flow: int | None = None,
                 cache: FrameCache | None = None, preset: str = DEFAULT_FLOW_PRESET,
                 candidate_set: str = DEFAULT_CANDIDATES):
        """``scale_of_flow``: the flow scale of the whole frame when ``kept`` holds crops of it
        (training); by default ``flow_scale`` of the kept frames' size. ``cache``: shared by the
        windows of one video (``FrameMAEReconstructor.reconstruct``), so that what two
        neighbouring windows both need (the flow between the last kept frame of one and the
        first of the next, their images) is computed once; by default the window's own.
        ``preset``: the DIS preset of the flows (``FLOW_PRESETS``; the model's config names the
        one it was trained with); ``candidate_set``: a key of ``CANDIDATE_SETS`` (likewise).
        KeyError for an unknown preset or candidate set."""
        self.kept = kept
        self.height, self.width = kept[0].rgb.shape[:2]
        self.flow_scale = scale_of_flow or flow_scale(self.height, self.width)
        if preset not in FLOW_PRESETS:  # here, not later in a worker thread
            raise KeyError(f"unknown DIS preset {preset!r} (choose from {', '.join(FLOW_PRESETS)})")
        self.preset = preset
        if candidate_set not in CANDIDATE_SETS:
            raise KeyError(f"unknown candidate set {candidate_set!r} (choose from {', '.join(CANDIDATE_SETS)})")
        self.trajectory = candidate_set == "trajectory"
        self._cache = FrameCache() if cache is None else cache

    def _get(self, kind: str, positions: tuple[int, ...], extra: tuple[Any, ...], make: Any) -> Any:
        """The cached ``make()`` for kept ``positions`` (keyed by their frame indices)."""
        key = (kind, tuple(self.kept[p].index for p in positions), extra)
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = make()
        return value

    def image(self, pos: int, scale: int = 1) -> np.ndarray:
        """Kept frame ``pos`` as float32, area-downscaled by ``scale``."""
        return self._get("image", (pos,), (scale,),
                         lambda: downscale(self.kept[pos].rgb, scale).astype(np.float32))

    def gray(self, pos: int) -> np.ndarray:
        """Kept frame ``pos`` in gray (uint8) at the flow scale, cached: the flows and the gate
        of the two pairs a kept frame belongs to read the same image."""
        return self._get("gray", (pos,), (self.flow_scale,),
                         lambda: _gray_small(self.kept[pos].rgb, self.flow_scale))

    def pair(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(F(b→a), F(a→b)) for kept positions a < b, at the flow scale (small pixels)."""

        def flows() -> tuple[np.ndarray, np.ndarray]:
            ga, gb = self.gray(a), self.gray(b)
            return _calc(gb, ga, self.preset), _calc(ga, gb, self.preset)

        return self._get("flow", (a, b), (self.flow_scale, self.preset), flows)

    def flow_explains(self, a: int, b: int, ratio: float = 0.8, min_diff: float = 4.0) -> bool:
        """False when the flow does not explain the change between kept frames a and b (a scene
        cut, flicker, a fade): warping a along F(b→a) leaves a mean absolute gray error of at
        least ``ratio`` times that of a versus b, and that difference is at least ``min_diff``
        gray levels. Computed at the flow scale; the reconstructor then uses ``linear``."""

        def explains() -> bool:
            ga, gb = self.gray(a).astype(np.float32), self.gray(b).astype(np.float32)
            f_ba, _ = self.pair(a, b)
            h, w = ga.shape
            warped = _remap2(ga, _grid2(h, w), f_ba, 1.0)
            err = float(np.abs(warped - gb).mean())
            diff = float(np.abs(ga - gb).mean())
            return not (diff >= min_diff and err >= ratio * diff)

        return bool(self._get("gate", (a, b), (self.flow_scale, self.preset, ratio, min_diff), explains))

    def resized_pair(self, a: int, b: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """The pair's flows resized to [h, w] (pixels of that size), cached."""
        def resized() -> tuple[np.ndarray, np.ndarray]:
            f_ba, f_ab = self.pair(a, b)
            return self._resize_flow(f_ba, h, w), self._resize_flow(f_ab, h, w)

        return self._get("resized", (a, b), (self.flow_scale, self.preset, h, w), resized)

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
        t = plan.t
        img_a, img_b = self.image(plan.before, scale), self.image(plan.after, scale)
        prev = _remap2(img_a, grid, fba, t)
        nxt = _remap2(img_b, grid, fab, 1.0 - t)
        if self.trajectory:  # the other end of each trajectory, then the time-weighted means
            prev = np.asarray(cv2.addWeighted(prev, 1.0 - t, _remap2(img_b, grid, fba, t - 1.0), t, 0.0))
            nxt = np.asarray(cv2.addWeighted(_remap2(img_a, grid, fab, -t), 1.0 - t, nxt, t, 0.0))
        return [lin, prev, nxt] if as_list else np.stack([lin, prev, nxt])

    def disagreement(self, plan: FramePlan, scale: int) -> np.ndarray:
        """float32 [2, h, w] at 1/scale: for ``prev_traj`` and ``next_traj``, the mean absolute
        RGB difference of the two kept frames' samples along the trajectory, over
        ``DISAGREEMENT_UNIT`` and clipped at 4: near 0 where the flow explains both ends, large at
        occlusions and wrong flow (a cue the candidate's mean alone hides). Interpolated frames
        of the trajectory set only."""
        assert self.trajectory and plan.interpolated and plan.before is not None and plan.after is not None
        t = plan.t
        img_a, img_b = self.image(plan.before, scale), self.image(plan.after, scale)
        h, w = img_a.shape[:2]
        fba, fab = self.resized_pair(plan.before, plan.after, h, w)
        grid = _grid2(h, w)
        out = np.empty((2, h, w), np.float32)
        for k, (flow, amount_a, amount_b) in enumerate(((fba, t, t - 1.0), (fab, -t, 1.0 - t))):
            diff = cv2.absdiff(_remap2(img_a, grid, flow, amount_a), _remap2(img_b, grid, flow, amount_b))
            np.minimum(diff.mean(axis=2) / DISAGREEMENT_UNIT, 4.0, out=out[k])
        return out

    def image_rgba(self, pos: int) -> np.ndarray:
        """Kept frame ``pos`` as float32 RGBA [H, W, 4] at full resolution (``rgba_f32``), cached."""
        with self._cache.lock:  # compose threads share the images (one conversion each)
            return self._get("rgba", (pos,), (), lambda: rgba_f32(self.kept[pos].rgb))

    def drop_images(self, keep: Sequence[int] = ()) -> None:
        """Free the cached full-resolution images of kept positions not in ``keep`` (a window
        holds ~33 MB per 1080p RGBA frame; only the current pair is needed at a time)."""
        indices = {self.kept[p].index for p in keep}
        for key in [k for k in self._cache if k[0] in ("rgba", "image") and k[1][0] not in indices
                    and (k[0] == "rgba" or k[2] == (1,))]:
            del self._cache[key]

    def interpolate(self, plan: FramePlan, weights: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
        """An interpolated frame at full resolution: uint8 [H, W, 3] (into ``dst`` if given), its
        candidates mixed by the network's low-resolution weights [K, h, w] (K = 3, softmax over
        ``CANDIDATES``).

        ``round(mix(candidates(plan), weights))`` within ~0.01 gray levels before rounding, in
        about half its CPU time at 1080p:

        * with w_0 = 1 − w_1 − w_2 and s = w_1 + w_2 the mix is (w_0·c_0 + s·m) / (w_0 + s)
          where m = (w_1·c_1 + w_2·c_2) / s: two ``cv2.blendLinear`` passes, which take
          single-channel weights (never expanded to 3 channels) and add 1e-5 to each
          denominator (< 0.003 levels);
        * the warps run on RGBA (``rgba_f32``: OpenCV's 4-channel remap is 2x faster) with
          separate relative x and y maps (``_remap_relative``); every upscaling is
          single-channel (OpenCV's 2-channel resize is 3.5x slower than two 1-channel ones),
          into reused buffers (``_workspace``: fresh 8 MB arrays cost page faults);
        * every full-resolution pass after the upscaling runs on bands of ``BAND_ROWS`` rows
          whose intermediates stay in the CPU cache (a 1080p RGBA float32 image is 33 MB)."""
        assert plan.interpolated and plan.before is not None and plan.after is not None
        assert len(weights) == N_CANDIDATES == 3
        a, b, t = plan.before, plan.after, plan.t
        height, width = self.height, self.width
        f_ba, f_ab = self.pair(a, b)
        img_a, img_b = self.image_rgba(a), self.image_rgba(b)
        ws = _workspace(height, width, self.trajectory)
        # prev_warp reads a at x + t·F(b→a), next_warp reads b at x + (1-t)·F(a→b); the
        # trajectory set also reads b at x − (1-t)·F(b→a) and a at x − t·F(a→b)
        ax, ay = _upscale_flow(f_ba, t, ws["ax"], ws["ay"])
        bx, by = _upscale_flow(f_ab, 1.0 - t, ws["bx"], ws["by"])
        if self.trajectory:
            cx, cy = _upscale_flow(f_ba, t - 1.0, ws["cx"], ws["cy"])
            dx, dy = _upscale_flow(f_ab, -t, ws["dx"], ws["dy"])
        # ``mix``'s bilinear upscaling of w_1, w_2 (one channel at a time: equal to ~1e-6)
        w1, w2 = (_upscale(weights[k], 1.0, ws[f"w{k}"]) for k in (1, 2))
        share = cv2.add(w1, w2, dst=ws["share"])
        w0 = np.subtract(np.float32(1.0), share, out=ws["w0"])
        out = np.empty((height, width, 3), np.uint8) if dst is None else dst
        rows = min(BAND_ROWS, height)
        my = np.empty((rows, width), np.float32)
        prev, nxt = np.empty((rows, width, 4), np.float32), np.empty((rows, width, 4), np.float32)
        other = np.empty((rows, width, 4), np.float32) if self.trajectory else prev
        rounded = np.empty((rows, width, 4), np.uint8)
        for y0 in range(0, height, rows):
            y1 = min(height, y0 + rows)
            n, band = y1 - y0, slice(y0, y1)
            my_, p_, n_, u_ = my[:n], prev[:n], nxt[:n], rounded[:n]
            # relative maps: OpenCV adds the pixel's position within the band, so y gets y0
            _remap_relative(img_a, ax[band], np.add(ay[band], np.float32(y0), out=my_), p_)
            _remap_relative(img_b, bx[band], np.add(by[band], np.float32(y0), out=my_), n_)
            if self.trajectory:
                o_ = other[:n]
                _remap_relative(img_b, cx[band], np.add(cy[band], np.float32(y0), out=my_), o_)
                cv2.addWeighted(p_, 1.0 - t, o_, t, 0.0, dst=p_)  # prev_traj
                _remap_relative(img_a, dx[band], np.add(dy[band], np.float32(y0), out=my_), o_)
                cv2.addWeighted(o_, 1.0 - t, n_, t, 0.0, dst=n_)  # next_traj
            cv2.blendLinear(p_, n_, w1[band], w2[band], dst=p_)  # m
            cv2.addWeighted(img_a[band], 1.0 - t, img_b[band], t, 0.0, dst=n_)  # c_0 (``linear``)
            cv2.blendLinear(n_, p_, w0[band], share[band], dst=n_)
            cv2.convertScaleAbs(n_, dst=u_)  # round half to even and saturate, as ``compose`` did
            cv2.cvtColor(u_, cv2.COLOR_RGBA2RGB, dst=out[band])
        return out

    def _linear_small(self, plan: FramePlan, scale: int) -> np.ndarray:
        if plan.before is None or plan.after is None:
            pos = plan.after if plan.before is None else plan.before
            assert pos is not None
            return self.image(pos, scale)
        if plan.before == plan.after:
            return self.image(plan.before, scale)
        a, b = self.image(plan.before, scale), self.image(plan.after, scale)
        return np.asarray(cv2.addWeighted(a, 1.0 - plan.t, b, plan.t, 0.0))


def rgba_f32(rgb: np.ndarray) -> np.ndarray:
    """A uint8 RGB frame [H, W, 3] as float32 RGBA [H, W, 4] (alpha 255, ignored).

    OpenCV's ``remap`` has a vectorised bilinear path for 4-channel float images that is about
    twice as fast as its 3-channel one and gives the same values per channel, so the
    full-resolution warps of ``WindowFlows.interpolate`` run on RGBA."""
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(rgb, np.uint8), cv2.COLOR_RGB2RGBA)).astype(np.float32)


def _workspace(height: int, width: int, trajectory: bool = False) -> dict[str, np.ndarray]:
    """This thread's full-resolution float32 [height, width] buffers of ``interpolate`` (eight
    maps, 64 MB at 1080p; twelve for the trajectory set), reused from frame to frame;
    ``release_workspace`` frees them."""
    ws: dict[str, np.ndarray] | None = getattr(_local, "workspace", None)
    if ws is None or ws["ax"].shape != (height, width):
        ws = {k: np.empty((height, width), np.float32) for k in ("ax", "ay", "bx", "by", "w1", "w2", "share", "w0")}
    if trajectory and "cx" not in ws:  # the trajectory set's second sample of each pair
        ws.update({k: np.empty((height, width), np.float32) for k in ("cx", "cy", "dx", "dy")})
    _local.workspace = ws
    return ws


def release_workspace() -> None:
    """Free this thread's ``interpolate`` buffers (a window or a video is done)."""
    _local.workspace = None


def _upscale(small: np.ndarray, gain: float, dst: np.ndarray) -> np.ndarray:
    """gain × a single-channel float32 map [h, w] bilinearly resized (half-pixel centres) to
    ``dst``'s size [H, W], into ``dst``."""
    scaled = np.multiply(small, np.float32(gain), dtype=np.float32)
    if scaled.shape == dst.shape:
        dst[...] = scaled
        return dst
    return np.asarray(cv2.resize(scaled, (dst.shape[1], dst.shape[0]), dst=dst, interpolation=cv2.INTER_LINEAR))


def _upscale_flow(flow: np.ndarray, amount: float, dst_x: np.ndarray,
                  dst_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``amount`` × a flow [fh, fw, 2] (pixels of its own size) as full-resolution x and y
    displacements (into ``dst_x``, ``dst_y`` [H, W], full-resolution pixels): the map of
    ``WindowFlows.resized_pair`` times ``amount`` up to float rounding (~1e-5 px)."""
    (fh, fw), (height, width) = flow.shape[:2], dst_x.shape
    return (_upscale(flow[..., 0], amount * width / fw, dst_x), _upscale(flow[..., 1], amount * height / fh, dst_y))


def _remap_relative(image: np.ndarray, shift_x: np.ndarray, shift_y: np.ndarray, dst: np.ndarray) -> None:
    """dst(x, y) = image(x + shift_x, y + shift_y), bilinear with replicated borders (as
    ``_remap2``); ``WARP_RELATIVE_MAP`` adds the pixel grid inside OpenCV, which saves two
    full-resolution passes (outputs differ from absolute maps' by < 0.01 gray levels)."""
    flags = cv2.INTER_LINEAR | cv2.WARP_RELATIVE_MAP
    cv2.remap(image, shift_x, shift_y, dst=dst, interpolation=flags,
              borderMode=cv2.BORDER_REPLICATE)


def net_input_window(flows: WindowFlows, plans: Sequence[FramePlan], scale: int,
                     disagreement: bool = False) -> np.ndarray:
    """Network input of a window: float32 [IN_CHANNELS (+ DISAGREEMENT_CHANNELS), n, h, w],
    candidates built at 1/scale (each as c/255 − 0.5, channels first), then the kept flag and t,
    written in place; with ``disagreement`` (a trajectory-set model whose config asks for it)
    also ``WindowFlows.disagreement`` of each frame (zero for kept and held frames)."""
    out: np.ndarray | None = None
    for i, plan in enumerate(plans):
        small = flows.candidates(plan, scale, as_list=True)
        if out is None:
            channels = IN_CHANNELS + (DISAGREEMENT_CHANNELS if disagreement else 0)
            out = np.zeros((channels, len(plans), *small[0].shape[:2]), np.float32)
        if disagreement and plan.interpolated:
            out[IN_CHANNELS:, i] = flows.disagreement(plan, scale)
        for k, cand in enumerate(small):
            chans = out[3 * k : 3 * k + 3, i]
            np.multiply(cand.transpose(2, 0, 1), 1.0 / 255.0, out=chans)
            chans -= 0.5
        out[3 * N_CANDIDATES, i] = 1.0 if plan.is_kept else 0.0
        out[3 * N_CANDIDATES + 1, i] = plan.t
    assert out is not None, "a window has frames"
    return out


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
