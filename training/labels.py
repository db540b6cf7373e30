"""Exhaustive-search labels for the Frame Selector: the error of all 28 kept slot pairs per clip.

For every window (16 consecutive frames) and each of the 28 pairs of kept slots (2 of 8,
lexicographic order = ``framers.geometry.PAIRS``), the window is reconstructed from the
kept frames and the per-frame MSE (0–255 scale, all 16 frames, kept ones included) is stored:
``mse`` [N, 28, 16] float32. Top-k accuracy, soft labels, PSNR and regret all follow from it.

Context: like the codec, a window is reconstructed together with the last kept frame of the
previous clip and the first kept frame of the next clip; both are taken at the ``uniform``
positions (slots (1, 5) → frames start−5 and start+18) where the video has them.

Windows
* train: random 16-frame windows (seeded) of the decoded train clips (``training.cache``),
* val: the codec's own clip grid (starts at multiples of 16, full clips only), up to
  ``--per-video`` evenly spread clips of each val video (first ``--max-frames`` frames).

Besides the labels each chunk stores the selector's input view: every frame area-resized to
``--view`` × ``--view`` (the FrameMAE encoder's tile), uint8 [N, 16, S, S, 3], made from the
native frames exactly as ``framers.selector_model`` does at inference.

Output (gitignored): ``data/selector/<split>_<reconstructor>_<res>/chunk_XXXX.npz``, one file
per ``--chunk`` windows, written atomically; a rerun skips finished chunks (resumable).

    python -m training.labels --split train --reconstructor linear --n 4000 --short-side 144
    python -m training.labels --split val --reconstructor linear --short-side 0   # native
    # the shipped selector's labels: val here (two processes, one per core, ~15 min) ...
    python -m training.labels --split val --reconstructor framemae --short-side 96 --chunk 16 --shard 0/2
    # ... train (4096 windows) on a GPU machine from two frame packs (~30 MB each), then the views here
    python -m training.labels --split train --reconstructor framemae --short-side 96 --n 4096 --seed 0 \
        --write-pack .dev/train_s96.npz --pack-parts 2     # then, there: training/labels_gpu.sh
    python -m training.labels --split train --reconstructor framemae --engine torch --device cuda \
        --short-side 96 --chunk 8 --pack .dev/train_s96_p0of2.npz --shard i/16      # i = 0..15; p1of2 too
    python -m training.labels --split train --reconstructor framemae --short-side 96 --n 4096 --seed 0 \
        --refresh-views

``framemae`` labels run the codec's own stages (``FrameMAEReconstructor.plan / net_input /
compose``) with the network tiles of all 28 pairs batched (``pair_errors_framemae``); the
``torch`` engine runs the network on the store's weights.npz (fp32; ``--bf16`` optional). At
short side 96 the network sees about what it sees at any resolution (``framers.motion.net_scale``
brings the short side to 96–191 px); a window costs ~6.7 s on one core of this CPU (5.1 s of it
the network, ~150 tiles), ~1.6 s of CPU with the network on a GPU: 16 processes beside one H100
labelled the 4096 train windows in ~7 min.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from framers.geometry import CLIP_LEN, N_PAIRS
from framers.metrics import psnr_of_mses
from training.label_errors import make_error_fn
from training.label_windows import FramePack, label_window, train_windows, val_windows

ROOT = Path(__file__).resolve().parents[1]
LABEL_ROOT = ROOT / "data" / "selector"


def psnr_of_mse(mse: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB, 0–255 scale) capped at 60 dB, as in docs/DESIGN.md's quality protocol."""
    return psnr_of_mses(mse)


def window_psnr(mse: np.ndarray) -> np.ndarray:
    """[..., 16] per-frame MSE → [...] mean of capped per-frame PSNR over the window's frames."""
    return psnr_of_mse(mse).mean(-1)


# --------------------------------------------------------------------------- driver
def label_dir(split: str, reconstructor: str, short_side: int) -> Path:
    res = "native" if short_side <= 0 else f"s{short_side}"
    return LABEL_ROOT / f"{split}_{reconstructor}_{res}"


def load_labels(folder: Path) -> dict[str, np.ndarray]:
    """Concatenate the finished chunks of a label folder, in chunk order. Sharded runs may leave
    gaps while they work; every finished chunk is used (windows are keyed by video and start)."""
    paths = sorted(p for p in folder.glob("chunk_*.npz") if ".tmp" not in p.name)
    parts: list[dict[str, np.ndarray]] = []
    for path in paths:
        with np.load(path) as z:
            parts.append({key: z[key] for key in z.files})
    if not parts:
        raise FileNotFoundError(f"no label chunks in {folder}")
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def refresh_views(folder: Path, videos: dict[str, np.ndarray], view: int) -> None:
    """(Re)compute the stored selector views of every chunk with the current ``global_view``
    (labels made before the view function changed, or from a frame pack, which has no views);
    labels themselves are untouched."""
    from framers.clip import global_view

    for path in tqdm(sorted(p for p in folder.glob("chunk_*.npz") if ".tmp" not in p.name), desc="views"):
        with np.load(path) as z:
            data = {key: z[key] for key in z.files}
        data["view"] = np.stack([global_view(np.asarray(videos[str(v)][int(s):int(s) + CLIP_LEN]), view)
                                 for v, s in zip(data["video"], data["start"], strict=True)])
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, **data)
        tmp.replace(path)
    for stale in folder.glob("tokens_*"):
        stale.unlink()  # encoder features of the old views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=["train", "val"], default="train")
    parser.add_argument("--reconstructor", default="linear", help="linear | framemae | hold")
    parser.add_argument("--n", type=int, default=4000, help="train windows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-video", type=int, default=8, help="val clips per video")
    parser.add_argument("--max-frames", type=int, default=360, help="val: frames decoded per video")
    parser.add_argument("--short-side", type=int, default=144,
                        help="label resolution: integer area-downscale to about this short side (0 = native)")
    parser.add_argument("--view", type=int, default=64, help="side of the stored selector input view")
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--limit-chunks", type=int, default=0, help="stop after this many chunks (0 = all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--refresh-views", action="store_true",
                        help="recompute the stored views of an existing label folder with the current global_view")
    parser.add_argument("--engine", choices=["onnx", "torch"], default="onnx",
                        help="framemae: the network on onnxruntime (exactly the codec) or torch (--device, --bf16)")
    parser.add_argument("--shard", default="0/1", help="i/n: this process does chunks c with c %% n == i")
    parser.add_argument("--device", default="cpu", help="torch engine: cpu | cuda")
    parser.add_argument("--bf16", action="store_true",
                        help="torch engine: bf16 autocast (fast only on CPUs with bf16 units, e.g. AMX)")
    parser.add_argument("--write-pack", type=Path, help="write the windows' label-resolution frames here and stop")
    parser.add_argument("--pack-parts", type=int, default=1, help="with --write-pack: this many files, split by video")
    parser.add_argument("--pack", type=Path, help="take windows and frames from a pack (no videos needed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args()

    cv2.setNumThreads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    shard, n_shards = (int(v) for v in args.shard.split("/"))
    out = label_dir(args.split, args.reconstructor, args.short_side)
    out.mkdir(parents=True, exist_ok=True)
    pack: FramePack | None = None
    videos: dict[str, np.ndarray] = {}
    if args.pack:
        pack = FramePack.load(args.pack)
        if pack.short_side != args.short_side:
            raise SystemExit(f"{args.pack} holds short side {pack.short_side}, not {args.short_side}")
        specs = pack.specs
    elif args.split == "train":
        specs, videos = train_windows(args.n, args.seed)
    else:
        specs, videos = val_windows(args.per_video, args.max_frames)
    prefix = f"chunk_{pack.tag}_" if pack is not None and pack.tag else "chunk_"
    if args.write_pack:
        whole = FramePack.build(specs, videos, args.short_side)
        n_parts = args.pack_parts
        for k in range(n_parts):
            piece = whole.split(k, n_parts) if n_parts > 1 else whole
            path = args.write_pack
            if piece.tag:
                path = path.with_name(f"{path.stem}_{piece.tag}.npz")
            piece.save(path)
            print(f"{path}: {len(piece.specs)} windows, {path.stat().st_size / 1e6:.1f} MB")
        return
    if args.refresh_views:
        refresh_views(out, videos, args.view)
        return
    n_chunks = -(-len(specs) // args.chunk)
    if args.limit_chunks:
        n_chunks = min(n_chunks, args.limit_chunks)
    meta = {"split": args.split, "reconstructor": args.reconstructor, "short_side": args.short_side,
            "view": args.view, "seed": args.seed, "windows": len(specs), "chunk": args.chunk,
            "context": "uniform kept frames of the neighbouring clips (start-5, start+18)",
            "per_video": args.per_video, "max_frames": args.max_frames, "engine": args.engine,
            "device": args.device, "bf16": args.bf16, "from_pack": bool(args.pack),
            "view_fn": "framers.clip.global_view (two-step area resize)"}
    if shard == 0:
        (out / "meta.json").write_text(json.dumps(meta, indent=1))
    error_fn = make_error_fn(args.reconstructor, args.engine, args.device, args.bf16)
    todo = [c for c in range(n_chunks) if c % n_shards == shard and not (out / f"{prefix}{c:04d}.npz").exists()]
    bar = tqdm(total=len(todo) * args.chunk, unit="clip",
               desc=f"labels {args.split}/{args.reconstructor}", disable=args.quiet)
    started = time.time()
    for c in todo:
        part = specs[c * args.chunk:(c + 1) * args.chunk]
        mse = np.zeros((len(part), N_PAIRS, CLIP_LEN), np.float32)
        chunk: dict[str, np.ndarray] = {}
        if pack is None:  # a pack has no native frames: views come later (--refresh-views)
            from framers.clip import global_view

            chunk["view"] = np.stack([global_view(np.asarray(videos[s.video][s.start:s.start + CLIP_LEN]), args.view)
                                      for s in part])
        for i, spec in enumerate(part):
            frames, prev, nxt = (pack.window(spec) if pack is not None
                                 else label_window(videos[spec.video], spec.start, args.short_side))
            mse[i] = error_fn(frames, prev, nxt)
            bar.update(1)
        tmp = out / f"{prefix}{c:04d}.tmp.npz"
        np.savez(tmp, mse=mse, start=np.array([s.start for s in part]),
                 video=np.array([s.video for s in part]), allow_pickle=False, **chunk)
        tmp.replace(out / f"{prefix}{c:04d}.npz")
    bar.close()
    print(f"{out}: {n_chunks} chunks, {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
