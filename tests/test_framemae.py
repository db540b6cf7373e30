"""FrameMAE reconstructor, motion prior, model store and runtime (no torch needed)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from framers import model_store, motion, runtime
from framers.errors import ModelError
from framers.reconstructors.base import KeptFrame
from framers.reconstructors.classical import LinearReconstructor, linear_prior
from framers.reconstructors.framemae import FrameMAEReconstructor, feather, run_tiled, tile_starts

ROOT = Path(__file__).resolve().parents[1]


def moving_video(n: int = 40, h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """A smooth texture panning 2 px per frame with a patterned square moving 3 px per frame."""
    rng = np.random.default_rng(seed)
    big_w = w + 2 * n + 8
    base = rng.random((h // 8 + 1, big_w // 8 + 1, 3)).astype(np.float32) * 255
    texture = cv2.GaussianBlur(cv2.resize(base, (big_w, h), interpolation=cv2.INTER_CUBIC), (0, 0), 3)
    texture = np.clip(texture, 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:24, 0:24]
    patch = np.stack(
        [128 + 100 * np.sin(xx / 3.0), 128 + 100 * np.cos(yy / 4.0), 128 + 80 * np.sin((xx + yy) / 5.0)], axis=-1
    ).astype(np.uint8)
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i] = texture[:, 2 * i : 2 * i + w]
        x0 = 10 + (3 * i) % (w - 40)
        y0 = min(40, h - 24)
        frames[i, y0 : y0 + 24, x0 : x0 + 24] = patch
    return frames


def kept_of(frames: np.ndarray, indices: list[int]) -> list[KeptFrame]:
    return [KeptFrame(i, frames[i]) for i in indices]


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    runtime.clear_cache()


# ------------------------------------------------------------------------------------ motion
def test_linear_candidate_is_linear_prior() -> None:
    frames = moving_video()
    kept = kept_of(frames, [-0 + 0, 4, 8, 12, 16])
    flows = motion.WindowFlows(kept)
    plans = motion.plan_window([k.index for k in kept], 0, 16)
    for plan in plans:
        cands = flows.candidates(plan)
        np.testing.assert_allclose(cands[0], linear_prior(kept, plan.index, plan.index + 1)[0], atol=1e-4)
        if not plan.interpolated:  # kept or held frames: every candidate is the same image
            assert np.array_equal(cands[0], cands[1]) and np.array_equal(cands[0], cands[2])


def test_flow_candidates_follow_motion() -> None:
    frames = moving_video()
    kept = kept_of(frames, [0, 8])
    flows = motion.WindowFlows(kept)
    plan = motion.plan_window([0, 8], 4, 5)[0]
    lin, prev, nxt = flows.candidates(plan)
    truth = frames[4].astype(np.float32)
    err = [float(np.mean((c - truth) ** 2)) for c in (lin, prev, nxt)]
    assert min(err[1], err[2]) < 0.75 * err[0]


def test_flow_is_deterministic_across_frame_sizes() -> None:
    frames = moving_video()
    kept = kept_of(frames, [0, 8])
    first = motion.WindowFlows(kept).pair(0, 1)[0]
    motion.WindowFlows(kept_of(moving_video(n=9, h=40, w=48), [0, 8])).pair(0, 1)
    assert np.array_equal(first, motion.WindowFlows(kept).pair(0, 1)[0])


def test_region_and_scaled_candidates() -> None:
    frames = moving_video()
    kept = kept_of(frames, [0, 8])
    flows = motion.WindowFlows(kept)
    plan = motion.plan_window([0, 8], 3, 4)[0]
    full = flows.candidates(plan)
    region = flows.candidates(plan, 1, (10, 20, 32, 48))
    np.testing.assert_allclose(region, full[:, 10:42, 20:68], atol=1e-4)
    small = flows.candidates(plan, 2)
    assert small.shape == (3, 60, 80, 3)
    x = motion.net_input_window(flows, motion.plan_window([0, 8], 0, 16), 2)
    assert x.shape == (motion.IN_CHANNELS, 16, 60, 80) and x.dtype == np.float32


def test_trajectory_candidates_sample_both_kept_frames_along_one_flow() -> None:
    """With a known flow (a uniform shift of 4 px: F(b→a) = +4, F(a→b) = −4 in x), the
    trajectory set at t = 1/2 is the mean of a and b each shifted 2 px along it, and the warp
    set's one-sided samples are its halves (interior pixels, where no border is replicated)."""
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    kept = [KeptFrame(0, a), KeptFrame(2, b)]
    plan = motion.plan_window([0, 2], 1, 2)[0]
    f_ba = np.zeros((24, 40, 2), np.float32)
    f_ba[..., 0] = 4.0
    sets = {}
    for name in motion.CANDIDATE_SETS:
        flows = motion.WindowFlows(kept, scale_of_flow=1, candidate_set=name)
        flows._cache[("flow", (0, 2), (1, flows.preset))] = (f_ba, -f_ba)  # the known flow
        sets[name] = flows.candidates(plan)
    inner = (slice(None), slice(4, -4))
    af, bf = a.astype(np.float32), b.astype(np.float32)
    a_ahead, b_behind = np.roll(af, -2, axis=1), np.roll(bf, 2, axis=1)  # a(x + 2), b(x − 2)
    _, prev_w, next_w = sets["warp"]
    _, prev_t, next_t = sets["trajectory"]
    np.testing.assert_allclose(prev_w[inner], a_ahead[inner], atol=1e-3)
    np.testing.assert_allclose(next_w[inner], b_behind[inner], atol=1e-3)
    np.testing.assert_allclose(prev_t[inner], (0.5 * (a_ahead + b_behind))[inner], atol=1e-3)
    np.testing.assert_allclose(next_t[inner], (0.5 * (a_ahead + b_behind))[inner], atol=1e-3)
    with pytest.raises(KeyError, match="candidate set"):
        motion.WindowFlows(kept, candidate_set="splat")


def test_mix_with_one_hot_weights_returns_candidate() -> None:
    rng = np.random.default_rng(1)
    cands = rng.random((3, 40, 50, 3)).astype(np.float32)
    weights = np.zeros((3, 10, 12), np.float32)
    weights[2] = 1.0
    np.testing.assert_allclose(motion.mix(cands, weights), cands[2], atol=1e-5)


# ------------------------------------------------------------------------------------ tiling
@pytest.mark.parametrize("length", [10, 64, 65, 100, 171, 300])
def test_tiles_cover_with_overlap(length: int) -> None:
    starts = tile_starts(length, 64, 16)
    covered = np.zeros(max(length, 64), bool)
    for s in starts:
        covered[s : s + 64] = True
    assert covered[:length].all()
    for a, b in itertools.pairwise(starts):
        assert a + 64 - b >= 16


def test_run_tiled_is_seamless_for_a_pointwise_network() -> None:
    rng = np.random.default_rng(2)
    x = rng.random((4, 16, 90, 150)).astype(np.float32)
    out = run_tiled(lambda b: b[:, :3] * 2.0 + 1.0, x, 64, 3)
    np.testing.assert_allclose(out, x[:3] * 2.0 + 1.0, atol=1e-5)
    assert feather(64, 16).min() > 0


# ------------------------------------------------------------------------------------ store
def shipped_dir() -> Path:
    return model_store.model_dir("framemae", root=ROOT / "model_store")


def test_shipped_model_loads_and_reports_version() -> None:
    loaded = runtime.load_model(shipped_dir())
    rec = FrameMAEReconstructor(shipped_dir())
    assert rec.model_versions == {"framemae": loaded.version}
    assert loaded.config.size_bytes < 10_000_000
    assert (shipped_dir() / "model.onnx").stat().st_size == loaded.config.size_bytes


def test_default_model_dir_uses_env_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for version in ("2026.1.2", "2026.1.10"):
        shutil.copytree(shipped_dir(), tmp_path / "framemae" / version)
        cfg = json.loads((tmp_path / "framemae" / version / "config.json").read_text())
        cfg["version"] = version
        (tmp_path / "framemae" / version / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("FRAMERS_MODEL_STORE", str(tmp_path))
    rec = FrameMAEReconstructor()
    assert rec.model_versions == {"framemae": "2026.1.10"}


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "v"
    shutil.copytree(shipped_dir(), target)
    data = bytearray((target / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (target / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        runtime.load_model(target)


def test_io_spec_mismatch_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "v"
    shutil.copytree(shipped_dir(), target)
    cfg = json.loads((target / "config.json").read_text())
    cfg["inputs"][0]["dims"][-1] = 32
    (target / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="dims"):
        runtime.load_model(target)
    cfg["inputs"][0]["dims"][-1] = 64
    cfg["outputs"][0]["name"] = "pixels"
    (target / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="names"):
        runtime.load_model(target)


def test_missing_store_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        model_store.model_dir("framemae", root=tmp_path)
    with pytest.raises(ModelError):
        model_store.read_config(tmp_path)


def test_runtime_providers_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    assert runtime.providers()[-1] == "CPUExecutionProvider"
    monkeypatch.setenv("FRAMERS_ORT_THREADS", "2")
    assert runtime.thread_count() == 2
    monkeypatch.setenv("FRAMERS_ORT_THREADS", "two")
    with pytest.raises(ModelError):
        runtime.thread_count()
    monkeypatch.delenv("FRAMERS_ORT_THREADS")
    assert runtime.load_model(shipped_dir()).session is runtime.load_model(shipped_dir()).session


# ------------------------------------------------------------------------------------ reconstructor
@pytest.mark.parametrize("offsets", [(2, 3, 10, 11), (0, 4, 8, 12), (0, 1, 14, 15)])
def test_reconstructor_keeps_kept_frames_and_shapes(offsets: tuple[int, ...]) -> None:
    frames = moving_video(n=37)
    indices = [c + o for c in range(0, 37, 16) for o in offsets if c + o < 37]
    rec = FrameMAEReconstructor(shipped_dir())
    out = list(rec.reconstruct(iter(kept_of(frames, indices)), 37, 16))
    assert len(out) == 37
    for i, frame in enumerate(out):
        assert frame.shape == frames[0].shape and frame.dtype == np.uint8
        if i in indices:
            assert np.array_equal(frame, frames[i])


def test_reconstructor_on_moving_content_is_not_worse_than_linear() -> None:
    frames = moving_video(n=32)
    indices = [0, 4, 8, 12, 16, 20, 24, 28]
    rec = FrameMAEReconstructor(shipped_dir())
    ours = np.stack(list(rec.reconstruct(iter(kept_of(frames, indices)), 32, 16))).astype(np.float64)
    lin = np.stack(list(LinearReconstructor().reconstruct(iter(kept_of(frames, indices)), 32, 16)))
    err_ours = np.mean((ours - frames) ** 2)
    err_lin = np.mean((lin.astype(np.float64) - frames) ** 2)
    assert err_ours <= err_lin * 1.05


def test_static_video_is_reconstructed_exactly() -> None:
    frames = np.repeat(moving_video(n=1), 16, axis=0)
    rec = FrameMAEReconstructor(shipped_dir())
    out = rec.reconstruct_window(kept_of(frames, [2, 3, 10, 11]), 0, 16)
    assert np.abs(out.astype(int) - frames).max() <= 1


def test_tiny_frames_are_padded() -> None:
    frames = moving_video(n=16, h=40, w=48)
    rec = FrameMAEReconstructor(shipped_dir())
    out = rec.reconstruct_window(kept_of(frames, [0, 4, 8, 12]), 0, 16)
    assert out.shape == (16, 40, 48, 3)


def test_scene_cut_falls_back_to_linear() -> None:
    first = moving_video(n=8, seed=1)
    second = 255 - moving_video(n=8, seed=2)[:, ::-1]
    frames = np.concatenate([first, second])  # a cut between frames 7 and 8
    kept = kept_of(frames, [0, 4, 12, 15])
    rec = FrameMAEReconstructor(shipped_dir())
    ours = rec.reconstruct_window(kept, 0, 16)
    lin = LinearReconstructor().reconstruct_window(kept, 0, 16)
    assert np.array_equal(ours[5:12], lin[5:12])
    flows = motion.WindowFlows(kept)
    assert not flows.flow_explains(1, 2)
    assert flows.flow_explains(0, 1)


def test_tiny_frames_fall_back_to_the_linear_prior() -> None:
    """Frames too small for optical flow (1x1, 2x2 uploads) are rebuilt, not crashed on."""
    from framers.reconstructors.base import KeptFrame as _Kept
    from framers.reconstructors.classical import LinearReconstructor
    from framers.reconstructors.framemae import FrameMAEReconstructor

    kept = [_Kept(0, np.zeros((2, 2, 3), np.uint8)), _Kept(4, np.full((2, 2, 3), 200, np.uint8))]
    got = FrameMAEReconstructor().reconstruct_window(kept, 0, 8)
    assert np.array_equal(got, LinearReconstructor().reconstruct_window(kept, 0, 8))


# ------------------------------------------------------------------ flow preset, model versions
def _store_with(tmp_path: Path, versions: dict[str, str | None]) -> Path:
    """A model store holding the shipped FrameMAE weights under each version, with that version's
    ``prior.flow_preset`` (None: not named, as in 1.0.0)."""
    for version, preset in versions.items():
        target = tmp_path / "framemae" / version
        shutil.copytree(shipped_dir(), target)
        cfg = json.loads((target / "config.json").read_text())
        cfg["version"] = version
        cfg["prior"].pop("flow_preset", None)
        if preset is not None:
            cfg["prior"]["flow_preset"] = preset
        (target / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def test_the_flow_preset_comes_from_the_model_config(tmp_path: Path) -> None:
    """A model names the DIS preset it was trained with; one that names none gets ``fast`` (what
    1.0.0 was trained with); the flows and the frames follow the preset; an unknown one is a
    ModelError."""
    store = _store_with(tmp_path, {"1.0.0": None, "1.1.0": "medium", "9.9.9": "turbo"})
    old = FrameMAEReconstructor(store / "framemae" / "1.0.0")
    new = FrameMAEReconstructor(store / "framemae" / "1.1.0")
    assert (old.flow_preset, new.flow_preset) == ("fast", "medium")
    frames = moving_video(n=17)
    kept = kept_of(frames, [0, 8, 16])
    flows_old, _ = old.plan(kept, 0, 16)
    flows_new, _ = new.plan(kept, 0, 16)
    assert flows_new.preset == "medium"
    assert not np.array_equal(flows_old.pair(0, 1)[0], flows_new.pair(0, 1)[0])
    a = old.reconstruct_window(kept, 0, 16)
    b = new.reconstruct_window(kept, 0, 16)
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert np.array_equal(b[8], frames[8])  # kept frames unchanged either way
    with pytest.raises(ModelError, match="flow preset"):
        FrameMAEReconstructor(store / "framemae" / "9.9.9")
    with pytest.raises(KeyError):
        motion.WindowFlows(kept, preset="turbo")


def test_the_candidate_set_comes_from_the_model_config(tmp_path: Path) -> None:
    """``prior.candidates`` names the set the network mixes: 1.0.0's list is ``warp``, the
    trajectory list gives trajectory candidates (other frames than 1.0.0's), an unknown list is a
    ModelError (the weights mean nothing over other candidates)."""
    store = _store_with(tmp_path, {"1.0.0": None, "1.1.0": None, "9.9.9": None})
    for version, names in (("1.1.0", motion.CANDIDATE_SETS["trajectory"]), ("9.9.9", ["linear", "splat", "x"])):
        path = store / "framemae" / version / "config.json"
        cfg = json.loads(path.read_text())
        cfg["prior"]["candidates"] = list(names)
        path.write_text(json.dumps(cfg))
    old = FrameMAEReconstructor(store / "framemae" / "1.0.0")
    new = FrameMAEReconstructor(store / "framemae" / "1.1.0")
    assert (old.candidate_set, new.candidate_set) == ("warp", "trajectory")
    frames = moving_video(n=17)
    kept = kept_of(frames, [0, 8, 16])
    assert new.plan(kept, 0, 16)[0].trajectory and not old.plan(kept, 0, 16)[0].trajectory
    a, b = old.reconstruct_window(kept, 0, 16), new.reconstruct_window(kept, 0, 16)
    assert not np.array_equal(a, b) and np.array_equal(b[8], frames[8])
    with pytest.raises(ModelError, match="unknown candidates"):
        FrameMAEReconstructor(store / "framemae" / "9.9.9")
    path = store / "framemae" / "1.0.0" / "config.json"
    cfg = json.loads(path.read_text())
    cfg["prior"]["disagreement"] = True  # the warp set has no trajectory samples to compare
    path.write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="disagreement needs the trajectory"):
        FrameMAEReconstructor(store / "framemae" / "1.0.0")


def test_reconstructor_by_version_and_a_refresh_layer_keeps_its_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``get_reconstructor(name, version)`` loads that stored version; a bundle whose refresh layer
    was made with an older FrameMAE that the store still holds is rebuilt with it (the layer
    corrects that model's frames), any other bundle with the newest."""
    from fractions import Fraction

    from framers import bundle as fb
    from framers.errors import UnsupportedOptionError
    from framers.pipeline import rebuilder_for
    from framers.registry import get_reconstructor

    store = _store_with(tmp_path, {"1.0.0": None, "1.1.0": "medium"})
    monkeypatch.setenv("FRAMERS_MODEL_STORE", str(store))
    get_reconstructor.cache_clear()
    try:
        assert get_reconstructor("framemae").model_versions == {"framemae": "1.1.0"}
        assert get_reconstructor("framemae", "1.0.0").model_versions == {"framemae": "1.0.0"}
        with pytest.raises(ModelError):
            get_reconstructor("framemae", "0.5.0")
        with pytest.raises(UnsupportedOptionError):
            get_reconstructor("linear", "1.0.0")

        def manifest(refresh: dict[str, str] | None) -> fb.Manifest:
            return fb.Manifest(source={}, clip_len=16, slot_len=2, n_frames=4, kept=[[0, 3]],
                               time_base=Fraction(1, 30), pts=[], fps=30.0, keyframes={}, selection={},
                               refresh=refresh)

        layer_old = {"reconstructor": "framemae", "model": "1.0.0"}
        assert rebuilder_for(manifest(layer_old), "framemae").model_versions == {"framemae": "1.0.0"}
        assert rebuilder_for(manifest(None), "framemae").model_versions == {"framemae": "1.1.0"}
        gone = {"reconstructor": "framemae", "model": "0.5.0"}  # not in the store: the newest
        assert rebuilder_for(manifest(gone), "framemae").model_versions == {"framemae": "1.1.0"}
        assert rebuilder_for(manifest(layer_old), "linear").name == "linear"
    finally:
        get_reconstructor.cache_clear()
