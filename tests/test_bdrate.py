"""framers.bdrate: Bjøntegaard deltas against analytic cases, a published curve pair, and the hull."""

from __future__ import annotations

import math

import numpy as np
import pytest

from framers.bdrate import bd_psnr, bd_rate, upper_hull

# Test case 1 of the FAU-LMS ``bjontegaard`` package (README / example_usage.py; libx265 presets
# measured with ffmpeg). Rates in kbit/s, PSNR in dB.
FAU_RATE_ANCHOR = [9487.76, 4593.60, 2486.44, 1358.24]
FAU_PSNR_ANCHOR = [40.037, 38.615, 36.845, 34.851]
FAU_RATE_TEST = [9787.80, 4469.00, 2451.52, 1356.24]
FAU_PSNR_TEST = [40.121, 38.651, 36.970, 34.987]
# VCEG-M33 cubic BD-rate of that pair as evaluated by an independent implementation (a TypeScript
# test suite, np.polyfit/np.polyint formulation); the test curve is slightly better → about −4.42 %.
FAU_CUBIC_BD_RATE = -4.420462706090111

PSNR = np.array([30.0, 33.0, 36.0, 39.0, 42.0])


def _rates(psnr: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """A smooth convex RD curve: ln rate = a + b·P + c·P² (exactly representable by a cubic)."""
    return scale * np.exp(-2.0 + 0.02 * psnr + 0.008 * psnr**2)


def _classic_cubic_bd_rate(r1, p1, r2, p2) -> float:
    """The textbook formulation (np.polyfit / np.polyint, as in google/compare-codecs) for comparison."""
    f1, f2 = np.polyfit(p1, np.log(r1), 3), np.polyfit(p2, np.log(r2), 3)
    lo, hi = max(min(p1), min(p2)), min(max(p1), max(p2))
    i1, i2 = np.polyint(f1), np.polyint(f2)
    diff = ((np.polyval(i2, hi) - np.polyval(i2, lo)) - (np.polyval(i1, hi) - np.polyval(i1, lo))) / (hi - lo)
    return float((np.exp(diff) - 1.0) * 100.0)


@pytest.mark.parametrize("method", ["cubic", "pchip"])
def test_identical_curves_give_zero(method: str) -> None:
    rates = _rates(PSNR)
    assert bd_rate(rates, PSNR, rates, PSNR, method) == pytest.approx(0.0, abs=1e-12)
    assert bd_psnr(rates, PSNR, rates, PSNR, method) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("method", ["cubic", "pchip"])
@pytest.mark.parametrize("factor", [0.5, 0.8, 1.25, 3.0])
def test_constant_rate_factor_is_the_bd_rate(method: str, factor: float) -> None:
    """Every test point needs `factor` times the anchor's bytes at the same PSNR: BD-rate = factor − 1."""
    rates = _rates(PSNR)
    assert bd_rate(rates, PSNR, rates * factor, PSNR, method) == pytest.approx(100.0 * (factor - 1.0), abs=1e-9)


@pytest.mark.parametrize("method", ["cubic", "pchip"])
def test_psnr_shift_of_a_log_linear_curve(method: str) -> None:
    """ln rate = a + b·P; the test curve is the anchor moved up by d dB at every rate.

    Then BD-PSNR = d exactly and BD-rate = exp(−b·d) − 1 exactly (over the common interval the
    horizontal distance between two parallel lines is constant). Different point positions on
    the two curves, on purpose.
    """
    a, b, d = 1.0, 0.23, 1.5
    p_anchor = np.array([28.0, 31.0, 34.5, 37.0, 40.0])
    p_test = np.array([29.0, 32.0, 35.0, 39.0, 41.5])
    r_anchor = np.exp(a + b * p_anchor)
    r_test = np.exp(a + b * (p_test - d))
    assert bd_psnr(r_anchor, p_anchor, r_test, p_test, method) == pytest.approx(d, abs=1e-9)
    assert bd_rate(r_anchor, p_anchor, r_test, p_test, method) == pytest.approx(100.0 * math.expm1(-b * d), abs=1e-9)


def test_published_pair_cubic_and_pchip() -> None:
    cubic = bd_rate(FAU_RATE_ANCHOR, FAU_PSNR_ANCHOR, FAU_RATE_TEST, FAU_PSNR_TEST)
    assert cubic == pytest.approx(FAU_CUBIC_BD_RATE, abs=1e-6)
    pchip = bd_rate(FAU_RATE_ANCHOR, FAU_PSNR_ANCHOR, FAU_RATE_TEST, FAU_PSNR_TEST, method="pchip")
    # a different interpolant of the same points: close to, but not exactly, the cubic value
    assert -4.6 < pchip < -4.2 and pchip != pytest.approx(cubic, abs=1e-6)
    # the test curve sits ~0.1 dB above the anchor
    assert 0.05 < bd_psnr(FAU_RATE_ANCHOR, FAU_PSNR_ANCHOR, FAU_RATE_TEST, FAU_PSNR_TEST) < 0.2


def test_cubic_matches_the_textbook_formulation_on_random_curves() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        n1, n2 = rng.integers(4, 9, size=2)
        p1 = np.sort(rng.uniform(26, 44, n1))
        p2 = np.sort(rng.uniform(26, 44, n2))
        p2[0], p2[-1] = 27.0, 43.0  # make sure they overlap
        r1 = _rates(p1) * np.exp(rng.normal(0, 0.05, n1))
        r2 = _rates(p2) * np.exp(rng.normal(0.1, 0.05, n2))
        expected = _classic_cubic_bd_rate(r1, p1, r2, p2)
        assert bd_rate(r1, p1, r2, p2) == pytest.approx(expected, rel=1e-7, abs=1e-7)
        # point order does not matter
        perm1, perm2 = rng.permutation(n1), rng.permutation(n2)
        assert bd_rate(r1[perm1], p1[perm1], r2[perm2], p2[perm2]) == pytest.approx(expected, rel=1e-7, abs=1e-7)


def test_swapping_anchor_and_test_inverts_the_rate_ratio() -> None:
    r1, r2 = _rates(PSNR), _rates(PSNR + 0.7) * 1.1
    forward = bd_rate(r1, PSNR, r2, PSNR) / 100.0
    backward = bd_rate(r2, PSNR, r1, PSNR) / 100.0
    assert (1.0 + forward) * (1.0 + backward) == pytest.approx(1.0, abs=1e-12)
    assert bd_psnr(r1, PSNR, r2, PSNR) == pytest.approx(-bd_psnr(r2, PSNR, r1, PSNR), abs=1e-12)


@pytest.mark.parametrize("func", [bd_rate, bd_psnr])
def test_too_few_points(func) -> None:
    with pytest.raises(ValueError, match="at least 4"):
        func([1, 2, 3], [30, 31, 32], [1, 2, 3, 4], [30, 31, 32, 33])
    with pytest.raises(ValueError, match="test: 3 RD points"):
        func([1, 2, 3, 4], [30, 31, 32, 33], [1, 2, 3], [30, 31, 32])


def test_no_overlap() -> None:
    with pytest.raises(ValueError, match="share no PSNR interval"):
        bd_rate([1, 2, 4, 8], [30, 31, 32, 33], [1, 2, 4, 8], [34, 35, 36, 37])
    with pytest.raises(ValueError, match="share no rate interval"):
        bd_psnr([1, 2, 4, 8], [30, 31, 32, 33], [16, 32, 64, 128], [30, 31, 32, 33])
    # touching at a single point is no interval either
    with pytest.raises(ValueError, match="share no PSNR interval"):
        bd_rate([1, 2, 4, 8], [30, 31, 32, 33], [1, 2, 4, 8], [33, 34, 35, 36])


def test_bad_values_and_method() -> None:
    with pytest.raises(ValueError, match="> 0"):
        bd_rate([0, 2, 4, 8], [30, 31, 32, 33], [1, 2, 4, 8], [30, 31, 32, 33])
    with pytest.raises(ValueError, match="finite"):
        bd_rate([1, 2, 4, 8], [30, 31, float("nan"), 33], [1, 2, 4, 8], [30, 31, 32, 33])
    with pytest.raises(ValueError, match="4 rates but 3"):
        bd_rate([1, 2, 4, 8], [30, 31, 32], [1, 2, 4, 8], [30, 31, 32, 33])
    with pytest.raises(ValueError, match="unknown method"):
        bd_rate([1, 2, 4, 8], [30, 31, 32, 33], [1, 2, 4, 8], [30, 31, 32, 33], method="akima")
    with pytest.raises(ValueError, match="distinct"):
        bd_rate([1, 2, 4, 8], [30, 31, 31, 33], [1, 2, 4, 8], [30, 31, 32, 33], method="pchip")


@pytest.mark.parametrize("method", ["cubic", "pchip"])
def test_one_cheaper_point_on_a_kinked_curve(method: str) -> None:
    """A kinked curve (flat, then steep). Anchor and test share every point but one, where the
    test is cheaper: the test is never worse, so its BD-rate must be negative."""
    p = np.array([30.0, 30.5, 31.0, 40.0, 50.0])
    r_anchor = np.array([100.0, 101.0, 102.0, 1000.0, 100000.0])
    r_test = r_anchor.copy()
    r_test[3] = 600.0
    assert bd_rate(r_anchor, p, r_test, p, method=method) < 0.0


def test_upper_hull() -> None:
    # (rate, psnr): a dominated point (index 2), a point under a chord (index 4), a duplicate rate
    rate = [100, 200, 250, 400, 500, 800, 400]
    psnr = [30.0, 33.5, 32.0, 36.0, 36.2, 38.0, 34.0]
    hull = upper_hull(rate, psnr)
    assert hull == [0, 1, 3, 5]
    x = np.log(np.array(rate, float))[hull]
    q = np.array(psnr)[hull]
    assert np.all(np.diff(x) > 0) and np.all(np.diff(q) > 0)
    # concave: slopes decrease
    slopes = np.diff(q) / np.diff(x)
    assert np.all(np.diff(slopes) < 0)
    # a higher-rate point with less PSNR than a cheaper one is not on the frontier
    assert upper_hull([1, 2, 3], [30, 40, 35]) == [0, 1]
    assert upper_hull([5], [30]) == [0]
    # points on a straight line in (ln rate, PSNR) all stay; one below the line goes
    line = [100, 200, 400, 800]
    assert upper_hull(line, [30.0, 33.0, 36.0, 39.0]) == [0, 1, 2, 3]
    assert upper_hull(line, [30.0, 32.9, 36.0, 39.0]) == [0, 2, 3]
    with pytest.raises(ValueError):
        upper_hull([], [])
    with pytest.raises(ValueError):
        upper_hull([1, -2], [30, 31])


def test_hull_of_the_union_is_never_worse_than_either_curve() -> None:
    """The docs/DESIGN.md use: the hull of (anchor ∪ method) points against the anchor is ≤ 0 %."""
    anchor_r = _rates(PSNR)
    method_r = _rates(PSNR) * np.array([0.8, 0.95, 1.2, 1.6, 2.2])  # cheaper at low PSNR only
    rate = np.concatenate([anchor_r, method_r])
    psnr = np.concatenate([PSNR, PSNR - 0.01])
    hull = upper_hull(rate, psnr)
    assert len(hull) >= 4 and set(hull) & {5, 6} and set(hull) & {2, 3, 4}
    result = bd_rate(anchor_r, PSNR, rate[hull], psnr[hull], method="pchip")
    assert result < 0.0
    assert bd_rate(anchor_r, PSNR, rate[hull], psnr[hull]) < 0.0
