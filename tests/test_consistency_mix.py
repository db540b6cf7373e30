"""bench/consistency_mix.py (issue 13 probe): the weights' arithmetic and one clip end to end."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from framers.metrics import mse, psnr_from_mse
from framers.reconstructors.framemae import FrameMAEReconstructor
from tests.videogen import moving_frame

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mix() -> ModuleType:
    sys.path.insert(0, str(ROOT / "bench"))  # the bench imports its sibling framemae_headroom
    spec = importlib.util.spec_from_file_location("bench_consistency_mix", ROOT / "bench" / "consistency_mix.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_weights_follow_the_trajectory_that_holds_and_fall_back_to_the_prior(mix: ModuleType) -> None:
    h, w = 20, 30
    holds = np.zeros((h, w), np.float32)
    fails = np.full((h, w), 60.0, np.float32)
    weights = mix.consistency_weights([fails, holds, fails], 20.0)
    assert weights.shape == (3, h, w)
    np.testing.assert_allclose(weights.sum(0), 1.0, rtol=1e-5)
    assert weights[1].min() > 0.99  # the only trajectory that holds takes (almost) all
    # equal evidence everywhere: the network's weights come back unchanged
    prior = np.stack([np.full((h, w), p, np.float32) for p in (0.2, 0.5, 0.3)])
    same = mix.consistency_weights([holds, holds, holds], 20.0, prior)
    np.testing.assert_allclose(same, prior, rtol=1e-5)
    # evidence against one candidate moves its share to the others, in the prior's proportions
    shifted = mix.consistency_weights([fails, holds, holds], 20.0, prior)
    assert shifted[0].max() < 0.01
    np.testing.assert_allclose(shifted[1] / shifted[2], 0.5 / 0.3, rtol=1e-3)


def test_one_clip_gives_every_column_and_the_shipped_model_as_framemae(mix: ModuleType, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from framers.geometry import CLIP_LEN
    from framers.reconstructors.base import KeptFrame

    # x264 is not bit-exact run to run on tiny frames: keep the bench's own coding of the kept frames
    coded: list[tuple[list[np.ndarray], int]] = []
    real_round_trip = mix.x264_round_trip

    def round_trip(frames: list[np.ndarray], crf: int, preset: str) -> tuple[list[np.ndarray], int]:
        coded.append(real_round_trip(frames, crf, preset))
        return coded[-1]

    monkeypatch.setattr(mix, "x264_round_trip", round_trip)
    video = [moving_frame(i, 96, 64) for i in range(17)]
    row = mix.clip_row(video, 4, 20, mix.trajectory_store(tmp_path))
    assert set(row) == set(mix.COLUMNS)
    assert all(15.0 < v <= 60.0 for v in row.values())
    # the first column is the stored model as the codec runs it, on the same coded kept frames
    kept_idx = [0, 4, 8, 12, 16]
    decoded = coded[0][0]
    rebuilt = list(FrameMAEReconstructor().reconstruct(
        iter([KeptFrame(i, d) for i, d in zip(kept_idx, decoded, strict=True)]), 17, CLIP_LEN))
    dropped = [i for i in range(17) if i not in kept_idx]
    expected = float(np.mean([psnr_from_mse(mse(rebuilt[i], video[i])) for i in dropped]))
    assert row["framemae"] == pytest.approx(expected, abs=1e-3)


def test_markdown_names_the_best_column_per_stride(mix: ModuleType) -> None:
    rows = [{"clip": "a", "stride": 4, "framemae": 30.0, "fm_traj": 30.2, "tri_s30": 29.0, "prod_s20": 30.5,
             "prod_s45": 30.1},
            {"clip": "b", "stride": 4, "framemae": 20.0, "fm_traj": 20.1, "tri_s30": 19.0, "prod_s20": 19.9,
             "prod_s45": 20.0},
            {"clip": "c", "stride": 4, "frames": 3}]  # too short for the stride: no columns
    text = mix.to_markdown(rows, [4, 8])
    assert "| 4 | 2 | 25.00 | 25.15 | 24.00 | 25.20 | 25.05 | prod_s20 +0.20 | 1 of 2 |" in text
    assert "| 8 |" not in text.split("| clip |")[0]
