"""The refresh layer (issue 15): block choice and residual numerics, and through the codec: a video
whose only unpredictable region is known gets it corrected, the bundle says what it holds, and
another reconstructor is told the layer is not for it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from framers import bundle as fb
from framers import pipeline, refresh, refresh_map
from framers.cli import main
from framers.errors import UnsupportedOptionError
from framers.h264_sei import SeiDropper
from framers.metrics import psnr_from_mse
from framers.registry import get_reconstructor
from framers.video import FrameReader
from tests.test_significance import H, W, write_jumping_square


def test_choose_blocks_takes_the_worst_share_over_the_group() -> None:
    a = np.array([[1.0, 9.0], [3.0, 0.0]])
    b = np.array([[8.0, 2.0], [7.0, 4.0]])
    masks = refresh.choose_blocks([a, b], 0.25)  # 2 of 8 blocks
    assert masks[0].tolist() == [[False, True], [False, False]]
    assert masks[1].tolist() == [[True, False], [False, False]]
    assert sum(int(m.sum()) for m in refresh.choose_blocks([a, b], 0.5)) == 4
    assert not any(m.any() for m in refresh.choose_blocks([a, b], 0.0))
    with pytest.raises(ValueError):
        refresh.choose_blocks([a], 1.5)


def test_clips_that_fail_more_get_more_of_the_group_s_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks are chosen over a group of clips (``GROUP_CLIPS``), so where the rebuild fails in
    one clip only, that clip gets the group's whole share; a group is smaller where its frames
    would not fit ``GROUP_MAX_BYTES`` (4K), and never less than one clip."""
    assert refresh.clips_per_group(1080, 1920, 16) == refresh.GROUP_CLIPS == 4
    assert refresh.clips_per_group(2160, 3840, 16) == 1 and refresh.clips_per_group(8640, 15360, 16) == 1
    height, width, clip_len = 32, 64, 4
    source = np.full((height, width, 3), 100, np.uint8)
    near, far = source + 1, source + 3  # the second clip's rebuild fails more, everywhere
    frames = [(source, near)] * clip_len + [(source, far)] * clip_len
    kept = {0, 4}  # frames 1-3 and 5-7 are dropped: 3 pictures of 8 blocks per clip
    for clips, per_clip in ((1, [6, 6]), (2, [0, 12])):
        monkeypatch.setattr(refresh, "GROUP_CLIPS", clips)
        masks: list[np.ndarray] = []
        pictures, blocks = refresh.encode_refresh(iter(frames), kept, len(frames), clip_len, 0.25,
                                                  lambda _: None, masks.append)
        assert pictures == 6 and blocks == 12
        assert [sum(int(m.sum()) for m in masks[:3]), sum(int(m.sum()) for m in masks[3:])] == per_clip, clips


def test_excess_scores_rank_what_interpolation_lost_over_what_coding_lost() -> None:
    """A textured block that coding already loses (high error in the kept frames too) ranks below
    a block the interpolation got wrong; the floor drops blocks not worse than the kept frames'
    coding error there; the local coding error follows the position between the kept frames."""
    left, right = np.array([[30.0, 1.0]]), np.array([[10.0, 3.0]])
    local = refresh.local_coding_error(3, [(0, left), (4, right)])
    assert local.tolist() == [[15.0, 2.5]]
    assert refresh.local_coding_error(5, [(0, left), (4, right)]).tolist() == right.tolist()
    with pytest.raises(ValueError):
        refresh.local_coding_error(0, [(0, left)])
    errors = np.array([[40.0, 20.0]])  # the textured block has the larger error, the other the larger excess
    assert refresh.block_scores(errors, local, "error", 0.0).tolist() == [[40.0, 20.0]]
    assert refresh.block_scores(errors, local, "excess", 0.0).tolist() == [[25.0, 17.5]]
    assert refresh.block_scores(errors, local, "excess", 3.0).tolist() == [[0.0, 17.5]]
    assert refresh.choose_blocks([refresh.block_scores(errors, local, "excess", 3.0)], 1.0)[0].tolist() == [
        [False, True]]
    with pytest.raises(ValueError):
        refresh.block_scores(errors, None, "excess", 0.0)


def _yuv(rgb: np.ndarray) -> list[np.ndarray]:
    """The planes of ``to_codec_yuv(rgb)`` (copies)."""
    from framers.adaptive.coding import planes_of, to_codec_yuv

    return [p.copy() for p in planes_of(to_codec_yuv(rgb))]


def test_residual_round_trip_is_exact_inside_the_blocks_and_neutral_outside() -> None:
    """Without coding, the YUV residual brings the chosen blocks back to the source's planes and
    leaves the rest the rebuilt frame's; the picture is exactly NEUTRAL there."""
    from framers.adaptive.coding import planes_of

    rng = np.random.default_rng(0)
    source = rng.integers(60, 200, (40, 50, 3), dtype=np.uint8)  # partial edge blocks on both axes
    rebuilt = np.clip(source.astype(np.int16) + rng.integers(-50, 50, source.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((3, 4), bool)
    mask[0, 0] = mask[2, 3] = True
    picture = refresh.residual_picture(source, rebuilt, mask, feather=0)
    assert (picture.width, picture.height, picture.format.name) == (50, 40, "yuv420p")
    inside = refresh.expand(mask, 40, 50)
    summed = refresh.apply_residual_yuv(rebuilt, picture)
    # the sum's planes are the source's inside and the rebuilt frame's outside, so its RGB is
    # what the colour path makes of each (to_rgb is per pixel: chroma repeated, no filter)
    from framers.adaptive.coding import to_codec_yuv
    from framers.rgb import to_rgb

    assert np.array_equal(summed[inside], to_rgb(to_codec_yuv(source))[inside])
    assert np.array_equal(summed[~inside], to_rgb(to_codec_yuv(rebuilt))[~inside])
    for res in planes_of(picture):
        scale = 40 // res.shape[0]
        assert (res[~inside[::scale, ::scale]] == refresh.NEUTRAL).all()
    # with the default attention ramp: pixels beyond it are NEUTRAL in the picture
    ramped = planes_of(refresh.residual_picture(source, rebuilt, mask))[0]
    beyond = refresh.attention(inside, refresh.FEATHER) == 0
    assert (ramped[beyond] == refresh.NEUTRAL).all() and beyond.sum() < (~inside).sum()


def test_attention_ramps_the_residual_around_the_blocks() -> None:
    """With a ramp of F pixels the picture is NEUTRAL + a·(source − rebuilt): the whole residual
    inside the blocks, a linearly smaller share up to F pixels around them, NEUTRAL beyond (Nokia
    Eq. 7–8's form with a fixed map)."""
    from framers.adaptive.coding import planes_of

    inside = np.zeros((48, 48), bool)
    inside[16:32, 16:32] = True
    weight = refresh.attention(inside, 4)
    assert (weight[inside] == 1).all() and weight[16, 13] == pytest.approx(1 - 3 / 5, abs=0.02)
    assert weight[16, 11] == 0 and weight[0, 0] == 0
    assert np.array_equal(refresh.attention(inside, 0), inside.astype(np.float32))
    source = np.full((48, 48, 3), 200, np.uint8)
    rebuilt = np.full((48, 48, 3), 100, np.uint8)
    mask = np.zeros((3, 3), bool)
    mask[1, 1] = True
    luma = planes_of(refresh.residual_picture(source, rebuilt, mask, feather=4))[0]
    step = int(_yuv(source)[0][0, 0]) - int(_yuv(rebuilt)[0][0, 0])  # the luma difference
    assert (luma[16:32, 16:32] == refresh.NEUTRAL + step).all()
    assert luma[20, 14] == refresh.NEUTRAL + round(step * (1 - 2 / 5))
    assert (luma[:, :10] == refresh.NEUTRAL).all()


def test_a_starved_layer_stays_neutral_away_from_its_blocks(tmp_path: Path) -> None:
    """Far below the bitrate its blocks need, x264 still decodes the flat parts of the pictures
    to NEUTRAL (its prediction where nothing precedes), so a starved layer cannot shift whole
    frames: the first layers' RGB mid-grey residual is not 128 in every YUV plane, and decoded
    2 gray levels off in luma at 10 kbit/s."""
    from framers.adaptive.coding import planes_of

    rng = np.random.default_rng(5)
    writer = refresh.RefreshWriter(tmp_path / "r.h264", 64, 48, 24, bits_per_picture=400)
    mask = np.zeros((3, 4), bool)
    mask[2, 2] = True  # rows 32-47: the top 32 rows are far from it
    for _ in range(12):
        source = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        writer.write(refresh.residual_picture(source, np.full_like(source, 90), mask, feather=0))
    writer.close()
    for picture in refresh.iter_pictures(tmp_path / "r.h264", 12):
        top = [plane[: plane.shape[0] * 2 // 3 - 4] for plane in planes_of(picture)]
        assert all(np.abs(p.astype(int) - refresh.NEUTRAL).max() <= 1 for p in top), [p.min() for p in top]
    assert refresh.mid_grey_yuv("yuv420p") != (refresh.NEUTRAL,) * 3  # why the zero changed


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return min(60.0, psnr_from_mse(float(np.mean((a.astype(np.float32) - b) ** 2))))


def _rebuilt_psnr(bundle: Path, source: list[np.ndarray], reconstructor: str, frames: list[int]) -> float:
    with fb.open_bundle(bundle) as folder:
        manifest = fb.read_manifest(folder)
        out = list(pipeline.iter_reconstructed(folder, manifest, get_reconstructor(reconstructor)))
    return float(np.mean([_psnr(source[i], out[i]) for i in frames]))


@pytest.fixture(scope="module")
def jumping(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jumping_square(tmp_path_factory.mktemp("refresh") / "jump.mkv")


def test_refresh_corrects_what_the_rebuild_cannot_predict(jumping: Path, tmp_path: Path) -> None:
    """Every 4th frame kept: the jumping square is lost in the rebuilt frames. With --refresh the
    encoder finds its blocks (they are the worst ones) and sends them: the dropped frames gain
    many dB for framemae; linear is not given a layer made for framemae, and says so."""
    source = [f.rgb for f in FrameReader(jumping).frames()]
    plain, refreshed = tmp_path / "plain.frs", tmp_path / "refreshed.frs"
    pipeline.compress(jumping, plain, selector="stride", stride=4, keyframe_crf=20)
    result = pipeline.compress(jumping, refreshed, selector="stride", stride=4, keyframe_crf=20, refresh=0.1)
    with fb.open_bundle(refreshed) as folder:
        manifest = fb.read_manifest(folder)
        kept = set(manifest.kept_indices())
        raw = json.loads((folder / fb.MANIFEST).read_text())
        assert (folder / fb.REFRESH).is_file()
    dropped = [i for i in range(len(source)) if i not in kept]
    layer = result.refresh
    assert layer is not None and raw["version"] == 6 and raw["refresh"] == layer and layer["map_bytes"] > 0
    assert layer["map_coding"] == refresh_map.RANGE
    assert layer["pictures"] == len(dropped) and layer["reconstructor"] == "framemae" and layer["share"] == 0.1
    assert result.model_versions.get("framemae") == layer["model"]  # it ran at encode time
    blocks_per_frame = -(-H // 16) * -(-W // 16)
    assert 0.08 * len(dropped) * blocks_per_frame <= layer["blocks"] <= 0.12 * len(dropped) * blocks_per_frame
    assert result.bundle_bytes > fb.bundle_bytes(plain)
    before = _rebuilt_psnr(plain, source, "framemae", dropped)
    after = _rebuilt_psnr(refreshed, source, "framemae", dropped)
    assert after > before + 5.0, (before, after)
    # linear gets no layer: its frames are those of the plain bundle
    assert _rebuilt_psnr(refreshed, source, "linear", dropped) == pytest.approx(
        _rebuilt_psnr(plain, source, "linear", dropped))
    out = pipeline.reconstruct(refreshed, tmp_path / "linear.mp4", reconstructor="linear")
    assert len(out.warnings) == 1 and "not applied" in out.warnings[0]
    assert pipeline.reconstruct(refreshed, tmp_path / "mae.mp4").warnings == []


def test_refresh_options_are_checked(jumping: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UnsupportedOptionError, match="fixed patterns"):
        pipeline.compress(jumping, tmp_path / "a.frs", target_psnr=34.0, refresh=0.1)
    with pytest.raises(UnsupportedOptionError, match=r"\[0, 1\)"):
        pipeline.compress(jumping, tmp_path / "b.frs", refresh=1.0)
    assert main(["compress", str(jumping), "-o", str(tmp_path / "c.frs"), "--refresh", "0.1", "--target-psnr", "34",
                 "-q"]) == 2
    assert "--refresh" in capsys.readouterr().err
    # alone, --refresh runs the fixed default pattern (every 4th frame) with the layer
    assert main(["compress", str(jumping), "-o", str(tmp_path / "d.frs"), "--refresh", "0.1", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "(stride)" in printed and "refresh:" in printed and "for framemae" in printed
    # 0 is off: the adaptive default runs, no layer
    assert main(["compress", str(jumping), "-o", str(tmp_path / "e.frs"), "--refresh", "0", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "(adaptive)" in printed and "refresh:" not in printed
    assert main(["reconstruct", str(tmp_path / "d.frs"), "-o", str(tmp_path / "d.mp4"), "--reconstructor", "linear",
                 "-q"]) == 0
    assert "warning: the bundle's refresh layer corrects framemae's frames" in capsys.readouterr().out


def test_byte_budget_sets_the_layer_bitrate(jumping: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--refresh-kbps: x264's average-bitrate control spends about the asked kbit/s on the layer
    (one-pass ABR over a 24-frame stream: within ±40 %; this small video's layer saturates near
    90 kbit/s, where x264 reaches its finest quantiser), more budget buys more bytes and quality,
    and alone it refreshes defaults.REFRESH_SHARE of the blocks."""
    source = [f.rgb for f in FrameReader(jumping).frames()]
    seconds = len(source) / 25.0
    results = {}
    for kbps in (20.0, 60.0):
        results[kbps] = pipeline.compress(jumping, tmp_path / f"k{kbps:g}.frs", selector="stride", stride=4,
                                          keyframe_crf=20, refresh_kbps=kbps)
        layer = results[kbps].refresh
        assert layer is not None and layer["kbps"] == kbps and "crf" not in layer and layer["share"] == 0.1
        achieved = layer["bytes"] * 8 / 1000 / seconds
        assert 0.6 * kbps <= achieved <= 1.4 * kbps, (kbps, achieved)
    low, high = (results[k].refresh for k in (20.0, 60.0))
    assert low is not None and high is not None and high["bytes"] > 2 * low["bytes"]
    assert high["blocks"] == low["blocks"]  # the budget sets the quality of the same blocks
    dropped = [i for i in range(len(source)) if i % 4 and i != len(source) - 1]
    assert _rebuilt_psnr(tmp_path / "k60.frs", source, "framemae", dropped) > _rebuilt_psnr(
        tmp_path / "k20.frs", source, "framemae", dropped)
    for refused in (0.0, 0.5, float("nan")):  # x264's rate control works in whole kbit/s
        with pytest.raises(UnsupportedOptionError, match="refresh_kbps"):
            pipeline.compress(jumping, tmp_path / "z.frs", refresh_kbps=refused)
    assert main(["compress", str(jumping), "-o", str(tmp_path / "y.frs"), "--refresh-kbps", "50", "--refresh", "0",
                 "-q"]) == 2
    assert main(["compress", str(jumping), "-o", str(tmp_path / "cli.frs"), "--refresh-kbps", "100", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "(stride)" in printed and "of 100 asked" in printed
    assert main(["compress", str(jumping), "-o", str(tmp_path / "x.frs"), "--refresh-kbps", "100", "--target-psnr",
                 "34", "-q"]) == 2


@pytest.mark.parametrize("coding", refresh_map.CODINGS)
def test_block_map_round_trip(tmp_path: Path, coding: str) -> None:
    """The block map stores each picture's mask exactly in both codings; a wrong count or a
    damaged file is an error."""
    rng = np.random.default_rng(7)
    masks = [rng.random((5, 7)) < 0.1 for _ in range(40)]
    writer = refresh_map.BlockMapWriter(tmp_path / "m.bin", coding)
    for mask in masks:
        writer.write(mask)
    assert 0 < writer.close() < 40 * 5  # well under a byte per block row
    read = list(refresh_map.iter_block_maps(tmp_path / "m.bin", 5, 7, 40, coding))
    assert all(np.array_equal(a, b) for a, b in zip(masks, read, strict=True))
    with pytest.raises(ValueError):
        list(refresh_map.iter_block_maps(tmp_path / "m.bin", 5, 7, 39, coding))
    (tmp_path / "bad.bin").write_bytes(b"not a map")
    with pytest.raises(ValueError):
        list(refresh_map.iter_block_maps(tmp_path / "bad.bin", 5, 7, 40, coding))
    with pytest.raises(ValueError, match="coding"):
        refresh_map.BlockMapWriter(tmp_path / "x.bin", "lzma")


def test_range_coding_learns_where_refreshed_blocks_cluster(tmp_path: Path) -> None:
    """Refreshed blocks cluster in space and drift slowly in time (a moving object); the range
    coder's contexts (the previous picture, the row above) learn that, where deflate sees bytes:
    a ragged blob (80 % of its blocks) moving one block per picture over a 30×54 grid (480p)
    codes in under 0.8 of deflate's bytes (0.72 here; real val maps: 0.61–0.98), and scattered
    random blocks within 10 % of their entropy."""
    sizes = {}
    rows, cols, n = 30, 54, 48
    rng = np.random.default_rng(11)
    blob = []
    for k in range(n):
        mask = np.zeros((rows, cols), bool)
        mask[8:18, (k % 40):(k % 40) + 12] = rng.random((10, 12)) < 0.8
        blob.append(mask)
    scattered = [rng.random((rows, cols)) < 0.1 for _ in range(n)]
    for name, masks in (("blob", blob), ("scattered", scattered)):
        for coding in refresh_map.CODINGS:
            writer = refresh_map.BlockMapWriter(tmp_path / f"{name}.{coding}", coding)
            for mask in masks:
                writer.write(mask)
            sizes[name, coding] = writer.close()
            back = refresh_map.iter_block_maps(tmp_path / f"{name}.{coding}", rows, cols, n, coding)
            assert all(np.array_equal(a, b) for a, b in zip(masks, back, strict=True))
    assert sizes["blob", refresh_map.RANGE] < 0.8 * sizes["blob", refresh_map.DEFLATE], sizes
    entropy_bytes = n * rows * cols * -(0.1 * np.log2(0.1) + 0.9 * np.log2(0.9)) / 8
    assert sizes["scattered", refresh_map.RANGE] < 1.1 * entropy_bytes, (sizes, entropy_bytes)


def test_a_version_5_bundle_with_a_deflated_map_still_decodes(jumping: Path, tmp_path: Path) -> None:
    """Bundles of the seventh session's encoder (v5: the block map deflated, no ``map_coding``)
    rebuild exactly as the range-coded map of the same masks does."""
    bundle = tmp_path / "v6.frs"
    pipeline.compress(jumping, bundle, selector="stride", stride=4, keyframe_crf=20, refresh=0.1)
    folder = tmp_path / "v5"
    folder.mkdir()
    fb.unpack(bundle, folder)
    raw = json.loads((folder / fb.MANIFEST).read_text())
    layer = raw["refresh"]
    shape = (-(-H // 16), -(-W // 16))
    masks = list(refresh_map.iter_block_maps(folder / fb.REFRESH_MAP, *shape, layer["pictures"], refresh_map.RANGE))
    writer = refresh_map.BlockMapWriter(folder / fb.REFRESH_MAP, refresh_map.DEFLATE)
    for mask in masks:
        writer.write(mask)
    layer["map_bytes"] = raw["files"][fb.REFRESH_MAP]["bytes"] = writer.close()
    raw["files"][fb.REFRESH_MAP].pop("sha256", None)
    del layer["map_coding"]
    raw["version"] = 5
    (folder / fb.MANIFEST).write_text(json.dumps(raw))
    rebuilt = {}
    for name, path in (("v6", bundle), ("v5", folder)):
        with fb.open_bundle(path) as opened:
            manifest = fb.read_manifest(opened)
            rebuilt[name] = list(pipeline.iter_reconstructed(opened, manifest, get_reconstructor("framemae")))
    assert all(np.array_equal(a, b) for a, b in zip(rebuilt["v6"], rebuilt["v5"], strict=True))


def test_a_starved_layer_leaves_the_rest_of_the_frame_alone(jumping: Path, tmp_path: Path) -> None:
    """At 1 kbit/s x264 skips most of the layer's blocks, carrying earlier pictures' residual
    over; the decoder adds the residual only at each picture's blocks and their ramp (the block
    map), and every other pixel of a dropped frame is the plain rebuild itself, not taken through
    4:2:0 and back (a fresh-user trial measured −0.2 dB with the layer at 10 kbit/s when the whole
    frame went through the sum)."""
    plain, starved = tmp_path / "plain.frs", tmp_path / "starved.frs"
    pipeline.compress(jumping, plain, selector="stride", stride=4, keyframe_crf=20)
    result = pipeline.compress(jumping, starved, selector="stride", stride=4, keyframe_crf=20, refresh_kbps=1.0)
    assert result.refresh is not None
    per_block = 8 * result.refresh["bytes"] / result.refresh["blocks"]
    assert (per_block < pipeline.MIN_BITS_PER_BLOCK) == any("bits per refreshed block" in w for w in result.warnings)
    frames = {}
    for name, path in (("plain", plain), ("starved", starved)):
        with fb.open_bundle(path) as folder:
            manifest = fb.read_manifest(folder)
            frames[name] = list(pipeline.iter_reconstructed(folder, manifest, get_reconstructor("framemae")))
            if name == "starved":
                kept = set(manifest.kept_indices())
                maps = list(refresh_map.iter_block_maps(folder / fb.REFRESH_MAP, -(-H // 16), -(-W // 16),
                                                        result.refresh["pictures"], refresh_map.RANGE))
    dropped = [i for i in range(len(frames["plain"])) if i not in kept]
    for i, mask in zip(dropped, maps, strict=True):
        outside = ~refresh.support(mask, H, W, refresh.FEATHER)
        # chroma of a 2x2 sample half inside the ramp is refreshed: compare whole samples only
        whole = outside[0::2, 0::2] & outside[1::2, 0::2] & outside[0::2, 1::2] & outside[1::2, 1::2]
        outside &= np.repeat(np.repeat(whole, 2, 0), 2, 1)
        assert np.array_equal(frames["starved"][i][outside], frames["plain"][i][outside]), i


def test_yuv_residual_restores_the_source_blocks_in_the_stream_format() -> None:
    """The decoder's sum in YUV: a residual picture as the encoder hands it to x264 (no coding
    loss here) brings the refreshed blocks back to the source, fine chroma included (the first
    layers' RGB sum left 14.3 gray levels mean abs there); a picture of another size is refused;
    the first layers' zero (mid-grey's YUV) is still applied when given."""
    from framers.adaptive.coding import planes_of, to_codec_yuv
    from framers.rgb import to_rgb

    rng = np.random.default_rng(1)
    source = to_rgb(to_codec_yuv(rng.integers(40, 215, (32, 48, 3), dtype=np.uint8)))  # a 4:2:0 source
    rebuilt = np.clip(source.astype(np.int16) + rng.integers(-40, 40, source.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((2, 3), bool)
    mask[1, 1] = True
    picture = refresh.residual_picture(source, rebuilt, mask)
    out = refresh.apply_residual_yuv(rebuilt, picture)
    inside = refresh.expand(mask, 32, 48)
    assert np.abs(out[inside].astype(int) - source[inside]).mean() < 4.0  # measured 2.8: the colour path rounds
    with pytest.raises(ValueError):
        refresh.apply_residual_yuv(rebuilt[:16], picture)
    zero = refresh.mid_grey_yuv("yuv420p")
    legacy = to_codec_yuv(np.full((32, 48, 3), refresh.MID, np.uint8))  # an all-zero first-layer picture
    assert [int(p[0, 0]) for p in planes_of(legacy)] == list(zero)
    assert np.array_equal(refresh.apply_residual_yuv(rebuilt, legacy, zero), to_rgb(to_codec_yuv(rebuilt)))


def test_the_budget_counts_a_variable_rate_video_by_its_timestamps() -> None:
    """A frame held for 5 s counts 5 s in the layer's budget: duration from the timestamps and
    the source's end of the last frame, not frames / fps."""
    from fractions import Fraction

    manifest = fb.Manifest(source={"end_pts": 153}, clip_len=16, slot_len=2, n_frames=4, kept=[[0, 3]],
                           time_base=Fraction(1, 30), pts=[0, 1, 2, 152], fps=30.0, keyframes={}, selection={})
    assert manifest.duration_seconds() == pytest.approx(153 / 30)
    manifest.source = {}  # no end known: one nominal frame after the last
    assert manifest.duration_seconds() == pytest.approx(153 / 30)
    manifest.pts = []
    assert manifest.duration_seconds() == pytest.approx(4 / 30)


def test_the_layer_is_coded_for_psnr_in_both_forms(tmp_path: Path) -> None:
    """The layer's encoder is x264 ``tune=psnr`` (no adaptive quantisation, no psychovisual RD:
    they weigh the residual picture's texture, not the shown frame's) with a CRF and with a byte
    budget alike: x264 states the options it ran with in an SEI message, read here from the
    encoder's own packets; the stream in the bundle leaves that message out and decodes the same."""
    assert refresh.TUNE == "psnr"
    rng = np.random.default_rng(3)
    mask = np.zeros((3, 4), bool)
    mask[1, 1] = True
    pictures = [refresh.residual_picture(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
                                         np.full((48, 64, 3), 90, np.uint8), mask) for _ in range(4)]
    for name, budget in (("crf", None), ("abr", 4000.0)):
        encoder = refresh.layer_encoder(64, 48, 24, budget)
        for pts, picture in enumerate(pictures):
            picture.pts = pts  # as RefreshWriter numbers them: x264's rate control follows timestamps
        packets = [p for picture in [*pictures, None] for p in encoder.encode(picture)]
        raw = b"".join(bytes(p) for p in packets)
        options = raw[raw.index(b"options: "):].split(b"\x00")[0].decode()
        assert " psy=0 " in options and re.search(r" aq=\d:0\.00( |$)", options), options  # AQ strength 0
        assert ("rc=crf" in options) == (budget is None), options  # x264 names a budget capped at its own rate "cbr"
        writer = refresh.RefreshWriter(tmp_path / f"{name}.h264", 64, 48, 24, budget)
        for picture in pictures:
            writer.write(picture)
        writer.close()
        assert b"x264" not in (tmp_path / f"{name}.h264").read_bytes()
        assert len(list(refresh.iter_pictures(tmp_path / f"{name}.h264", 4))) == 4
        # what the filter drops changes no picture (the same packets, with and without it: two x264
        # runs on the same pictures are not always byte-identical)
        drop = SeiDropper()
        kept = b"".join(bytes(q) for q in drop.filter(packets) + drop.flush())
        assert b"x264" not in kept and len(kept) < len(raw) - 500
        (tmp_path / "raw.h264").write_bytes(raw)
        (tmp_path / "kept.h264").write_bytes(kept)
        decoded = [[p.to_ndarray() for p in refresh.iter_pictures(tmp_path / f, 4)] for f in ("raw.h264", "kept.h264")]
        assert all(np.array_equal(a, b) for a, b in zip(*decoded, strict=True))


def test_compress_says_when_the_layer_cannot_help(jumping: Path, tmp_path: Path) -> None:
    """No layer though one was asked (every frame kept) is said; so is a layer, in either form,
    whose stream leaves under MIN_BITS_PER_BLOCK bits per refreshed block."""
    result = pipeline.compress(jumping, tmp_path / "all.frs", selector="stride", stride=1, refresh=0.1)
    assert result.refresh is None and any("no refresh layer" in w for w in result.warnings)
    plain = pipeline.compress(jumping, tmp_path / "plain.frs", selector="stride", stride=4)
    assert not any("refresh" in w for w in plain.warnings)
    coarse = {"blocks": 100, "bytes": 150, "crf": 46}  # 12 bits per block
    (said,) = pipeline.refresh_layer_warnings(coarse, True)
    assert "CRF 46 leaves 12.0 bits" in said and "lower crf" in said
    (said,) = pipeline.refresh_layer_warnings({**coarse, "kbps": 10.0}, True)
    assert "refresh_kbps 10 leaves 12.0 bits" in said and "raise refresh_kbps" in said
    assert pipeline.refresh_layer_warnings({**coarse, "bytes": 200}, True) == []  # 16 bits: enough


def test_compress_says_when_its_reconstructor_is_ignored(jumping: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """compress uses --reconstructor only for a refresh layer or the oracle selector; elsewhere it
    says the flag is ignored (a fresh-user trial found it silently dropped)."""
    assert main(["compress", str(jumping), "-o", str(tmp_path / "a.frs"), "--stride", "4", "--reconstructor",
                 "linear", "-q"]) == 0
    assert "--reconstructor linear is ignored" in capsys.readouterr().out
    assert main(["compress", str(jumping), "-o", str(tmp_path / "b.frs"), "--stride", "4", "--refresh", "0.1",
                 "--reconstructor", "linear", "-q"]) == 0
    assert "is ignored" not in capsys.readouterr().out
