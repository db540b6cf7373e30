"""Metric sanity: PSNR cap and known values, SSIM against scikit-image, MS-SSIM properties, bpp, the accumulator."""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np
import pytest

from framers import metrics as m


def texture(height: int = 64, width: int = 96, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (natural-image-like local structure)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0).astype(np.float32)
    return np.rint(255 * (smooth - smooth.min()) / (smooth.max() - smooth.min())).astype(np.uint8)


def noisy(image: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0.0, sigma, image.shape), 0, 255).astype(np.uint8)


def test_psnr_identical_is_capped_and_known_mse_gives_known_value() -> None:
    a = texture()
    assert m.psnr(a, a) == m.PSNR_CAP == 60.0
    b = a.copy()
    b[0, 0, 0] ^= 1  # a one-level change in one value: PSNR far above 60 -> capped
    assert m.psnr(a, b) == 60.0
    flat = np.full((8, 8, 3), 100, np.uint8)
    shifted = np.full((8, 8, 3), 110, np.uint8)
    assert m.mse(flat, shifted) == 100.0
    assert m.psnr(flat, shifted) == pytest.approx(10 * math.log10(255**2 / 100.0))  # 28.13 dB
    half = flat.copy()
    half[:4] = 120  # half the values off by 20: MSE 200
    assert m.mse(flat, half) == 200.0
    assert m.psnr_from_mse(0.0) == 60.0 and m.psnr_from_mse(255.0**2) == 0.0


def test_ssim_matches_scikit_image_and_drops_with_noise() -> None:
    a = texture(65, 97)  # odd size: cropping and pooling edges
    previous = 1.0
    assert m.ssim(a, a) == 1.0
    for sigma in (3, 10, 30):
        b = noisy(a, sigma)
        value = m.ssim(a, b)
        assert value == pytest.approx(m.ssim_skimage(a, b), abs=1e-5)
        assert value < previous
        previous = value


def test_ms_ssim_identical_is_one_monotone_with_noise_and_one_scale_is_ssim() -> None:
    a = texture(144, 176, seed=3)
    assert m.ms_ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    values = [m.ms_ssim(a, noisy(a, sigma)) for sigma in (2, 5, 10, 20, 40)]
    assert all(x > y for x, y in itertools.pairwise(values))
    assert 0.0 < values[-1] < values[0] < 1.0
    # MS-SSIM weighs coarse scales: the same noise hurts it less than single-scale SSIM
    b = noisy(a, 10)
    assert m.ms_ssim(a, b) > m.ssim(a, b)
    # with one scale and weight 1, MS-SSIM is SSIM
    assert m.ms_ssim(a, b, weights=(1.0,)) == pytest.approx(m.ssim(a, b), abs=1e-12)
    # a uniform brightness shift: structure intact, only the luminance term (last scale) drops
    assert m.ms_ssim(a, np.clip(a.astype(int) + 30, 0, 255).astype(np.uint8)) > m.ms_ssim(a, noisy(a, 30))


def test_compare_with_a_prepared_reference_equals_one_shot_functions() -> None:
    a, b = texture(seed=5), noisy(texture(seed=5), 8)
    scores = m.compare(m.Reference(a), b)
    assert scores.psnr == pytest.approx(m.psnr(a, b))
    assert scores.ssim == pytest.approx(m.ssim(a, b), abs=1e-12)
    assert scores.ms_ssim == pytest.approx(m.ms_ssim(a, b), abs=1e-12)
    with pytest.raises(ValueError):
        m.compare(a, b[:, :-1])


def test_video_quality_accumulates_means_and_psnr_of_mean_mse() -> None:
    a = np.full((16, 16, 3), 100, np.uint8)
    quality = m.VideoQuality()
    quality.add(a, a)  # 60 dB (capped), MSE 0
    quality.add(a, a + 10)  # MSE 100
    assert quality.frames == 2
    assert quality.mean_psnr == pytest.approx((60.0 + 10 * math.log10(255**2 / 100)) / 2)
    assert quality.psnr_of_mean_mse == pytest.approx(10 * math.log10(255**2 / 50))
    assert quality.mean_ssim is not None and quality.mean_ms_ssim is not None
    summary = quality.summary()
    assert set(summary) == {"frames", "psnr", "psnr_mean_mse", "ssim", "ms_ssim"}
    fast = m.VideoQuality(structural_metrics=False)
    fast.add(a, a + 10)
    assert fast.mean_ssim is None and fast.mean_psnr == pytest.approx(28.1308, abs=1e-4)


def test_bits_per_pixel() -> None:
    assert m.bits_per_pixel(1000, 100, 10, 8) == 1.0
    assert math.isnan(m.bits_per_pixel(10, 0, 10, 1))
