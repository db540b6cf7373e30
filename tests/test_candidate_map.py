"""The candidate map: its numerics and coding, and through the codec on a real clip: the encoder's
per-block choice of framemae's mix or one candidate makes the dropped frames closer to the source
for a few bytes, the bundle says what it holds, and another reconstructor is told it is not for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from framers import bundle as fb
from framers import candidate_map as cm
from framers import pipeline
from framers.cli import main
from framers.errors import BundleError
from framers.metrics import mse, psnr_from_mse
from framers.reconstructors.base import KeptFrame
from framers.registry import get_reconstructor
from framers.video import FrameReader

CLIP = Path(__file__).parent / "data" / "mmaction2_test.avi"  # 320x240, 164 frames of real footage


def test_apply_choices_sets_chosen_blocks_one_hot_and_leaves_the_rest() -> None:
    rng = np.random.default_rng(0)
    weights = rng.random((3, 10, 13)).astype(np.float32)
    weights /= weights.sum(axis=0, keepdims=True)
    choice = np.zeros((4, 5), np.uint8)  # cells of 3: the last row and column are partial
    choice[0, 0], choice[3, 4], choice[1, 2] = 2, 3, 1
    out = cm.apply_choices(weights, choice, 3)
    assert out.shape == weights.shape and out is not weights
    np.testing.assert_array_equal(out[:, 0:3, 0:3], np.broadcast_to(np.array([0, 1, 0])[:, None, None], (3, 3, 3)))
    np.testing.assert_array_equal(out[:, 9:10, 12:13], np.array([0, 0, 1]).reshape(3, 1, 1))
    np.testing.assert_array_equal(out[:, 3:6, 6:9], np.broadcast_to(np.array([1, 0, 0])[:, None, None], (3, 3, 3)))
    untouched = np.ones((10, 13), bool)
    untouched[0:3, 0:3] = untouched[9:, 12:] = untouched[3:6, 6:9] = False
    np.testing.assert_array_equal(out[:, untouched], weights[:, untouched])
    with pytest.raises(ValueError, match="does not fit"):
        cm.apply_choices(weights, np.zeros((3, 5), np.uint8), 3)
    # the last codebook entry: the two warps' mean
    half = cm.apply_choices(weights, np.full((4, 5), 4, np.uint8), 3)
    mean_of_warps = np.array([0, 0.5, 0.5], np.float32)[:, None, None]
    np.testing.assert_array_equal(half, np.broadcast_to(mean_of_warps, (3, 10, 13)))
    with pytest.raises(ValueError, match="does not fit"):
        cm.apply_choices(weights, np.full((4, 5), cm.N_CHOICES, np.uint8), 3)


def test_cell_errors_sum_each_block_s_frame_pixels() -> None:
    """A 40x60 frame over a 10x15 weight grid (4 px per weight pixel), cells of 2 weight pixels:
    a block is 8x8 frame pixels, the last column of blocks half of that."""
    error = np.zeros((40, 60), np.float32)
    error[0:8, 0:8] = 2.0
    error[32:40, 56:60] = 5.0
    sums = cm.cell_errors(error, (10, 15), 2)
    assert sums.shape == (5, 8)
    assert sums[0, 0] == pytest.approx(128.0) and sums[4, 7] == pytest.approx(160.0)
    assert sums.sum() == pytest.approx(float(error.sum()))


def test_choose_leaves_the_mix_only_for_a_gain_over_the_threshold() -> None:
    errors = np.array([[[100.0, 100.0, 100.0]], [[10.0, 95.0, 120.0]], [[50.0, 90.0, 130.0]], [[60.0, 99.0, 101.0]],
                       [[70.0, 98.0, 140.0]]])
    np.testing.assert_array_equal(cm.choose(errors, 8.0), [[1, 2, 0]])
    np.testing.assert_array_equal(cm.choose(errors, 20.0), [[1, 0, 0]])
    # λ = 2·D/R of the kept frames: twice the error per bit
    assert cm.lagrangian(1000.0, 40.0) == pytest.approx(50.0) and cm.lagrangian(5.0, 0) == 0.0


def test_codebook_images_weigh_the_candidates() -> None:
    cands = [np.full((2, 2, 3), v, np.float32) for v in (10.0, 20.0, 60.0)]
    images = cm.codebook_images(cands)
    assert len(images) == cm.N_CHOICES - 1 and images[1] is cands[1]
    assert float(images[3][0, 0, 0]) == pytest.approx(40.0)


def test_map_round_trip_and_damage(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    maps = []
    previous = np.zeros((6, 9), np.uint8)
    for _ in range(12):  # clustered and persistent, as on real video, with some noise
        m = previous.copy()
        flip = rng.random(m.shape) < 0.15
        m[flip] = rng.integers(0, cm.N_CHOICES, int(flip.sum()))
        maps.append(m)
        previous = m
    writer = cm.CandidateMapWriter(tmp_path / "map.bin")
    for m in maps:
        writer.write(m)
    size = writer.close()
    assert writer.count == 12 and writer.switched == sum(int(np.count_nonzero(m)) for m in maps)
    assert 0 < size < 12 * 6 * 9 * 2 / 8  # under 2 bits a block: the contexts learn the persistence
    back = list(cm.iter_candidate_maps(tmp_path / "map.bin", 6, 9, 12))
    for a, b in zip(maps, back, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="does not end"):
        list(cm.iter_candidate_maps(tmp_path / "map.bin", 6, 9, 5))
    (tmp_path / "odd.bin").write_bytes(b"\x01\x02\x03")
    with pytest.raises(ValueError, match="not a range code"):
        list(cm.iter_candidate_maps(tmp_path / "odd.bin", 6, 9, 1))
    with pytest.raises(ValueError, match="after"):
        cm.CandidateMapWriter(tmp_path / "x.bin").write(np.full((2, 2), 7, np.uint8))


def test_choice_reader_takes_maps_by_dropped_frame_in_order() -> None:
    maps = [np.full((2, 2), k % cm.N_CHOICES, np.uint8) for k in range(6)]  # one per dropped frame
    kept = {0, 4, 8}
    reader = cm.ChoiceReader(iter(maps), kept, 9, 1)
    assert int(reader.take(2)[0, 0]) == 1  # frame 1's map skipped
    assert int(reader.take(5)[0, 0]) == 3
    with pytest.raises(BundleError, match="kept or was passed"):
        reader.take(4)
    reader = cm.ChoiceReader(iter(maps[:3]), kept, 9, 1)
    with pytest.raises(BundleError, match="ends before frame 5"):
        reader.finish()
    reader = cm.ChoiceReader(iter(maps), kept, 9, 1)
    reader.finish()
    assert reader.taken == 6


def _frames(path: Path) -> list[np.ndarray]:
    return [f.rgb for f in FrameReader(path).frames()]


def _rebuilt(bundle: Path, reconstructor: str = "framemae") -> list[np.ndarray]:
    with fb.open_bundle(bundle) as folder:
        manifest = fb.read_manifest(folder)
        return list(pipeline.iter_reconstructed(folder, manifest, get_reconstructor(reconstructor)))


def _mean_psnr(source: list[np.ndarray], rebuilt: list[np.ndarray], frames: list[int]) -> float:
    return float(np.mean([psnr_from_mse(mse(rebuilt[i], source[i])) for i in frames]))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pipeline.CompressResult]:
    folder = tmp_path_factory.mktemp("cmap")
    plain, mapped = folder / "plain.frs", folder / "mapped.frs"
    pipeline.compress(CLIP, plain, selector="stride", stride=4, keyframe_crf=24)
    seen: list[float] = []
    result = pipeline.compress(CLIP, mapped, selector="stride", stride=4, keyframe_crf=24, candidate_map=True,
                               progress=seen.append)
    # the map's pass (most of the time) reports its progress: it sat where the coding ended, every
    # 16th frame it reported on being a kept one (a fresh-user trial's job showed 0.449 for 36 s)
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert len([v for v in seen if pipeline.MAP_PROGRESS_START < v < 0.95]) >= 3, seen
    return plain, mapped, result


def test_the_map_brings_the_dropped_frames_closer_for_a_few_bytes(
        bundles: tuple[Path, Path, pipeline.CompressResult], tmp_path: Path) -> None:
    plain, mapped, result = bundles
    source = _frames(CLIP)
    entry = result.candidate_map
    with fb.open_bundle(mapped) as folder:
        manifest = fb.read_manifest(folder)
        raw = json.loads((folder / fb.MANIFEST).read_text())
        assert (folder / fb.CANDIDATE_MAP).stat().st_size == entry["bytes"]
    dropped = [i for i in range(len(source)) if i not in set(manifest.kept_indices())]
    assert raw["version"] == 7 and raw["candidate_map"] == entry
    assert entry["maps"] == len(dropped) and 0 < entry["mixed"] <= len(dropped)
    assert entry["reconstructor"] == "framemae" and entry["model"] == result.model_versions["framemae"]
    assert 0 < entry["switched"] < entry["mixed"] * entry["rows"] * entry["cols"]
    assert entry["bytes"] < 0.03 * fb.bundle_bytes(plain)
    before = _mean_psnr(source, _rebuilt(plain), dropped)
    after = _mean_psnr(source, _rebuilt(mapped), dropped)
    assert after > before + 0.3, (before, after)  # measured: +0.8 dB
    # the kept frames come back as decoded, and linear is not given a map made for framemae's
    # weights: its frames are those of the same bundle without the map (x264 need not repeat its
    # stream exactly from one run to the next, so the plain bundle is not the reference here)
    with fb.open_bundle(mapped) as folder:
        manifest = fb.read_manifest(folder)
        decoded = {k.index: k.rgb for k in pipeline.iter_kept(folder, manifest)}
        with_map = list(pipeline.iter_reconstructed(folder, manifest, get_reconstructor("framemae")))
        linear = np.stack(list(pipeline.iter_reconstructed(folder, manifest, get_reconstructor("linear"))))
        manifest.candidate_map = None
        linear_unmapped = np.stack(list(pipeline.iter_reconstructed(folder, manifest, get_reconstructor("linear"))))
    for index, rgb in decoded.items():
        np.testing.assert_array_equal(with_map[index], rgb)
    np.testing.assert_array_equal(linear, linear_unmapped)
    out = pipeline.reconstruct(mapped, tmp_path / "linear.mp4", reconstructor="linear")
    assert len(out.warnings) == 1 and "candidate map" in out.warnings[0] and "not applied" in out.warnings[0]
    assert pipeline.reconstruct(mapped, tmp_path / "mae.mp4").warnings == []


def test_an_all_mix_map_gives_the_network_s_own_frames(bundles: tuple[Path, Path, pipeline.CompressResult]) -> None:
    """The decoder's hook changes nothing where the map says ``MIX``: framemae with a map of zeros
    rebuilds exactly the frames it rebuilds without one."""
    plain, _, _ = bundles
    with fb.open_bundle(plain) as folder:
        manifest = fb.read_manifest(folder)
        kept = list(pipeline.iter_kept(folder, manifest))
    rebuilder = get_reconstructor("framemae")
    indices = {k.index for k in kept}
    n = manifest.n_frames
    cell = cm.cell_size(*kept[0].rgb.shape[:2])
    from framers.motion import net_scale

    scale = net_scale(*kept[0].rgb.shape[:2])
    rows, cols = cm.grid_shape(kept[0].rgb.shape[0] // scale, kept[0].rgb.shape[1] // scale, cell)
    zeros = (np.zeros((rows, cols), np.uint8) for _ in range(n - len(indices)))
    reader = cm.ChoiceReader(zeros, indices, n, cell)
    frames = [KeptFrame(k.index, k.rgb) for k in kept]
    with_map = np.stack(list(rebuilder.reconstruct(iter(frames), n, manifest.clip_len, manifest.pts,  # type: ignore[call-arg]
                                                   choices=reader)))
    without = np.stack(list(rebuilder.reconstruct(iter(frames), n, manifest.clip_len, manifest.pts)))
    np.testing.assert_array_equal(with_map, without)


def test_a_damaged_map_is_a_bundle_error(bundles: tuple[Path, Path, pipeline.CompressResult], tmp_path: Path) -> None:
    _, mapped, _ = bundles
    folder = tmp_path / "b"
    with fb.open_bundle(mapped) as opened:
        import shutil

        shutil.copytree(opened, folder)
    data = (folder / fb.CANDIDATE_MAP).read_bytes()
    (folder / fb.CANDIDATE_MAP).write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"candidate_map\.bin has"):  # the manifest's checksums
        fb.read_manifest(folder)
    manifest = fb.read_manifest(folder, verify=False)  # past them, the decoder says it too
    with pytest.raises(BundleError, match="candidate map"):
        list(pipeline.iter_reconstructed(folder, manifest, get_reconstructor("framemae")))


def test_cli_says_what_the_map_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compress", str(CLIP), "-o", str(tmp_path / "a.frs"), "--stride", "8", "--candidate-map",
                 "-q"]) == 0
    out = capsys.readouterr().out
    assert "candidate map:" in out and "mixed frames given a fixed weighting" in out and "framemae 1.0.0" in out
    # every frame kept: nothing to map, and the output says so
    assert main(["compress", str(CLIP), "-o", str(tmp_path / "b.frs"), "--stride", "1", "--candidate-map",
                 "-q"]) == 0
    assert "candidate map: none made" in capsys.readouterr().out
    with fb.open_bundle(tmp_path / "b.frs") as folder:
        assert not (folder / fb.CANDIDATE_MAP).exists()


def test_a_refresh_layer_goes_on_top_of_the_map(tmp_path: Path) -> None:
    """Both options: the encoder makes the map, then the refresh layer on the mapped frames; the
    decoder applies both (each reads its own file) and the layer's refreshed frames are closer."""
    source = _frames(CLIP)
    mapped, both = tmp_path / "mapped.frs", tmp_path / "both.frs"
    pipeline.compress(CLIP, mapped, selector="stride", stride=4, keyframe_crf=24, candidate_map=True)
    result = pipeline.compress(CLIP, both, selector="stride", stride=4, keyframe_crf=24, candidate_map=True,
                               refresh=0.1)
    assert result.candidate_map is not None and result.refresh is not None
    out = pipeline.reconstruct(both, tmp_path / "both.mp4")
    assert out.frames == len(source) and out.warnings == []
    with fb.open_bundle(both) as folder:
        dropped = [i for i in range(len(source)) if i not in set(fb.read_manifest(folder).kept_indices())]
    assert _mean_psnr(source, _rebuilt(both), dropped) > _mean_psnr(source, _rebuilt(mapped), dropped) + 0.5


@pytest.mark.parametrize(("edit", "needle"), [
    ({"cell": 0}, "cell must be an integer"),
    ({"rows": "x"}, "rows must be an integer"),
    ({"codebook": "abc"}, "codebook must"),
    ({"codebook": [[1, 0]]}, "codebook must hold"),
    ({"file": "../../etc/passwd"}, "file must be candidate_map.bin"),
    (None, "expected an object"),
])
def test_a_malformed_map_entry_is_a_clear_bundle_error(bundles: tuple[Path, Path, pipeline.CompressResult],
                                                       tmp_path: Path, edit: dict[str, Any] | None,
                                                       needle: str) -> None:
    _, mapped, _ = bundles
    with fb.open_bundle(mapped) as folder:
        manifest = fb.read_manifest(folder)
        manifest.candidate_map = [1, 2] if edit is None else {**(manifest.candidate_map or {}), **edit}  # type: ignore[assignment]
        with pytest.raises(BundleError, match=needle):
            list(pipeline.iter_reconstructed(folder, manifest, get_reconstructor("framemae")))


def test_a_map_entry_without_a_codebook_reads_as_one_hot() -> None:
    """The first v7 encoder wrote no codebook: its maps choose among the candidates alone."""
    layout = cm.MapLayout.from_entry({"rows": 2, "cols": 3, "cell": 4, "maps": 5}, fb.CANDIDATE_MAP)
    np.testing.assert_array_equal(layout.codebook, np.eye(3, dtype=np.float32))
    assert (layout.rows, layout.cols, layout.cell, layout.maps) == (2, 3, 4, 5)


def _squared_error(image: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The reference: per-pixel squared error summed over RGB, float32 [H, W]."""
    return ((np.asarray(image, np.float64) - truth) ** 2).sum(axis=-1).astype(np.float32)


def test_the_encoder_measures_the_frames_the_decoder_makes(bundles: tuple[Path, Path, pipeline.CompressResult]) -> None:
    """The map's encoder mixes the candidates it warped (``block_errors``, in bands) instead of
    rebuilding each frame as the decoder does: its block errors of the mix must be those of the
    decoder's own frames without a map (up to their rounding to uint8 and the warps' float paths)."""
    plain, _, _ = bundles
    with fb.open_bundle(plain) as folder:
        manifest = fb.read_manifest(folder)
        kept = list(pipeline.iter_kept(folder, manifest))
    rebuilder = get_reconstructor("framemae")
    n, source = manifest.n_frames, _frames(CLIP)
    decoded = list(rebuilder.reconstruct(iter(kept), n, manifest.clip_len, manifest.pts))  # type: ignore[call-arg]
    measured = [m for m in rebuilder.mixes(iter(kept), n, manifest.clip_len, manifest.pts) if m is not None]  # type: ignore[attr-defined]
    assert len(measured) > 10
    from framers.motion import net_scale

    height, width = source[0].shape[:2]
    scale = net_scale(height, width)
    net_shape, cell = (height // scale, width // scale), cm.cell_size(height, width)
    block_pixels = (cell * scale) ** 2
    for mixed in measured[::4]:
        errors = cm.block_errors(mixed.weights, mixed.candidates, source[mixed.index], net_shape, cell)
        assert errors.shape[0] == cm.N_CHOICES
        truth = source[mixed.index].astype(np.float32)
        of_decoder = cm.cell_errors(_squared_error(decoded[mixed.index], truth), net_shape, cell)
        # the decoder warps RGBA with per-axis flow maps, the candidates RGB with the resized flow:
        # the same positions up to ~1e-5 px, a level or two at sharp edges, so a few blocks differ more
        close = np.isclose(errors[0], of_decoder, rtol=0.05, atol=block_pixels)
        assert close.mean() > 0.98, (errors[0][~close], of_decoder[~close])
        assert errors[0].sum() == pytest.approx(of_decoder.sum(), rel=0.01)
        images = cm.codebook_images(mixed.candidates)
        for k, image in enumerate(images):  # the codebook's images, whole-frame
            expected = cm.cell_errors(_squared_error(image, truth), net_shape, cell)
            np.testing.assert_allclose(errors[1 + k], expected, rtol=1e-4, atol=1.0)
