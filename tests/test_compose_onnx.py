"""framemae's composition through the stored ONNX graph ``framemae_compose`` (issue 17) against the
numpy/OpenCV path, on the CPU execution provider: parity of the composed frames, a whole
reconstruct with FRAMERS_COMPOSE=onnx, the path selection, the checksum, the exporter."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from framers import model_store, motion, runtime
from framers.errors import ModelError, UnsupportedOptionError
from framers.pipeline import compress, reconstruct
from framers.reconstructors import compose_onnx
from framers.reconstructors.base import KeptFrame
from framers.rgb import to_rgb
from tests.test_framemae import moving_video

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "model_store"
#: measured (OpenCV 5.0, onnxruntime 1.32, CPU EP): max 1 gray level everywhere; mean 8e-6 to
#: 1.4e-4 on the cases below, 2.7e-3 on 1080p binary noise (bench/compose_paths.py-sized, too slow
#: for a test). The bounds leave room for other builds' float rounding, not for another computation.
MAX_ABS = 1
MEAN_ABS = 1e-3
#: the trajectory set samples four times per pixel, not twice: 2.0e-3 on the binary noise below
MEAN_ABS_TRAJECTORY = 3e-3


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime.clear_cache()
    compose_onnx._logged.clear()
    monkeypatch.delenv(compose_onnx.COMPOSE_ENV, raising=False)
    monkeypatch.delenv(model_store.STORE_ENV, raising=False)


def random_weights(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Softmax weights float32 [3, n, h//net_scale, w//net_scale], far from one-hot."""
    scale = motion.net_scale(h, w)
    logits = np.random.default_rng(seed).normal(size=(3, n, h // scale, w // scale)) * 2
    weights = np.exp(logits)
    return (weights / weights.sum(axis=0, keepdims=True)).astype(np.float32)


def numpy_compose(flows: motion.WindowFlows, plans: list[motion.FramePlan], weights: np.ndarray) -> np.ndarray:
    """What FrameMAEReconstructor.compose does for a mixed frame (numpy/OpenCV)."""
    return np.stack([cv2.convertScaleAbs(motion.mix(flows.candidates(p, as_list=True), weights[:, j]))
                     for j, p in enumerate(plans)])


def sharp_video(n: int, h: int, w: int) -> np.ndarray:
    """Binary noise moving (2.3, 1.1) px per frame: the worst case for interpolation differences."""
    rng = np.random.default_rng(1)
    big = ((rng.random((h + 40, w + 60, 3)) > 0.5) * 255).astype(np.uint8)
    return np.stack([cv2.warpAffine(big, np.float32([[1, 0, -2.3 * i], [0, 1, -1.1 * i]]), (w, h),
                                    flags=cv2.INTER_NEAREST) for i in range(n)])


@pytest.mark.parametrize(("content", "h", "w", "kept_at"), [
    ("smooth", 120, 160, [0, 8, 16]),
    ("smooth", 61, 97, [0, 3, 16]),  # odd size, uneven gaps: t = 1/3, 2/3, 1/13 …
    ("sharp", 61, 97, [0, 4, 8]),
    ("smooth", 482, 646, [0, 8]),  # flow scale 2 of a size it does not divide: flows resized ×(646/323)
])
def test_onnx_matches_numpy(content: str, h: int, w: int, kept_at: list[int]) -> None:
    frames = (moving_video if content == "smooth" else sharp_video)(kept_at[-1] + 1, h, w)
    flows = motion.WindowFlows([KeptFrame(i, frames[i]) for i in kept_at])
    plans = [p for p in motion.plan_window(kept_at, 0, kept_at[-1] + 1) if p.interpolated]
    assert all(0 < p.t < 1 for p in plans)
    weights = random_weights(len(plans), h, w)
    ref = numpy_compose(flows, plans, weights)
    out = compose_onnx.composer().compose_frames(flows, plans, weights)
    assert out.shape == ref.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(np.int16) - ref)
    assert int(diff.max()) <= MAX_ABS and float(diff.mean()) <= MEAN_ABS, (int(diff.max()), float(diff.mean()))


@pytest.mark.parametrize(("content", "h", "w", "kept_at"), [
    ("smooth", 61, 97, [0, 3, 16]),
    ("sharp", 61, 97, [0, 4, 8]),
])
def test_trajectory_graph_matches_numpy(tmp_path: Path, content: str, h: int, w: int, kept_at: list[int]) -> None:
    """The graph built for the trajectory candidate set against ``WindowFlows.interpolate`` of
    that set, within the same bounds as the warp graph."""
    pytest.importorskip("onnx")
    from training import export_compose

    export_compose.export(tmp_path, "1.1.0", "test", "trajectory")
    frames = (moving_video if content == "smooth" else sharp_video)(kept_at[-1] + 1, h, w)
    flows = motion.WindowFlows([KeptFrame(i, frames[i]) for i in kept_at], candidate_set="trajectory")
    plans = [p for p in motion.plan_window(kept_at, 0, kept_at[-1] + 1) if p.interpolated]
    weights = random_weights(len(plans), h, w)
    ref = numpy_compose(flows, plans, weights)
    out = compose_onnx.Composer(tmp_path).compose_frames(flows, plans, weights)
    diff = np.abs(out.astype(np.int16) - ref)
    assert int(diff.max()) <= MAX_ABS and float(diff.mean()) <= MEAN_ABS_TRAJECTORY, (int(diff.max()),
                                                                                     float(diff.mean()))


def test_io_binding_path_gives_the_same_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA code path (runtime.run_bound) exercised on the CPU session."""
    frames = moving_video(9, 64, 80)
    flows = motion.WindowFlows([KeptFrame(0, frames[0]), KeptFrame(8, frames[8])])
    plans = [p for p in motion.plan_window([0, 8], 0, 9) if p.interpolated]
    weights = random_weights(len(plans), 64, 80)
    plain = compose_onnx.composer()
    bound = compose_onnx.composer()
    bound.on_gpu = True
    calls: list[int] = []
    original = runtime.run_bound
    monkeypatch.setattr(runtime, "run_bound", lambda *a: calls.append(1) or original(*a))
    assert np.array_equal(bound.compose_frames(flows, plans, weights), plain.compose_frames(flows, plans, weights))
    assert calls == [1]  # the whole window (7 frames) in one run on a GPU


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([to_rgb(f) for f in container.decode(video=0)])


def test_reconstruct_with_onnx_compose_matches_numpy(tmp_path: Path, make_clip: Callable[..., Path],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    bundle = tmp_path / "bundle"
    compress(make_clip(width=96, height=64, frames=33), bundle, selector="stride", stride=4)
    outputs = {}
    ran: list[int] = []
    original = compose_onnx.Composer.run
    monkeypatch.setattr(compose_onnx.Composer, "run", lambda self, *a: ran.append(len(a[-1])) or original(self, *a))
    for mode in ("numpy", "onnx"):
        monkeypatch.setenv(compose_onnx.COMPOSE_ENV, mode)
        with caplog.at_level(logging.INFO, logger="framers.reconstructors.compose_onnx"):
            reconstruct(bundle, tmp_path / f"{mode}.mp4", reconstructor="framemae", output_crf=0)
        assert f"framemae composition: {mode} path" in caplog.text
        outputs[mode] = decoded(tmp_path / f"{mode}.mp4").astype(np.float64)
    assert sum(ran) > 0  # the ONNX graph composed frames (only in the onnx run)
    mse = float(np.mean((outputs["numpy"] - outputs["onnx"]) ** 2))
    psnr = 10 * np.log10(255**2 / mse) if mse else float("inf")
    assert psnr >= 45.0, psnr


class FakeSession:
    def __init__(self, provider: str) -> None:
        self.provider = provider

    def get_providers(self) -> list[str]:
        return [self.provider, "CPUExecutionProvider"]


def test_auto_is_numpy_on_cpu_and_onnx_on_cuda(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="framers.reconstructors.compose_onnx"):
        assert not compose_onnx.use_onnx(FakeSession("CPUExecutionProvider"))
        assert compose_onnx.use_onnx(FakeSession("CUDAExecutionProvider"))
        assert compose_onnx.use_onnx(FakeSession("TensorrtExecutionProvider"))
    assert "numpy path (FRAMERS_COMPOSE=auto, framemae session on CPUExecutionProvider)" in caplog.text
    assert "onnx path (FRAMERS_COMPOSE=auto, framemae session on CUDAExecutionProvider)" in caplog.text


@pytest.mark.parametrize(("mode", "provider", "expected"), [
    ("numpy", "CUDAExecutionProvider", False), ("onnx", "CPUExecutionProvider", True), ("ONNX ", "x", True)])
def test_explicit_modes(monkeypatch: pytest.MonkeyPatch, mode: str, provider: str, expected: bool) -> None:
    monkeypatch.setenv(compose_onnx.COMPOSE_ENV, mode)
    assert compose_onnx.use_onnx(FakeSession(provider)) is expected


def test_each_candidate_set_gets_its_own_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A store holding only the warp graph: a model mixing the trajectory set composes with
    numpy on a GPU (said in the log) and an explicit ``onnx`` is refused; with a trajectory graph
    added (a newer version), each set gets the newest graph that builds it."""
    pytest.importorskip("onnx")
    from training import export_compose

    store_with_compose(tmp_path)
    monkeypatch.setenv(model_store.STORE_ENV, str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="framers.reconstructors.compose_onnx"):
        assert not compose_onnx.use_onnx(FakeSession("CUDAExecutionProvider"), "trajectory")
        assert compose_onnx.use_onnx(FakeSession("CUDAExecutionProvider"), "warp")
    assert "numpy path instead" in caplog.text
    monkeypatch.setenv(compose_onnx.COMPOSE_ENV, "onnx")
    with pytest.raises(ModelError, match="trajectory candidates"):
        compose_onnx.use_onnx(FakeSession("CUDAExecutionProvider"), "trajectory")
    export_compose.export(tmp_path / compose_onnx.MODEL_NAME / "1.1.0", "1.1.0", "test", "trajectory")
    assert compose_onnx.graph_dir("trajectory").name == "1.1.0"
    assert compose_onnx.graph_dir("warp").name == "1.0.0"


def test_bad_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(compose_onnx.COMPOSE_ENV, "gpu")
    with pytest.raises(UnsupportedOptionError, match="FRAMERS_COMPOSE must be one of auto, numpy, onnx"):
        compose_onnx.use_onnx(FakeSession("CPUExecutionProvider"))


def store_with_compose(root: Path) -> Path:
    folder = root / compose_onnx.MODEL_NAME / "1.0.0"
    shutil.copytree(STORE / compose_onnx.MODEL_NAME / "1.0.0", folder)
    return folder


def test_missing_model_auto_falls_back_and_onnx_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(model_store.STORE_ENV, str(tmp_path))  # a store without framemae_compose
    with caplog.at_level(logging.WARNING, logger="framers.reconstructors.compose_onnx"):
        assert not compose_onnx.use_onnx(FakeSession("CUDAExecutionProvider"))
    assert "numpy path instead" in caplog.text
    monkeypatch.setenv(compose_onnx.COMPOSE_ENV, "onnx")
    with pytest.raises(ModelError, match="framemae_compose"):
        compose_onnx.use_onnx(FakeSession("CPUExecutionProvider"))


def test_loader_verifies_the_checksum(tmp_path: Path) -> None:
    folder = store_with_compose(tmp_path)
    assert compose_onnx.Composer(folder).loaded.config.name == compose_onnx.MODEL_NAME
    runtime.clear_cache()
    model = folder / model_store.MODEL_FILE
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="sha256"):
        compose_onnx.Composer(folder)


def test_stored_config_and_exporter_agree(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from training import export_compose

    stored = STORE / compose_onnx.MODEL_NAME / "1.0.0"
    config: dict[str, Any] = json.loads((stored / model_store.CONFIG_FILE).read_text())
    assert config["opset"] >= 16 and config["command"].startswith("python -m training.export_compose")
    assert [i["name"] for i in config["inputs"]] == ["kept", "flows", "weights", "before", "after", "pair", "t"]
    assert [(o["name"], o["dtype"]) for o in config["outputs"]] == [("frames", "uint8")]
    fresh = export_compose.export(tmp_path, "1.0.0", config["command"])
    assert fresh.sha256 == config["sha256"]  # the stored file is what the exporter builds today
