"""The fast paths of compression and label generation give the same results as the plain ones:
lazy RGB conversion of clips, the global view made from decoded pictures, the background
keyframe encoder, and the batched FrameMAE labeller."""

from __future__ import annotations

from pathlib import Path

import av
import av.error
import numpy as np
import pytest

from framers import bundle as fb
from framers import model_store, runtime
from framers.clip import Clip, global_view
from framers.errors import BundleError
from framers.keyframes import KeyframeEncoder, iter_keyframes
from framers.reconstructors.framemae import FrameMAEReconstructor, run_tiled, run_tiled_many
from framers.video import FrameReader
from tests.videogen import write_video


@pytest.mark.parametrize("rotation", [None, 90])
def test_lazy_clips_match_eager_frames(tmp_path: Path, rotation: int | None) -> None:
    video = write_video(tmp_path / "v.mp4", frames=37, width=96, height=64, rotation=rotation)
    with FrameReader(video) as reader:
        eager = [f for f in reader.frames()]
    with FrameReader(video) as reader:
        clips = list(reader.clips(16))
    assert [len(c) for c in clips] == [16, 16, 5]
    assert [c.start for c in clips] == [0, 16, 32]
    assert sum((c.pts for c in clips), ()) == tuple(f.pts for f in eager)
    for clip in clips:
        # one frame converted alone, then all of them: both equal the eager reader's RGB
        np.testing.assert_array_equal(clip.frame(3), eager[clip.start + 3].rgb)
        np.testing.assert_array_equal(clip.frames, np.stack([f.rgb for f in eager[clip.start:clip.stop]]))
        assert (clip.height, clip.width) == eager[0].rgb.shape[:2]
        assert clip.nbytes == clip.frames.nbytes


@pytest.mark.parametrize("rotation", [None, 90])
def test_view_from_decoded_pictures_matches_view_of_rgb(tmp_path: Path, rotation: int | None) -> None:
    video = write_video(tmp_path / "v.mp4", frames=16, width=320, height=180, rotation=rotation)
    with FrameReader(video) as reader:
        clip = next(reader.clips(16))
    from_decoded = clip.view(64).astype(np.int16)
    from_rgb = global_view(clip.frames, 64).astype(np.int16)
    assert from_decoded.shape == from_rgb.shape == (16, 64, 64, 3)
    # the only difference is where YUV -> RGB happens (before or after the area filter)
    assert np.abs(from_decoded - from_rgb).mean() < 2.0
    # and an array-backed clip uses global_view itself
    np.testing.assert_array_equal(Clip(0, 0, clip.frames, clip.pts).view(64), global_view(clip.frames, 64))


def test_global_view_is_an_area_average() -> None:
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (1, 4, 4, 3), dtype=np.uint8)
    frames = np.repeat(np.repeat(blocks, 32, axis=1), 32, axis=2)  # 128x128 of flat 32-px blocks
    view = global_view(frames, 4)[0].astype(int)
    assert np.abs(view - blocks[0].astype(int)).max() <= 1


def test_keyframe_encoder_reports_errors_and_refuses_writes_after_close(tmp_path: Path) -> None:
    encoder = KeyframeEncoder(tmp_path, 64, 48, "x264", None)
    frame = np.zeros((48, 64, 3), np.uint8)
    for _ in range(5):
        encoder.write(frame)
    encoder.close()
    assert encoder.settings["count"] == 5 and encoder.path == tmp_path / fb.KEYFRAMES_H264
    assert sum(1 for _ in iter_keyframes(encoder.path, 5)) == 5
    with pytest.raises(BundleError):
        encoder.write(frame)
    # an FFmpeg error on the encoder thread reaches the caller as a BundleError
    (tmp_path / "b").mkdir()
    broken = KeyframeEncoder(tmp_path / "b", 64, 48, "x264", None)

    def fail(rgb: np.ndarray | None, crf: int | None = None) -> None:
        raise av.error.ExternalError(-1, "injected encoder failure")

    broken._encode = fail  # type: ignore[method-assign]
    with pytest.raises(BundleError, match="injected encoder failure"):
        for _ in range(2 * KeyframeEncoder.QUEUE_FRAMES + 2):
            broken.write(frame)
        broken.close()
    broken.close()  # closing again is harmless


def test_keyframe_runs_change_crf_in_one_annex_b_stream(tmp_path: Path) -> None:
    """A CRF change starts a new x264 run (own headers + IDR) in the same file; all frames decode,
    and the coarser run is visibly coarser."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(6)]
    encoder = KeyframeEncoder(tmp_path, 64, 48, "x264", None)
    for i, rgb in enumerate(frames):
        encoder.write(rgb, crf=12 if i < 3 else 45)
    encoder.close()
    assert encoder.settings["runs"] == [[3, 12], [3, 45]] and encoder.settings["pix_fmt"] == "yuv420p"
    decoded = list(iter_keyframes(encoder.path, 6))
    errors = [float(np.mean((d.astype(float) - f) ** 2)) for d, f in zip(decoded, frames, strict=True)]
    assert max(errors[:3]) < min(errors[3:])
    # odd sizes cannot be 4:2:0: the kept frames keep their exact size in 4:4:4
    (tmp_path / "odd").mkdir()
    odd = KeyframeEncoder(tmp_path / "odd", 63, 47, "x264", None)
    odd.write(frames[0][:47, :63])
    odd.close()
    assert odd.settings["pix_fmt"] == "yuv444p"


def test_run_tiled_many_equals_run_tiled_per_input() -> None:
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((3, 2, 4, 90, 150)).astype(np.float32)

    def net(batch: np.ndarray) -> np.ndarray:  # a position-dependent stand-in for the network
        return np.tanh(batch * np.linspace(0.5, 1.5, batch.shape[-1], dtype=np.float32))

    many = run_tiled_many(net, xs, 64, 2, batch=5)
    for x, got in zip(xs, many, strict=True):
        np.testing.assert_allclose(got, run_tiled(net, x, 64, 2), rtol=1e-6, atol=1e-6)


def test_selector_session_uses_its_own_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtime.THREADS_ENV, raising=False)
    assert runtime.session_options(1).intra_op_num_threads == 1
    monkeypatch.setenv(runtime.THREADS_ENV, "3")
    assert runtime.session_options(1).intra_op_num_threads == 3  # the environment wins
    folder = model_store.model_dir("framemae")
    assert runtime.load_model(folder, 1).session is not runtime.load_model(folder, 0).session


def test_batched_framemae_labels_equal_one_window_at_a_time() -> None:
    pytest.importorskip("torch")
    from training.label_errors import make_error_fn, pair_errors_window

    rng = np.random.default_rng(2)
    base = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    frames = np.stack([np.roll(base, 2 * i, axis=1) for i in range(16)])  # a steady pan
    prev, nxt = np.roll(base, -10, axis=1), np.roll(base, 36, axis=1)
    batched = make_error_fn("framemae", "onnx")(frames, prev, nxt)
    plain = pair_errors_window(FrameMAEReconstructor(), frames, prev, nxt)
    np.testing.assert_allclose(batched, plain, rtol=1e-5, atol=1e-4)
    assert batched.shape == (28, 16)
    kept_pair = batched[0]  # slots (0, 1): frames 0-3 are kept, so they come back exactly
    assert np.all(kept_pair[:4] == 0)


def test_torch_label_engine_agrees_with_onnx() -> None:
    pytest.importorskip("torch")
    from training.label_errors import make_error_fn
    from training.labels import window_psnr

    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    frames = np.stack([np.roll(base, (i, 2 * i), axis=(0, 1)) for i in range(16)])
    onnx = make_error_fn("framemae", "onnx")(frames, None, None)
    torch_fp32 = make_error_fn("framemae", "torch")(frames, None, None)
    torch_bf16 = make_error_fn("framemae", "torch", bf16=True)(frames, None, None)
    best = window_psnr(onnx)
    assert np.abs(best - window_psnr(torch_fp32)).max() < 0.01
    # bf16 network, fp32 everything else: the label PSNRs stay within a few hundredths of a dB
    assert np.abs(best - window_psnr(torch_bf16)).max() < 0.05
    for errors in (torch_fp32, torch_bf16):
        assert best[int(errors.mean(-1).argmin())] >= best.max() - 0.05  # the same best pair, or a tie


def test_label_pairs_match_the_codec_pair_index() -> None:
    from framers.geometry import PAIRS, UNIFORM_PAIR, pair_index

    assert [pair_index(p) for p in PAIRS] == list(range(28))
    assert pair_index((1, 5)) == UNIFORM_PAIR


def test_frame_pack_round_trip_is_exact_and_splits_by_video(tmp_path: Path) -> None:
    """A pack (the label-resolution frames a machine without the videos needs) gives back
    exactly the frames ``label_window`` makes from the decoded video, split parts included."""
    from training.label_windows import FramePack, WindowSpec, label_window

    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    videos = {
        "a.mp4": np.stack([np.roll(base, (i, 3 * i), axis=(0, 1)) for i in range(40)]),
        "b.mp4": rng.integers(0, 256, (24, 96, 128, 3), dtype=np.uint8),
    }
    specs = [WindowSpec("a.mp4", 0), WindowSpec("a.mp4", 17), WindowSpec("a.mp4", 24), WindowSpec("b.mp4", 4)]
    whole = FramePack.build(specs, videos, short_side=96)
    parts = [whole.split(k, 2) for k in range(2)]
    assert sorted(len(p.frames) for p in parts) == [1, 1]
    assert {s for p in parts for s in p.specs} == set(specs)
    for part in parts:
        path = tmp_path / f"pack_{part.tag}.npz"
        part.save(path)
        loaded = FramePack.load(path)
        assert loaded.tag == part.tag and loaded.specs == part.specs
        for spec in loaded.specs:
            got, want = loaded.window(spec), label_window(videos[spec.video], spec.start, 96)
            for x, y in zip(got, want, strict=True):
                assert (x is None) == (y is None)
                if x is not None:
                    assert np.array_equal(x, y)
