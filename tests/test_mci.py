"""The ``mci`` reconstructor (FFmpeg minterpolate): exact kept frames, frame count, real interpolation,
streaming, and clear refusals of patterns it cannot handle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from framers import bundle as fb
from framers.errors import UnsupportedOptionError
from framers.metrics import psnr
from framers.pipeline import compress, iter_reconstructed
from framers.reconstructors.base import KeptFrame
from framers.reconstructors.classical import HoldReconstructor, LinearReconstructor
from framers.reconstructors.mci import MCIReconstructor, typical_gap
from framers.registry import get_reconstructor
from framers.video import FrameReader
from tests.videogen import write_video

N = 40


def panning_frames(n: int = N, width: int = 96, height: int = 64, speed: int = 2) -> list[np.ndarray]:
    """A smooth random texture panning ``speed`` px per frame: pure motion, no new content."""
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (height, width + speed * n, 3), dtype=np.uint8)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0).astype(np.float32)
    canvas = np.rint(255 * (smooth - smooth.min()) / (smooth.max() - smooth.min())).astype(np.uint8)
    return [np.ascontiguousarray(canvas[:, speed * i : speed * i + width]) for i in range(n)]


def rebuild(reconstructor: object, frames: list[np.ndarray], kept: list[int]) -> list[np.ndarray]:
    assert hasattr(reconstructor, "reconstruct")
    stream = (KeptFrame(i, frames[i]) for i in kept)
    return list(reconstructor.reconstruct(stream, len(frames), 16))


def mean_psnr(frames: list[np.ndarray], rebuilt: list[np.ndarray], indices: list[int]) -> float:
    return float(np.mean([psnr(frames[i], rebuilt[i]) for i in indices]))


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return panning_frames()


@pytest.mark.parametrize("kept", [list(range(0, N, 4)), list(range(2, N, 4)), [0, *range(3, N, 4)]])
def test_kept_frames_exact_count_right_and_interpolates(frames: list[np.ndarray], kept: list[int]) -> None:
    # scd="none": FFmpeg's scene-cut test (fdiff) fires on the first span of this busy texture
    # (it compares each span's difference with the previous span's, which is 0 at the start)
    # and then repeats the nearest kept frame; see test_default_scene_cut_detection.
    mci = MCIReconstructor(scd="none")
    mci.check_pattern(kept, N, 16)
    out = rebuild(mci, frames, kept)
    assert len(out) == N
    for i in kept:
        assert np.array_equal(out[i], frames[i])
    assert all(np.array_equal(out[i], frames[kept[0]]) for i in range(kept[0]))  # before: first kept
    assert all(np.array_equal(out[i], frames[kept[-1]]) for i in range(kept[-1], N))  # after: held
    inner = [i for i in range(kept[0], kept[-1]) if i not in kept]
    # really interpolated: new pictures, not copies of a kept neighbour ...
    assert not any(np.array_equal(out[i], frames[k]) for i in inner for k in kept)
    # ... and motion-compensated: far better than hold and than blending (linear) on a pan
    hold = mean_psnr(frames, rebuild(HoldReconstructor(), frames, kept), inner)
    linear = mean_psnr(frames, rebuild(LinearReconstructor(), frames, kept), inner)
    got = mean_psnr(frames, out, inner)
    assert got > hold + 3.0
    assert got > linear + 2.0


def test_beats_hold_on_the_moving_square_clip(tmp_path: Path) -> None:
    """Through the codec: a stride bundle (lossless keyframes) rebuilt by name from the registry."""
    video = write_video(tmp_path / "moving.mp4", frames=N)
    compress(video, tmp_path / "b", selector="stride", stride=4, keyframe_codec="ffv1")
    manifest = fb.read_manifest(tmp_path / "b")
    with FrameReader(video) as reader:
        source = [f.rgb for f in reader.frames()]
    rebuilt = {
        name: list(iter_reconstructed(tmp_path / "b", manifest, get_reconstructor(name))) for name in ("mci", "hold")
    }
    assert isinstance(get_reconstructor("mci"), MCIReconstructor)
    assert len(rebuilt["mci"]) == N
    for i in manifest.kept_indices():
        assert np.array_equal(rebuilt["mci"][i], source[i])
    everything = list(range(N))
    assert mean_psnr(source, rebuilt["mci"], everything) > mean_psnr(source, rebuilt["hold"], everything) + 1.0


def test_default_scene_cut_detection(frames: list[np.ndarray]) -> None:
    """With FFmpeg's default scd=fdiff a span it takes for a cut repeats the nearest kept frame."""
    kept = list(range(0, N, 4))
    out = rebuild(MCIReconstructor(), frames, kept)
    assert [np.array_equal(out[i], frames[k]) for i, k in ((1, 0), (2, 0), (3, 4))] == [True] * 3
    inner = [i for i in range(4, kept[-1]) if i not in kept]
    assert mean_psnr(frames, out, inner) > mean_psnr(frames, rebuild(HoldReconstructor(), frames, kept), inner) + 3


def test_streams_with_a_bounded_lookahead(frames: list[np.ndarray]) -> None:
    consumed = 0

    def kept_stream() -> Iterator[KeptFrame]:
        nonlocal consumed
        for i in range(0, N, 4):
            consumed = i
            yield KeptFrame(i, frames[i])

    for produced, _ in enumerate(MCIReconstructor().reconstruct(kept_stream(), N, 16)):
        # minterpolate needs the kept frame after a span plus one more (bidirectional search)
        assert consumed <= produced + 3 * 4


def test_single_kept_frame_and_everything_kept(frames: list[np.ndarray]) -> None:
    out = rebuild(MCIReconstructor(), frames, [5])
    assert len(out) == N and all(np.array_equal(f, frames[5]) for f in out)
    out = rebuild(MCIReconstructor(), frames[:10], list(range(10)))
    assert all(np.array_equal(a, b) for a, b in zip(out, frames[:10], strict=True))


def test_uneven_patterns_interpolate_by_timestamp(frames: list[np.ndarray]) -> None:
    # The codec keeps extra frames at scene cuts and at the video's end, and the adaptive mode
    # changes stride per segment: minterpolate interpolates by timestamp, so gaps may differ.
    assert typical_gap([0, 4, 8, 12, 13]) == 4 and typical_gap([7]) == 1
    kept = [0, 4, 8, 13, 17, N - 1]
    out = rebuild(MCIReconstructor(), frames, kept)
    assert len(out) == N and all(np.array_equal(out[i], frames[i]) for i in kept)
    mci_err = sum(float(np.mean((out[i].astype(float) - frames[i]) ** 2)) for i in range(9, 13))
    hold_err = sum(float(np.mean((frames[8].astype(float) - frames[i]) ** 2)) for i in range(9, 13))
    assert mci_err < hold_err
    with pytest.raises(UnsupportedOptionError):
        MCIReconstructor().check_pattern([], 10, 16)
    with pytest.raises(UnsupportedOptionError, match="increasing"):
        MCIReconstructor().check_pattern([0, 4, 4], 10, 16)
    tiny = [f[:16, :16] for f in frames[:9]]
    with pytest.raises(UnsupportedOptionError, match="too small"):
        rebuild(MCIReconstructor(), tiny, [0, 4, 8])
