"""Frame and video quality metrics: PSNR, SSIM, MS-SSIM, bits per pixel (see docs/DESIGN.md, quality protocol).

All metrics take RGB uint8 frames [H, W, 3] at the source's native resolution.

* PSNR: over the three channels, peak 255, capped at ``PSNR_CAP`` = 60 dB (an identical frame
  would otherwise be infinite and a few duplicates would dominate a mean).
* SSIM: Wang et al. 2004 — 11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03, population
  covariances, the border where the window does not fit dropped, per channel and averaged.
  This is exactly scikit-image's ``structural_similarity(a, b, channel_axis=-1,
  data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``
  (``ssim_skimage`` below; the tests hold the two within 1e-5), computed with OpenCV's
  separable filters in float32 because scikit-image takes ~0.9 s per 720p RGB frame on this
  machine and this takes ~0.1 s. Full resolution, all three channels: no luma shortcut, no
  downscaling.
* MS-SSIM: Wang, Simoncelli & Bovik 2003, five scales with weights (0.0448, 0.2856, 0.3001,
  0.2363, 0.1333): contrast-structure means at scales 1–4, the full SSIM mean at scale 5, the
  same window as SSIM, 2×2 average pooling between scales (an odd last row/column is
  dropped), negative terms clipped to 0, computed per channel and averaged over channels (as
  TensorFlow's ``ssim_multiscale`` and ``pytorch_msssim`` do). Scale 1 is shared with SSIM.
  At a scale smaller than the window (sources under 176 px a side) the whole reflect-padded
  map is averaged there instead of its valid part: defined, but not the textbook value.
* bits per pixel: bytes · 8 / (width · height · frames).

The reference frame's statistics (means and variances at every scale) are computed once per
frame with ``Reference`` and reused for every method compared against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

PSNR_CAP = 60.0
PEAK = 255.0
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # scikit-image: int(3.5 * sigma + 0.5) → an 11-tap window
_C1 = (0.01 * PEAK) ** 2
_C2 = (0.03 * PEAK) ** 2


def _gaussian_kernel(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(x**2) / (2.0 * sigma**2))
    return (kernel / kernel.sum()).astype(np.float32)


_KERNEL = _gaussian_kernel()


# -- PSNR -----------------------------------------------------------------------------------------
def mse(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean squared error over all pixels and channels (any equal shapes; ValueError otherwise).

    Two uint8 arrays (frames, clips) are summed exactly in integers (``sq_error_sum``: 4x faster
    than the float32 difference at 1080p, whose float32 dot product was also off by ~1e-4
    relative on large frames); other dtypes take the float32 difference."""
    _check_pair(reference, test)
    if reference.size == 0:
        raise ValueError("empty frames")
    if reference.dtype == test.dtype == np.uint8:
        return sq_error_sum(reference, test) / reference.size
    diff = reference.astype(np.float32) - test.astype(np.float32)
    flat = diff.ravel()
    return float(np.dot(flat, flat)) / flat.size


def sq_error_sum(a: np.ndarray, b: np.ndarray) -> int:
    """Σ (a − b)² over every element of two uint8 arrays of one shape, exact: |a − b| in uint8
    (OpenCV), its squares in uint16, their sum in uint64 (``cv2.norm``'s NORM_L2SQR is a float
    sum: 19200.000000000004 for 192 differences of 10)."""
    if a.size >= 1 << 31:  # more rows than an OpenCV matrix holds
        return sum(sq_error_sum(x, y) for x, y in zip(a, b, strict=True))
    # one single-channel column: OpenCV reads any contiguous array of any rank this way
    diff = cv2.absdiff(np.ascontiguousarray(a).reshape(-1, 1), np.ascontiguousarray(b).reshape(-1, 1))
    return int(np.square(diff, dtype=np.uint16).sum(dtype=np.uint64))


def psnr_from_mse(value: float, peak: float = PEAK, cap: float = PSNR_CAP) -> float:
    """PSNR in dB of a mean squared error, capped at ``cap`` (so an exact match gives ``cap``)."""
    if value <= 0.0:
        return cap
    return min(cap, 10.0 * math.log10(peak * peak / value))


def psnr_of_mses(mse: np.ndarray, peak: float = PEAK, cap: float = PSNR_CAP) -> np.ndarray:
    """Element-wise ``psnr_from_mse`` of an array of MSE values (any shape; dB in the input's float dtype)."""
    with np.errstate(divide="ignore"):
        return np.minimum(cap, 10.0 * np.log10(peak * peak / np.maximum(mse, 1e-12)))


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    return psnr_from_mse(mse(reference, test))


# -- SSIM / MS-SSIM -------------------------------------------------------------------------------
def _blur(image: np.ndarray) -> np.ndarray:
    # Reflect padding as scikit-image; it only touches the border that is cropped afterwards.
    return cv2.sepFilter2D(image, -1, _KERNEL, _KERNEL, borderType=cv2.BORDER_REFLECT)


def _crop(image: np.ndarray) -> np.ndarray:
    """The part of a map where the whole window fits (all of it if the image is too small)."""
    r = SSIM_RADIUS
    if image.shape[0] <= 2 * r or image.shape[1] <= 2 * r:
        return image
    return image[r:-r, r:-r]


def _downsample(image: np.ndarray) -> np.ndarray:
    """2×2 average pooling; an odd last row or column is dropped."""
    h, w = image.shape[0] // 2, image.shape[1] // 2
    # INTER_AREA at exactly half size is the 2x2 mean (and 3x faster than numpy slicing).
    return cv2.resize(image[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA)


@dataclass
class _ScaleStats:
    x: np.ndarray  # float32 [h, w, 3]
    mu: np.ndarray  # local means
    mu_sq: np.ndarray  # mu²
    var: np.ndarray  # local variances


def _stats(x: np.ndarray) -> _ScaleStats:
    mu = _blur(x)
    mu_sq = mu * mu
    return _ScaleStats(x=x, mu=mu, mu_sq=mu_sq, var=_blur(x * x) - mu_sq)


def _channel_means(image: np.ndarray) -> np.ndarray:
    # cv2.mean accumulates in double and is ~10x faster than numpy's float64 mean of a crop.
    return np.asarray(cv2.mean(_crop(image))[:3])


def _compare_scale(ref: _ScaleStats, y: np.ndarray, full: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-channel means of the contrast-structure map and (if ``full``) of the SSIM map.

    In-place arithmetic: at 720p each temporary costs ~3 ms, as much as a blur.
    """
    mu_y = _blur(y)
    tmp = y * y
    var_y = _blur(tmp)
    mu_y_sq = mu_y * mu_y
    var_y -= mu_y_sq
    np.multiply(ref.x, y, out=tmp)
    cov = _blur(tmp)
    mu_xy = np.multiply(ref.mu, mu_y, out=mu_y)
    cov -= mu_xy
    # cs = (2·cov + C2) / (var_x + var_y + C2), written symmetrically so that identical inputs
    # give exactly 1.
    cov *= 2.0
    cov += _C2
    var_y += ref.var
    var_y += _C2
    cs = np.divide(cov, var_y, out=cov)
    if not full:
        return _channel_means(cs), None
    # luminance = (2·mu_x·mu_y + C1) / (mu_x² + mu_y² + C1); the SSIM map is luminance · cs.
    mu_xy *= 2.0
    mu_xy += _C1
    mu_y_sq += ref.mu_sq
    mu_y_sq += _C1
    ssim_map = np.divide(mu_xy, mu_y_sq, out=mu_xy)
    ssim_map *= cs
    return _channel_means(cs), _channel_means(ssim_map)


class Reference:
    """A reference frame with its SSIM statistics at every MS-SSIM scale, computed once."""

    def __init__(self, rgb: np.ndarray, scales: int = len(MS_SSIM_WEIGHTS), structural: bool = True) -> None:
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB frame [H, W, 3], got shape {rgb.shape}")
        self.rgb = rgb
        self.scales: list[_ScaleStats] = []
        if structural:
            x = rgb.astype(np.float32)
            for level in range(scales):
                if level:
                    x = _downsample(x)
                self.scales.append(_stats(x))


@dataclass(frozen=True)
class FrameScores:
    mse: float
    psnr: float
    ssim: float | None = None
    ms_ssim: float | None = None


def structural(
    reference: Reference, test: np.ndarray, weights: tuple[float, ...] = MS_SSIM_WEIGHTS
) -> tuple[float, float]:
    """(SSIM, MS-SSIM) of ``test`` against a prepared reference; scale 1 is computed once for both."""
    if len(reference.scales) < len(weights):
        raise ValueError("the reference was prepared with fewer scales than weights")
    _check_pair(reference.rgb, test)
    y = test.astype(np.float32)
    terms: list[np.ndarray] = []
    ssim_value = 0.0
    last = len(weights) - 1
    for level in range(len(weights)):
        if level:
            y = _downsample(y)
        cs, full = _compare_scale(reference.scales[level], y, full=level in (0, last))
        if level == 0:
            assert full is not None
            ssim_value = float(full.mean())
        terms.append(full if level == last and full is not None else cs)
    # Per channel: Π term_j ** w_j with negative terms clipped (a fractional power of a
    # negative number is undefined); then the mean over channels.
    stacked = np.clip(np.stack(terms), 0.0, None)
    per_channel = np.prod(stacked ** np.asarray(weights, dtype=np.float64)[:, None], axis=0)
    return ssim_value, float(per_channel.mean())


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean SSIM over the three channels (see the module doc for the exact definition)."""
    ref = Reference(reference, scales=1)
    return structural(ref, test, weights=(1.0,))[0]


def ms_ssim(reference: np.ndarray, test: np.ndarray, weights: tuple[float, ...] = MS_SSIM_WEIGHTS) -> float:
    return structural(Reference(reference, scales=len(weights)), test, weights)[1]


def ssim_skimage(reference: np.ndarray, test: np.ndarray) -> float:
    """The scikit-image reference implementation of ``ssim`` (slow; used to check it)."""
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            reference,
            test,
            channel_axis=-1,
            data_range=PEAK,
            gaussian_weights=True,
            sigma=SSIM_SIGMA,
            use_sample_covariance=False,
        )
    )


def compare(reference: Reference | np.ndarray, test: np.ndarray, structural_metrics: bool = True) -> FrameScores:
    """All metrics of one frame."""
    ref = reference if isinstance(reference, Reference) else Reference(reference, structural=structural_metrics)
    value = mse(ref.rgb, test)
    if not structural_metrics:
        return FrameScores(mse=value, psnr=psnr_from_mse(value))
    ssim_value, ms_value = structural(ref, test)
    return FrameScores(mse=value, psnr=psnr_from_mse(value), ssim=ssim_value, ms_ssim=ms_value)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"frame shapes differ: {a.shape} vs {b.shape}")


# -- rate -----------------------------------------------------------------------------------------
def bits_per_pixel(n_bytes: int, width: int, height: int, frames: int) -> float:
    pixels = width * height * frames
    return n_bytes * 8.0 / pixels if pixels > 0 else float("nan")


# -- a video ------------------------------------------------------------------------------------------
def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


@dataclass
class VideoQuality:
    """Streaming accumulator of per-frame scores for one video and one method."""

    structural_metrics: bool = True
    mse: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    ms_ssim: list[float] = field(default_factory=list)

    def add(self, reference: Reference | np.ndarray, test: np.ndarray) -> FrameScores:
        scores = compare(reference, test, self.structural_metrics)
        self.add_scores(scores)
        return scores

    def add_scores(self, scores: FrameScores) -> None:
        self.mse.append(scores.mse)
        self.psnr.append(scores.psnr)
        if scores.ssim is not None:
            self.ssim.append(scores.ssim)
        if scores.ms_ssim is not None:
            self.ms_ssim.append(scores.ms_ssim)

    @property
    def frames(self) -> int:
        return len(self.psnr)

    @property
    def mean_psnr(self) -> float | None:
        """The protocol's PSNR of a video: the mean of the capped per-frame values."""
        return _mean(self.psnr)

    @property
    def psnr_of_mean_mse(self) -> float | None:
        """PSNR of the mean MSE over frames: weights hard, moving frames more than the mean PSNR."""
        return psnr_from_mse(float(np.mean(self.mse))) if self.mse else None

    @property
    def mean_ssim(self) -> float | None:
        return _mean(self.ssim)

    @property
    def mean_ms_ssim(self) -> float | None:
        return _mean(self.ms_ssim)

    def summary(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "psnr": self.mean_psnr,
            "psnr_mean_mse": self.psnr_of_mean_mse,
            "ssim": self.mean_ssim,
            "ms_ssim": self.mean_ms_ssim,
        }
