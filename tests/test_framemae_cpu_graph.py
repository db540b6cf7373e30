"""The CPU graph of the shipped FrameMAE (issue 17, ``training/optimize_onnx.py``): the same
network as model.onnx with fused attention and the output softmax on the last axis; verified and
opened by ``framers.runtime`` for CPU-only sessions; rebuilt frames within the parity bound of
``test_framemae_parity`` against the stored graph."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from framers import model_store, runtime
from framers.errors import ModelError
from framers.pipeline import compress, iter_reconstructed
from framers.reconstructors.framemae import FrameMAEReconstructor
from tests.test_framemae_parity import DATA, assert_within_bound, psnr_gaps, source_frames

STORE = Path(__file__).resolve().parents[1] / "model_store"
CPU_ONLY = runtime.providers() == ["CPUExecutionProvider"]


def shipped() -> Path:
    return model_store.model_dir("framemae", root=STORE)


@pytest.fixture(autouse=True)
def _fresh_caches(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(runtime.CPU_GRAPH_ENV, raising=False)
    runtime.clear_cache()
    yield
    runtime.clear_cache()


def tiles(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 11, 16, 64, 64), dtype=np.float32) - 0.5


def run(loaded: runtime.LoadedModel, x: np.ndarray) -> np.ndarray:
    return loaded.session.run(None, {loaded.session.get_inputs()[0].name: x})[0]


@pytest.mark.skipif(not CPU_ONLY, reason="the CPU graph is for CPU-only sessions")
def test_cpu_sessions_open_the_cpu_graph_and_it_computes_the_same_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = model_store.read_config(shipped()).get("cpu_graph")
    fast = runtime.load_model(shipped(), default_threads=1)
    assert fast.file == shipped() / entry["file"]
    monkeypatch.setenv(runtime.CPU_GRAPH_ENV, "0")
    runtime.clear_cache()
    stored = runtime.load_model(shipped(), default_threads=1)
    assert stored.file == shipped() / "model.onnx"
    x = tiles()
    a, b = run(stored, x), run(fast, x)
    assert a.shape == b.shape == (3, 3, 16, 64, 64)
    assert float(np.abs(a - b).max()) < 1e-5
    assert np.allclose(b.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.skipif(not CPU_ONLY, reason="the CPU graph is for CPU-only sessions")
def test_a_tampered_or_stale_cpu_graph_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "v"
    shutil.copytree(shipped(), target)
    cfg = json.loads((target / "config.json").read_text())
    cpu_file = target / cfg["cpu_graph"]["file"]
    data = bytearray(cpu_file.read_bytes())
    data[-10] ^= 0xFF
    cpu_file.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        runtime.load_model(target)
    shutil.copy(shipped() / cfg["cpu_graph"]["file"], cpu_file)
    runtime.clear_cache()
    assert runtime.load_model(target).file == cpu_file
    cfg["cpu_graph"]["source_sha256"] = "0" * 64  # made from another model.onnx
    (target / "config.json").write_text(json.dumps(cfg))
    runtime.clear_cache()
    with pytest.raises(ModelError, match="another model"):
        runtime.load_model(target)
    del cfg["cpu_graph"]["sha256"]
    (target / "config.json").write_text(json.dumps(cfg))
    runtime.clear_cache()
    with pytest.raises(ModelError, match="malformed"):
        runtime.load_model(target)


def test_the_shipped_cpu_graph_is_what_the_optimizer_makes(tmp_path: Path) -> None:
    """model_cpu.onnx is reproducible from model.onnx by the code in the repo, byte for byte."""
    pytest.importorskip("onnx")
    from training import optimize_onnx

    target = tmp_path / "v"
    target.mkdir()
    for name in ("model.onnx", "config.json"):
        shutil.copy(shipped() / name, target / name)
    cfg = json.loads((target / "config.json").read_text())
    shipped_entry = cfg.pop("cpu_graph")
    (target / "config.json").write_text(json.dumps(cfg))
    entry = optimize_onnx.write_cpu_graph(target, shipped_entry["command"])
    assert entry["sha256"] == shipped_entry["sha256"]
    assert entry["source_sha256"] == cfg["sha256"]
    assert entry["max_abs_err"] < optimize_onnx.MAX_ABS_ERR
    assert json.loads((target / "config.json").read_text())["cpu_graph"] == entry


def test_the_optimizer_refuses_a_graph_it_does_not_know() -> None:
    onnx = pytest.importorskip("onnx")
    from training import optimize_onnx

    selector = onnx.load(str(model_store.model_dir("selector", root=STORE) / "model.onnx"))
    with pytest.raises(optimize_onnx.PatternError):
        optimize_onnx.optimize(selector, num_heads=3)


@pytest.mark.parametrize("mode", ["stride4", "adaptive"])
def test_rebuilt_frames_match_the_stored_graph(mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parity bound of issue 17 (mean |ΔPSNR| ≤ 0.02 dB, no frame 0.1 dB worse) between the frames
    rebuilt with the CPU graph and with the stored model.onnx; pixels differ by ≤ 1 level."""
    from framers import bundle as fb
    from framers.defaults import TARGET_PSNR

    src = DATA / "mmaction2_test.avi"
    bundle = tmp_path / "b"
    if mode == "stride4":
        compress(src, bundle, selector="stride", stride=4)
    else:
        compress(src, bundle, target_psnr=TARGET_PSNR)
    manifest = fb.read_manifest(bundle)
    new = np.stack(list(iter_reconstructed(bundle, manifest, FrameMAEReconstructor())))
    monkeypatch.setenv(runtime.CPU_GRAPH_ENV, "0")
    runtime.clear_cache()
    old = np.stack(list(iter_reconstructed(bundle, manifest, FrameMAEReconstructor())))
    assert_within_bound(psnr_gaps(source_frames(src, len(new)), new, old))
    assert int(np.abs(new.astype(np.int16) - old).max()) <= 1


def test_the_network_session_does_not_spin(monkeypatch: pytest.MonkeyPatch) -> None:
    """The network's pool threads sleep between parallel sections (``runtime.session_options``)."""
    quiet = runtime.session_options(2, spinning=False)
    assert quiet.intra_op_num_threads == 2
    assert quiet.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(RuntimeError):  # not set: onnxruntime's default (spinning) elsewhere
        runtime.session_options(1).get_session_config_entry("session.intra_op.allow_spinning")
    rec = FrameMAEReconstructor()
    assert rec._session() is runtime.load_model(rec.model_dir, default_threads=2, spinning=False).session
    monkeypatch.setenv("FRAMERS_CODEC_THREADS", "1")  # a service worker's thread budget caps it
    assert rec._session() is runtime.load_model(rec.model_dir, default_threads=1, spinning=False).session
