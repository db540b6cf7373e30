"""CARV's comparison (issue 15): a reduced video that keeps the most significant chunks, against
every-Nth-frame and Nth-random-chunk at the same chunk budget.

CARV (Chhabra & Yang) reduces a video by keeping chunks (2 frames × 16×16 px) where its
significance is high and reconstructing the rest. FrameRS rebuilds whole frames from kept ones,
so here every method spends the same budget — ``1 / --n`` of all frame-blocks (one frame × 16×16
px), uncoded — in one of these ways, on the first ``--frames`` frames of each video:

* ``every{N}th-frame``: every Nth frame (and the last) kept whole, the rest rebuilt by ``framemae``;
* ``every{2N}th+random``: every 2Nth frame kept, the rest rebuilt, then the other half of the
  budget spent on random chunks pasted from the source (CARV's Nth-random-chunk baseline);
* ``every{2N}th+significance``: the same, the chunks chosen by CARV-style masked significance
  (``framers.significance.masked_significance``, ``--samples`` masks; needs no rebuild of the
  actual pattern, as a decoder-independent analysis would);
* ``every{2N}th+exact``: the same, the chunks chosen by the true error of this rebuild (the
  encoder knows it: what a refresh layer would use; an upper bound for the choice).

Reported per video and method: mean per-frame PSNR (capped at 60 dB), PSNR of the mean MSE, mean
MSE and mean SSIM (``framers.metrics``), and the budget actually spent. Bytes are not counted: this
is CARV's chunk-budget protocol, not a rate–distortion point.

    python bench/carv_reduced.py ../shared/data/videos/val --limit 8 --json bench/results/carv_reduced.json \\
        --md bench/results/carv_reduced.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framers import significance as sig  # noqa: E402
from framers.evaluate_inputs import VIDEO_SUFFIXES  # noqa: E402
from framers.geometry import CLIP_LEN  # noqa: E402
from framers.metrics import mse, psnr_from_mse, ssim  # noqa: E402
from framers.reconstructors.base import KeptFrame  # noqa: E402
from framers.registry import get_reconstructor  # noqa: E402

S, P = sig.CHUNK_FRAMES, sig.CHUNK_PX


def every(n_frames: int, stride: int) -> list[int]:
    return sorted(set(range(0, n_frames, stride)) | {n_frames - 1})


def rebuild(frames: list[np.ndarray], kept: list[int]) -> list[np.ndarray]:
    rebuilder = get_reconstructor("framemae")
    return [f.copy() for f in rebuilder.reconstruct([KeptFrame(i, frames[i]) for i in kept], len(frames), CLIP_LEN)]


def paste_chunks(frames: list[np.ndarray], rebuilt: list[np.ndarray], kept: set[int], scores: np.ndarray,
                 budget_blocks: int) -> tuple[list[np.ndarray], int]:
    """Paste source chunks into ``rebuilt`` in descending ``scores`` ([T/S, rows, cols]; NaN = never)
    until ``budget_blocks`` non-kept frame-blocks are spent; returns the frames and the blocks spent."""
    out = [f.copy() for f in rebuilt]
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=None)
    spent = 0
    for flat in order:
        t, r, c = np.unravel_index(flat, scores.shape)
        members = [i for i in range(t * S, min(len(frames), t * S + S)) if i not in kept]
        if not members or not np.isfinite(scores[t, r, c]):
            continue
        if spent + len(members) > budget_blocks:
            continue
        for i in members:
            out[i][r * P:(r + 1) * P, c * P:(c + 1) * P] = frames[i][r * P:(r + 1) * P, c * P:(c + 1) * P]
        spent += len(members)
        if spent >= budget_blocks:
            break
    return out, spent


def quality(frames: list[np.ndarray], out: list[np.ndarray]) -> dict[str, float]:
    mses = [mse(a, b) for a, b in zip(frames, out, strict=True)]
    return {
        "psnr": round(statistics.fmean(psnr_from_mse(m) for m in mses), 3),
        "psnr_mean_mse": round(psnr_from_mse(statistics.fmean(mses)), 3),
        "mse": round(statistics.fmean(mses), 3),
        "ssim": round(statistics.fmean(ssim(a, b) for a, b in zip(frames, out, strict=True)), 4),
    }


def measure(video: Path, args: argparse.Namespace) -> dict[str, Any]:
    frames = list(sig.source_frames(video, args.frames))
    n = len(frames)
    h, w = frames[0].shape[:2]
    blocks_per_frame = -(-h // P) * -(-w // P)
    budget = n * blocks_per_frame // args.n
    record: dict[str, Any] = {"video": video.name, "frames": n, "width": w, "height": h, "budget_blocks": budget,
                              "methods": {}}
    dense = every(n, args.n)
    out = rebuild(frames, dense)
    record["methods"][f"every{args.n}th-frame"] = {**quality(frames, out), "blocks": len(dense) * blocks_per_frame}
    sparse = every(n, 2 * args.n)
    base = rebuild(frames, sparse)
    left = budget - len(sparse) * blocks_per_frame
    acc = sig.ChunkAccumulator()
    for i, (a, b) in enumerate(zip(frames, base, strict=True)):
        acc.add(i, sig.frame_error(a, b))
    exact = acc.result()
    masked = sig.masked_significance(video, max_frames=n, samples=args.samples, hide=args.hide).values
    random = np.random.default_rng(args.seed).random(exact.shape)
    record["methods"][f"every{2 * args.n}th (base)"] = {**quality(frames, base),
                                                         "blocks": len(sparse) * blocks_per_frame}
    for name, scores in (("random", random), ("significance", masked), ("exact", exact)):
        out, spent = paste_chunks(frames, base, set(sparse), scores, left)
        record["methods"][f"every{2 * args.n}th+{name}"] = {**quality(frames, out),
                                                             "blocks": len(sparse) * blocks_per_frame + spent}
    return record


def to_markdown(records: Sequence[dict[str, Any]]) -> str:
    names = list(records[0]["methods"]) if records else []
    lines = ["| video | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in records:
        lines.append(f"| {r['video']} | " + " | ".join(
            f"{r['methods'][m]['psnr']:.2f} dB / {r['methods'][m]['ssim']:.3f}" for m in names) + " |")
    if records:
        lines.append("| **mean** | " + " | ".join(
            f"**{statistics.fmean(r['methods'][m]['psnr'] for r in records):.2f} dB / "
            f"{statistics.fmean(r['methods'][m]['ssim'] for r in records):.3f}**" for m in names) + " |")
    return "\n".join(lines) + "\n\nCells: mean per-frame PSNR / mean SSIM against the source.\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("videos", nargs="+", type=Path, help="videos or folders")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--n", type=int, default=4, help="budget: 1/N of all frame-blocks (default 4)")
    parser.add_argument("--samples", type=int, default=8, help="masks of the significance estimate")
    parser.add_argument("--hide", type=float, default=0.75)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="first N videos of the folders")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args(argv)
    videos = [p for v in args.videos for p in (sorted(v.iterdir()) if v.is_dir() else [v])
              if p.suffix.lower() in VIDEO_SUFFIXES | {".gif"}][: args.limit]
    records = []
    for video in videos:
        records.append(measure(video, args))
        print(json.dumps(records[-1]), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                             "videos": records}, indent=1) + "\n")
    markdown = to_markdown(records)
    print(markdown)
    if args.md:
        args.md.write_text(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
