"""Choose the default keyframe codec: bundle size vs quality on val clips.

For each codec setting: bundle bytes relative to the source, PSNR of the kept frames as decoded,
and PSNR of the whole video after ``linear`` reconstruction (what a user sees).

    python bench/keyframe_codec.py ../shared/data/videos/val --max-videos 8 --json out/keyframe_codec.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

from framers import bundle as fb
from framers.pipeline import compress, iter_reconstructed
from framers.reconstructors.classical import LinearReconstructor
from framers.video import FrameReader

SETTINGS = [("ffv1", None), ("x264", 12), ("x264", 16), ("x264", 20), ("x264", 24), ("x264", 28)]


def psnr(mse: float) -> float:
    return 60.0 if mse <= 1e-6 else min(60.0, 10 * np.log10(255.0**2 / mse))


def measure(video: Path, codec: str, crf: int | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "b"
        result = compress(video, bundle, selector="stride", keyframe_codec=codec, keyframe_crf=crf)
        manifest = fb.read_manifest(bundle)
        kept = set(manifest.kept_indices())
        kept_psnr, all_psnr = [], []
        with FrameReader(video) as reader:
            for src, rebuilt in zip(reader.frames(), iter_reconstructed(bundle, manifest, LinearReconstructor()),
                                    strict=True):
                mse = float(np.mean((src.rgb.astype(np.float32) - rebuilt.astype(np.float32)) ** 2))
                all_psnr.append(psnr(mse))
                if src.index in kept:
                    kept_psnr.append(psnr(mse))
        return {
            "ratio": result.bundle_bytes / result.source_bytes,
            "bpp": result.bundle_bytes * 8 / (result.width * result.height * result.frames),
            "kept_psnr": float(np.mean(kept_psnr)),
            "video_psnr": float(np.mean(all_psnr)),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--max-videos", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    videos = sorted(p for p in args.folder.iterdir() if p.suffix != ".csv")[: args.max_videos]
    rows = []
    for codec, crf in SETTINGS:
        per = [measure(v, codec, crf) for v in videos]
        row = {"codec": codec, "crf": crf, **{k: statistics.mean(p[k] for p in per) for k in per[0]}}
        rows.append(row)
        print(f"{codec:5} crf={crf!s:4} bundle/source={row['ratio']:.3f} bpp={row['bpp']:.4f} "
              f"kept PSNR={row['kept_psnr']:.2f} video PSNR (stride4+linear)={row['video_psnr']:.2f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"videos": [v.name for v in videos], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
