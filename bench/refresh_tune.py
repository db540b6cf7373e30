"""Tune the refresh layer's constants (issue 15): BD-PSNR against plain every-4th-frame at equal bytes
for variants of ``framers.refresh`` (refresh CRF offset, block criterion, error floor, attention ramp).

Each variant sets module constants of ``framers.refresh`` for its encodes (``CRF_OFFSET``,
``FLOOR_FACTOR``, ``FEATHER``, ``BLOCK``; criterion ``rel`` divides each frame's block errors by their
mean before the choice,
``exc`` ranks blocks by their error less the kept frames' coding error there, ``CRITERION = "excess"``),
then compresses the first ``--frames`` frames of each video at every ``--crfs`` with
``refresh=--share`` through the real pipeline and rebuilds with ``framemae``. Bytes: coded streams
(``rd_measure.bitstream_bytes``); PSNR: RGB, capped at 60 dB, mean over frames.

    python bench/refresh_tune.py ../shared/data/videos/val/cotracker__gradio_demo_videos_cat.mp4 \\
        --variants abs:2:0,abs:4:0,abs:6:0,rel:4:0,abs:4:2 --json bench/results/refresh_tune.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is a folder of scripts

from rd_measure import bitstream_bytes

from framers import bundle as fb
from framers import pipeline, refresh
from framers.bdrate import bd_psnr
from framers.h264_reference import write_trimmed
from framers.metrics import psnr_from_mse
from framers.registry import get_reconstructor
from framers.video import FrameReader

ABSOLUTE = refresh.block_errors
FEATHER, BLOCK, TUNE, PRESET, GROUP = refresh.FEATHER, refresh.BLOCK, refresh.TUNE, refresh.PRESET, refresh.GROUP_CLIPS


def relative_block_errors(source: np.ndarray, rebuilt: np.ndarray, block: int = refresh.BLOCK) -> np.ndarray:
    """Block errors [rows, cols] divided by their frame's mean (+1): a block's share of its frame's error."""
    errors = ABSOLUTE(source, rebuilt, block)
    return errors / (errors.mean() + 1.0)


def point(source: Path, reference: list[np.ndarray], bundle: Path, **options: Any) -> tuple[int, float]:
    """(coded bytes, mean PSNR of the framemae rebuild) of one encode."""
    pipeline.compress(source, bundle, selector="stride", stride=4, **options)
    with fb.open_bundle(bundle) as folder:
        manifest = fb.read_manifest(folder)
        frames = list(pipeline.iter_reconstructed(folder, manifest, get_reconstructor("framemae")))
    psnr = [min(60.0, psnr_from_mse(float(np.mean((a.astype(np.float32) - b) ** 2))))
            for a, b in zip(reference, frames, strict=True)]
    n_bytes = bitstream_bytes(bundle)
    bundle.unlink()
    return n_bytes, float(np.mean(psnr))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("videos", type=Path, nargs="+")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--crfs", default="20,24,28,32")
    parser.add_argument("--share", type=float, default=0.1)
    parser.add_argument("--variants", default="abs:4:0,abs:2:0,abs:6:0,rel:4:0",
                        help="criterion:crf_offset:floor_factor[:feather_px[:block_px[:x264_tune[:x264_preset"
                        "[:x264_params with / for :[:clips per block choice]]]]]]], comma-separated (feather 0, "
                        "the shipped block, no tune, the shipped preset, no params and one clip when left out)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    crfs = [int(c) for c in args.crfs.split(",")]
    variants = [v.split(":") for v in args.variants.split(",")]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for video in args.videos:
            source = Path(tmp) / f"{video.stem}.mkv"
            write_trimmed(video, args.frames, source)
            reference = [f.rgb for f in FrameReader(source).frames()]
            bundle = Path(tmp) / "b.frs"
            plain = [point(source, reference, bundle, keyframe_crf=c) for c in crfs]
            gains = {}
            for variant in variants:
                criterion, offset, floor = variant[:3]
                refresh.block_errors = relative_block_errors if criterion == "rel" else ABSOLUTE
                refresh.CRITERION = "excess" if criterion == "exc" else "error"
                refresh.CRF_OFFSET, refresh.FLOOR_FACTOR = int(offset), float(floor)
                refresh.FEATHER = int(variant[3]) if len(variant) > 3 else 0
                refresh.BLOCK = int(variant[4]) if len(variant) > 4 else BLOCK
                refresh.TUNE = variant[5] if len(variant) > 5 and variant[5] else None
                refresh.PRESET = variant[6] if len(variant) > 6 and variant[6] else PRESET
                refresh.X264_PARAMS = variant[7].replace("/", ":") if len(variant) > 7 and variant[7] else None
                refresh.GROUP_CLIPS = int(variant[8]) if len(variant) > 8 else 1
                points = [point(source, reference, bundle, keyframe_crf=c, refresh=args.share) for c in crfs]
                gains[":".join(variant)] = round(bd_psnr(
                    [p[0] for p in plain], [p[1] for p in plain], [p[0] for p in points], [p[1] for p in points]), 3)
            refresh.block_errors = ABSOLUTE
            refresh.FEATHER, refresh.CRITERION, refresh.BLOCK, refresh.TUNE = FEATHER, "error", BLOCK, TUNE
            refresh.PRESET, refresh.X264_PARAMS, refresh.GROUP_CLIPS = PRESET, None, GROUP
            results[video.name] = {"plain": plain, "bd_psnr_vs_plain_db": gains}
            print(video.name, gains, flush=True)
            if args.json:
                args.json.write_text(json.dumps({"settings": vars(args) | {"videos": [str(v) for v in args.videos],
                                                                          "json": str(args.json)},
                                                 "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
