"""Interpolation weights follow timestamps where the frame rate varies (issue 13, c12's kind), and
stay exactly the frame-count weights for constant-rate video whose timestamps are rounded."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from framers import bundle as fb
from framers.metrics import psnr
from framers.pipeline import compress, iter_reconstructed
from framers.reconstructors.base import KeptFrame, position
from framers.registry import get_reconstructor
from framers.video import FrameReader

FRAMES = 25


def write_vfr_ramp(path: Path, durations_ms: list[int]) -> Path:
    """Lossless Matroska (1/1000 s): a textured picture whose brightness rises linearly with
    *time*, shown for ``durations_ms`` (cycled) each; nothing else moves."""
    yy, xx = np.mgrid[0:96, 0:128]
    texture = 20 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "bgr0"
        t = 0
        for i in range(FRAMES):
            level = 40 + 0.15 * t  # levels per ms
            rgb = np.clip(level + texture, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2)
            shown = durations_ms[i % len(durations_ms)]
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):  # intra only: in order
                packet.time_base = Fraction(1, 1000)
                packet.pts = packet.dts = t
                packet.duration = shown
                out.mux(packet)
            t += shown
        assert not stream.encode(None)  # ffv1 gives each packet at once
    return path


def rebuilt(bundle: Path, name: str, use_times: bool) -> list[np.ndarray]:
    manifest = fb.read_manifest(bundle)
    if use_times:
        return list(iter_reconstructed(bundle, manifest, get_reconstructor(name)))
    kept = [KeptFrame(i, f) for i, f in zip(manifest.kept_indices(), _kept_frames(bundle, manifest), strict=True)]
    return list(get_reconstructor(name).reconstruct(kept, manifest.n_frames, manifest.clip_len))


def _kept_frames(bundle: Path, manifest: fb.Manifest) -> list[np.ndarray]:
    from framers.keyframes import iter_keyframes

    return list(iter_keyframes(fb.keyframes_path(bundle, manifest), len(manifest.kept_indices())))


def test_position_by_time_only_where_timestamps_are_uneven() -> None:
    assert position(1, 0, 4) == 0.25
    assert position(1, 0, 4, [0, 33, 67, 100, 133]) == 0.25  # 30 fps in ms: rounding, not timing
    assert position(1, 0, 4, [0, 20, 70, 90, 140]) == pytest.approx(20 / 140)
    assert position(2, 0, 4, [0, 0, 0, 0, 0]) == 0.5  # no span: by count


@pytest.mark.parametrize("name", ["linear", "framemae"])
def test_variable_rate_gaps_are_interpolated_by_time(tmp_path: Path, name: str) -> None:
    source = write_vfr_ramp(tmp_path / "vfr.mkv", [25, 55])  # uneven, never a timing break (< 2.5x)
    with FrameReader(source) as reader:
        frames = [f.rgb for f in reader.frames()]
    assert len(frames) == FRAMES
    compress(source, tmp_path / "b", selector="stride", stride=4, keyframe_codec="ffv1")
    manifest = fb.read_manifest(tmp_path / "b")
    assert manifest.cuts == [] and manifest.pts[:3] == [0, 25, 80]
    dropped = [i for i in range(FRAMES) if i not in set(manifest.kept_indices())]
    by_time = [psnr(frames[i], f) for i, f in enumerate(rebuilt(tmp_path / "b", name, True)) if i in dropped]
    by_count = [psnr(frames[i], f) for i, f in enumerate(rebuilt(tmp_path / "b", name, False)) if i in dropped]
    # the brightness follows time: weights by time rebuild it (to rounding), weights by count miss
    assert min(by_time) > 45.0, by_time
    assert np.mean(by_time) > np.mean(by_count) + 5.0, (np.mean(by_time), np.mean(by_count))


def test_constant_rate_with_rounded_timestamps_is_rebuilt_as_by_frame_count(tmp_path: Path) -> None:
    source = write_vfr_ramp(tmp_path / "cfr.mkv", [33, 33, 34])  # 30 fps in 1/1000 s
    compress(source, tmp_path / "b", selector="stride", stride=4)
    for name in ("linear", "framemae"):
        a, b = rebuilt(tmp_path / "b", name, True), rebuilt(tmp_path / "b", name, False)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), name
