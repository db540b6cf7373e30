"""The learned ``framers`` selector: ONNX parity, the FrameMAE version check, and the CLI.

A micro selector (random FrameMAE ``fm-micro`` encoder + head) is exported into a temporary
model store, so these tests do not depend on trained models and stay fast; the shipped
selector (if the repository's store has one) gets its own parity check on its stored sample.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from framers import bundle as fb
from framers import model_store, runtime
from framers.errors import ModelError
from framers.geometry import PAIRS, pair_index
from framers.selector_model import LearnedSelector, slots_from_scores
from framers.selectors import UniformSelector
from tests.videogen import write_video

REPO_STORE = Path(__file__).resolve().parents[1] / "model_store"
FAKE_MAE: dict[str, object] = {
    "name": "framemae",
    "version": "0.0.1-test",
    "sha256": "ab" * 32,
    "inputs": [],
    "outputs": [],
    "variant": "flowmix",
}


def _fake_framemae(root: Path, config: dict[str, object]) -> None:
    folder = root / "framemae" / str(config["version"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def micro_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store with a micro selector trained against FAKE_MAE (only its config is needed)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from training.model import build_model, make_config
    from training.selector_export import write_selector
    from training.selector_net import SelectorHead, SelectorNet, UnmaskedEncoder

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("store")
    _fake_framemae(root, FAKE_MAE)
    mae = build_model(make_config("flowmix", "fm-micro")).eval()
    with torch.no_grad():  # a non-zero head so pairs differ
        for p in mae.parameters():
            p.add_(0.02 * torch.randn_like(p))
    enc = UnmaskedEncoder(mae)
    head = SelectorHead(enc.dim, width=32, prior=True)
    with torch.no_grad():  # the prior head starts at zero: give it weights so both paths count
        head.fc.weight.normal_(0.0, 0.05)
    net = SelectorNet(enc, head).eval()
    write_selector(net, root / "selector" / "0.0.1-test", "0.0.1-test", FAKE_MAE, {"split": "test"}, {})
    runtime.clear_cache()
    return root


def test_folded_encoder_equals_framemae_encoder() -> None:
    torch = pytest.importorskip("torch")
    from training.model import build_model, make_config
    from training.selector_net import UnmaskedEncoder

    torch.manual_seed(1)
    enc = UnmaskedEncoder(build_model(make_config("flowmix", "fm-micro")).eval())
    clip = torch.randint(0, 256, (2, 16, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        got, ref = enc(clip), enc.reference(clip)
    assert got.shape == (2, 8, 16, enc.dim)  # [B, slots, g·g, D]
    assert float((got - ref).abs().max()) < 1e-4 * float(ref.abs().max())


def test_onnx_parity_micro(micro_store: Path) -> None:
    folder = micro_store / "selector" / "0.0.1-test"
    config = json.loads((folder / "config.json").read_text())
    assert config["onnx_parity_rel_err"] < 1e-4
    assert config["framemae"]["version"] == FAKE_MAE["version"]
    sample = np.load(folder / "parity.npz")
    session = runtime.load_model(folder).session
    got = session.run(None, {"clip": sample["clip"]})[0]
    ref = sample["logits"]
    assert got.shape == (2, 28)
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4


@pytest.mark.skipif(not model_store.list_versions("selector", REPO_STORE), reason="no shipped selector")
def test_onnx_parity_shipped_selector() -> None:
    """The shipped ONNX reproduces the torch logits stored at export time (relative error < 1e-4)."""
    folder = model_store.model_dir("selector", None, REPO_STORE)
    sample = np.load(folder / "parity.npz")
    got = runtime.load_model(folder).session.run(None, {"clip": sample["clip"]})[0]
    ref = sample["logits"]
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4
    # and the shipped selector pairs with the shipped FrameMAE
    selector = LearnedSelector(2, root=REPO_STORE)
    assert (
        selector.model_versions["framemae"]
        == model_store.read_config(model_store.model_dir("framemae", None, REPO_STORE)).version
    )


def test_loader_refuses_mismatched_framemae(micro_store: Path, tmp_path: Path) -> None:
    root = tmp_path / "store"
    shutil.copytree(micro_store / "selector", root / "selector")
    _fake_framemae(root, {**FAKE_MAE, "version": "0.0.2-other", "sha256": "cd" * 32})
    with pytest.raises(ModelError, match=r"trained against FrameMAE '0\.0\.1-test'"):
        LearnedSelector(2, root=root)
    # same version name but a different file (sha256) is refused too
    shutil.rmtree(root / "framemae")
    _fake_framemae(root, {**FAKE_MAE, "sha256": "ef" * 32})
    with pytest.raises(ModelError, match="trained against"):
        LearnedSelector(2, root=root)
    # no FrameMAE at all
    shutil.rmtree(root / "framemae")
    with pytest.raises(ModelError):
        LearnedSelector(2, root=root)


def test_view_prior_is_exhaustive_linear_search_on_the_view() -> None:
    torch = pytest.importorskip("torch")
    from training.label_errors import pair_errors_linear
    from training.selector_net import ViewPrior

    rng = np.random.default_rng(2)
    base = rng.integers(0, 200, (1, 12, 12, 3)).astype(np.float64)
    views = np.clip(base + np.cumsum(rng.normal(0, 6, (16, 12, 12, 3)), axis=0), 0, 255).astype(np.uint8)
    with torch.no_grad():
        prior = ViewPrior()(torch.from_numpy(views[None])).numpy()[0]
    mse = pair_errors_linear(views, None, None).mean(-1)
    ref = -10 * np.log10(mse / 255.0**2 + 1e-5)
    assert np.abs(prior - ref).max() < 0.2  # the network does not round to uint8
    assert prior.argmax() == mse.argmin()


def test_slots_from_scores() -> None:
    logits = np.zeros(28, np.float32)
    logits[pair_index((2, 6))] = 5.0
    assert slots_from_scores(logits, 2) == (2, 6)
    assert 2 in slots_from_scores(logits, 1) or 6 in slots_from_scores(logits, 1)
    assert set(slots_from_scores(logits, 3)) >= {2, 6}
    assert len(PAIRS) == 28 and PAIRS[0] == (0, 1) and PAIRS[27] == (6, 7)


def test_cli_compress_with_framers_selector(micro_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from framers.cli import main as cli_main

    monkeypatch.setenv(model_store.STORE_ENV, str(micro_store))
    video = write_video(tmp_path / "v.mp4", frames=40, width=96, height=64)
    bundle = tmp_path / "b"
    assert cli_main(["compress", str(video), "-o", str(bundle), "--selector", "framers", "-q"]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    sel = manifest["selection"]
    assert sel["selector"] == "framers"
    assert manifest["models"] == {"selector": "0.0.1-test", "framemae": "0.0.1-test"}
    kept = fb.read_manifest(bundle).kept  # per clip (the manifest stores arithmetic runs)
    assert len(kept) == 3
    # the codec also keeps the video's first and last frames (never extrapolated)
    assert kept[0][0] == 0 and kept[2][-1] == 7
    for positions in (kept[0][1:] if kept[0][1] != 1 else kept[0], kept[1]):  # full clips: a learned pair
        assert len(positions) == 4
        slots = sorted({p // 2 for p in positions})
        assert len(slots) == 2 and positions == [f for s in slots for f in (2 * s, 2 * s + 1)]
    assert set(kept[2]) == {*UniformSelector(2).positions(8), 7}  # 8-frame tail: uniform's positions
    out = tmp_path / "o.mp4"
    assert cli_main(["reconstruct", str(bundle), "-o", str(out), "--reconstructor", "linear", "-q"]) == 0
    assert out.stat().st_size > 0


def test_cli_keep_alone_selects_with_framers(micro_store: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from framers.cli import main as cli_main

    monkeypatch.setenv(model_store.STORE_ENV, str(micro_store))
    video = write_video(tmp_path / "v.mp4", frames=32, width=96, height=64)
    # (no option at all runs the adaptive mode: tests/test_adaptive.py)
    cases = ((["--stride", "4"], "stride"), (["--keep", "2"], "framers"),
             (["--keep", "2", "--selector", "uniform"], "uniform"))
    for extra, selector in cases:
        bundle = tmp_path / f"b_{selector}"
        assert cli_main(["compress", str(video), "-o", str(bundle), "-q", *extra]) == 0
        assert json.loads((bundle / "manifest.json").read_text())["selection"]["selector"] == selector


def test_keep_other_than_two_falls_back(micro_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(model_store.STORE_ENV, str(micro_store))
    selector = LearnedSelector(3)
    assert "summed pair probabilities" in selector.describe()["strategy"]
    from framers.clip import Clip

    rng = np.random.default_rng(0)
    clips = [Clip(i, 16 * i, rng.integers(0, 256, (16, 40, 56, 3), dtype=np.uint8), tuple(range(16))) for i in range(3)]
    chosen = selector.choose(clips)
    assert all(len(p) == 6 for p in chosen)


def test_batched_select_keeps_order_and_matches_single_clips(micro_store: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from framers.clip import Clip

    monkeypatch.setenv(model_store.STORE_ENV, str(micro_store))
    selector = LearnedSelector(2)
    rng = np.random.default_rng(1)
    clips = [Clip(i, 16 * i, rng.integers(0, 256, (16, 24, 40, 3), dtype=np.uint8), tuple(range(16)))
             for i in range(19)]
    clips.append(Clip(19, 16 * 19, rng.integers(0, 256, (5, 24, 40, 3), dtype=np.uint8), tuple(range(5))))
    out = list(selector.select(lambda: iter(clips)))
    assert [c.index for c, _ in out] == list(range(20))
    for clip, positions in out[:-1]:
        assert positions == selector.choose([clip])[0]
    assert out[-1][1] == UniformSelector(2).positions(5)
