"""Training-side checks: model shapes, masking, ONNX export parity (needs torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from framers import model_store, motion  # noqa: E402
from framers.reconstructors.base import KeptFrame  # noqa: E402
from training.export import example_inputs, export_onnx, parity  # noqa: E402
from training.framemae_store import model_from_store  # noqa: E402
from training.model import FlowMixNet, FrameMAE, build_model, make_config, mix_full  # noqa: E402
from training.train import upsample_region  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VAL_VIDEO = ROOT.parent / "shared" / "data" / "videos" / "val" / "cotracker__gradio_demo_videos_bear.mp4"


def perturbed(model: Any, seed: int = 0) -> Any:
    """Randomise every parameter (zero-initialised heads would make parity trivial)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def test_flowmix_starts_near_linear_and_sums_to_one() -> None:
    model = build_model(make_config("flowmix", "fm-micro")).eval()
    x = torch.rand(2, 11, 16, 32, 32) - 0.5
    with torch.no_grad():
        w = model(x)
    assert w.shape == (2, 3, 16, 32, 32)
    torch.testing.assert_close(w.sum(1), torch.ones(2, 16, 32, 32))
    assert float(w[:, 0].min()) > 0.95  # the linear candidate dominates at initialisation


def test_plain_patchify_roundtrip_and_masked_loss() -> None:
    model = build_model(make_config("plain", "micro")).eval()
    assert isinstance(model, FrameMAE)
    video = torch.rand(2, 3, 16, 32, 32)
    torch.testing.assert_close(model.unpatchify(model.patchify(video)), video)
    slots = torch.tensor([[1, 5], [0, 7]])
    kept = torch.stack([video[i][:, [2 * s + j for s in slots[i].tolist() for j in (0, 1)]] for i in range(2)])
    pred = model.forward_decoder(model.forward_encoder(kept, slots), slots)
    assert pred.shape == (2, 8 * 4, 2 * 16 * 16 * 3)
    # a perfect prediction on the masked slots gives zero loss whatever the kept slots hold
    target = model.patchify((video - model.mean) / model.std)
    assert float(model.forward_loss(video, target, slots)) == pytest.approx(0.0, abs=1e-10)
    three = torch.tensor([[0, 3, 6], [1, 2, 5]])
    kept3 = torch.stack([video[i][:, [2 * s + j for s in three[i].tolist() for j in (0, 1)]] for i in range(2)])
    assert model(kept3, three).shape == (2, 3, 16, 32, 32)


def test_upsample_region_matches_full_upsampling() -> None:
    w = torch.rand(3, 16, 20, 20)
    full = torch.nn.functional.interpolate(w, scale_factor=4, mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsample_region(w, 4, 13, 37, 32), full[..., 13:45, 37:69])


def test_training_mix_matches_inference_mix() -> None:
    rng = np.random.default_rng(0)
    cands = rng.random((3, 16, 3, 40, 48)).astype(np.float32)
    logits = torch.from_numpy(rng.random((1, 3, 16, 10, 12)).astype(np.float32))
    weights = logits.softmax(1)
    ours = mix_full(torch.from_numpy(cands)[None], weights)[0].numpy()  # [16, 3, H, W]
    for t in (0, 7):
        ref = motion.mix(cands[:, t].transpose(0, 2, 3, 1), weights[0, :, t].numpy())
        np.testing.assert_allclose(ours[t].transpose(1, 2, 0), ref, atol=1e-4)


@pytest.mark.parametrize(("variant", "size"), [("flowmix", "fm-micro"), ("plain", "micro")])
def test_onnx_export_parity_random(tmp_path: Path, variant: str, size: str) -> None:
    model = perturbed(build_model(make_config(variant, size)))
    path = tmp_path / "m.onnx"
    export_onnx(model, path)
    for batch in (1, 3):  # dynamic batch
        assert parity(model, path, example_inputs(model, batch=batch, seed=batch)) < 1e-4


@pytest.mark.skipif(not VAL_VIDEO.exists(), reason="val data not available")
def test_shipped_model_parity_on_a_real_window() -> None:
    from training.cache import decode_rgb

    directory = model_store.model_dir("framemae", root=ROOT / "model_store")
    model = model_from_store(directory)
    assert isinstance(model, FlowMixNet)
    frames = decode_rgb(VAL_VIDEO, 36)
    kept = [KeptFrame(i, frames[i]) for i in (0, 4, 8, 12, 16, 20)]
    flows = motion.WindowFlows(kept)
    plans = motion.plan_window([k.index for k in kept], 4, 20)
    h, w = frames.shape[1:3]
    x = motion.net_input_window(flows, plans, motion.net_scale(h, w))
    tile = model.cfg.tile
    batch = torch.from_numpy(np.ascontiguousarray(x[None, :, :, :tile, :tile]))
    assert parity(model, directory / "model.onnx", (batch,)) < 1e-4


def test_gap_patterns_and_coded_kept_frames() -> None:
    """FrameMAE 1.1's training windows: every 2nd/8th/16th frame kept (the next clip's first kept
    frame closes the last gap), candidates from the named DIS preset, kept frames through x264."""
    from training.data import GAP_PATTERNS, Video, pattern_offsets, sample_window

    rng = np.random.default_rng(0)
    assert pattern_offsets(rng, "stride2") == list(range(0, 16, 2))
    assert pattern_offsets(rng, "stride8") == [0, 8]
    assert pattern_offsets(rng, "stride16") == [0]
    assert {"stride2", "stride8", "stride16"} <= set(GAP_PATTERNS)
    y, x = np.mgrid[0:128, 0:160]
    frames = np.stack([np.stack([(x + 3 * i) % 256, (y * 2) % 256, (x + y + i) % 256], -1)
                       for i in range(48)]).astype(np.uint8)
    videos = [Video("synthetic", frames)]
    clean = sample_window(videos, np.random.default_rng(1), 64, 64, ("stride16",), "medium", coded=0.0)
    coded = sample_window(videos, np.random.default_rng(1), 64, 64, ("stride16",), "medium", coded=1.0)
    assert clean["net_in"].shape == coded["net_in"].shape == (motion.IN_CHANNELS, 16, 64, 64)
    assert clean["loss_mask"].sum() == 15  # one kept frame in the window
    kept_at = int(np.argmax(1 - clean["loss_mask"]))
    # the kept frame's candidates: the source crop as is, or decoded from x264 (close, not equal)
    a = clean["cands"][0, kept_at].astype(np.float32)
    b = coded["cands"][0, kept_at].astype(np.float32)
    assert np.array_equal(clean["target"][kept_at].astype(np.float32), a)
    assert 0 < float(np.abs(a - b).mean()) < 8


def test_widened_inputs_start_as_the_stored_network() -> None:
    """``--disagreement`` on ``--init`` weights: the two new input channels get zero weights, so
    the widened network's output does not depend on them and equals the stored network's."""
    from training.train import widen_inputs

    narrow = perturbed(build_model(make_config("flowmix", "fm-micro")))
    cfg = make_config("flowmix", "fm-micro")
    cfg.in_chans = motion.IN_CHANNELS + motion.DISAGREEMENT_CHANNELS
    wide = build_model(cfg).eval()
    wide.load_state_dict(widen_inputs(narrow.state_dict(), wide.state_dict()))
    x = torch.rand(2, motion.IN_CHANNELS, 16, 32, 32) - 0.5
    extra = torch.rand(2, motion.DISAGREEMENT_CHANNELS, 16, 32, 32) * 4
    with torch.no_grad():
        torch.testing.assert_close(wide(torch.cat([x, extra], 1)), narrow(x))


def test_disagreement_channels_of_a_window() -> None:
    """The trajectory set's disagreement input: two channels after the usual ones, zero on kept
    frames, larger on a frame whose two kept frames the flow cannot both explain."""
    from tests.test_framemae import kept_of, moving_video

    frames = moving_video(n=17, h=96, w=128)
    flows = motion.WindowFlows(kept_of(frames, [0, 8, 16]), candidate_set="trajectory")
    plans = motion.plan_window([0, 8, 16], 0, 16)
    x = motion.net_input_window(flows, plans, 1, disagreement=True)
    assert x.shape == (motion.IN_CHANNELS + motion.DISAGREEMENT_CHANNELS, 16, 96, 128)
    extra = x[motion.IN_CHANNELS:]
    assert not extra[:, 0].any() and not extra[:, 8].any()  # kept frames
    assert extra[:, 4].mean() > 0 and extra.max() <= 4.0
    np.testing.assert_array_equal(x[: motion.IN_CHANNELS], motion.net_input_window(flows, plans, 1))
    # a still picture: both ends of every trajectory agree; the same with the middle kept frame
    # flipped upside down: they do not
    still = np.repeat(frames[:1], 17, axis=0)
    agree = motion.WindowFlows(kept_of(still, [0, 8, 16]), candidate_set="trajectory")
    other = kept_of(still, [0, 8, 16])
    other[1] = KeptFrame(8, np.ascontiguousarray(still[8][::-1]))
    flipped = motion.WindowFlows(other, candidate_set="trajectory")
    assert agree.disagreement(plans[4], 1).max() < 0.05 < 0.5 < flipped.disagreement(plans[4], 1).mean()
