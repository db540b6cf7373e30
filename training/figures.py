"""Figures for the docs: side-by-side val frames and the training loss curve.

    python -m training.figures [--model-dir DIR] [--history runs/fm_tiny_s0/history.json]

Writes docs/framemae_side_by_side.png (per row: source, nearest kept frame, linear, framemae,
for a missing frame of a val clip at uniform slots (1, 5)) and docs/framemae_loss.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from framers import metrics
from framers.reconstructors.base import KeptFrame
from framers.reconstructors.classical import LinearReconstructor
from framers.reconstructors.framemae import FrameMAEReconstructor
from training.cache import DATA_ROOT, decode_rgb
from training.train import plot_history

ROOT = Path(__file__).resolve().parents[1]
VAL = DATA_ROOT / "val"
EXAMPLES = [
    ("cotracker__gradio_demo_videos_bear.mp4", 32, 7),
    ("sam2__demo_data_gallery_05_default_juggle.mp4", 48, 6),
    ("cotracker__gradio_demo_videos_paragliding-launch.mp4", 32, 6),
    ("mmskeleton__clean_and_jerk.mp4", 160, 7),
]
OFFSETS = (2, 3, 10, 11)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--history", type=Path, default=ROOT / "runs/fm_tiny_s0/history.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = FrameMAEReconstructor(args.model_dir)
    lin = LinearReconstructor()
    fig, axes = plt.subplots(len(EXAMPLES), 4, figsize=(16, 3.2 * len(EXAMPLES)))
    for row, (name, clip_start, offset) in enumerate(EXAMPLES):
        frames = decode_rgb(VAL / name, clip_start + 40)
        idx = [c + o for c in range(clip_start - 16, clip_start + 32, 16) for o in OFFSETS]
        kept = [KeptFrame(i, frames[i]) for i in idx if 0 <= i < len(frames)]
        window = [k for k in kept if clip_start - 16 <= k.index < clip_start + 32]
        target = clip_start + offset
        ours = rec.reconstruct_window(window, clip_start, clip_start + 16)[offset]
        base = lin.reconstruct_window(window, clip_start, clip_start + 16)[offset]
        before = max(k.index for k in window if k.index <= target)
        panels = [
            (frames[target], f"source frame {target}"),
            (frames[before], f"nearest kept frame {before}"),
            (base, f"linear {metrics.psnr(frames[target], base):.2f} dB"),
            (ours, f"framemae {metrics.psnr(frames[target], ours):.2f} dB"),
        ]
        for col, (img, title) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(img)
            ax.set_title(f"{name.split('__')[-1][:28]}: {title}" if col == 0 else title, fontsize=9)
            ax.axis("off")
    fig.suptitle(f"uniform slots (1, 5), 25 % of frames kept; framemae {rec.model_versions['framemae']}")
    fig.tight_layout()
    fig.savefig(args.out / "framemae_side_by_side.png", dpi=80)
    plt.close(fig)
    if args.history.exists():
        plot_history(
            json.loads(args.history.read_text()),
            args.out / "framemae_loss.png",
            "flowmix fm-tiny training (per-frame log-MSE)",
        )
    print("wrote", args.out / "framemae_side_by_side.png")


if __name__ == "__main__":
    main()
