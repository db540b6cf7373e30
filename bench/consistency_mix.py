"""Issue 13 probe: does a per-pixel consistency weight at full resolution improve FrameMAE's mix?

Per dropped frame, mean PSNR of the dropped frames (RGB, capped at 60 dB, mean over a clip's dropped
frames, then over clips), kept frames every Nth and the last through x264 (CRF ``--crf``, preset
medium) as a bundle stores them:

* ``framemae``: the stored model as shipped (its own candidate set);
* ``fm_traj``: the same network weights over the ``trajectory`` candidate set (BENCHMARKS.md 2d);
* ``tri_sS``: no network: the three trajectory-set candidates weighted per pixel by
  exp(−(D_k/S)²), D_k the k×k box mean of how far the two kept frames' samples along candidate k's
  trajectory differ (``linear``: |a(x) − b(x)|, the zero-motion trajectory; the others:
  ``motion.WindowFlows.disagreement`` at full resolution), in gray levels;
* ``prod_sS``: the network's weights (``fm_traj``'s) times that likelihood, renormalised: the
  network's regional preference with per-pixel evidence of where each trajectory holds.

Frames the reconstructor's gate sends to ``linear`` (cuts, fades) get ``linear`` in every column.

    python bench/consistency_mix.py ../shared/data/videos/val --strides 4,8 --frames 64 \\
        --jsonl bench/results/consistency_mix.jsonl --md bench/results/consistency_mix.md

``--jsonl`` is appended to and clips already in it are skipped (a run can resume).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from framemae_headroom import add_clip_arguments, clip_lines, first_frames, stride_means, video_paths  # noqa: E402

from framers import model_store, motion  # noqa: E402
from framers.adaptive.coding import x264_round_trip  # noqa: E402
from framers.geometry import CLIP_LEN  # noqa: E402
from framers.metrics import mse, psnr_from_mse  # noqa: E402
from framers.reconstructors.base import KeptFrame, iter_clip_windows  # noqa: E402
from framers.reconstructors.framemae import FrameMAEReconstructor  # noqa: E402

SIGMAS_TRI = (30,)
SIGMAS_PROD = (20, 45)
BOX = 9
COLUMNS = ("framemae", "fm_traj", *(f"tri_s{s}" for s in SIGMAS_TRI), *(f"prod_s{s}" for s in SIGMAS_PROD))


def trajectory_store(workdir: Path) -> Path:
    """A copy of the stored framemae whose config names the trajectory candidate set."""
    src = model_store.model_dir("framemae")
    dst = workdir / "framemae" / "trajectory"
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config["prior"]["candidates"] = list(motion.CANDIDATE_SETS["trajectory"])
    (dst / "config.json").write_text(json.dumps(config, indent=1))
    return dst


def consistency_weights(disagreement: Sequence[np.ndarray], sigma: float,
                        prior: np.ndarray | None = None) -> np.ndarray:
    """float32 [K, H, W] weights summing to one per pixel from per-candidate disagreement maps
    [H, W] (gray levels): exp(−(box(D_k)/sigma)²) + 1e-4, times ``prior`` [K, H, W] if given."""
    boxed = np.stack([cv2.blur(d, (BOX, BOX)) for d in disagreement])
    weights = np.exp(-((boxed / sigma) ** 2)) + 1e-4
    if prior is not None:
        weights = weights * prior
    return (weights / weights.sum(0)).astype(np.float32)


def _mixed(candidates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    out = np.einsum("khwc,khw->hwc", candidates, weights)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def clip_row(video: Sequence[np.ndarray], stride: int, crf: int, traj_dir: Path) -> dict[str, float]:
    """Mean dropped-frame PSNR (dB) of every column of ``COLUMNS`` for one clip at one stride."""
    n = len(video)
    kept_idx = list(range(0, n, stride)) + ([n - 1] if (n - 1) % stride else [])
    decoded, _ = x264_round_trip([video[i] for i in kept_idx], crf, "medium")
    kept = [KeptFrame(i, d) for i, d in zip(kept_idx, decoded, strict=True)]
    shipped = list(FrameMAEReconstructor().reconstruct(iter(kept), n, CLIP_LEN))
    rec = FrameMAEReconstructor(model_dir=traj_dir)
    psnr: dict[str, list[float]] = {c: [] for c in COLUMNS}
    for start, stop, window in iter_clip_windows(iter(kept), n, CLIP_LEN):
        prepared = rec._prepare(window, start, stop)
        if prepared is None:
            continue
        flows, plans, weights = prepared
        for j, plan in enumerate(plans):
            if not plan.interpolated:
                continue
            truth = video[plan.index]
            psnr["framemae"].append(psnr_from_mse(mse(shipped[plan.index], truth)))
            candidates = flows.candidates(plan, 1)  # float32 [3, H, W, 3]
            if weights is None or not rec._explained(flows, plan):
                linear = np.clip(np.rint(candidates[0]), 0, 255).astype(np.uint8)
                for c in COLUMNS[1:]:
                    psnr[c].append(psnr_from_mse(mse(linear, truth)))
                continue
            h, w = flows.height, flows.width
            upscaled = np.stack([cv2.resize(np.ascontiguousarray(x), (w, h), interpolation=cv2.INTER_LINEAR)
                                 for x in weights[:, j]]).astype(np.float32)
            prior = upscaled / upscaled.sum(0)
            assert plan.before is not None and plan.after is not None
            zero_motion = np.abs(flows.image(plan.before) - flows.image(plan.after)).mean(axis=2)
            disagreement = [zero_motion, *(flows.disagreement(plan, 1) * motion.DISAGREEMENT_UNIT)]
            outs = {"fm_traj": prior}
            outs |= {f"tri_s{s}": consistency_weights(disagreement, s) for s in SIGMAS_TRI}
            outs |= {f"prod_s{s}": consistency_weights(disagreement, s, prior) for s in SIGMAS_PROD}
            for name, wts in outs.items():
                psnr[name].append(psnr_from_mse(mse(_mixed(candidates, wts), truth)))
    return {c: round(float(np.mean(v)), 3) for c, v in psnr.items() if v}


def to_markdown(rows: list[dict[str, Any]], strides: Sequence[int]) -> str:
    """Summary per stride (means over clips, gain over ``framemae``, clips gaining) and per clip."""
    lines = ["# Per-pixel consistency weights on FrameMAE's mix (bench/consistency_mix.py)", "",
             "| stride | clips | " + " | ".join(COLUMNS) + " | best column − framemae | clips where it gains |",
             "|---|---|" + "---|" * (len(COLUMNS) + 2)]
    for s, sub, means in stride_means(rows, strides, COLUMNS):
        best = max(COLUMNS[1:], key=lambda c: means[c])
        gains = sum(r[best] > r["framemae"] for r in sub)
        lines.append(f"| {s} | {len(sub)} | " + " | ".join(f"{means[c]:.2f}" for c in COLUMNS)
                     + f" | {best} {means[best] - means['framemae']:+.2f} | {gains} of {len(sub)} |")
    return "\n".join(lines + clip_lines(rows, COLUMNS)) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_clip_arguments(parser)
    parser.add_argument("--jsonl", type=Path, required=True, help="rows, appended (clips in it are skipped)")
    parser.add_argument("--md", type=Path)
    args = parser.parse_args(argv)
    strides = [int(s) for s in args.strides.split(",")]
    videos = video_paths(args.inputs)
    rows = [json.loads(line) for line in args.jsonl.read_text().splitlines()] if args.jsonl.exists() else []
    done = {(r["clip"], r["stride"]) for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        traj_dir = trajectory_store(Path(tmp))
        for path in videos:
            frames: list[np.ndarray] | None = None
            for s in strides:
                if (path.name, s) in done:
                    continue
                frames = frames or first_frames(path, args.frames)
                row: dict[str, Any] = {"clip": path.name, "stride": s, "frames": len(frames)}
                if len(frames) > s:
                    row.update(clip_row(frames, s, args.crf, traj_dir))
                print(json.dumps(row), flush=True)
                with args.jsonl.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                rows.append(row)
    text = to_markdown(rows, strides)
    print(text)
    if args.md:
        args.md.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
