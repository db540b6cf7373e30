"""Content-adaptive mode (issue 12): segments, scene cuts, the rate model's choice, and the real
codec end to end on generated clips and on the failing inputs of ../shared/cases."""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest

from framers import bundle as fb
from framers import pipeline
from framers.adaptive import analysis, ratemodel, selector
from framers.adaptive.selector import crf_groups
from framers.cli import main as cli_main
from framers.pipeline import compress, iter_reconstructed
from framers.registry import get_reconstructor
from framers.scenes import SceneAnalyser, shot_edges, timing_breaks, view_size
from framers.video import iter_frames_rgb

CASES = Path(__file__).resolve().parents[2] / "shared" / "cases"


def psnr_per_frame(src: list[np.ndarray], rebuilt: list[np.ndarray]) -> np.ndarray:
    mse = np.array([np.mean((a.astype(np.float64) - b) ** 2) for a, b in zip(src, rebuilt, strict=True)])
    return ratemodel.psnr_of(mse)


def rebuild(bundle: Path, reconstructor: str = "framemae") -> list[np.ndarray]:
    with fb.open_bundle(bundle) as folder:
        manifest = fb.read_manifest(folder)
        return list(iter_reconstructed(folder, manifest, get_reconstructor(reconstructor)))


def write_pan(path: Path, frames: int = 64, speed: float = 0.0, width: int = 160, height: int = 96,
              cut_at: int | None = None) -> Path:
    """A textured picture panning ``speed`` px/frame (0: a static camera with mild sensor noise);
    from ``cut_at`` on, another picture (a hard cut). Lossless (ffv1) so tests see no source codec."""
    rng = np.random.default_rng(1)
    luma = cv_blur(rng.integers(0, 255, (height, width * 3)).astype(np.float32))
    luma = (luma - luma.mean()) * (50.0 / luma.std())  # a contrasted texture, tinted (natural-like
    big = np.clip(luma[..., None] * np.array([1.0, 0.9, 0.7]) + np.array([140.0, 120.0, 100.0]), 0, 255)  # colour)
    other = 255.0 - big[:, ::-1]  # another shot: a different picture
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
        for i in range(frames):
            scene = other if cut_at is not None and i >= cut_at else big
            x = round(i * speed) % (scene.shape[1] - width)
            noisy = scene[:, x : x + width] + rng.normal(0, 1.0, (height, width, 3))
            frame = av.VideoFrame.from_ndarray(np.clip(noisy, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def cv_blur(image: np.ndarray) -> np.ndarray:
    import cv2

    return np.asarray(cv2.GaussianBlur(image, (0, 0), 3.0))


# ----------------------------------------------------------------------------- pure parts


def test_segments_split_shots_and_close_at_cuts() -> None:
    segs = analysis.split_segments([30], 130)
    # segments start at multiples of 16 frames from their shot's start, near-equal in blocks
    assert [(s.start, s.stop, s.closed) for s in segs] == [(0, 30, True), (30, 78, False), (78, 110, False),
                                                            (110, 130, True)]
    assert segs[0].kept(16) == [0, 16, 29]  # a shot's last frame is kept: nothing spans the cut
    assert segs[1].kept(16) == [30, 46, 62] and segs[1].anchors(16)[-1] == 78
    assert segs[3].kept(1) == list(range(110, 130))
    with pytest.raises(ValueError):
        analysis.split_segments([], 0)
    with pytest.raises(ValueError):
        analysis.split_segments([], 10, length=50)
    assert shot_edges([26, 0]) == {25, 26}
    assert timing_breaks([0, 10, 20, 30, 80, 90]) == [4]  # frame 4 follows a frame shown 5x longer
    assert timing_breaks([100, 110], previous=40) == [0] and timing_breaks([5]) == []
    # one CRF per group of shots holding >= min_frames: no x264 restart for every short shot
    many = analysis.split_segments([10, 20, 30, 200], 260, length=48)
    assert crf_groups(many, [10, 20, 30, 200], min_frames=150) == [[0, 1, 2, 3, 4, 5, 6], [7, 8]]
    assert view_size(1920, 1080) == (256, 144) and view_size(176, 144) == (176, 144)


def test_kept_frames_are_known_before_the_segments() -> None:
    """The analysis pass codes, per stride, the shot grid plus each shot's last frame while it
    streams; every segmentation must keep exactly those frames (else a probe lacks a frame)."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(1, 400))
        cuts = sorted({int(c) for c in rng.integers(1, max(2, n), size=int(rng.integers(0, 8)))} - {0})
        segments = analysis.split_segments(cuts, n)
        assert all(1 <= len(s) <= analysis.SEGMENT_LEN for s in segments)
        assert [s.start for s in segments][1:] == [s.stop for s in segments][:-1]
        starts = [0, *[c for c in cuts if c < n]]
        shot_of = {i: max(s for s in starts if s <= i) for i in range(n)}
        ends = {c - 1 for c in starts[1:]} | {n - 1}
        for stride in analysis.STRIDES:
            kept = {i for s in segments for i in s.kept(stride)}
            grid = {i for i in range(n) if analysis.on_grid(i, shot_of[i], stride)}
            assert kept == grid | ends


def _options(bytes_by_stride: dict[int, float], psnr_by_stride: dict[int, float], frames: int = 10,
             slope: float = 0.5) -> ratemodel.SegmentOptions:
    """Synthetic options: bytes halve every 6 CRF, PSNR falls ``slope`` dB per CRF from CRF 20."""
    crfs = np.arange(10, 52)
    strides = tuple(bytes_by_stride)
    b = np.array([[bytes_by_stride[s] * 2 ** (-(c - 20) / 6) for c in crfs] for s in strides])
    p = np.array([[frames * (psnr_by_stride[s] - slope * (c - 20)) for c in crfs] for s in strides])
    return ratemodel.SegmentOptions(strides, crfs, b, p, frames)


def test_choice_meets_the_target_with_the_fewest_bytes() -> None:
    # stride 4 reaches the same PSNR for a quarter of the bytes on a "static" segment, not on a
    # "moving" one, where interpolation costs 8 dB
    static = _options({1: 1000.0, 4: 250.0}, {1: 40.0, 4: 39.5})
    moving = _options({1: 1000.0, 4: 250.0}, {1: 40.0, 4: 32.0})
    choices = ratemodel.choose([static, moving], [[0], [1]], target_psnr=38.0)
    assert choices[0].stride == 4 and choices[1].stride == 1
    mean = (choices[0].psnr + choices[1].psnr) / 2
    assert mean >= 38.0 - 1e-6
    # lower target: fewer bytes
    cheaper = ratemodel.choose([static, moving], [[0], [1]], target_psnr=34.0)
    assert sum(c.bytes for c in cheaper) < sum(c.bytes for c in choices)
    # one CRF per shot: two segments of one shot share it
    shared = ratemodel.choose([static, moving], [[0, 1]], target_psnr=38.0)
    assert shared[0].crf == shared[1].crf
    # a bitrate target: the best PSNR within the budget
    budget = ratemodel.choose([static, moving], [[0], [1]], target_bytes=600.0)
    assert sum(c.bytes for c in budget) <= 600.0
    # an unreachable target gets the best quality on offer
    top = ratemodel.choose([moving], [[0]], target_psnr=59.0)
    assert top[0].crf == 10 and top[0].stride == 1
    with pytest.raises(ValueError):
        ratemodel.choose([moving], [[0]])


def test_a_floor_keeps_every_segment_near_the_target() -> None:
    """The choice minimises bytes for the *mean* PSNR: a shot whose PSNR is expensive (fast
    motion) can be given up where another is cheap to raise far over the target (static bars). The
    floor (``ratemodel.floored``, the selector's ``SEGMENT_FLOOR_DB``) keeps each segment within it
    of the target; a segment that cannot reach the floor keeps only its best options."""
    # bytes are cheap for the static segment's PSNR, and the moving one loses 1 dB per CRF step
    static = _options({1: 100.0, 16: 20.0}, {1: 50.0, 16: 49.0}, slope=0.2)
    moving = _options({1: 4000.0, 16: 300.0}, {1: 38.0, 16: 22.0}, slope=1.0)
    free = ratemodel.choose([static, moving], [[0], [1]], target_psnr=35.0)
    assert free[1].psnr < 29.0  # given up for the static shot's surplus
    floor = 35.0 - selector.SEGMENT_FLOOR_DB
    held = ratemodel.choose([ratemodel.floored(o, floor, 0.2) for o in (static, moving)], [[0], [1]],
                            target_psnr=35.0)
    assert all(c.psnr >= floor for c in held)
    assert (held[0].psnr + held[1].psnr) / 2 >= 35.0 - 1e-6
    assert sum(c.bytes for c in held) < ratemodel.PRICED_OUT
    # a floor over what the segment can reach: its best options, not nothing
    (best,) = ratemodel.choose([ratemodel.floored(moving, 55.0, 0.2)], [[0]], target_psnr=35.0)
    assert best.psnr >= float((moving.psnr_sum / moving.frames).max()) - 0.2


def test_choice_fills_the_gaps_between_the_hull_points() -> None:
    """The Lagrangian reaches only the convex hull of (bytes, PSNR); where PSNR falls unevenly with
    the CRF, the next hull point over a target can be far over it (the bench clip at 34 dB: planned
    35.3 dB where 34.8 dB was on offer, then coded twice). The choice is the cheapest option that
    meets the target, and a byte budget's the best PSNR within it."""
    crfs = np.arange(10, 52)
    frames = 10
    # PSNR flat for a few CRFs, then a step: 40 dB at CRF 10..., a non-convex staircase
    psnr = 45.0 - 0.6 * (crfs - 10) + 0.5 * np.sin(crfs)
    n_bytes = 1e6 * 2.0 ** (-(crfs - 10) / 6)
    options = [ratemodel.SegmentOptions((1,), crfs, n_bytes[None, :], frames * psnr[None, :], frames)]
    for target in np.arange(25.0, 44.0, 0.37):
        (choice,) = ratemodel.choose(options, [[0]], target_psnr=float(target))
        ok = psnr >= target - 1e-9
        assert choice.crf == crfs[ok].max()  # the coarsest CRF that meets the target
    for budget in (2e4, 5e4, 1e5, 3e5):
        (choice,) = ratemodel.choose(options, [[0]], target_bytes=budget)
        within = n_bytes <= budget
        assert choice.psnr == pytest.approx(psnr[within].max())
    # several segments and strides: the result meets the target, and no single move of one
    # shot's CRF or one segment's stride saves bytes and still meets it
    rng = np.random.default_rng(5)
    segs = [_options({1: 1000.0 * rng.uniform(0.5, 2), 4: 300.0 * rng.uniform(0.5, 2)},
                     {1: 40.0 + rng.normal(), 4: 36.0 + rng.normal()}, slope=float(rng.uniform(0.3, 0.9)))
            for _ in range(4)]
    shots = [[0, 1], [2], [3]]
    choices = ratemodel.choose(segs, shots, target_psnr=35.0)
    frames_all = sum(o.frames for o in segs)

    def totals(picks: list[tuple[int, int]]) -> tuple[float, float]:
        return (sum(float(o.bytes[r, c]) for o, (r, c) in zip(segs, picks, strict=True)),
                sum(float(o.psnr_sum[r, c]) for o, (r, c) in zip(segs, picks, strict=True)) / frames_all)

    picks = [(o.strides.index(c.stride), int(np.flatnonzero(o.crfs == c.crf)[0])) for o, c in zip(segs, choices,
                                                                                                  strict=True)]
    n0, p0 = totals(picks)
    assert p0 >= 35.0 - 1e-9
    for shot in shots:
        for col in range(len(crfs)):
            moved = [(r, col) if s in shot else (r, c) for s, (r, c) in enumerate(picks)]
            n1, p1 = totals(moved)
            assert not (p1 >= 35.0 and n1 < n0 - 1e-6)
    for s, (_, c) in enumerate(picks):
        for row in range(2):
            n1, p1 = totals([(row, c) if k == s else pick for k, pick in enumerate(picks)])
            assert not (p1 >= 35.0 and n1 < n0 - 1e-6)


def test_transfer_fit_recovers_kappa_and_1_0_configs_keep_the_additive_form() -> None:
    """κ from rows made with a known transfer (plus noise) comes back; the additive form of
    model 1.0 is then pessimistic (predicts lower PSNR); a config without κ still loads with
    κ = (1, 0) and its old checksum."""
    rng = np.random.default_rng(3)
    n = 4000
    t = rng.choice([0.25, 0.5, 0.75], n)
    left, right = rng.uniform(2, 80, n), rng.uniform(2, 80, n)
    interp = rng.uniform(1, 200, n)
    true = np.array([0.8, 0.1])
    mse = (interp + ratemodel.transfer_terms(t, left, right) @ true) * rng.lognormal(0, 0.02, n)
    rows = [{"t": a, "left_mse": b, "right_mse": c, "interp_mse": d, "mse": e}
            for a, b, c, d, e in zip(t, left, right, interp, mse, strict=True)]
    kappa, metrics = ratemodel.fit_transfer(rows)
    assert np.allclose(kappa, true, atol=0.03)
    assert abs(metrics["transfer_fit_psnr_bias_db"]) < 0.05
    assert metrics["transfer_additive_psnr_bias_db"] < -0.1
    with pytest.raises(ValueError):
        ratemodel.fit_transfer([])
    old = json.loads((Path(__file__).resolve().parents[1] / "model_store" / "ratemodel" / "1.0.0"
                      / "config.json").read_text())
    assert "transfer_coef" not in old and ratemodel.coefficients_sha256(old) == old["sha256"]
    model = ratemodel.RateModel.from_config(old)
    assert model.rebuilt_mse(np.array(10.0), np.array(0.5), np.array(4.0), np.array(8.0)) == pytest.approx(16.0)


def test_rgb_overlap_inverts_fits_and_keeps_older_models_additive() -> None:
    """``coding_of_rgb`` undoes ``with_floor``; ``fit_rgb`` finds λ back from rows made with it
    (plus noise) and measures the additive form's bias; models before 1.4 load with λ = 0 (the
    floor and the coding error add) and their checksums."""
    rng = np.random.default_rng(2)
    floor = rng.uniform(0.0, 2.0, 3000)
    coding = rng.uniform(0.01, 60.0, 3000)
    for overlap in (0.0, 0.4, 1.0):
        total = ratemodel.with_floor(floor, coding, overlap)
        assert np.all(total >= np.maximum(floor, coding) - 1e-9)
        np.testing.assert_allclose(ratemodel.coding_of_rgb(floor, total, overlap), coding, rtol=1e-9)
    assert ratemodel.coding_of_rgb(1.0, 0.5, 0.7) == 0.0  # under the floor: no coding error
    true = ratemodel.with_floor(floor, coding, 0.7) * np.exp(rng.normal(0, 0.01, 3000))
    rows = [{"floor": floor[k::3].tolist(), "planes": coding[k::3].tolist(), "rgb": true[k::3].tolist()}
            for k in range(3)]
    overlap, metrics = ratemodel.fit_rgb(rows)
    assert overlap == pytest.approx(0.7, abs=0.03)
    assert abs(metrics["rgb_fit_psnr_bias_db"]) < 0.01 < -metrics["rgb_additive_psnr_bias_db"]
    with pytest.raises(ValueError):
        ratemodel.fit_rgb([])
    store = Path(__file__).resolve().parents[1] / "model_store" / "ratemodel"
    old = json.loads((store / "1.3.0" / "config.json").read_text())
    assert ratemodel.RateModel.from_config(old).rgb_overlap == 0.0
    assert ratemodel.coefficients_sha256(old) == old["sha256"]
    new = ratemodel.add_rgb(old, rows, "9.9.9")
    assert new["rgb_overlap"] == overlap and new["based_on"] == "1.3.0" and new["mse_coef"] == old["mse_coef"]
    assert ratemodel.coefficients_sha256(new) == new["sha256"] != old["sha256"]


def _moving_texture(frames: int, width: int = 96, height: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    texture = rng.integers(0, 256, (height, width * 2, 3), dtype=np.uint8)
    return [np.ascontiguousarray(texture[:, 3 * i : 3 * i + width]) for i in range(frames)]


@pytest.mark.parametrize("size", [(96, 64), (95, 63)])  # 4:2:0 and (odd size) 4:4:4
def test_probe_error_reported_by_x264_matches_the_decoded_pictures(size: tuple[int, int]) -> None:
    """x264's own per-plane SSE (the packet's quality statistics) gives the same bytes and, on
    I and P pictures, the same error as decoding the stream; on non-reference B pictures, which
    x264 measures before deblocking, a little more (within 10 %)."""
    from framers.adaptive.coding import PROBE_ERRORS, ProbeEncoder, code_frames

    frames = [cv_blur(f.astype(np.float32)).astype(np.uint8) for f in _moving_texture(12, *size)]
    reported = code_frames(frames, 26, "superfast", "x264")
    decoded = code_frames(frames, 26, "superfast", "decoded")
    assert reported.index.tolist() == decoded.index.tolist() == list(range(12))
    assert reported.bytes.tolist() == decoded.bytes.tolist() and reported.bytes.min() > 0
    ratio = reported.mse / decoded.mse
    assert np.all(ratio >= 0.99) and np.all(ratio < 1.10)  # (the RGB round trip's rounding: ±0.1 %)
    assert np.sum(np.isclose(ratio, 1.0)) >= 4  # the I and P pictures exactly
    with pytest.raises(ValueError, match="probe error"):
        ProbeEncoder(size[0], size[1], 26, "superfast", "psnr")
    assert PROBE_ERRORS == ("x264", "decoded")


def test_the_shipped_probe_is_superfast_with_the_macroblock_tree() -> None:
    """The shipped rate model states its probe and the analysis runs exactly that one; x264's own
    options reach the encoder (the tree changes the stream of a moving picture)."""
    from framers.adaptive.coding import code_frames
    from framers.adaptive.selector import load_rate_model

    model, config = load_rate_model()
    assert model.probe == ratemodel.Probe() == ratemodel.Probe("superfast", "mbtree=1:rc-lookahead=10", "x264")
    assert config["version"] == "1.4.0" and config["based_on"] == "1.3.0" and model.coding_slopes
    assert model.rgb_overlap == config["rgb_overlap"] > 0
    frames = [cv_blur(f.astype(np.float32)).astype(np.uint8) for f in _moving_texture(24)]
    plain = code_frames(frames, 26, "superfast", "x264")
    tree = code_frames(frames, 26, "superfast", "x264", model.probe.params)
    assert plain.bytes.sum() != tree.bytes.sum()


def test_probe_set_on_its_thread_codes_as_the_probes_themselves() -> None:
    """The analysis's probes on their worker thread give the records of the same probes run
    inline (superfast: the same bytes every run), and a failure on the thread reaches the
    caller."""
    from framers.adaptive.coding import ProbeEncoder, ProbeSet, to_codec_yuv

    frames = [cv_blur(f.astype(np.float32)).astype(np.uint8) for f in _moving_texture(20)]
    pool = ProbeSet(26, ratemodel.Probe("superfast", "", "x264"))
    inline = {n: ProbeEncoder(96, 64, 26, "superfast", "x264") for n in (1, 4)}
    for i, rgb in enumerate(frames):
        keys = [n for n in (1, 4) if i % n == 0]
        pool.write(keys, i, to_codec_yuv(rgb))
        for n in keys:
            inline[n].write_yuv(i, to_codec_yuv(rgb))
    threaded = pool.finish()
    for n, probe in inline.items():
        alone = probe.finish()
        assert threaded[n].index.tolist() == alone.index.tolist() == list(range(0, 20, n))
        assert threaded[n].bytes.tolist() == alone.bytes.tolist()
        assert np.allclose(threaded[n].mse, alone.mse)
    broken = ProbeSet(26, ratemodel.Probe("no-such-preset", "", "x264"))
    broken.write([1], 0, to_codec_yuv(frames[0]))
    with pytest.raises(av.error.FFmpegError, match="preset"):
        broken.finish()


def test_coding_refit_keeps_the_base_model_and_states_its_probe() -> None:
    """``refit_coding`` replaces only the probe → final corrections: the base's interpolation and
    transfer coefficients stay, the probe preset and error measure are stated and in the checksum;
    rows of two probes are refused; 1.0/1.1 configs load as veryfast probes measured decoded."""
    root = Path(__file__).resolve().parents[1] / "model_store" / "ratemodel"
    base = json.loads((root / "1.1.0" / "config.json").read_text())
    legacy = ratemodel.RateModel.from_config(base)
    assert legacy.probe == ratemodel.LEGACY_PROBE == ratemodel.Probe("veryfast", "", "decoded")
    rng = np.random.default_rng(2)
    rows = []
    for _ in range(200):
        stride, probe_crf = int(rng.choice([1, 2, 4, 8, 16])), int(rng.choice(ratemodel.PROBE_CRFS))
        crf = probe_crf + int(rng.integers(-8, 9))
        rows.append({"stride": stride, "probe_crf": probe_crf, "crf": crf, "probe_bytes": 1000.0,
                     "bytes": 1000.0 * np.exp(-0.11 * (crf - probe_crf) + 0.2), "probe_mse": 10.0,
                     "mse": 10.0 * np.exp(0.12 * (crf - probe_crf) - 0.3), "floor": 0.0, "measure": "yuv",
                     "probe_preset": "superfast", "probe_x264_params": "mbtree=1", "probe_error": "x264"})
    config = ratemodel.refit_coding(base, rows, "9.9.9")
    assert config["interp_coef"] == base["interp_coef"] and config["transfer_coef"] == base["transfer_coef"]
    assert config["based_on"] == "1.1.0"
    assert ratemodel.RateModel.from_config(config).probe == ratemodel.Probe("superfast", "mbtree=1", "x264")
    assert config["metrics"]["rate_log_rmse"] < 1e-6 and config["metrics"]["coding_rows"] == 200
    model = ratemodel.RateModel.from_config(config)
    assert model.rate_factor(np.array([4.0]), 26, 4)[0] == pytest.approx(np.exp(-0.44 + 0.2), rel=1e-6)
    assert ratemodel.coefficients_sha256(config) == config["sha256"]
    assert ratemodel.coefficients_sha256({**config, "probe_preset": "veryfast"}) != config["sha256"]
    assert ratemodel.coefficients_sha256({**config, "probe_x264_params": ""}) != config["sha256"]
    with pytest.raises(ValueError, match="mix probe"):
        ratemodel.fit_coding([*rows, {**rows[0], "probe_preset": "veryfast"}])


def test_a_second_probe_brackets_the_typical_crf_and_its_slope_is_fitted() -> None:
    """Model 1.3: the second stride-1 probe codes at the probe CRF's neighbour toward the target's
    typical CRF; a fit on rows whose final bytes follow each video's own probe slope recovers
    that (the one-probe fit cannot), the slope's deviation from the typical one is held beyond
    SLOPE_SPAN steps, and a model that needs a slope refuses to predict without one."""
    assert ratemodel.probe_crf_for(40.0) == 18 and ratemodel.slope_probe_crf_for(40.0) == 26
    assert ratemodel.probe_crf_for(31.0) == 34 and ratemodel.slope_probe_crf_for(31.0) == 42
    assert ratemodel.probe_crf_for(37.0) == 26 and ratemodel.slope_probe_crf_for(37.0) == 18
    assert ratemodel.bracket_crf(42, 50) == 34 and ratemodel.bracket_crf(18, 10) == 26
    with pytest.raises(ValueError):
        ratemodel.bracket_crf(20, 30)
    assert ratemodel.log_slope(1000.0, 1000.0 * np.exp(-0.8), 18, 26) == pytest.approx(-0.1)
    terms = ratemodel.slope_terms(np.array([-20.0, -4.0, 4.0, 20.0]), -0.2, -0.12)
    assert terms.shape == (4, 1) and np.allclose(terms[:, 0], [0.64, 0.32, -0.32, -0.64])

    root = Path(__file__).resolve().parents[1] / "model_store" / "ratemodel"
    base = json.loads((root / "1.2.0" / "config.json").read_text())
    rng = np.random.default_rng(3)
    rows = []
    for v in range(30):  # each video its own slope of bytes (and of the coding error) per CRF step
        rate_slope, mse_slope = -0.12 + rng.normal(0, 0.03), 0.13 + rng.normal(0, 0.02)
        for stride in (1, 2, 4):
            for probe_crf in ratemodel.PROBE_CRFS:
                probe = {"probe_bytes": 5000.0 / stride * np.exp(rate_slope * (probe_crf - 18)),
                         "probe_mse": 2.0 * np.exp(mse_slope * (probe_crf - 18))}
                for crf in (probe_crf - 4, probe_crf, probe_crf + 4):
                    rows.append({"video": f"v{v}", "stride": stride, "probe_crf": probe_crf, "crf": crf, **probe,
                                 "bytes": probe["probe_bytes"] * np.exp(rate_slope * (crf - probe_crf) + 0.2),
                                 "mse": probe["probe_mse"] * np.exp(mse_slope * (crf - probe_crf) - 0.3),
                                 "floor": 0.0, "measure": "yuv", **ratemodel.Probe().fields()})
    one = ratemodel.refit_coding(base, rows, "9.9.8")
    two = ratemodel.refit_coding(base, rows, "9.9.9", slopes=True)
    assert "slope_typical" not in one and two["slope_typical"][0] == pytest.approx(-0.12, abs=0.02)
    assert two["metrics"]["rate_log_rmse_heldout_videos"] < 1e-6 < one["metrics"]["rate_log_rmse_heldout_videos"]
    assert two["metrics"]["coding_log_mse_rmse_heldout_videos"] < 1e-6
    assert ratemodel.coefficients_sha256(two) == two["sha256"]
    assert ratemodel.coefficients_sha256({**two, "slope_typical": [0.0, 0.0]}) != two["sha256"]
    model = ratemodel.RateModel.from_config(two)
    assert model.coding_slopes and not ratemodel.RateModel.from_config(one).coding_slopes
    steep = model.rate_factor(np.array([4.0]), 26, 2, slope=-0.2)[0]
    assert steep == pytest.approx(np.exp(-0.8 + 0.2), rel=1e-6)
    with pytest.raises(ValueError, match="slope"):
        model.rate_factor(np.array([4.0]), 26, 2)
    with pytest.raises(ValueError, match="no stride-1 probe rows"):
        ratemodel.fit_coding([r for r in rows if not (r["video"] == "v0" and r["probe_crf"] == 26)], slopes=True)


def test_a_probe_that_saw_no_error_takes_the_error_the_measurement_implies() -> None:
    """``scaled`` multiplies the probe's error; a probe with none (a black picture) stays at none
    whatever the ratio, unless ``least`` (``implied_probe_error``) puts the measured error in."""
    root = Path(__file__).resolve().parents[1] / "model_store" / "ratemodel"
    model = ratemodel.RateModel.from_config(json.loads((root / "1.2.0" / "config.json").read_text()))
    empty = np.zeros(0)
    m = ratemodel.StrideMeasure(1, np.full(4, 100.0), np.full(4, 0.5), empty, empty.astype(int),
                                empty.astype(int), empty, floor=0.5)
    assert np.all(ratemodel.scaled(m, 256.0).kept_mse == 0.5)
    least = ratemodel.implied_probe_error(m, model, 51, 26, np.full(4, 3.0))
    again = ratemodel.scaled(m, 256.0, least)
    factor = model.mse_factor(np.array([25]), 26, 1)[0]
    assert np.allclose((again.kept_mse - 0.5) * factor, 3.0)


def test_the_analysis_codes_every_frame_again_at_the_slope_crf(tmp_path: Path) -> None:
    """``measure`` with ``slope_crf``: one more probe of every frame (strides' probes unchanged),
    at that CRF: its bytes are fewer than the first stride-1 probe's at a finer CRF."""
    from framers.adaptive.measure import measure
    from framers.video import FrameReader

    path = write_pan(tmp_path / "pan.mkv", frames=40, speed=1.0)

    def open_clips():  # type: ignore[no-untyped-def]
        reader = FrameReader(path)
        try:
            yield from reader.clips(16)
        finally:
            reader.close()

    plain = measure(open_clips, 26)
    both = measure(open_clips, 26, slope_crf=34)
    assert plain.slope_probe is None and plain.slope_crf is None and both.slope_crf == 34
    assert both.slope_probe is not None and both.slope_probe.index.tolist() == list(range(40))
    assert sorted(both.coded) == sorted(plain.coded) == list(analysis.STRIDES)
    assert both.coded[1].bytes.tolist() == plain.coded[1].bytes.tolist()
    assert both.slope_probe.bytes.sum() < both.coded[1].bytes.sum()
    assert both.slope_probe.mse.mean() > both.coded[1].mse.mean()


def test_stride_one_at_one_crf_is_plain_x264() -> None:
    """When only keeping everything is on offer, the choice is one CRF for the whole video: the
    kept-frame stream is then exactly an x264 encode of every frame."""
    segs = [_options({1: 1000.0 * (k + 1)}, {1: 40.0 - k}) for k in range(3)]
    choices = ratemodel.choose(segs, [[0, 1, 2]], target_psnr=36.0)
    assert len({c.crf for c in choices}) == 1 and all(c.stride == 1 for c in choices)


def test_gap_features_see_motion() -> None:
    rng = np.random.default_rng(0)
    import cv2

    base = cv2.GaussianBlur(rng.integers(0, 255, (72, 400)).astype(np.float32), (0, 0), 1.0).astype(np.uint8)
    views = {i: np.ascontiguousarray(base[:, i : i + 128]) for i in range(9)}
    moving = analysis.gap_features(views, [0, 8])
    still = analysis.gap_features({i: views[0] for i in range(9)}, [0, 8])
    assert list(moving.index) == list(range(1, 8)) and np.all(moving.gap == 8)
    assert np.all(still.linear == 0) and np.all(moving.linear > 1)
    assert moving.motion.mean() < 0.5 * moving.linear.mean()  # the flow explains a pan


def test_scene_analyser_finds_the_cut_of_case_c18() -> None:
    scenes = SceneAnalyser()
    with av.open(str(CASES / "c18_scene_cut_fade.mp4")) as container:
        cuts = [v.index for v in (scenes.feed(f) for f in container.decode(video=0)) if v.is_cut]
    assert cuts == [26]  # the fade to black afterwards is not a cut


def write_pictures(path: Path, pictures: list[av.VideoFrame], crf: int) -> Path:
    """Lavfi pictures as H.264 (x264 ultrafast at ``crf``, 4:2:0, 25 fps) in ``path``'s container."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = pictures[0].width, pictures[0].height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "ultrafast"}
        for i, picture in enumerate(pictures):
            frame = picture.reformat(format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_a_one_frame_shot_ends_at_the_next_cut(tmp_path: Path) -> None:
    """A one-frame shot (a flash of bars) between two shots: scdet scores the frame after it near 0
    (its difference minus the flash's), so that cut was missed and the next shot was rebuilt as a
    dissolve from the flash (4.8-21.5 dB, a fresh-user trial with every 8th frame kept). The
    difference itself finds it; frames after it are rebuilt from their own shot."""
    from tests.videogen import lavfi_frames

    size = "size=96x64:rate=25"
    pictures = [*lavfi_frames(f"testsrc2={size}", 21), *lavfi_frames(f"smptebars={size}", 1),
                *lavfi_frames(f"mandelbrot={size}", 20)]
    source = write_pictures(tmp_path / "flash.mkv", pictures, crf=12)
    scenes = SceneAnalyser()
    with av.open(str(source)) as container:
        views = [scenes.feed(f) for f in container.decode(video=0)]
    assert [v.index for v in views if v.is_cut] == [21, 22], [(v.index, v.score) for v in views[19:25]]
    assert views[22].score < 10.0  # scdet's own score misses the second cut
    compress(source, tmp_path / "b.frs", selector="stride", stride=8)
    psnr = psnr_per_frame(list(iter_frames_rgb(source)), rebuild(tmp_path / "b.frs"))
    assert min(psnr[22:30]) > 22.0, psnr[20:30]  # a dissolve from the flash: 5-21 dB


def test_no_shot_is_given_up_for_another_s_surplus(tmp_path: Path) -> None:
    """A fresh-user trial's clip: 1 s of moving testsrc2 fading to black, a cut, 1 s of static
    colour bars, at 35 dB. Planned for the mean alone, the first shot kept every 16th frame
    (~25 dB planned, 12.6 dB at its worst frame) while the bars went to 47.5 dB: the target met on
    the mean, one shot wrecked, nothing said. The floor keeps each segment's plan within
    ``SEGMENT_FLOOR_DB`` of the target."""
    from tests.videogen import lavfi_frames

    size = "size=320x240:rate=25"
    pictures = [*lavfi_frames(f"testsrc2={size},fade=out:st=0.4:d=0.6", 25), *lavfi_frames(f"smptebars={size}", 25)]
    source = write_pictures(tmp_path / "fade_cut.mp4", pictures, crf=16)
    result = compress(source, tmp_path / "b.frs", target_psnr=35.0)
    segments = result.adaptive["segments"]
    assert [s["start"] for s in segments][:2] == [0, 25]
    floor = 35.0 - selector.SEGMENT_FLOOR_DB
    assert all(s["predicted_psnr"] >= floor - 1e-6 for s in segments), segments
    psnr = psnr_per_frame(list(iter_frames_rgb(source)), rebuild(tmp_path / "b.frs"))
    assert psnr[:25].mean() > 25.0 and psnr.min() > 18.0, psnr.round(1)  # given up: 12.6-22 dB for a second


# ----------------------------------------------------------------------------- real codec


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("adaptive")
    return {
        "static": write_pan(folder / "static.mkv", speed=0.0),
        "fast": write_pan(folder / "fast.mkv", speed=9.0),
        "cut": write_pan(folder / "cut.mkv", frames=48, speed=1.0, cut_at=21),
    }


def test_adaptive_drops_frames_on_a_static_camera_and_keeps_them_in_fast_motion(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    kept = {}
    for name in ("static", "fast"):
        result = compress(clips[name], tmp_path / f"{name}.frs", target_psnr=36.0)
        assert result.adaptive is not None and result.adaptive["target_psnr"] == 36.0
        strides = [s["stride"] for s in result.adaptive["segments"]]
        kept[name] = (result.kept_frames, strides)
        src = list(iter_frames_rgb(clips[name]))
        achieved = float(psnr_per_frame(src, rebuild(tmp_path / f"{name}.frs")).mean())
        assert achieved >= 36.0 - 1.0, (name, achieved, result.adaptive)
    assert kept["static"][0] < 64 / 2 and max(kept["static"][1]) >= 4, kept
    assert kept["fast"][0] > kept["static"][0], kept


def test_adaptive_bundle_records_decisions_and_never_blends_a_cut(clips: dict[str, Path], tmp_path: Path) -> None:
    bundle = tmp_path / "cut"
    seen: list[float] = []
    result = compress(clips["cut"], bundle, target_psnr=34.0, progress=seen.append)
    # progress during the analysis pass too (a job shows it and can be canceled meanwhile)
    assert seen == sorted(seen) and seen[-1] == 1.0 and any(0 < v <= 0.5 for v in seen), seen
    manifest = json.loads((bundle / fb.MANIFEST).read_text())
    assert manifest["version"] == 2 and manifest["scenes"]["cuts"] == [21] == result.cuts  # 25 fps: v2 timestamps
    segs = manifest["adaptive"]["segments"]  # [start, stop, stride, crf]
    assert segs[0][0] == 0 and segs[-1][1] == 48 and all(s[2] in analysis.STRIDES for s in segs)
    assert manifest["selection"]["target_psnr"] == 34.0 and result.adaptive["segments"][0]["start"] == 0
    kept = fb.read_manifest(bundle).kept_indices()
    assert {0, 20, 21, 47} <= set(kept)
    runs = manifest["keyframes"]["runs"]
    assert sum(n for n, _ in runs) == len(kept)
    # the recorded CRF is one the kept frames were coded with (the most frames'), not a default
    most = max({c for _, c in runs}, key=lambda c: sum(n for n, r in runs if r == c))
    assert manifest["keyframes"]["crf"] == most
    src = list(iter_frames_rgb(clips["cut"]))
    near = range(17, 25)  # frames around the cut at 21; 20 and 21 are kept
    other_shot = [src[21] if i < 21 else src[20] for i in near]
    for name in ("linear", "framemae", "mci"):
        rebuilt = rebuild(bundle, name)[17:25]
        own = psnr_per_frame(src[17:25], rebuilt)
        other = psnr_per_frame(other_shot, rebuilt)
        # no cross-dissolve: each rebuilt frame near the cut is its own shot's picture, far from
        # the other shot's (how well a coarse plan's gap is rebuilt is not what this asserts)
        assert (own > other + 6.0).all() and own[2:5].min() > 28.0, (name, own, other)


def test_cli_target_psnr_prints_decisions_and_refuses_mixed_options(clips: dict[str, Path], tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["compress", str(clips["static"]), "-o", str(tmp_path / "b.frs"), "--target-psnr", "35"]) == 0
    out = capsys.readouterr().out
    assert "adaptive: predicted mean PSNR" in out and "every " in out and " dB planned" in out
    made = fb.bundle_bytes(tmp_path / "b.frs") / 1000  # no audio in the generated clip
    assert f"{made:.1f} kB made (bundle less audio)" in out
    # -q: the result and the estimate, not the per-segment detail (a fresh-user trial's find)
    assert cli_main(["compress", str(clips["static"]), "-o", str(tmp_path / "q.frs"), "--target-psnr", "35",
                     "-q"]) == 0
    quiet = capsys.readouterr().out
    assert "adaptive: predicted mean PSNR" in quiet and "kept frames" in quiet
    assert "every " not in quiet and "the estimate checked" not in quiet
    assert cli_main(["compress", str(clips["static"]), "-o", str(tmp_path / "c"), "--target-psnr", "35",
                     "--crf", "20", "-q"]) == 2
    assert "drop --selector/--keep/--stride/--crf" in capsys.readouterr().err
    assert cli_main(["compress", str(clips["static"]), "-o", str(tmp_path / "d"), "--target-kbps", "200", "-q"]) == 0
    # reconstruct says what the output's own encode costs against the target, unless --crf was chosen
    assert cli_main(["reconstruct", str(tmp_path / "b.frs"), "-o", str(tmp_path / "o.mp4"), "-q"]) == 0
    assert "note: the bundle's target (35 dB) is what the rebuilt frames reach" in capsys.readouterr().out
    assert cli_main(["reconstruct", str(tmp_path / "b.frs"), "-o", str(tmp_path / "o.mp4"), "--crf", "8", "-q"]) == 0
    assert "note:" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- ../shared/cases


def test_case_c00_last_frame_is_kept_not_held(tmp_path: Path) -> None:
    """c00: with every 4th frame kept, frames 57–59 were copies of 56 (frame 59 at 15 dB)."""
    source = CASES / "c00_baseline.mp4"
    compress(source, tmp_path / "b")
    kept = fb.read_manifest(tmp_path / "b").kept_indices()
    assert kept[-1] == 59 and 56 in kept
    src = list(iter_frames_rgb(source))
    rebuilt = rebuild(tmp_path / "b")
    psnr = psnr_per_frame(src, rebuilt)
    assert psnr[59] > 30.0, psnr[55:]
    assert not np.array_equal(rebuilt[58], rebuilt[56]) and not np.array_equal(rebuilt[57], rebuilt[56])


def test_case_c18_cut_is_not_cross_dissolved(tmp_path: Path) -> None:
    """c18: a hard cut at frame 26 (between kept frames 24 and 28) became a 3-frame dissolve
    (frame 26 at 10 dB): the first frame of the new shot and the last of the old one are kept."""
    source = CASES / "c18_scene_cut_fade.mp4"
    result = compress(source, tmp_path / "b")
    assert result.cuts == [26]
    kept = fb.read_manifest(tmp_path / "b").kept_indices()
    assert {24, 25, 26, 28, 74} <= set(kept)
    src = list(iter_frames_rgb(source))
    for name in ("framemae", "linear"):
        psnr = psnr_per_frame(src, rebuild(tmp_path / "b", name))
        assert psnr[25] > 30.0 and psnr[26] > 30.0, (name, psnr[23:29])


def test_case_c12_held_frame_is_not_blended_with_later_content(tmp_path: Path) -> None:
    """c12: a screen recording holds frame 29 for 5.03 s; blending by frame index made the frame
    shown for 5 s a 25 % mix with content 5 s later. A frame shown much longer than its
    neighbours is a timing break: it and the next frame are kept, nothing spans the gap."""
    source = CASES / "c12_screenrec_vfr_gap.mp4"
    src = list(iter_frames_rgb(source))
    for options in ({"selector": "stride", "stride": 4}, {"target_psnr": 35.0}):
        compress(source, tmp_path / "b", **options)  # type: ignore[arg-type]
        kept = fb.read_manifest(tmp_path / "b").kept_indices()
        assert {29, 30} <= set(kept), (options, kept)
        psnr = psnr_per_frame(src, rebuild(tmp_path / "b"))
        # a kept frame coded as its neighbours, not a mix with content 5 s later (that was ~20 dB)
        others = [psnr[i] for i in kept if i not in (29, 30)]
        assert psnr[29] > 30.0 and psnr[29] > np.median(others) - 1.5, (options, psnr[27:32], np.median(others))


def test_unreachable_target_gets_the_best_and_says_so(tmp_path: Path) -> None:
    """c00 (testsrc2) cannot reach 55 dB at any CRF (~50 dB at the finest, estimated; 45.7 dB
    before its 4:2:0 pictures were coded as decoded, without the trip through RGB that clipped
    its saturated colours): the plan aims just under the best it predicts
    (``UNREACHABLE_SLACK_DB``; every frame kept, near the finest CRF), and the result says so;
    a higher target never gets less than a lower one (a fresh-user trial: with a 1 dB back-off,
    37 dB gave less than a reachable 36 dB)."""
    result = compress(CASES / "c00_baseline.mp4", tmp_path / "b", target_psnr=55.0)
    assert result.adaptive is not None and "unreachable" in result.adaptive
    unreachable = result.adaptive["unreachable"]
    best = unreachable["best_predicted_psnr"]
    assert unreachable["aimed_at"] == pytest.approx(best - selector.UNREACHABLE_SLACK_DB, abs=0.01)
    assert unreachable["reachable"] is False
    assert unreachable["aimed_at"] - 0.01 <= result.adaptive["predicted_psnr"] <= best + 0.01
    assert any("out of reach" in w and f"aimed at {unreachable['aimed_at']:.2f} dB" in w for w in result.warnings)
    # c00's 4:2:0 pictures are coded as decoded: x264 is the limit, which the warning names
    assert unreachable["colour_path_psnr"] is None
    assert any("out of reach" in w and "x264's own error" in w for w in result.warnings), result.warnings
    assert {s["stride"] for s in result.adaptive["segments"]} == {1}
    assert max(s["crf"] for s in result.adaptive["segments"]) <= ratemodel.CRF_RANGE[0] + 2
    lower = compress(CASES / "c00_baseline.mp4", tmp_path / "lower", target_psnr=best - 0.3)
    # what each came out at (the estimate after coding; a plan may be made again after coding)
    assert lower.adaptive is not None and "unreachable" not in lower.adaptive
    assert lower.adaptive["estimated_psnr"] <= result.adaptive["estimated_psnr"] + 0.05, (lower.adaptive,
                                                                                          result.adaptive)


def test_a_kbps_budget_overshot_is_said(tmp_path: Path) -> None:
    """A --target-kbps budget the kept frames come out over (by more than 10 %) is said, with the
    kbit/s made (a fresh-user trial: 5 kbit/s on c00 came out at 1.85× the budget without a word);
    a budget that fits says nothing."""
    result = compress(CASES / "c00_baseline.mp4", tmp_path / "b", target_kbps=5.0)
    assert result.adaptive is not None
    with fb.open_bundle(tmp_path / "b") as folder:
        made = (folder / fb.KEYFRAMES_H264).stat().st_size * 8 / 1000 / result.duration
    assert made > 5.0 * 1.1 and any(f"kept frames came out at {made:.1f} kbit/s" in w and "over target_kbps 5" in w
                                    for w in result.warnings), (made, result.warnings)
    fits = compress(CASES / "c00_baseline.mp4", tmp_path / "fits", target_kbps=400.0)
    assert fits.adaptive is not None
    assert not any("over target_kbps" in w for w in fits.warnings), fits.warnings
    with fb.open_bundle(tmp_path / "fits") as folder:
        assert (folder / fb.KEYFRAMES_H264).stat().st_size * 8 / 1000 / fits.duration <= 400.0 * 1.1
    assert not any("lower --target-psnr" in w for w in fits.warnings)  # a bitrate run is told of --target-kbps


def test_a_screen_recording_is_foretold_by_its_own_crf_slope_and_coded_again_when_over(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """c12 (a screen recording): its coding error rises much faster with the CRF than natural
    video's. With one probe (rate model 1.2) the plan for 31 dB predicted ~31.8 and the first
    coding was estimated at ~28.7 dB. The second stride-1 probe (model 1.3, at CRF 42 beside the
    probe at 34) measures that slope, and the first plan is no longer short; its estimate after
    coding (x264's own error of the kept frames, a rebuilt sample) is more than 1 dB over, so the
    kept frames are coded once more for fewer bytes, which still reaches the target; the estimate
    after the second coding is within 0.6 dB of what the rebuild achieves. A plan that holds is
    coded once."""
    source = CASES / "c12_screenrec_vfr_gap.mp4"
    src = list(iter_frames_rgb(source))
    progress: list[float] = []
    result = compress(source, tmp_path / "b.frs", target_psnr=31.0, progress=progress.append)
    assert result.adaptive is not None
    assert result.adaptive["probe_crf"] == 34 and result.adaptive["slope_probe_crf"] == 42
    assert progress == sorted(progress) and progress[-1] == 1.0  # the second coding never goes back
    # ... and moves on from where the first ended (it held there, a trial's job for 23 of its 60 s)
    assert any(pipeline.FIRST_CODING_END < v < 0.95 for v in progress), progress
    recoded = result.adaptive["recoded"]
    assert recoded["reason"] == "over" and recoded["first_estimate"] > 31.0 + 1.0, recoded
    estimate = result.adaptive["estimated_psnr"]
    achieved = float(psnr_per_frame(src, rebuild(tmp_path / "b.frs")).mean())
    assert achieved >= 31.0 and estimate == pytest.approx(achieved, abs=0.6), (estimate, achieved)
    assert not any("coarser than planned" in w for w in result.warnings)
    with fb.open_bundle(tmp_path / "b.frs") as folder:
        selection = fb.read_manifest(folder).selection
        assert selection["estimated_psnr"] == estimate and selection["recoded"] == recoded
    calm = compress(Path(__file__).parent / "data" / "openh264_test_qcif_cabac.264", tmp_path / "calm.frs",
                    target_psnr=30.0)
    assert calm.adaptive is not None and 30.0 - 0.5 <= calm.adaptive["estimated_psnr"] <= 30.0 + 1.0
    assert "recoded" not in calm.adaptive
    capsys.readouterr()
    assert cli_main(["compress", str(source), "-o", str(tmp_path / "c.frs"), "--target-psnr", "31"]) == 0
    assert "coded twice: the first coding was estimated at" in capsys.readouterr().out


def test_a_surplus_is_left_where_a_second_coding_would_break_the_time_bound(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The val clip ``test_qcif`` (street) at 34 dB: every frame kept, x264 medium codes it finer
    than the probe foretold, estimated 1-2 dB over the target. A second coding of every frame
    would take the compression past twice x264 medium's time (issue 12's bound), so the surplus is
    left, said in the report and by the CLI; the estimate is what the rebuild achieves. A surplus
    over ``SURPLUS_ALWAYS_DB`` is coded again whatever the time (c00 below, three codings), and so
    is one whose kept frames are a small share (c12 above)."""
    from framers.adaptive import selector

    source = Path(__file__).parent / "data" / "openh264_test_qcif_cabac.264"
    src = list(iter_frames_rgb(source))
    result = compress(source, tmp_path / "b.frs", target_psnr=34.0)
    assert result.adaptive is not None and "recoded" not in result.adaptive
    left = result.adaptive["surplus_left"]
    estimate = result.adaptive["estimated_psnr"]
    assert left["kept_share"] == 1.0 and 1.0 < left["over_db"] <= selector.SURPLUS_ALWAYS_DB, left
    assert left["estimate"] == estimate
    assert selector.ANALYSIS_TIME + 2 * left["kept_share"] > selector.TIME_BOUND
    achieved = float(psnr_per_frame(src, rebuild(tmp_path / "b.frs")).mean())
    assert achieved >= 34.0 and estimate == pytest.approx(achieved, abs=0.3), (estimate, achieved)
    capsys.readouterr()
    assert cli_main(["compress", str(source), "-o", str(tmp_path / "c.frs"), "--target-psnr", "34"]) == 0
    said = capsys.readouterr().out
    assert "dB over the target, not coded again: with 100% of the frames kept" in said
    assert "dB over it, not coded again" not in said  # said once, on its own line
    # -q keeps the one summary line, which says it too (a trial saw why a lower target made a
    # larger bundle only without -q)
    assert cli_main(["compress", str(source), "-o", str(tmp_path / "d.frs"), "--target-psnr", "34", "-q"]) == 0
    quiet = capsys.readouterr().out
    assert "dB over it, not coded again within twice x264 medium's time" in quiet
    assert "with 100% of the frames kept" not in quiet


def test_the_first_coding_is_kept_when_the_second_comes_out_worse() -> None:
    """``keep_first_coding``: a second coding short of the target with a lower estimate than the
    first gives the first plan back (and says so in ``recoded``); one that reaches the target, or
    is short but better than a short first, stays."""
    from framers.adaptive.selector import AdaptiveSelector, Plan, _PlanState

    segment = analysis.Segment(0, 16, True)

    def plan(crf: int) -> Plan:
        return Plan(16, [], [segment], [ratemodel.Choice(1, crf, 1000.0, 35.0)], 22)

    def after_second(first_estimate: float, second_estimate: float) -> AdaptiveSelector:
        chooser = AdaptiveSelector(target_psnr=35.0)
        chooser.plan, chooser.estimated_psnr = plan(26), second_estimate
        chooser.recoded = {"reason": "over"}
        chooser._first = _PlanState(plan(20), [], first_estimate, {0: 1.0}, False, 0.0)
        return chooser

    worse = after_second(37.0, 34.2)  # a surplus corrected into a miss
    assert worse.keep_first_coding()
    assert worse.plan is not None and worse.plan.choices[0].crf == 20 and worse.crf_of(0) == 20
    assert worse.estimated_psnr == 37.0 and worse.recoded == {"reason": "over", "second_estimate": 34.2,
                                                              "kept_first": True}
    assert not worse.keep_first_coding()  # asked once
    reached = after_second(37.0, 35.1)
    assert not reached.keep_first_coding() and reached.plan is not None and reached.plan.choices[0].crf == 26
    better = after_second(33.0, 34.2)  # a shortfall made smaller
    assert not better.keep_first_coding() and better.estimated_psnr == 34.2


def test_sample_gaps_picks_dropped_frames_between_kept_ones() -> None:
    """Two gaps per segment that drops frames (near a third and two thirds of it), each
    with up to two dropped frames around its middle, both ends really kept; none in a segment
    that keeps every frame; a frame the pipeline kept beyond the plan splits a gap."""
    from framers.adaptive.rebuild_sample import sample_gaps

    kept = [*range(0, 48, 4), 47, *range(48, 96)]
    gaps = sample_gaps([(0, 48, 4), (48, 96, 1)], kept)
    assert gaps == [(16, 20, [18, 19]), (32, 36, [34, 35])]
    assert sample_gaps([(0, 48, 2)], [*range(0, 48, 2), 47]) == [(16, 18, [17]), (32, 34, [33])]
    assert sample_gaps([(0, 48, 1)], list(range(48))) == []
    split = sample_gaps([(0, 32, 16)], [0, 5, 16, 31])  # 5 kept at a cut, say
    assert split == [(5, 16, [10, 11]), (16, 31, [23, 24])]


def test_the_rebuilt_sample_is_budgeted_by_pixels() -> None:
    """A sampled gap costs about the same at every frame size (the network's input is scaled to a
    ~96-191 px short side), x264's coding scales with the pixels: the gaps are bounded by the
    video's pixels (a 340x256 video of 300 frames rebuilt 12 gaps, more time than x264 medium's
    whole coding of it), spread over the video; 480p and larger keep two per segment."""
    from framers.adaptive.rebuild_sample import MIN_GAPS, gap_budget, sample_gaps

    segments = [(k, k + 48, 4) for k in range(0, 288, 48)]
    kept = [i for start, stop, _ in segments for i in range(start, stop, 4)] + [287]
    every = sample_gaps(segments, kept)
    assert len(every) == 12
    small = gap_budget(288, 340 * 256)
    assert small == 4 == MIN_GAPS and gap_budget(288, 854 * 480) >= len(every)
    few = sample_gaps(segments, kept, small)
    assert few == [every[k] for k in (0, 4, 7, 11)]  # the first and the last, spread over the video
    assert sample_gaps(segments, kept, gap_budget(288, 854 * 480)) == every
    assert gap_budget(64, 176 * 144) == MIN_GAPS  # a 64-frame cut of the RD bench keeps all its gaps


def test_measure_sample_matches_what_the_decoder_gets(tmp_path: Path) -> None:
    """``measure_sample`` decodes sampled kept frames and rebuilds sampled dropped frames from the
    decoded kept frames on either side as the decoder does: on a real clip kept every 4th frame,
    its errors are those of the full rebuild (``iter_reconstructed``) of the same frames, within
    0.3 dB for rebuilt frames and exactly for kept ones; kept frames checked are the gaps' ends
    (``sample_kept``), or spread over a segment that drops nothing."""
    from framers.adaptive.rebuild_sample import measure_sample, sample_gaps, sample_kept

    source = Path(__file__).parent / "data" / "openh264_test_qcif_cabac.264"
    compress(source, tmp_path / "b", selector="stride", stride=4)
    manifest = fb.read_manifest(tmp_path / "b")
    kept = manifest.kept_indices()
    spans = [(0, manifest.n_frames, 4)]
    gaps = sample_gaps(spans, kept)
    checks = sample_kept(spans, kept, gaps)
    assert checks == sorted({i for left, right, _ in gaps for i in (left, right)})
    assert sample_kept([(0, 16, 1), (16, 30, 1)], list(range(30)), []) == [0, 5, 10, 15, 16, 20, 25, 29]
    coded, rebuilt = measure_sample(source, tmp_path / "b" / fb.KEYFRAMES_H264, kept, manifest.pts, gaps, checks)
    assert sorted(rebuilt) == sorted(i for _, _, frames in gaps for i in frames) and len(rebuilt) == 4
    assert sorted(coded) == checks
    src = list(iter_frames_rgb(source))
    full = rebuild(tmp_path / "b")
    for i, err in rebuilt.items():
        whole = float(psnr_per_frame([src[i]], [full[i]])[0])
        assert 10 * np.log10(255.0**2 / err) == pytest.approx(whole, abs=0.3), (i, err, whole)
    for i, err in coded.items():
        assert 10 * np.log10(255.0**2 / err) == pytest.approx(float(psnr_per_frame([src[i]], [full[i]])[0]), abs=0.01)


def test_iter_keyframes_selected_decodes_on_a_thread(tmp_path: Path) -> None:
    """The wanted kept frames in order, equal to the plain decoder's; a stream shorter than the
    kept list is a BundleError; closing early stops the decoding thread."""
    import threading

    from framers.errors import BundleError
    from framers.keyframes import iter_keyframes, iter_keyframes_selected

    source = Path(__file__).parent / "data" / "openh264_test_qcif_cabac.264"
    compress(source, tmp_path / "b", selector="stride", stride=4)
    kept = fb.read_manifest(tmp_path / "b").kept_indices()
    stream = tmp_path / "b" / fb.KEYFRAMES_H264
    plain = dict(zip(kept, iter_keyframes(stream, len(kept)), strict=True))
    wanted = {kept[1], kept[3], kept[-1]}
    picked = list(iter_keyframes_selected(stream, kept, wanted))
    assert [i for i, _ in picked] == sorted(wanted)
    assert all(np.array_equal(rgb, plain[i]) for i, rgb in picked)
    with pytest.raises(BundleError, match="holds"):
        list(iter_keyframes_selected(stream, [*kept, 999], {kept[0]}))
    early = iter_keyframes_selected(stream, kept, set(kept))
    next(early)
    early.close()
    assert not any(t.name == "framers-keyframe-decoder" for t in threading.enumerate())


def test_the_estimate_sees_how_badly_synthetic_frames_are_rebuilt(tmp_path: Path) -> None:
    """c00 (testsrc2) at 28 dB: the view features foretell its dropped frames' rebuild error far
    too low (a fresh-user trial: estimated 27.7 dB, got 26.6, unsaid). A rebuilt sample of them
    measures that error: the first estimate is then short of the target by more than 0.5 dB
    (26.6-26.8), so the plan is made again with it and the rebuilt video reaches the target; the
    final estimate is within 0.25 dB of what the rebuild achieves."""
    source = CASES / "c00_baseline.mp4"
    src = list(iter_frames_rgb(source))
    result = compress(source, tmp_path / "b.frs", target_psnr=28.0)
    assert result.adaptive is not None
    recoded = result.adaptive["recoded"]
    assert recoded["reason"] == "short" and recoded["first_estimate"] < 28.0 - 0.5, recoded
    assert any(stride > 1 for _, _, stride, _ in recoded["first_segments"])
    achieved = float(psnr_per_frame(src, rebuild(tmp_path / "b.frs")).mean())
    assert achieved >= 28.0 - 0.5 and result.adaptive["estimated_psnr"] == pytest.approx(achieved, abs=0.25)
    assert result.adaptive["rebuild_sample"]["kept_frames"] >= 4


def test_a_shortfall_near_crf_51_is_re_planned_where_the_probes_measured(tmp_path: Path) -> None:
    """c20 (VP9 with alpha: composited on black, a small object): the probe at CRF 26 sees next to
    no coding error, so the plan took CRF 51, where x264's error of the small object explodes
    (kept frames at 43 dB) while its bytes hardly fall. Re-planned with the measured error at
    every CRF alike, the second coding stayed at CRF 51 at every target from 36 to 40 dB (~36 dB,
    and the warning's "ask about 40 dB" looped, a fresh-user trial's find). The shortfall's
    re-plan stays within SLOPE_SPAN of the probes' CRFs and reaches the target."""
    source = CASES / "c20_vp9_alpha.webm"
    src = list(iter_frames_rgb(source))
    result = compress(source, tmp_path / "b.frs", target_psnr=38.0)
    assert result.adaptive is not None
    recoded = result.adaptive["recoded"]
    assert recoded["reason"] == "short" and {crf for *_, crf in recoded["first_segments"]} == {51}, recoded
    top = max(result.adaptive["probe_crf"], result.adaptive["slope_probe_crf"]) + ratemodel.SLOPE_SPAN
    assert all(seg["crf"] <= top for seg in result.adaptive["segments"])
    achieved = float(psnr_per_frame(src, rebuild(tmp_path / "b.frs")).mean())
    assert achieved >= 38.0 and not any("ask about" in w for w in result.warnings), (achieved, result.warnings)


def test_a_surplus_corrected_into_a_miss_is_coded_between_the_two(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """c00 (testsrc2) at 35 dB: the first coding came out ~4.9 dB over, the surplus's re-plan ~2 dB
    short, and the first coding was kept: 105 % of the source's bytes, and a lower target gave a
    larger file (a fresh-user trial). The two codings bracket the target: a third at CRFs between
    them reaches it, in fewer bytes than the first (at 34 dB a fourth, between the third and the
    first), and a lower target costs fewer bytes."""
    source = CASES / "c00_baseline.mp4"
    src = list(iter_frames_rgb(source))
    result = compress(source, tmp_path / "b.frs", target_psnr=35.0)
    assert result.adaptive is not None
    recoded = result.adaptive["recoded"]
    assert recoded["reason"] == "over" and recoded["first_estimate"] > 36.0, recoded
    assert recoded["second_estimate"] < 34.5 and "bracketed" in recoded and not recoded.get("kept_first"), recoded
    first = {crf for *_, crf in recoded["first_segments"]}
    third = {seg["crf"] for seg in result.adaptive["segments"]}
    assert min(first) < min(third), (first, third)
    achieved = float(psnr_per_frame(src, rebuild(tmp_path / "b.frs")).mean())
    assert achieved >= 35.0 - 0.5 and result.adaptive["estimated_psnr"] == pytest.approx(achieved, abs=0.5)
    # each segment's estimate of the coding made (its planned PSNR is the model's, ~3.5 dB off here)
    segments = result.adaptive["segments"]
    weighted = sum(s["estimated_psnr"] * (s["stop"] - s["start"]) for s in segments) / len(src)
    assert weighted == pytest.approx(result.adaptive["estimated_psnr"], abs=0.02), segments
    assert result.bundle_bytes < result.source_bytes
    # at 34 dB the third coding, interpolated linearly, fell short too (testsrc2's PSNR drops ~3 dB
    # between CRF 23 and 25, then ~0.8 dB a step) and the first (5 dB over) was kept, so 34 dB cost
    # more than 35 (a fresh-user trial): a fourth coding goes between the third and the first
    at34 = compress(source, tmp_path / "b34.frs", target_psnr=34.0)
    assert at34.adaptive is not None
    recoded34 = at34.adaptive["recoded"]
    assert recoded34["brackets"] == 2 and not recoded34.get("kept_first"), recoded34
    assert recoded34["third_estimate"] < 34.0 - 0.5 <= recoded34["fourth_estimate"], recoded34
    lower = compress(source, tmp_path / "lower.frs", target_psnr=32.0)
    assert lower.bundle_bytes < at34.bundle_bytes < result.bundle_bytes
    capsys.readouterr()
    assert cli_main(["compress", str(source), "-o", str(tmp_path / "c.frs"), "--target-psnr", "34"]) == 0
    said = capsys.readouterr().out
    assert "coded a third time at CRFs between the two" in said and "dB estimated once coded" in said
    assert "coded four times" in said and "coded a fourth time between it and the first" in said


def test_an_estimate_still_short_is_said_by_compress_and_reconstruct(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """When even the second coding's estimate is more than 0.5 dB under the target, the job's
    warnings say so with the target to ask for; ``reconstruct`` gives the estimate instead of
    saying the target is what the rebuilt frames reach whenever it is under the target (a
    fresh-user trial: c00 at 28 dB, estimated 27.7, was said to reach 28)."""
    from framers.adaptive.selector import AdaptiveSelector
    from framers.pipeline import _adaptive_warnings

    chooser = AdaptiveSelector(target_psnr=31.0)
    chooser.estimated_psnr = 28.7
    (warning,) = _adaptive_warnings(chooser)
    assert "estimated at 28.7 dB for target_psnr 31 dB" in warning and "ask about 33 dB" in warning
    chooser.estimated_psnr = 30.6  # within 0.5 dB: a hit in issue 12's protocol, nothing said
    assert _adaptive_warnings(chooser) == []
    compress(CASES / "c00_baseline.mp4", tmp_path / "b.frs", target_psnr=30.0)
    with fb.open_bundle(tmp_path / "b.frs") as folder:  # the bundle as if its estimate had fallen short
        manifest = fb.read_manifest(folder)
        manifest.selection["estimated_psnr"] = 27.0
        fb.write_manifest(folder, manifest)
        capsys.readouterr()
        assert cli_main(["reconstruct", str(folder), "-o", str(tmp_path / "out.mp4")]) == 0
    assert "estimated at 27.0 dB when the bundle was made (its target: 30 dB)" in capsys.readouterr().out
    with fb.open_bundle(tmp_path / "b.frs") as folder:  # 0.3 dB under: no warning, but not "reached"
        manifest = fb.read_manifest(folder)
        manifest.selection["estimated_psnr"] = 29.7
        fb.write_manifest(folder, manifest)
        assert cli_main(["reconstruct", str(folder), "-o", str(tmp_path / "out2.mp4")]) == 0
    assert "estimated at 29.7 dB when the bundle was made" in capsys.readouterr().out


def test_short_video_keeping_every_frame_gets_a_measured_crf(tmp_path: Path) -> None:
    """A 9-frame fast pan keeps every frame; its CRF is then set by trial encodes at the final
    preset, not by the one-probe prediction (1-2 dB optimistic on such videos before), so the
    rebuilt video reaches the target and the job record says what was measured."""
    source = write_pan(tmp_path / "short.mkv", frames=9, speed=9.0)
    result = compress(source, tmp_path / "b.frs", target_psnr=38.0)
    assert result.adaptive is not None and result.kept_frames == 9
    verified = result.adaptive["verified"]
    assert verified["reached"] and 1 <= verified["encodes"] <= selector.VERIFY_ENCODES
    assert {s["crf"] for s in result.adaptive["segments"]} == {verified["crf"]}
    achieved = float(psnr_per_frame(list(iter_frames_rgb(source)), rebuild(tmp_path / "b.frs")).mean())
    assert achieved >= 38.0
    assert achieved == pytest.approx(verified["measured_psnr"], abs=0.15)
    assert not any("out of reach" in w for w in result.warnings)
    assert "estimated_psnr" not in result.adaptive  # measured already: no estimate on top


#: x264 medium's mean PSNR (dB) of one 320x240 picture by CRF, as ``coding.measured_psnr`` measured
#: it on a fresh-user trial's one-frame clip: flat to CRF 19, then a cliff
ONE_PICTURE_PSNR = {15: 40.42, 16: 39.94, 17: 40.01, 18: 40.64, 19: 40.79, 20: 37.68, 21: 35.47, 22: 33.61,
                    23: 32.01, 24: 30.99, 25: 30.23, 26: 29.56, 27: 28.94, 28: 28.20, 29: 27.62}


@pytest.mark.parametrize(("start", "aim", "best"), [(17, 35.1, 21), (18, 37.1, 20), (21, 33.1, 22), (25, 35.1, 21)])
def test_the_crf_search_stays_inside_its_bracket(monkeypatch: pytest.MonkeyPatch, start: int, aim: float,
                                                  best: int) -> None:
    """Once one CRF reaches the aim and a coarser one does not, the trials stay between them: the
    trial's 35 dB target had stepped from CRF 25 (30.2 dB) back past the cliff to 16 and kept CRF 17
    (40.0 dB), more bytes than its 37 dB target made. The x264 curve is the measured one above
    (an encode's PSNR stands in here for the search's arithmetic; the searches above run x264)."""
    def measured(frames: list[np.ndarray], crf: int, *args: object) -> tuple[np.ndarray, int]:
        return np.array([ONE_PICTURE_PSNR[crf]]), 20000 - 500 * crf

    monkeypatch.setattr(selector.coding, "measured_psnr", measured)
    tried = selector._crf_search([], [0], start, aim)
    assert len(tried) <= selector.VERIFY_ENCODES
    good = [c for c, (p, _) in tried.items() if p.mean() >= aim]
    assert max(good) == best, tried


def test_short_video_dropping_frames_is_measured_through_the_rebuild(tmp_path: Path) -> None:
    """A 12-frame static shot drops frames; the trial codes the kept frames and rebuilds the rest
    with framemae, so what is measured is what the bundle rebuilds."""
    source = write_pan(tmp_path / "static.mkv", frames=12, speed=0.0)
    result = compress(source, tmp_path / "b.frs", target_psnr=36.0)
    assert result.adaptive is not None and result.kept_frames < 12
    verified = result.adaptive["verified"]
    achieved = float(psnr_per_frame(list(iter_frames_rgb(source)), rebuild(tmp_path / "b.frs")).mean())
    assert achieved == pytest.approx(verified["measured_psnr"], abs=0.15)
    assert verified["reached"] and achieved >= 36.0


def test_a_bundle_larger_than_its_source_is_said() -> None:
    """Larger than the source: said, with why (audio, or a source coded more coarsely) and what
    to change (the target in the adaptive mode, the CRF or the kept share otherwise)."""
    from fractions import Fraction

    from framers import bundle as fb
    from framers.pipeline import size_warnings

    def manifest(adaptive: dict | None) -> fb.Manifest:
        return fb.Manifest(source={}, clip_len=16, slot_len=2, n_frames=4, kept=[[0, 3]], time_base=Fraction(1, 30),
                           pts=[], fps=30.0, keyframes={}, selection={}, adaptive=adaptive)

    assert size_warnings(900, 1000, 0, manifest(None)) == []
    (said,) = size_warnings(2000, 1000, 1500, manifest({"target_psnr": 35}))
    assert "2000 bytes" in said and "is 1500 bytes" in said and "AAC" in said and "--target-psnr" not in said
    (said,) = size_warnings(2000, 1000, 100, manifest({"target_psnr": 35}))
    assert "coded more coarsely" in said and "--target-psnr" in said
    (said,) = size_warnings(2000, 1000, 100, manifest(None))
    assert "coded more coarsely" in said and "--crf" in said


@pytest.mark.parametrize(
    ("colour", "display", "pix_fmt", "as_decoded"),
    [
        (None, None, "yuv420p", True),  # untagged SD: BT.601 limited range, the codec's own colours
        ((6, 6, 6, 1), None, "yuv420p", True),  # tagged BT.601
        ((1, 1, 1, 1), None, "yuv420p", False),  # BT.709: another matrix
        ((6, 6, 6, 2), None, "yuv420p", False),  # full range
        (None, (90, False, False), "yuv420p", False),  # shown turned: the RGB is the turned picture
        (None, None, "yuv444p", False),  # coded as 4:2:0: the chroma is averaged
    ],
)
def test_codec_yuv_skips_rgb_only_where_the_trip_gives_the_picture_back(
        colour: tuple[int, int, int, int] | None, display: tuple[int, bool, bool] | None, pix_fmt: str,
        as_decoded: bool, tmp_path: Path) -> None:
    """``coding.codec_yuv``: the decoded picture itself (a fresh frame with no picture type) where
    converting it to RGB and back gives it back up to rounding; otherwise exactly the conversion
    (``to_codec_yuv``). Then the colour path's floor (``conversion_mse``) is nil."""
    from framers.adaptive.coding import codec_yuv, conversion_mse, planes_of, to_codec_yuv
    from framers.geometry import CLIP_LEN
    from framers.video import FrameReader
    from tests.videogen import write_variant

    source = write_variant(tmp_path / "v.mp4", width=96, height=64, frames=3, pix_fmt=pix_fmt, colour=colour,
                           display=display)
    with FrameReader(source) as reader:
        clip = next(iter(reader.clips(CLIP_LEN)))
    for i in range(len(clip)):
        yuv, converted = codec_yuv(clip, i), to_codec_yuv(clip.frame(i))
        assert (yuv.format.name, yuv.width, yuv.height) == (converted.format.name, converted.width, converted.height)
        if as_decoded:
            decoded = clip.pictures()[i]
            assert yuv is not decoded and yuv.pict_type == av.video.frame.PictureType.NONE
            assert all(np.array_equal(a, b) for a, b in zip(planes_of(yuv), planes_of(decoded), strict=True))
            # up to rounding and testsrc2's out-of-gamut colours, which the trip clips
            assert all(np.abs(a.astype(np.int16) - b).mean() < 1.0
                       for a, b in zip(planes_of(yuv), planes_of(converted), strict=True))
            assert conversion_mse(clip.frame(i), yuv) == 0.0
        else:
            assert all(np.array_equal(a, b) for a, b in zip(planes_of(yuv), planes_of(converted), strict=True))


def test_a_few_frame_video_says_every_frame_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 2-frame video keeps both frames whatever the stride its one segment gets (a segment keeps
    its first frame and a shot its last), and the per-segment line says so rather than "every 16
    kept"; a 3-frame one keeps 2 of 3, and the line counts them."""
    from tests.videogen import write_video

    for frames, line in ((2, r"frames 0-1: every frame kept,"), (3, r"frames 0-2: every \d+ kept \(2 of 3\),")):
        clip = write_video(tmp_path / f"{frames}.mp4", frames=frames)
        assert cli_main(["compress", str(clip), "-o", str(tmp_path / f"{frames}.frs"), "--target-psnr", "30"]) == 0
        out = capsys.readouterr().out
        assert re.search(line, out), out


@pytest.mark.parametrize(("width", "height"), [(8, 8), (64, 2), (2, 64), (200, 16)])
def test_pictures_dis_cannot_take_are_compressed(width: int, height: int, tmp_path: Path) -> None:
    """DIS raised on an 8×8 video and crashes the process (a segmentation fault) on a 64×12
    view: a fresh-user trial's tiny and strip videos failed in the default mode, the service
    retrying them. Flows are computed on the pictures padded to a size DIS takes."""
    from framers.motion import _dis, dis_flow
    from tests.videogen import write_variant

    rng = np.random.default_rng(0)
    for shape in [(8, 8), (2, 64), (12, 64), (16, 200), (64, 12)]:
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        flow = dis_flow(_dis("fast"), a, np.roll(a, 1, axis=1))
        assert flow.shape == (*shape, 2) and np.isfinite(flow).all()
    a = rng.integers(0, 256, (48, 64), dtype=np.uint8)  # a size DIS takes: its own flow, unpadded
    b = np.roll(a, 2, axis=1)
    assert np.array_equal(dis_flow(_dis("fast"), a, b), np.asarray(_dis("fast").calc(a, b, None)))
    source = write_variant(tmp_path / "small.mp4", width=width, height=height, frames=30, pix_fmt="yuv444p")
    result = compress(source, tmp_path / "small.frs", target_psnr=30.0)
    assert result.frames == 30 and (result.width, result.height) == (width, height)
    assert len(rebuild(tmp_path / "small.frs")) == 30


def test_a_surplus_is_not_held_by_a_segment_under_the_floor(tmp_path: Path) -> None:
    """A fresh-user trial's 60 s of 64×64 testsrc2 at a 35 dB target: the rate model planned every
    frame kept at CRF 12 with one segment at every 4th frame (29 dB predicted); coded, the video
    was 4.5 dB over the target and that segment under the floor (27 dB). The surplus's re-plan
    held each segment to its stride, so every coarser CRF of the shot priced that segment out: coded
    again at CRF 13, still 39.5 dB, bundle larger than the source. That segment may now keep more
    frames, and the shot's CRF moves."""
    from tests.videogen import write_variant

    source = write_variant(tmp_path / "long.mp4", width=64, height=64, fps=30, frames=1800,
                           options={"crf": "20", "preset": "medium"})
    report = compress(source, tmp_path / "long.frs", target_psnr=35.0).adaptive
    assert report is not None and report["recoded"]["reason"] == "over", report.get("recoded")
    assert report["estimated_psnr"] < 35.0 + selector.ESTIMATE_SURPLUS_DB, report["estimated_psnr"]
    first = {start: (stride, crf) for start, _, stride, crf in report["recoded"]["first_segments"]}
    now = {s["start"]: (s["stride"], s["crf"]) for s in report["segments"]}
    held = [start for start, (stride, _) in first.items() if stride > 1]
    assert any(now[start][0] < first[start][0] for start in held), (first, now)  # the one under the floor
    assert min(crf for _, crf in now.values()) > max(crf for _, crf in first.values())


def test_a_correction_may_keep_more_frames_where_asked() -> None:
    o = ratemodel.SegmentOptions((1, 2, 4), np.array([20, 21, 22]), np.arange(9.0).reshape(3, 3),
                                 np.arange(9.0).reshape(3, 3) * 48, 48)
    assert ratemodel.restricted(o, 2, 21, 22).strides == (2,)
    finer = ratemodel.restricted(o, 2, 21, 22, finer=True)
    assert finer.strides == (1, 2) and finer.bytes.tolist() == [[1.0, 2.0], [4.0, 5.0]]
    assert ratemodel.predicted_psnr(o, 4, 21) == 7.0
