"""The fast full-resolution path of ``framemae`` (issue 17) against the implementation it
replaced, kept here as the reference: per-frame PSNR against the source on real clips, an
every-4th-frame bundle and the default (adaptive) bundle.

Bound (issue 17): the mean over frames of PSNR(new) − PSNR(reference) within ±0.02 dB, and no
frame more than 0.1 dB worse. The reference (``reference_window``) is the code of
``FrameMAEReconstructor`` before the change: every candidate as a float32 RGB image
(``_reference_candidates``), mixed by ``_reference_mix``, and ``linear_prior`` for every frame
that is not mixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from framers import bundle as fb
from framers import motion, runtime
from framers.defaults import TARGET_PSNR
from framers.metrics import psnr
from framers.pipeline import compress, iter_kept, iter_reconstructed
from framers.reconstructors.base import KeptFrame, iter_clip_windows
from framers.reconstructors.classical import linear_prior, to_uint8
from framers.reconstructors.framemae import GATE_MIN_DIFF, GATE_RATIO, FrameMAEReconstructor
from framers.video import FrameReader

DATA = Path(__file__).parent / "data"
MEAN_BOUND_DB = 0.02
FRAME_BOUND_DB = 0.1


# ------------------------------------------------------------------ reference (the code before issue 17)
def _reference_remap(image: np.ndarray, flow: np.ndarray, amount: float) -> np.ndarray:
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mapping = cv2.scaleAdd(flow, amount, np.ascontiguousarray(np.stack([gx, gy], axis=-1)))
    return np.asarray(cv2.remap(image, mapping, None, interpolation=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE))


def _reference_resize_flow(flow: np.ndarray, h: int, w: int) -> np.ndarray:
    fh, fw = flow.shape[:2]
    if (fh, fw) == (h, w):
        return flow
    out = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
    out[..., 0] *= w / fw
    out[..., 1] *= h / fh
    return out


def _reference_candidates(flows: motion.WindowFlows, plan: motion.FramePlan) -> list[np.ndarray]:
    """[linear, prev_warp, next_warp] (or, for the trajectory set, [linear, prev_traj, next_traj])
    float32 [H, W, 3] of an interpolated frame."""
    assert plan.before is not None and plan.after is not None
    t = plan.t
    a = flows.kept[plan.before].rgb.astype(np.float32)
    b = flows.kept[plan.after].rgb.astype(np.float32)
    lin = np.asarray(cv2.addWeighted(a, 1.0 - t, b, t, 0.0))
    f_ba, f_ab = flows.pair(plan.before, plan.after)
    f_ba = _reference_resize_flow(f_ba, flows.height, flows.width)
    f_ab = _reference_resize_flow(f_ab, flows.height, flows.width)
    prev = _reference_remap(a, f_ba, t)
    nxt = _reference_remap(b, f_ab, 1.0 - t)
    if flows.trajectory:
        prev = (1.0 - t) * prev + t * _reference_remap(b, f_ba, t - 1.0)
        nxt = (1.0 - t) * _reference_remap(a, f_ab, -t) + t * nxt
    return [lin, prev, nxt]


def _reference_mix(cands: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    height, width = cands[0].shape[:2]
    rest = np.ascontiguousarray(weights[1:].transpose(1, 2, 0), dtype=np.float32)
    full = cv2.resize(rest, (width, height), interpolation=cv2.INTER_LINEAR)
    out = np.asarray(cands[0], dtype=np.float32)
    for k in range(1, len(cands)):
        w3 = cv2.merge([np.ascontiguousarray(full[..., k - 1])] * 3)
        out = cv2.add(out, cv2.multiply(cv2.subtract(np.asarray(cands[k], np.float32), cands[0]), w3))
    return np.asarray(out)


def reference_window(rec: FrameMAEReconstructor, kept: Sequence[KeptFrame], start: int, stop: int) -> np.ndarray:
    flows = motion.WindowFlows(kept)
    plans = motion.plan_window([k.index for k in kept], start, stop)
    if not any(p.interpolated for p in plans):
        return to_uint8(linear_prior(kept, start, stop))
    weights = rec.mixing_weights(flows, plans)
    out = np.empty((len(plans), flows.height, flows.width, 3), np.uint8)
    for j, plan in enumerate(plans):
        assert plan.before is not None or plan.after is not None
        if plan.interpolated and flows.flow_explains(plan.before, plan.after, GATE_RATIO, GATE_MIN_DIFF):  # type: ignore[arg-type]
            out[j] = cv2.convertScaleAbs(_reference_mix(_reference_candidates(flows, plan), weights[:, j]))
        else:
            out[j] = to_uint8(linear_prior(kept, plan.index, plan.index + 1)[0])
    return out


# ------------------------------------------------------------------ helpers
def source_frames(path: Path, n: int) -> np.ndarray:
    with FrameReader(path) as reader:
        frames = []
        for frame in reader.frames():
            frames.append(frame.rgb)
            if len(frames) == n:
                break
    return np.stack(frames)


def rebuilt_pair(bundle: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(new, reference) frames of a bundle, and how many frames were mixed by the network."""
    manifest = fb.read_manifest(bundle)
    rec = FrameMAEReconstructor()
    new = np.stack(list(iter_reconstructed(bundle, manifest, rec)))
    ref, mixed = [], 0
    for start, stop, window in iter_clip_windows(iter_kept(bundle, manifest), manifest.n_frames, manifest.clip_len):
        ref.append(reference_window(rec, window, start, stop))
        mixed += sum(p.interpolated for p in motion.plan_window([k.index for k in window], start, stop))
    return new, np.concatenate(ref), mixed


def psnr_gaps(source: np.ndarray, new: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per frame PSNR(new vs source) − PSNR(reference vs source), dB."""
    return np.array([psnr(s, n) - psnr(s, r) for s, n, r in zip(source, new, ref, strict=True)])


def assert_within_bound(gaps: np.ndarray) -> None:
    assert abs(float(gaps.mean())) <= MEAN_BOUND_DB, f"mean PSNR change {gaps.mean():+.4f} dB"
    assert float(gaps.min()) >= -FRAME_BOUND_DB, f"a frame lost {-gaps.min():.3f} dB"


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    runtime.clear_cache()


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("name", ["mmaction2_test.avi", "openh264_test_qcif_cabac.264"])
@pytest.mark.parametrize("mode", ["stride4", "adaptive"])
def test_rebuilt_frames_keep_their_psnr(name: str, mode: str, tmp_path: Path) -> None:
    src = DATA / name
    bundle = tmp_path / "b"
    if mode == "stride4":
        compress(src, bundle, selector="stride", stride=4)
    else:
        compress(src, bundle, target_psnr=TARGET_PSNR)
    new, ref, mixed = rebuilt_pair(bundle)
    source = source_frames(src, len(new))
    gaps = psnr_gaps(source, new, ref)
    assert_within_bound(gaps)
    if mode == "stride4":
        # the check has teeth: three frames in four are rebuilt, and the pixels differ only by
        # rounding (|Δ| ≤ 1 gray level on a tiny share of pixels)
        assert mixed >= len(source) // 2
        diff = np.abs(new.astype(np.int16) - ref)
        assert diff.max() <= 1 and float((diff > 0).mean()) < 0.01


def test_the_bound_catches_a_wrong_mix(tmp_path: Path) -> None:
    """The same check rejects a rebuild that is only slightly off (a mix that drops the warped
    candidates, i.e. ``linear`` on the interpolated frames): the bound is not vacuous."""
    src = DATA / "mmaction2_test.avi"
    compress(src, tmp_path / "b", selector="stride", stride=4)
    manifest = fb.read_manifest(tmp_path / "b")
    _, ref, _ = rebuilt_pair(tmp_path / "b")
    lin = np.concatenate([
        to_uint8(linear_prior(window, start, stop))
        for start, stop, window in iter_clip_windows(iter_kept(tmp_path / "b", manifest), manifest.n_frames, 16)
    ])
    gaps = psnr_gaps(source_frames(src, len(ref)), lin, ref)
    with pytest.raises(AssertionError):
        assert_within_bound(gaps)


@pytest.mark.parametrize("candidate_set", sorted(motion.CANDIDATE_SETS))
def test_interpolate_matches_the_reference_mix(candidate_set: str) -> None:
    """Pixel level, on synthetic motion with random mixing weights, for every candidate set:
    |new − reference| ≤ 0.52 levels (the reference mix as float32, the fast path rounded)."""
    from tests.test_framemae import kept_of, moving_video

    frames = moving_video(n=9, h=120, w=170)
    kept = kept_of(frames, [0, 8])
    flows = motion.WindowFlows(kept, candidate_set=candidate_set)
    rng = np.random.default_rng(3)
    for plan in motion.plan_window([0, 8], 1, 8):
        logits = rng.normal(size=(3, 12, 17)).astype(np.float32) * 2
        weights = np.exp(logits) / np.exp(logits).sum(0)
        ref = _reference_mix(_reference_candidates(flows, plan), weights)
        new = flows.interpolate(plan, weights)
        assert np.abs(new.astype(np.float32) - ref).max() <= 0.52


@pytest.mark.parametrize("offsets", [(2, 3, 10, 11), (0, 4, 8, 12), (0, 5, 9)])
def test_pipelined_reconstruct_equals_window_by_window(offsets: tuple[int, ...]) -> None:
    """``reconstruct`` (prepare thread, compose threads, a cache shared across windows) gives
    exactly the frames of ``reconstruct_window`` called window by window."""
    from tests.test_framemae import kept_of, moving_video

    frames = moving_video(n=53)
    indices = [c + o for c in range(0, 53, 16) for o in offsets if c + o < 53]
    rec = FrameMAEReconstructor()
    piped = np.stack(list(rec.reconstruct(iter(kept_of(frames, indices)), 53, 16)))
    serial = np.concatenate([rec.reconstruct_window(window, start, stop)
                             for start, stop, window in iter_clip_windows(iter(kept_of(frames, indices)), 53, 16)])
    assert np.array_equal(piped, serial)


def test_stopping_early_leaves_no_thread_behind() -> None:
    import threading

    from tests.test_framemae import kept_of, moving_video

    frames = moving_video(n=64)
    stream = FrameMAEReconstructor().reconstruct(iter(kept_of(frames, list(range(0, 64, 4)))), 64, 16)
    first = [next(stream) for _ in range(3)]
    stream.close()
    assert len(first) == 3 and all(f.shape == frames[0].shape for f in first)
    assert not [t for t in threading.enumerate() if t.name.startswith("framemae-")]


def test_background_writes_pass_frames_in_order_and_reraise(tmp_path: Path) -> None:
    from fractions import Fraction

    from framers.video_writer import BackgroundWrites, VideoWriter

    frames = np.random.default_rng(0).integers(0, 255, (5, 32, 48, 3), dtype=np.uint8)
    with VideoWriter(tmp_path / "a.mp4", 48, 32, Fraction(1, 25), 25.0, crf=0) as writer:
        writes = BackgroundWrites(writer)
        for i, frame in enumerate(frames):
            writes.write(frame, i)
        writes.finish()
    assert writer.frames_written == 5
    with VideoWriter(tmp_path / "b.mp4", 48, 32, Fraction(1, 25), 25.0) as writer:
        writes = BackgroundWrites(writer)
        writes.write(frames[0][:16], 0)  # wrong size: VideoWriter.write raises on the writer thread
        with pytest.raises(ValueError, match="frame 48x16"):
            for i in range(1, 20):
                writes.write(frames[0], i)
            writes.finish()
        writes.abort()
