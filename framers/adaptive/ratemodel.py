"""Rate and distortion predictions of every (stride, CRF) option of every segment, and the choice.

Pure numeric (numpy): the measurements come from ``analysis`` (view features of dropped frames)
and ``coding`` (probe encodes of each stride's kept frames at one CRF with a fast preset).

Model (coefficients fitted on train clips by ``training/rd_calibrate.py``, stored in
``model_store/ratemodel/<version>/config.json``):

* final bytes of a segment's kept frames at CRF c = probe bytes · exp(a · f(c − c₀, c₀, N))
* coding MSE of a kept frame at CRF c = floor ⊕ (probe MSE − floor) · exp(b · f(c − c₀, c₀, N)),
  the floor being the colour path's own error (``coding.conversion_mse``: 4:2:0 chroma); every
  model holds for the probe it states (``Probe``)
* ⊕ (``with_floor``): how the coding error measured on the YUV planes (``coding.rgb_mse_of_planes``,
  what the corrections are calibrated on and x264 reports) and the floor make the RGB error of the
  decoded picture: f + e − λ·f·e/(f + e). Before model 1.4 λ = 0 (they add), which foretold the RGB
  error of 41 train clips 0.19 dB too high on average (0.34 dB RMS; 0.4–0.6 dB at CRF 14–20 on
  chroma-rich content, where much of x264's chroma error is the detail subsampling already lost);
  model 1.4 fits λ (``fit_rgb``, rows of ``rd_calibrate rgb``)
* model 1.3 (``slope_typical``): f also holds (c − c₀)·s, s the per-step log
  slope of the segment's bytes (for a) or coding MSE (for b) between the stride-1 probe at c₀ and
  a second stride-1 probe at the neighbouring probe CRF on the side of the target's typical CRF
  (``slope_probe_crf_for``): how fast this content's bytes fall with the CRF, which one probe
  cannot tell (a palette GIF of a fixed camera, ``people-detection``: the probe's bytes fell 0.20
  per CRF step from 18 to 26 and x264 medium's 0.19 from 16 to 25, where the calibration rows'
  median probe slope is 0.12, so keeping every frame at a coarser CRF looked dearer than it was)
* rebuilt MSE of a dropped frame = exp(g · features) + the coding MSE of its two kept
  neighbours carried through the rebuild: κ₁·((1 − t)·m_L + t·m_R) + κ₂·((1 − t)²·m_L + t²·m_R)
  (model 1.1: κ fitted on frames rebuilt from x264-coded kept frames, ``fit_transfer``; a
  blend of two independent noises would give the second form alone, fully correlated coding
  noise the first: measured κ₁ = 0.79, κ₂ = 0.04 on 22 train videos, i.e. mostly correlated; model 1.0 took
  κ = (1, 0): 0.46 dB pessimistic on dropped frames)

The choice minimises bytes subject to the mean per-frame PSNR (capped at 60 dB, the quality
protocol's metric) reaching the target: a Lagrangian relaxation (Shoham & Gersho, "Efficient bit
allocation for an arbitrary set of quantizers", 1988) with one multiplier μ: every segment takes
the stride minimising R − μ·ΣPSNR, every CRF group (shots together holding ≥ ~5 s, see
``selector.crf_groups``) the CRF minimising the sum over its segments (changing CRF restarts x264
at an IDR picture, so it changes only at shot starts and not for every short shot),
and μ is bisected until the target is met; single moves then take the plan off the hull's corners
to the cheapest one that still meets it (``_refined``: the hull's next point can be far over a
target on a video of few segments). Stride 1 at one CRF everywhere is plain x264, so
when the model is right the choice never costs more than re-encoding with x264.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from framers.metrics import psnr_of_mses

#: probe encodes: one fast x264 preset at one of these CRFs (the one nearest the target's), their
#: error as x264 reports it (``coding.PROBE_ERRORS``). What calibration uses; a fitted model states
#: its own (``RateModel.probe``), which the analysis then runs. Since model 1.2 (veryfast before):
#: superfast with x264's macroblock tree turned back on (a 10-frame look-ahead): the analysis pass
#: took 0.59× instead of 0.94× x264 medium's time at 480p (issue 12's 2× budget; BENCHMARKS.md
#: section 0, ``bench/compress_speed.py --analysis``). Without the tree, superfast tracks x264 medium
#: (which has it) badly where the tree moves the quantisers most: on a noisy pan the plain
#: superfast probe predicted 1.3 dB more than medium gave (BENCHMARKS.md section 0c).
PROBE_PRESET = "superfast"
PROBE_X264_PARAMS = "mbtree=1:rc-lookahead=10"
PROBE_ERROR = "x264"


@dataclass(frozen=True)
class Probe:
    """The probe encodes' settings: x264 ``preset``, x264's own options ``params`` (its
    ``key=value:...`` string, "" for none) and how the error is measured (``error``, one of
    ``coding.PROBE_ERRORS``). A rate model holds only for the probe it was calibrated with."""

    preset: str = PROBE_PRESET
    params: str = PROBE_X264_PARAMS
    error: str = PROBE_ERROR

    @staticmethod
    def of(record: dict[str, Any]) -> Probe:
        """The probe of a config or calibration row (keys ``probe_preset``, ``probe_x264_params``,
        ``probe_error``); records before model 1.2 state none of the last two: ``LEGACY_PROBE``."""
        if "probe_error" not in record:
            return LEGACY_PROBE
        return Probe(str(record["probe_preset"]), str(record.get("probe_x264_params", "")), str(record["probe_error"]))

    def fields(self) -> dict[str, str]:
        """The record keys of ``of``."""
        return {"probe_preset": self.preset, "probe_x264_params": self.params, "probe_error": self.error}


#: what models that do not state their probe (1.0, 1.1) were calibrated with
LEGACY_PROBE = Probe("veryfast", "", "decoded")
PROBE_CRFS: tuple[int, ...] = (18, 26, 34, 42)
#: the final encode of kept frames (x264 medium: the anchor users compare with)
FINAL_PRESET = "medium"
CRF_RANGE: tuple[int, int] = (8, 51)
#: PSNR floor of the mapping of a target to the probe CRF (x264 medium on typical content:
#: PSNR ≈ 53 − 0.58·CRF dB; a probe near the answer keeps the CRF extrapolation short)
_PSNR_AT_CRF0 = 53.0
PSNR_PER_CRF = 0.58


def _typical_crf(target_psnr: float) -> float:
    """A typical x264 CRF of a target mean PSNR (dB), two steps finer (kept frames of
    dropped-frame options need more)."""
    return (_PSNR_AT_CRF0 - target_psnr) / PSNR_PER_CRF - 2.0


def probe_crf_for(target_psnr: float) -> int:
    """The probe CRF for a target mean PSNR (dB): the PROBE_CRFS entry nearest ``_typical_crf``."""
    guess = _typical_crf(target_psnr)
    return min(PROBE_CRFS, key=lambda c: abs(c - guess))


def bracket_crf(probe_crf: int, toward: float) -> int:
    """The PROBE_CRFS neighbour of ``probe_crf`` on the side of ``toward`` (a CRF; the finer side
    only when ``toward`` is finer), the other neighbour at the ends of PROBE_CRFS: where the second
    stride-1 probe of a model with ``slope_typical`` codes, so that the two probes bracket the CRF
    the plan will most likely choose. Raises ValueError when ``probe_crf`` is not in PROBE_CRFS."""
    k = PROBE_CRFS.index(probe_crf)
    step = -1 if toward < probe_crf else 1
    if not 0 <= k + step < len(PROBE_CRFS):
        step = -step
    return PROBE_CRFS[k + step]


def slope_probe_crf_for(target_psnr: float) -> int:
    """The second stride-1 probe's CRF for a target mean PSNR (dB): ``bracket_crf`` of
    ``probe_crf_for(target_psnr)`` toward the same typical CRF that chose it."""
    return bracket_crf(probe_crf_for(target_psnr), _typical_crf(target_psnr))


def log_slope(at_probe: float, at_other: float, probe_crf: int, other_crf: int) -> float:
    """Per-CRF-step slope of the natural log of a positive quantity (bytes, coding MSE) measured
    by two probes at ``probe_crf`` and ``other_crf``; values are floored at 1e-3 (an all-skip or
    lossless probe)."""
    return math.log(max(at_other, 1e-3) / max(at_probe, 1e-3)) / (other_crf - probe_crf)


#: CRF steps from the probe over which a measured slope's difference from the typical one applies
#: (the spacing of PROBE_CRFS: calibration rows reach no further); beyond, the typical slope of the
#: fitted model goes on alone. Unbounded, a screen recording's flat bytes between CRF 34 and 42
#: (all skip blocks) foretold CRF 10 at 1.4x the bytes of CRF 26, and the plan took it.
SLOPE_SPAN = 8


def slope_terms(delta: np.ndarray, slope: float | np.ndarray, typical: float) -> np.ndarray:
    """Regressor [..., 1] float64 of a measured probe slope s (``log_slope``, per CRF step; one
    value, or one per δ) at CRF offsets ``delta``: (s − typical)·clip(δ, ±SLOPE_SPAN), ``typical``
    the calibration rows' median slope; its fitted coefficient is how much of the probe's own
    deviation carries over to the final preset. Linear only: a δ² term fitted 0.003 lower
    held-out log error on the calibration rows (|δ| ≤ 8) and extrapolated wildly."""
    delta = np.clip(np.asarray(delta, dtype=np.float64), -SLOPE_SPAN, SLOPE_SPAN)
    return (delta * (slope - typical))[..., None]


def coding_features(delta: np.ndarray, probe_crf: float, stride: np.ndarray | float) -> np.ndarray:
    """Regressors of the probe → final correction: [..., 6] float64 for CRF offset ``delta``
    (c − c₀), probe CRF c₀ and stride N."""
    delta = np.asarray(delta, dtype=np.float64)
    log_stride = np.log2(np.broadcast_to(np.asarray(stride, dtype=np.float64), delta.shape))
    c0 = np.full(delta.shape, (probe_crf - 30.0) / 10.0)
    return np.stack([np.ones_like(delta), delta, delta**2 / 10.0, log_stride, c0, c0 * delta], axis=-1)


def interp_features(linear: np.ndarray, motion: np.ndarray, detail: np.ndarray, gap: np.ndarray,
                    t: np.ndarray) -> np.ndarray:
    """Regressors of a dropped frame's rebuilt log-MSE: [n, 7] float64 from the view errors
    (gray levels²), the frame's detail energy, the gap between its kept neighbours and t."""
    lin = np.log1p(np.asarray(linear, dtype=np.float64))
    mc = np.log1p(np.asarray(motion, dtype=np.float64))
    det = np.log1p(np.asarray(detail, dtype=np.float64))
    return np.stack([np.ones_like(lin), lin, mc, det, np.log2(np.asarray(gap, dtype=np.float64)),
                     np.asarray(t) * (1 - np.asarray(t)), mc * det / 10.0], axis=-1)


COEFFICIENTS = ("interp_coef", "rate_coef", "mse_coef", "transfer_coef", "slope_typical", "rgb_overlap")
#: κ of models that predate the transfer fit (1.0): coding errors of the neighbours add in full
ADDITIVE_TRANSFER = (1.0, 0.0)


def coefficients_sha256(config: dict[str, Any]) -> str:
    """sha256 of the coefficient arrays as canonical JSON (the model's checksum in its config;
    ``transfer_coef`` only where present, so 1.0 configs keep their checksum; from 1.2 the probe
    settings too, which the coefficients hold only for; from 1.3 ``slope_typical``; from 1.4
    ``rgb_overlap``)."""
    keys = [*COEFFICIENTS, *(Probe().fields() if "probe_error" in config else ())]
    payload = json.dumps({k: config[k] for k in keys if k in config}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def with_floor(floor: np.ndarray | float, coding: np.ndarray | float, overlap: float) -> np.ndarray:
    """RGB MSE (gray levels²) of a decoded picture from its colour path's error ``floor``
    (``coding.conversion_mse``) and its coding error ``coding`` as measured on the YUV planes
    (``coding.rgb_mse_of_planes``, x264's report): f + e − λ·f·e/(f + e), λ = ``overlap`` (0: the
    two add, as before model 1.4). An empirical form (``fit_rgb``): part of the chroma planes'
    coding error lies in the detail that subsampling (the floor) already took. Broadcasts."""
    f = np.asarray(floor, dtype=np.float64)
    e = np.asarray(coding, dtype=np.float64)
    total = f + e
    return total - overlap * f * e / np.maximum(total, 1e-12)


def coding_of_rgb(floor: np.ndarray | float, rgb: np.ndarray | float, overlap: float) -> np.ndarray:
    """The inverse of ``with_floor`` in the coding error: the YUV-plane coding error e ≥ 0 whose
    ``with_floor(floor, e, overlap)`` is ``rgb`` (0 where ``rgb`` ≤ ``floor``); needs λ ≤ 1, where
    ``with_floor`` rises with e. Solves e² + (2f − λf − T)·e + f² − T·f = 0 for T = ``rgb``."""
    f = np.asarray(floor, dtype=np.float64)
    t = np.asarray(rgb, dtype=np.float64)
    b = 2 * f - overlap * f - t
    root = (-b + np.sqrt(np.maximum(b * b - 4 * (f * f - t * f), 0.0))) / 2
    return np.where(t > f, np.maximum(root, 0.0), 0.0)


#: the span of λ ``fit_rgb`` searches (``coding_of_rgb`` needs λ ≤ 1)
RGB_OVERLAP_RANGE = (0.0, 1.0)


def fit_rgb(rows: Sequence[dict[str, Any]]) -> tuple[float, dict[str, float]]:
    """λ of ``with_floor`` from rows of ``rd_calibrate rgb`` (per x264 stream: per-frame
    ``floor``, ``planes`` (the decoded planes' error, ``coding.rgb_mse_of_planes``) and ``rgb``
    (the decoded picture's true RGB error), gray levels²): the λ in ``RGB_OVERLAP_RANGE`` (0.01
    steps) with the least RMS error in dB over frames with a coding error, with the mean and RMS
    of that error (predicted − true PSNR, dB) for λ and for λ = 0. Raises ValueError on no rows."""
    if not rows:
        raise ValueError("no rgb rows")
    floor, planes, true = (np.concatenate([np.asarray(r[k], dtype=np.float64) for r in rows])
                           for k in ("floor", "planes", "rgb"))
    use = (planes > 1e-3) & (true > 1e-3)
    floor, planes, true = floor[use], planes[use], true[use]

    def db_error(overlap: float) -> np.ndarray:
        return 10 * np.log10(true / np.maximum(with_floor(floor, planes, overlap), 1e-12))

    grid = np.round(np.arange(RGB_OVERLAP_RANGE[0], RGB_OVERLAP_RANGE[1] + 1e-9, 0.01), 2)
    best = float(min(grid, key=lambda k: float(np.mean(db_error(float(k)) ** 2))))
    metrics: dict[str, float] = {"rgb_rows": float(len(true))}
    for name, k in (("fit", best), ("additive", 0.0)):
        err = db_error(k)
        metrics[f"rgb_{name}_psnr_bias_db"] = float(err.mean())
        metrics[f"rgb_{name}_psnr_rmse_db"] = float(np.sqrt(np.mean(err**2)))
    return best, metrics


def add_rgb(base: dict[str, Any], rows: Sequence[dict[str, Any]], version: str) -> dict[str, Any]:
    """A new config ``version``: ``base`` with λ (``rgb_overlap``) fitted on ``rows``
    (``fit_rgb``), the rest unchanged. Raises ValueError as ``fit_rgb``."""
    overlap, metrics = fit_rgb(rows)
    config = {k: v for k, v in base.items() if k not in ("sha256", "training")}
    config.update(version=version, rgb_overlap=overlap, based_on=base["version"])
    config["metrics"] = {**base["metrics"], **metrics}
    config["sha256"] = coefficients_sha256(config)
    return config


def _lstsq(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ coef
    return coef, float(np.sqrt(np.mean(residual**2)))


def transfer_terms(t: np.ndarray, left_mse: np.ndarray, right_mse: np.ndarray) -> np.ndarray:
    """[..., 2] float64: the linear and the quadratic blend of the two kept neighbours' coding
    MSE at position t ∈ (0, 1) of a dropped frame, the regressors of κ."""
    t = np.asarray(t, dtype=np.float64)
    return np.stack([(1 - t) * left_mse + t * right_mse, (1 - t) ** 2 * left_mse + t**2 * right_mse], axis=-1)


def fit_transfer(rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, dict[str, float]]:
    """κ (2,) of the coding-error transfer from rows of ``rd_calibrate transfer`` (per dropped
    frame: ``interp_mse`` with lossless kept frames, ``mse`` with coded ones, the neighbours'
    ``left_mse``/``right_mse`` and ``t``), by least squares on mse − interp_mse with weights
    1/mse (relative errors: dB matter, not gray levels²). Returns κ and the per-frame PSNR error
    (predicted − measured, dB: mean and RMS) of the fit and of the additive κ = (1, 0).
    Raises ValueError on no rows."""
    if not rows:
        raise ValueError("no transfer rows")
    col = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in ("t", "left_mse", "right_mse",
                                                                        "interp_mse", "mse")}
    x = transfer_terms(col["t"], col["left_mse"], col["right_mse"])
    weight = 1.0 / np.maximum(col["mse"], 1.0)
    kappa, *_ = np.linalg.lstsq(x * weight[:, None], (col["mse"] - col["interp_mse"]) * weight, rcond=None)
    measured = psnr_of_mses(col["mse"])
    metrics: dict[str, float] = {"transfer_rows": float(len(rows))}
    for name, k in (("fit", kappa), ("additive", np.array(ADDITIVE_TRANSFER))):
        err = psnr_of_mses(col["interp_mse"] + x @ k) - measured
        metrics[f"transfer_{name}_psnr_bias_db"] = float(err.mean())
        metrics[f"transfer_{name}_psnr_rmse_db"] = float(np.sqrt(np.mean(err**2)))
    return kappa, metrics


def _probe_slopes(rows: Sequence[dict[str, Any]], floor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``log_slope`` of its video's stride-1 probe bytes and probe MSE (above
    ``floor``) between the row's probe CRF and ``bracket_crf`` toward the row's final CRF: what a
    second stride-1 probe measures. Raises ValueError when a video lacks that probe's rows."""
    stride1: dict[tuple[str, int], tuple[float, float]] = {}
    for r, f in zip(rows, floor, strict=True):
        if r["stride"] == 1:
            stride1[(str(r.get("video", "")), int(r["probe_crf"]))] = (r["probe_bytes"], r["probe_mse"] - f)
    rate, mse = [], []
    for r in rows:
        c0 = int(r["probe_crf"])
        c1 = bracket_crf(c0, r["crf"])
        video = str(r.get("video", ""))
        if (video, c0) not in stride1 or (video, c1) not in stride1:
            raise ValueError(f"{video}: no stride-1 probe rows at CRF {c0} and {c1} (slopes)")
        (b0, m0), (b1, m1) = stride1[(video, c0)], stride1[(video, c1)]
        rate.append(log_slope(b0, b1, c0, c1))
        mse.append(log_slope(m0, m1, c0, c1))
    return np.array(rate), np.array(mse)


def fit_coding(coding_rows: Sequence[dict[str, Any]], slopes: bool = False) -> dict[str, Any]:
    """The probe → final corrections from ``rd_calibrate coding`` rows: {"probe" (``Probe``),
    "rate_coef", "mse_coef", "slope_typical" (None without ``slopes``), "metrics"}. ``slopes``: one
    more regressor each (``slope_terms``, typical = the rows' median) from the slope a second
    stride-1 probe measures (``_probe_slopes``; model 1.3). Metrics include the error of a 5-fold
    cross-validation over whole videos. Raises ValueError on no rows, rows of more than one probe
    setting, or (``slopes``) a video without the second probe's rows."""
    rows = [r for r in coding_rows if "floor" in r]
    if not rows:
        raise ValueError("calibration needs coding rows")
    probes = {Probe.of(r) for r in rows}
    if len(probes) != 1:
        raise ValueError(f"coding rows mix probe settings {sorted(map(str, probes))}")
    (probe,) = probes
    cod = {k: np.array([r[k] for r in rows], dtype=np.float64)
           for k in ("stride", "probe_crf", "crf", "probe_bytes", "bytes", "probe_mse", "mse", "floor")}
    # rows measured in RGB include the colour path's error (subtract it); rows measured on the
    # YUV planes ("measure": "yuv", coding.rgb_mse_of_planes) hold the coding error alone
    floor = np.array([0.0 if r.get("measure") == "yuv" else r["floor"] for r in rows])
    probe_above = np.maximum(cod["probe_mse"] - floor, 1e-3)
    delta = cod["crf"] - cod["probe_crf"]
    xc = np.concatenate([coding_features(np.array([d]), p, s)
                         for d, p, s in zip(delta, cod["probe_crf"], cod["stride"], strict=True)])
    xr = xm = xc
    typical: list[float] | None = None
    if slopes:
        rate_slope, mse_slope = _probe_slopes(rows, floor)
        typical = [float(np.median(rate_slope)), float(np.median(mse_slope))]
        xr = np.concatenate([xc, slope_terms(delta, rate_slope, typical[0])], axis=1)
        xm = np.concatenate([xc, slope_terms(delta, mse_slope, typical[1])], axis=1)
    rate_y = np.log(cod["bytes"] / cod["probe_bytes"])
    mse_y = np.log(np.maximum(cod["mse"] - floor, 1e-3) / probe_above)
    rate_coef, rate_rmse = _lstsq(xr, rate_y)
    mse_coef, mse_rmse = _lstsq(xm, mse_y)
    videos = np.array([zlib.crc32(str(r.get("video", "")).encode()) % 5 for r in rows])
    return {"probe": probe, "rate_coef": rate_coef.tolist(),
            "mse_coef": mse_coef.tolist(), "slope_typical": typical,
            "metrics": {"rate_log_rmse": rate_rmse, "coding_log_mse_rmse": mse_rmse, "coding_rows": len(rows),
                        "rate_log_rmse_heldout_videos": _cv_rmse(xr, rate_y, videos),
                        "coding_log_mse_rmse_heldout_videos": _cv_rmse(xm, mse_y, videos)}}


def _cv_rmse(x: np.ndarray, y: np.ndarray, folds: np.ndarray) -> float:
    """RMS error of least-squares predictions of each fold from the others (whole videos per fold)."""
    held = np.zeros_like(y)
    for fold in np.unique(folds):
        test = folds == fold
        if (~test).any():
            coef, *_ = np.linalg.lstsq(x[~test], y[~test], rcond=None)
            held[test] = x[test] @ coef
    return float(np.sqrt(np.mean((y - held) ** 2)))


def fit(interp_rows: Sequence[dict[str, Any]], coding_rows: Sequence[dict[str, Any]],
        transfer_rows: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Fit the corrections from calibration rows (``training/rd_calibrate.py``); returns the
    config dict (coefficients + fit metrics; version 1.1.0 with ``transfer_rows``, else 1.0.0
    with the additive transfer). Raises ValueError on empty interp or coding rows."""
    if not interp_rows:
        raise ValueError("calibration needs interp and coding rows")
    col = {k: np.array([r[k] for r in interp_rows], dtype=np.float64)
           for k in ("linear", "motion", "detail", "gap", "t", "mse")}
    xi = interp_features(col["linear"], col["motion"], col["detail"], col["gap"], col["t"])
    yi = np.log1p(col["mse"])
    interp_coef, interp_rmse = _lstsq(xi, yi)
    # held-out error: 5 folds of whole videos (a video's frames are not independent samples)
    videos = np.array([zlib.crc32(str(r.get("video", "")).encode()) % 5 for r in interp_rows])
    held = np.zeros_like(yi)
    for fold in range(5):
        test = videos == fold
        if test.any() and (~test).any():
            coef, _ = _lstsq(xi[~test], yi[~test])
            held[test] = xi[test] @ coef
    interp_cv_rmse = float(np.sqrt(np.mean((yi - held) ** 2)))
    baseline = np.log1p(col["linear"])  # naive: view error as is
    coding = fit_coding(coding_rows)
    config: dict[str, Any] = {
        "name": "ratemodel",
        "version": "1.1.0" if transfer_rows else "1.0.0",
        **coding["probe"].fields(),
        "final_preset": FINAL_PRESET,
        "probe_crfs": list(PROBE_CRFS),
        "interp_coef": interp_coef.tolist(),
        "rate_coef": coding["rate_coef"],
        "mse_coef": coding["mse_coef"],
        "metrics": {
            "interp_log_mse_rmse": interp_rmse,
            "interp_log_mse_rmse_heldout_videos": interp_cv_rmse,
            "interp_log_mse_rmse_naive": float(np.sqrt(np.mean((yi - baseline) ** 2))),
            "interp_rows": len(yi),
            **coding["metrics"],
        },
    }
    if transfer_rows:
        kappa, transfer_metrics = fit_transfer(transfer_rows)
        config["transfer_coef"] = kappa.tolist()
        config["metrics"].update(transfer_metrics)
    config["sha256"] = coefficients_sha256(config)
    return config


def refit_coding(base: dict[str, Any], coding_rows: Sequence[dict[str, Any]], version: str,
                 slopes: bool = False) -> dict[str, Any]:
    """A new config ``version`` that keeps ``base``'s interpolation and transfer coefficients (and
    their metrics) and replaces the probe → final corrections by a fit of ``coding_rows`` (a new
    probe preset or error measure changes only those; ``slopes``: with a second stride-1 probe's
    slopes, ``fit_coding``). Raises ValueError as ``fit_coding``."""
    coding = fit_coding(coding_rows, slopes)
    config = {k: v for k, v in base.items() if k not in ("sha256", "training", "slope_typical")}
    config.update(version=version, **coding["probe"].fields(), final_preset=FINAL_PRESET,
                  rate_coef=coding["rate_coef"], mse_coef=coding["mse_coef"],
                  based_on=base["version"], **({"slope_typical": coding["slope_typical"]} if slopes else {}))
    config["metrics"] = {**base["metrics"], **coding["metrics"]}
    config["sha256"] = coefficients_sha256(config)
    return config


@dataclass(frozen=True)
class RateModel:
    """The fitted coefficients (see module docstring)."""

    interp_coef: np.ndarray
    rate_coef: np.ndarray
    mse_coef: np.ndarray
    transfer_coef: np.ndarray = field(default_factory=lambda: np.array(ADDITIVE_TRANSFER))
    #: the probe the coefficients were calibrated with
    probe: Probe = LEGACY_PROBE
    #: the calibration's typical (median) bytes and MSE slopes: the corrections take the slopes a
    #: second stride-1 probe measures (model 1.3; ``slope_terms``); None before 1.3
    slope_typical: tuple[float, float] | None = None
    #: λ of ``with_floor`` (model 1.4; 0 before: the floor and the coding error add)
    rgb_overlap: float = 0.0

    @property
    def coding_slopes(self) -> bool:
        """The model needs the second stride-1 probe (``slope_probe_crf_for``)."""
        return self.slope_typical is not None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RateModel:
        return cls(np.array(config["interp_coef"]), np.array(config["rate_coef"]), np.array(config["mse_coef"]),
                   np.array(config.get("transfer_coef", ADDITIVE_TRANSFER), dtype=np.float64), Probe.of(config),
                   tuple(config["slope_typical"]) if config.get("slope_typical") else None,
                   float(config.get("rgb_overlap", 0.0)))

    def _coding_x(self, delta: np.ndarray, probe_crf: int, stride: int, slope: float | None,
                  which: int) -> np.ndarray:
        x = coding_features(delta, probe_crf, stride)
        if self.slope_typical is None:
            return x
        if slope is None:
            raise ValueError("this rate model needs the second stride-1 probe's slope (slope_typical)")
        return np.concatenate([x, slope_terms(delta, slope, self.slope_typical[which])], axis=-1)

    def rebuilt_mse(self, interp_mse: np.ndarray, t: np.ndarray, left_mse: np.ndarray,
                    right_mse: np.ndarray) -> np.ndarray:
        """Predicted RGB MSE of dropped frames rebuilt from coded kept frames: interpolation
        error plus the neighbours' coding error carried through (κ; module docstring). Arrays
        broadcast (e.g. [d, 1] against [d, C] for a CRF grid)."""
        return interp_mse + transfer_terms(t, left_mse, right_mse) @ self.transfer_coef

    def interp_mse(self, features: np.ndarray) -> np.ndarray:
        """Predicted full-resolution RGB MSE of dropped frames from ``interp_features`` [n, 7]."""
        return np.expm1(features @ self.interp_coef).clip(min=0.0)

    def rate_factor(self, delta: np.ndarray, probe_crf: int, stride: int, slope: float | None = None) -> np.ndarray:
        """Final bytes / probe bytes at CRF offsets ``delta`` [C]; ``slope``: the stride-1 probes'
        bytes slope (``log_slope``), required when ``slope_typical`` (else ValueError)."""
        return np.exp(self._coding_x(delta, probe_crf, stride, slope, 0) @ self.rate_coef)

    def mse_factor(self, delta: np.ndarray, probe_crf: int, stride: int, slope: float | None = None) -> np.ndarray:
        """Final coding MSE / probe coding MSE (both above the floor) at CRF offsets ``delta`` [C];
        ``slope``: the stride-1 probes' MSE slope, required when ``slope_typical`` (else ValueError)."""
        return np.exp(self._coding_x(delta, probe_crf, stride, slope, 1) @ self.mse_coef)


def psnr_of(mse: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB) of RGB MSE values, capped at 60 dB (the quality protocol)."""
    return psnr_of_mses(mse)


@dataclass
class StrideMeasure:
    """What was measured for one segment at one stride: the probe's per-kept-frame bytes and MSE
    [k], and for the dropped frames [d] the predicted interpolation MSE and the positions
    (0-based into ``kept``, and t) of their two kept neighbours; ``floor``: the segment's
    colour-path error (``coding.conversion_mse``), which no CRF removes."""

    stride: int
    kept_bytes: np.ndarray
    kept_mse: np.ndarray
    interp_mse: np.ndarray
    left: np.ndarray
    right: np.ndarray
    t: np.ndarray
    floor: float = 0.0
    #: video indices of the dropped frames [d] (``estimate_psnr_sum``)
    dropped_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: the segment's stride-1 probe slopes of bytes and coding MSE (``log_slope``; models with
    #: ``slope_typical``), the same for every stride of the segment
    rate_slope: float | None = None
    mse_slope: float | None = None


def coding_error_ratio(m: StrideMeasure, model: RateModel, crf: int, probe_crf: int,
                       measured_mse: np.ndarray) -> float:
    """Measured / predicted mean coding MSE (both above ``m.floor``) of ``m``'s kept frames at
    ``crf``: the predicted one as ``segment_options`` makes it, ``measured_mse`` [k] as x264
    reported it. How far the probe's prediction missed on this content (``scaled``)."""
    above = np.maximum(m.kept_mse - m.floor, 0.0)
    predicted = float((above * model.mse_factor(np.array([crf - probe_crf]), probe_crf, m.stride,
                                                     m.mse_slope)[0]).mean())
    return float(np.mean(measured_mse)) / max(predicted, 1e-6)


def implied_probe_error(m: StrideMeasure, model: RateModel, crf: int, probe_crf: int,
                        measured_mse: np.ndarray) -> float:
    """The probe coding error (above ``m.floor``, gray levels²) per kept frame that the model's
    CRF correction turns into the mean of ``measured_mse`` [k] at ``crf``: what to put in place of
    a probe that measured next to nothing (``scaled``'s ``least``)."""
    factor = float(model.mse_factor(np.array([crf - probe_crf]), probe_crf, m.stride, m.mse_slope)[0])
    return float(np.mean(measured_mse)) / max(factor, 1e-9)


def scaled(m: StrideMeasure, ratio: float, least: float = 0.0) -> StrideMeasure:
    """``m`` with its probe's coding error (above the floor) times ``ratio`` and at least
    ``least`` per kept frame: the measure whose ``segment_options`` predict ``ratio`` times the
    coding error at every CRF. ``least`` is for a probe that measured next to no error (a black
    picture with a small object: its kept frames foretold at 60 dB at CRF 51 came out at 44 dB,
    and no ratio of nothing corrects that)."""
    return replace(m, kept_mse=m.floor + np.maximum(np.maximum(m.kept_mse - m.floor, 0.0) * ratio, least))


def _rebuilt_after_coding(m: StrideMeasure, model: RateModel, kept_mse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coded MSE of the kept frames [k], predicted rebuilt MSE of the dropped frames [d]) once
    the kept frames' coding error ``kept_mse`` [k] (above ``m.floor``) is known."""
    coded = with_floor(m.floor, kept_mse, model.rgb_overlap)
    ext = np.concatenate([coded, [coded.mean()]])
    return coded, model.rebuilt_mse(m.interp_mse, m.t, ext[m.left], ext[m.right])


def estimate_psnr_sum(m: StrideMeasure, model: RateModel, kept_mse: np.ndarray,
                      dropped_mse: np.ndarray, rebuilt_measured: np.ndarray | None = None) -> float:
    """ΣPSNR (dB) of one segment's frames at its chosen stride, predicted again once its kept
    frames are coded: ``kept_mse`` [k], their coding error as x264 measured it (on the YUV
    planes; ``m.floor`` joins it by ``with_floor``); the dropped frames rebuilt as ``segment_options``
    predicts (interpolation + the neighbours' coding error, κ), except those ``dropped_mse`` [d]
    gives (not NaN): frames the pipeline kept after all (both sides of a cut, the last frame),
    and those ``rebuilt_measured`` [d] gives (not NaN): the full RGB MSE of dropped frames
    rebuilt and measured (``rebuild_sample``)."""
    coded, rebuilt = _rebuilt_after_coding(m, model, kept_mse)
    total = float(psnr_of(coded).sum())
    if len(m.interp_mse):
        if rebuilt_measured is not None:
            rebuilt = np.where(np.isnan(rebuilt_measured), rebuilt, rebuilt_measured)
        rebuilt = np.where(np.isnan(dropped_mse), rebuilt, with_floor(m.floor, np.nan_to_num(dropped_mse),
                                                                      model.rgb_overlap))
        total += float(psnr_of(rebuilt).sum())
    return total


def interp_error_sums(m: StrideMeasure, model: RateModel, kept_mse: np.ndarray,
                      rebuilt_measured: np.ndarray) -> tuple[float, float]:
    """How far the predicted interpolation error of ``m``'s sampled dropped frames missed: (Σ
    measured interpolation error, Σ predicted) over the frames ``rebuilt_measured`` [d] gives
    (not NaN: their RGB MSE rebuilt from the coded kept frames, whose coding error above
    ``m.floor`` is ``kept_mse`` [k]); the measured part is the measured error less what the model
    carries over from the coded neighbours (κ). (0, 0) when no frame was sampled. Their ratio,
    pooled over segments, scales the prediction (``with_interp_ratio``)."""
    sampled = ~np.isnan(rebuilt_measured)
    if not len(m.interp_mse) or not sampled.any():
        return 0.0, 0.0
    _, rebuilt = _rebuilt_after_coding(m, model, kept_mse)
    carried = rebuilt[sampled] - m.interp_mse[sampled]
    return float((rebuilt_measured[sampled] - carried).sum()), float(m.interp_mse[sampled].sum())


def with_interp_ratio(m: StrideMeasure, ratio: float) -> StrideMeasure:
    """``m`` with its predicted interpolation error times ``ratio`` (``interp_error_sums``)."""
    return replace(m, interp_mse=m.interp_mse * ratio)


@dataclass
class SegmentOptions:
    """Predicted bytes and ΣPSNR of one segment for every stride × CRF: [len(strides), C]."""

    strides: tuple[int, ...]
    crfs: np.ndarray
    bytes: np.ndarray
    psnr_sum: np.ndarray
    frames: int


def predicted_psnr(o: SegmentOptions, stride: int, crf: int) -> float:
    """The predicted mean PSNR (dB) of one option of ``o``. Raises ValueError for a stride or CRF
    it does not hold."""
    cols = np.flatnonzero(o.crfs == crf)
    if cols.size == 0:
        raise ValueError(f"CRF {crf} is not among the options")
    return float(o.psnr_sum[o.strides.index(stride), cols[0]] / max(1, o.frames))


def segment_options(measures: Sequence[StrideMeasure], frames: int, model: RateModel, probe_crf: int,
                    crfs: np.ndarray | None = None) -> SegmentOptions:
    """Predictions for one segment of ``frames`` frames from its per-stride measurements.

    ``left``/``right`` index ``kept_mse`` with one extra entry at the end standing for the next
    segment's first frame (its coding error taken as the mean of this stride's kept frames)."""
    grid = np.arange(CRF_RANGE[0], CRF_RANGE[1] + 1) if crfs is None else np.asarray(crfs)
    delta = grid - probe_crf
    n_bytes = np.zeros((len(measures), len(grid)))
    psnr_sum = np.zeros((len(measures), len(grid)))
    for k, m in enumerate(measures):
        above = np.maximum(m.kept_mse - m.floor, 0.0)
        n_bytes[k] = m.kept_bytes.sum() * model.rate_factor(delta, probe_crf, m.stride, m.rate_slope)
        coding = above[:, None] * model.mse_factor(delta, probe_crf, m.stride, m.mse_slope)[None, :]  # [k, C]
        coded = with_floor(m.floor, coding, model.rgb_overlap)
        total = psnr_of(coded).sum(axis=0)
        if len(m.interp_mse):
            ext = np.concatenate([coded, coded.mean(axis=0, keepdims=True)], axis=0)
            t = m.t[:, None]
            rebuilt = model.rebuilt_mse(m.interp_mse[:, None], t, ext[m.left], ext[m.right])
            total = total + psnr_of(rebuilt).sum(axis=0)
        psnr_sum[k] = total
    return SegmentOptions(tuple(m.stride for m in measures), grid, n_bytes, psnr_sum, frames)


def restricted(o: SegmentOptions, stride: int | None, crf_lo: int, crf_hi: int, *,
               finer: bool = False) -> SegmentOptions:
    """``o`` with only the row of ``stride`` (every row for None; with ``finer`` also the rows of
    the smaller strides, which keep more frames) and the CRFs in [``crf_lo``, ``crf_hi``] (a
    correction that may only move the CRF, and not far; or one that stays where the probes
    measured). Raises ValueError when ``stride`` is not among ``o.strides`` or no CRF of ``o``
    lies in the range."""
    if stride is None:
        rows = list(range(len(o.strides)))
    else:
        keep = o.strides.index(stride)  # ValueError for a stride not among them
        rows = [r for r, s in enumerate(o.strides) if r == keep or (finer and s < stride)]
    cols = (o.crfs >= crf_lo) & (o.crfs <= crf_hi)
    if not cols.any():
        raise ValueError(f"no CRF of the options in [{crf_lo}, {crf_hi}]")
    return SegmentOptions(tuple(o.strides[r] for r in rows), o.crfs[cols], o.bytes[rows][:, cols],
                          o.psnr_sum[rows][:, cols], o.frames)


#: bytes added to an option ``floored`` prices out: more than μ·ΣPSNR reaches in ``_boundary``'s
#: range (μ ≤ 1e9 bytes per dB·frame, ΣPSNR ≤ 60 dB × a segment's frames)
PRICED_OUT = 1e15


def floored(o: SegmentOptions, floor_psnr: float, slack: float) -> SegmentOptions:
    """``o`` with every (stride, CRF) whose predicted mean PSNR (dB) is under ``floor_psnr`` priced
    out (``PRICED_OUT`` more bytes: no choice takes it while the segment's shot has another); a
    segment whose best option is under the floor keeps the options within ``slack`` dB of its best.
    The choice minimises bytes for a *mean* PSNR, so it may give one shot up where another is cheap
    to raise far over the target; a floor keeps every segment watchable."""
    psnr = o.psnr_sum / max(1, o.frames)
    floor = min(floor_psnr, float(psnr.max()) - slack)
    return SegmentOptions(o.strides, o.crfs, np.where(psnr < floor, o.bytes + PRICED_OUT, o.bytes), o.psnr_sum,
                          o.frames)


@dataclass(frozen=True)
class Choice:
    """The chosen stride and CRF of a segment, with its predicted bytes and mean PSNR (dB)."""

    stride: int
    crf: int
    bytes: float
    psnr: float


def _choose(options: Sequence[SegmentOptions], shots: Sequence[Sequence[int]], mu: float) -> list[tuple[int, int]]:
    """(stride row, CRF column) per segment minimising Σ bytes − μ·ΣPSNR with one CRF per shot."""
    picks: list[tuple[int, int]] = [(0, 0)] * len(options)
    for shot in shots:
        cost = None
        rows = []
        for s in shot:
            o = options[s]
            j = o.bytes - mu * o.psnr_sum  # [strides, C]
            row = np.argmin(j, axis=0)
            rows.append(row)
            best = j[row, np.arange(j.shape[1])]
            cost = best if cost is None else cost + best
        assert cost is not None
        col = int(np.argmin(cost))
        for s, row in zip(shot, rows, strict=True):
            picks[s] = (int(row[col]), col)
    return picks


def _totals(options: Sequence[SegmentOptions], picks: Sequence[tuple[int, int]]) -> tuple[float, float]:
    n_bytes = sum(float(o.bytes[r, c]) for o, (r, c) in zip(options, picks, strict=True))
    frames = sum(o.frames for o in options)
    psnr = sum(float(o.psnr_sum[r, c]) for o, (r, c) in zip(options, picks, strict=True)) / max(1, frames)
    return n_bytes, psnr


def _boundary(ok: Callable[[float], bool], rising: bool, lo: float = 1e-3, hi: float = 1e9) -> float:
    """The μ (bytes per dB·frame, log-bisected in [lo, hi]) nearest the point where ``ok`` flips,
    on its ok side; ``rising``: ok holds above the flip (else below). No flip in [lo, hi]: the end
    that is ok and cheapest to reach, or, if none is ok, the end nearest to being ok."""
    ok_lo, ok_hi = ok(lo), ok(hi)
    if ok_lo == ok_hi:
        return (lo if ok_lo else hi) if rising else (hi if ok_lo else lo)
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if ok(mid) == rising:
            hi = mid
        else:
            lo = mid
    return hi if rising else lo


#: most single moves ``_refined`` makes (each saves bytes or gains PSNR; a few per shot at most)
REFINE_MOVES = 256


def _refined(options: Sequence[SegmentOptions], shots: Sequence[Sequence[int]], picks: list[tuple[int, int]],
             target_psnr: float | None, target_bytes: float | None) -> list[tuple[int, int]]:
    """``picks`` improved by single moves between the Lagrangian's points: a shot's CRF column, or
    one segment's stride row, changed at a time, each move the one that saves the most bytes with
    the mean PSNR still ≥ ``target_psnr`` (or gains the most PSNR with the bytes still ≤
    ``target_bytes``), until none does (at most ``REFINE_MOVES``). The Lagrangian reaches only the
    convex hull of the (bytes, PSNR) options, and on few segments the hull's next point over a
    target can be far over it: the bench clip at 34 dB (two segments, every frame kept) was planned
    at CRF 25 for 35.3 dB where CRF 26 is predicted at 34.8 dB, and its surplus was then coded a
    second time (issue 12's 2x time bound). ``picks`` that miss the target are returned as they are."""
    picks = list(picks)
    frames = sum(o.frames for o in options)
    n_bytes, psnr_mean = _totals(options, picks)
    psnr_sum = psnr_mean * frames
    psnr_goal = None if target_psnr is None else target_psnr * frames - 1e-9
    if (psnr_goal is not None and psnr_sum < psnr_goal) or (target_bytes is not None and n_bytes > target_bytes):
        return picks

    def best_of(d_bytes: np.ndarray, d_psnr: np.ndarray) -> tuple[float, int]:
        """(gain, index) of the best feasible change among arrays of changes; gain 0 if none."""
        if psnr_goal is not None:
            gain = np.where(psnr_sum + d_psnr >= psnr_goal, -d_bytes, 0.0)
        else:
            gain = np.where(n_bytes + d_bytes <= float(target_bytes), d_psnr, 0.0)  # type: ignore[arg-type]
        k = int(np.argmax(gain))
        return float(gain[k]), k

    for _ in range(REFINE_MOVES):
        best = (1e-9, -1, -1, False)  # gain, shot or segment, column or row, is a stride move
        for i, shot in enumerate(shots):  # the shot's CRF column, strides kept
            col = picks[shot[0]][1]
            d_bytes = sum(options[s].bytes[picks[s][0]] - options[s].bytes[picks[s][0], col] for s in shot)
            d_psnr = sum(options[s].psnr_sum[picks[s][0]] - options[s].psnr_sum[picks[s][0], col] for s in shot)
            gain, c = best_of(np.asarray(d_bytes), np.asarray(d_psnr))
            if gain > best[0]:
                best = (gain, i, c, False)
        for s, (row, col) in enumerate(picks):  # one segment's stride, its CRF kept
            o = options[s]
            gain, r = best_of(o.bytes[:, col] - o.bytes[row, col], o.psnr_sum[:, col] - o.psnr_sum[row, col])
            if gain > best[0]:
                best = (gain, s, r, True)
        _, where, to, stride_move = best
        if where < 0:
            break
        changed = [(where, (to, picks[where][1]))] if stride_move else [(s, (picks[s][0], to)) for s in shots[where]]
        for s, (r, c) in changed:
            n_bytes += float(options[s].bytes[r, c] - options[s].bytes[picks[s]])
            psnr_sum += float(options[s].psnr_sum[r, c] - options[s].psnr_sum[picks[s]])
            picks[s] = (r, c)
    return picks


def choose(options: Sequence[SegmentOptions], shots: Sequence[Sequence[int]], *,
           target_psnr: float | None = None, target_bytes: float | None = None) -> list[Choice]:
    """Per segment (stride, CRF): fewest predicted bytes with mean PSNR ≥ ``target_psnr``, or
    best mean PSNR within ``target_bytes`` (exactly one of the two). ``shots`` lists the segment
    indices of each group that shares one CRF. An unreachable target gets the closest option
    (best quality / fewest bytes). Raises ValueError when neither or both targets are given."""
    if (target_psnr is None) == (target_bytes is None):
        raise ValueError("give exactly one of target_psnr and target_bytes")

    def ok(mu: float) -> bool:
        n_bytes, psnr = _totals(options, _choose(options, shots, mu))
        return psnr >= target_psnr if target_psnr is not None else n_bytes <= float(target_bytes)  # type: ignore[arg-type]

    # more μ, more quality: a PSNR target holds from some μ up, a byte budget up to some μ
    mu = _boundary(ok, rising=target_psnr is not None)
    picks = _refined(options, shots, _choose(options, shots, mu), target_psnr, target_bytes)
    return [Choice(o.strides[r], int(o.crfs[c]), float(o.bytes[r, c]), float(o.psnr_sum[r, c] / o.frames))
            for o, (r, c) in zip(options, picks, strict=True)]
