"""Chunk significance (issue 15): the pooling numerics, the random masks, and both estimates on a
real video whose only unpredictable region is known, through the ``framers significance`` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from framers import significance as sig
from framers.cli import main

W, H, FRAMES = 128, 96, 24
BAND = slice(2, 4)  # chunk rows 2-3 (pixels 32-63) hold the jumping square; the rest is static


def write_jumping_square(path: Path) -> Path:
    """Lossless (FFV1) video: a static textured background, and a 16×16 square that jumps to a
    random column of pixel rows 32-63 every frame, so no interpolation can predict it."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:H, 0:W]
    grey = 110 + 50 * np.sin(xx / 6.0) * np.cos(yy / 9.0)  # smooth texture: x264 keeps it well
    background = np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "bgr0"
        for _ in range(FRAMES):
            rgb = background.copy()
            x = int(rng.integers(0, W - 16))
            rgb[40:56, x:x + 16] = (255, 255, 0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_pool_pixels_averages_blocks_and_partial_edge_blocks() -> None:
    error = np.arange(37 * 21, dtype=np.float32).reshape(37, 21)
    pooled = sig.pool_pixels(error, 16)
    assert pooled.shape == (3, 2)
    for r in range(3):
        for c in range(2):
            assert pooled[r, c] == pytest.approx(error[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16].mean())


def test_accumulator_weights_samples_and_marks_unmeasured_chunks() -> None:
    acc = sig.ChunkAccumulator()
    ones = np.ones((16, 32), np.float32)
    acc.add(0, ones * 4)
    acc.add(1, ones * 8)
    acc.add(0, ones * 6)  # a second sample of frame 0
    acc.add(2, ones * 100, weight=0.0)  # frame 2 kept in this sample: not measured
    out = acc.result()
    assert out.shape == (2, 1, 2)
    assert out[0, 0, 0] == pytest.approx((4 + 8 + 6) / 3)
    assert np.isnan(out[1]).all()


def test_random_masks_keep_ends_bound_gaps_and_hide_about_the_share() -> None:
    patterns = sig.random_keep_patterns(200, 20, hide=0.9, max_gap=8, seed=1)
    assert len(patterns) == 20
    for kept in patterns:
        assert kept[0] == 0 and kept[-1] == 199
        assert max(np.diff(kept)) <= 8 and sorted(set(kept)) == kept
    hidden = 1 - np.mean([len(k) for k in patterns]) / 200
    assert 0.8 < hidden < 0.92  # 90 % asked; the gap bound keeps a few more
    with pytest.raises(ValueError):
        sig.random_keep_patterns(10, 1, hide=1.0, max_gap=4)


@pytest.mark.parametrize("method", ["exact", "masked"])
def test_significance_finds_the_unpredictable_region(
    tmp_path: Path, method: str, capsys: pytest.CaptureFixture[str]
) -> None:
    video = write_jumping_square(tmp_path / "jump.mkv")
    out, png = tmp_path / "sig.json", tmp_path / "sig.png"
    extra = ["--stride", "4"] if method == "exact" else ["--samples", "4"]
    assert main(["significance", str(video), "--json", str(out), "--png", str(png), "--method", method,
                 "-q", *extra]) == 0
    said = capsys.readouterr().out
    assert f"{method} significance of {FRAMES} frames" in said and "heatmap" in said
    doc = json.loads(out.read_text())
    assert doc["shape"] == [FRAMES // 2, H // 16, W // 16] and doc["chunk"] == {"frames": 2, "height": 16, "width": 16}
    values = np.array([[[np.nan if v is None else v for v in row] for row in plane] for plane in doc["values"]])
    band = np.nanmedian(values[:, BAND])
    static = np.nanmedian(np.delete(values, np.r_[BAND], axis=1))
    # the square's rows are rebuilt far worse than the static background, in every measured chunk plane
    assert band > 20 * max(static, 0.5), (band, static)
    assert doc["summary"]["chunks"] == int(np.isfinite(values).sum())
    if method == "exact":
        kept = doc["settings"]["kept"]
        assert kept[0] == 0 and kept[-1] == FRAMES - 1 and 4 in kept
    else:
        assert doc["settings"]["samples"] == 4
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_ranking_agreement_is_spearman() -> None:
    a = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    assert sig.ranking_agreement(a, a ** 2) == pytest.approx(1.0)
    assert sig.ranking_agreement(a, -a) == pytest.approx(-1.0)


def test_a_missing_video_and_bad_options_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["significance", str(tmp_path / "none.mp4"), "--json", str(tmp_path / "o.json")]) == 2
    assert "error" in capsys.readouterr().err
    video = write_jumping_square(tmp_path / "jump.mkv")
    for bad, said in ((["--frames", "0"], "--frames"), (["--method", "masked", "--samples", "0"], "one mask"),
                      (["--method", "masked", "--hide", "1.5"], "hides")):
        assert main(["significance", str(video), "--json", str(tmp_path / "o.json"), *bad]) == 2, bad
        err = capsys.readouterr().err
        assert err.startswith("framers: error:") and said in err, err


def test_long_or_large_videos_get_longer_chunks_so_a_map_stays_bounded() -> None:
    assert sig.chunk_frames_for(64, 480, 854) == 2  # CARV's unit while the map is small
    for frames, h, w in ((18000, 1080, 1920), (300, 1080, 1920), (10**6, 64, 64)):
        span = sig.chunk_frames_for(frames, h, w)
        assert span % 2 == 0 and -(-frames // span) * -(-h // 16) * -(-w // 16) <= sig.MAX_VALUES
    acc = sig.ChunkAccumulator(frames=4)
    for i in range(10):
        acc.add(i, np.full((16, 16), float(i)))
    assert acc.result()[:, 0, 0].tolist() == [1.5, 5.5, 8.5]
