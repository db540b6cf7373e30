"""Bjøntegaard delta metrics between two rate–distortion curves, and the upper convex hull.

Pure numerics (numpy, scipy); no video code. A curve is a sequence of (rate, PSNR) points: rate
in any positive unit (bytes, kbit/s — only ratios matter), PSNR in dB. Signs follow the usual
convention: a negative BD-rate means the *test* curve needs fewer bits than the *anchor* for the
same quality; a positive BD-PSNR means the test curve has higher quality at the same rate.

Sources:

* G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves", ITU-T SG16
  VCEG-M33, Austin, April 2001 — the original method (``method="cubic"``): fit a third-order
  polynomial to log-rate as a function of PSNR (BD-rate) or PSNR as a function of log-rate
  (BD-PSNR) for each curve by least squares, integrate both fits over the interval the two
  curves have in common, and average the difference over that interval. BD-rate is
  ``exp(mean difference of ln rate) − 1`` in percent. (The fit is exact with 4 points and a
  least-squares fit with more; the base of the logarithm cancels.)
* F. Bossen, "Common test conditions and software reference configurations", JCTVC-L1100
  (2013) and JVET-T2010 (2020): the CTC spreadsheets interpolate each curve piecewise with a
  monotone cubic Hermite polynomial instead (``method="pchip"``), which cannot overshoot between
  points the way a global cubic can. Here: ``scipy.interpolate.PchipInterpolator`` (Fritsch–
  Carlson slopes) integrated exactly over the common interval; this is also what the FAU-LMS
  ``bjontegaard`` package does, which its authors report to match the JVET spreadsheet to 10
  decimal places for four-point curves.
* C. Herglotz et al., "The Bjøntegaard Bible – why your way of comparing video codecs may be
  wrong", IEEE TIP 2024: the caveats (extrapolation, non-monotone curves, small overlaps).

Requirements (``ValueError`` otherwise, with the reason): at least 4 points per curve, all rates
> 0, all values finite, and a common quality (or rate) interval of positive length. The pchip
method also needs the quality values of each curve to be distinct (it interpolates a function of
them); ``upper_hull`` turns a noisy point cloud into such a curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_POINTS = 4
METHODS = ("cubic", "pchip")


@dataclass(frozen=True)
class Curve:
    """Validated RD points sorted by quality: ``log_rate`` is ln(rate), ``quality`` in dB, shape [N]."""

    log_rate: np.ndarray
    quality: np.ndarray


def _curve(rate: Sequence[float], quality: Sequence[float], name: str) -> Curve:
    r = np.asarray(rate, dtype=np.float64).ravel()
    q = np.asarray(quality, dtype=np.float64).ravel()
    if r.shape != q.shape:
        raise ValueError(f"{name}: {r.size} rates but {q.size} quality values")
    if r.size < MIN_POINTS:
        raise ValueError(f"{name}: {r.size} RD points; the Bjøntegaard fit needs at least {MIN_POINTS}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))):
        raise ValueError(f"{name}: rates and quality values must be finite")
    if np.any(r <= 0):
        raise ValueError(f"{name}: rates must be > 0 (log-rate is fitted)")
    order = np.argsort(q, kind="stable")
    return Curve(log_rate=np.log(r[order]), quality=q[order])


def _overlap(a: np.ndarray, b: np.ndarray, what: str) -> tuple[float, float]:
    low, high = max(a.min(), b.min()), min(a.max(), b.max())
    if not high > low:
        raise ValueError(
            f"the two curves share no {what} interval (anchor {a.min():.4g}–{a.max():.4g}, "
            f"test {b.min():.4g}–{b.max():.4g}); a Bjøntegaard delta is undefined"
        )
    return float(low), float(high)


def _mean_over(x: np.ndarray, y: np.ndarray, low: float, high: float, method: str) -> float:
    """Mean of the fitted/interpolated y(x) over [low, high]."""
    if method == "cubic":
        # A cubic least-squares fit; x centred for conditioning (the fitted function is the same).
        centre = float(np.mean(x))
        poly = np.polynomial.Polynomial.fit(x - centre, y, 3, domain=[-1, 1], window=[-1, 1])
        integral = poly.integ()
        return float((integral(high - centre) - integral(low - centre)) / (high - low))
    if method == "pchip":
        from scipy.interpolate import PchipInterpolator

        if np.any(np.diff(x) <= 0):
            raise ValueError(
                "pchip needs distinct values along the integrated axis on each curve "
                "(repeated or non-monotone points: take the upper hull first)"
            )
        return float(PchipInterpolator(x, y, extrapolate=False).integrate(low, high) / (high - low))
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def bd_rate(
    anchor_rate: Sequence[float],
    anchor_psnr: Sequence[float],
    test_rate: Sequence[float],
    test_psnr: Sequence[float],
    method: str = "cubic",
) -> float:
    """Bjøntegaard delta rate of ``test`` against ``anchor``, in percent.

    Inputs: four sequences of equal length per curve (N ≥ 4; the two curves may differ in N),
    rate > 0 in any common unit, PSNR in dB; the point order does not matter. Returns the average
    rate difference at equal PSNR over the common PSNR interval, ``100 · (exp(mean Δ ln rate) − 1)``:
    −20 means the test needs 20 % fewer bits. ``method``: ``"cubic"`` (VCEG-M33, least-squares
    cubic of ln rate against PSNR) or ``"pchip"`` (JCTVC-L1100/JVET CTC piecewise cubic Hermite).
    Raises ``ValueError`` for fewer than 4 points, non-positive or non-finite values, curves whose
    PSNR ranges do not overlap, or (pchip) repeated PSNR values on one curve.
    """
    a = _curve(anchor_rate, anchor_psnr, "anchor")
    t = _curve(test_rate, test_psnr, "test")
    low, high = _overlap(a.quality, t.quality, "PSNR")
    diff = _mean_over(t.quality, t.log_rate, low, high, method) - _mean_over(a.quality, a.log_rate, low, high, method)
    return 100.0 * math.expm1(diff)


def bd_psnr(
    anchor_rate: Sequence[float],
    anchor_psnr: Sequence[float],
    test_rate: Sequence[float],
    test_psnr: Sequence[float],
    method: str = "cubic",
) -> float:
    """Bjøntegaard delta PSNR of ``test`` against ``anchor``, in dB (positive: test is better).

    The mean PSNR difference at equal rate over the common log-rate interval, with PSNR fitted as
    a function of ln rate (VCEG-M33 ``"cubic"``, or ``"pchip"``). Same inputs and errors as
    ``bd_rate``; pchip needs distinct rates on each curve.
    """
    a = _curve(anchor_rate, anchor_psnr, "anchor")
    t = _curve(test_rate, test_psnr, "test")
    ao, to = np.argsort(a.log_rate, kind="stable"), np.argsort(t.log_rate, kind="stable")
    ar, aq, tr, tq = a.log_rate[ao], a.quality[ao], t.log_rate[to], t.quality[to]
    low, high = _overlap(ar, tr, "rate")
    return _mean_over(tr, tq, low, high, method) - _mean_over(ar, aq, low, high, method)


def upper_hull(rate: Sequence[float], psnr: Sequence[float]) -> list[int]:
    """Indices of the points on the upper convex hull of (ln rate, PSNR), by increasing rate.

    The efficient frontier of a set of operating points when one may switch (time-share) between
    them: a point is kept if no mix of two others gives at least its PSNR at no more log-rate.
    Points that are dominated (another point has ≥ PSNR at ≤ rate) or lie below a chord between
    two others are dropped; the result has strictly increasing rate and strictly increasing PSNR,
    so it is a valid input for both BD methods. Points exactly on a hull edge are kept (a curve
    that is straight in log-rate keeps all its points, so it can still be fitted).
    Inputs: equal-length sequences, rate > 0 (any unit), PSNR in dB. Raises ``ValueError`` on
    mismatched lengths, an empty input or non-positive / non-finite values.
    """
    r = np.asarray(rate, dtype=np.float64).ravel()
    q = np.asarray(psnr, dtype=np.float64).ravel()
    if r.shape != q.shape or r.size == 0:
        raise ValueError(f"upper_hull needs equal, non-empty rate and PSNR lists ({r.size} vs {q.size})")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))) or np.any(r <= 0):
        raise ValueError("upper_hull needs finite values and rates > 0")
    x = np.log(r)
    # by rate ascending, and for equal rates the best PSNR first
    order = sorted(range(r.size), key=lambda i: (x[i], -q[i]))
    # the Pareto front: each kept point has strictly more PSNR than every cheaper one
    front: list[int] = []
    for i in order:
        if front and x[i] == x[front[-1]]:
            continue
        if not front or q[i] > q[front[-1]]:
            front.append(i)
    # Andrew's monotone chain, upper part: drop points below the chord of their neighbours
    hull: list[int] = []
    for i in front:
        while len(hull) >= 2:
            o, m = hull[-2], hull[-1]
            left = (x[m] - x[o]) * (q[i] - q[o])
            right = (q[m] - q[o]) * (x[i] - x[o])
            # m is below the line o→i (collinear within rounding counts as on it)
            if left - right > 1e-9 * (abs(left) + abs(right)):
                hull.pop()
            else:
                break
        hull.append(i)
    return hull
