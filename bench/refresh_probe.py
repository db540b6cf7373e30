"""Probe for issue 15 (region refresh): does refreshing the worst 16×16 blocks of the rebuilt
frames, coded as an x264 residual stream, beat keeping every 4th frame at a finer CRF, at equal
bytes?

For one video (first ``--frames`` frames, cropped to multiples of 16): every 4th frame (and the
last) coded by x264 medium at CRF c, the rest rebuilt by ``framemae`` exactly as the decoder
would; per dropped frame the MSE of each 16×16 block against the source; the worst ``share`` of
blocks over all dropped frames get their residual (source − rebuilt + 128, 128 elsewhere) coded as
one more x264 stream at CRF c_r, added back inside the chosen blocks (hard 16×16 mask). Reported:
bytes (both streams: packets + extradata) and mean RGB PSNR (capped at 60 dB) of every such point,
and of plain every-4th over a CRF grid, so that points can be compared at equal bytes. Not part of
the codec: a measurement to decide how the refresh layer should be coded.

    python bench/refresh_probe.py ../shared/data/videos/val/sleap__tests_data_videos_small_robot.mp4 \
        --json bench/results/refresh_probe_small_robot.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framers.adaptive.coding import x264_round_trip  # noqa: E402
from framers.metrics import psnr_of_mses  # noqa: E402
from framers.reconstructors.base import KeptFrame  # noqa: E402
from framers.registry import get_reconstructor  # noqa: E402
from framers.rgb import to_rgb  # noqa: E402

BLOCK = 16


def mean_psnr(frames: Sequence[np.ndarray], source: Sequence[np.ndarray]) -> float:
    mses = np.array([np.mean((a.astype(np.float32) - b) ** 2) for a, b in zip(frames, source, strict=True)])
    return float(np.mean(psnr_of_mses(mses)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("video", type=Path)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--crfs", default="24,30,36", help="kept-frame CRFs with refresh")
    parser.add_argument("--shares", default="0.05,0.1,0.2", help="shares of dropped-frame blocks refreshed")
    parser.add_argument("--plain-crfs", default="14,18,20,22,24,26,28,30,32,36")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    source: list[np.ndarray] = []
    with av.open(str(args.video)) as container:
        for frame in container.decode(video=0):
            rgb = to_rgb(frame)
            source.append(np.ascontiguousarray(rgb[: rgb.shape[0] // BLOCK * BLOCK, : rgb.shape[1] // BLOCK * BLOCK]))
            if len(source) == args.frames:
                break
    n = len(source)
    kept = sorted(set(range(0, n, 4)) | {n - 1})
    dropped = [i for i in range(n) if i not in kept]
    rebuilder = get_reconstructor("framemae")

    def rebuild(crf: int) -> tuple[list[np.ndarray], int]:
        coded, n_bytes = x264_round_trip([source[i] for i in kept], crf, "medium")
        return list(rebuilder.reconstruct([KeptFrame(i, c) for i, c in zip(kept, coded, strict=True)], n, 16)), n_bytes

    points: list[dict[str, Any]] = []
    for crf in (int(c) for c in args.crfs.split(",")):
        frames, n_bytes = rebuild(crf)
        errors = np.stack([((frames[i].astype(np.float32) - source[i]) ** 2).mean(axis=2) for i in dropped])
        d, h, w = errors.shape
        block_err = errors.reshape(d, h // BLOCK, BLOCK, w // BLOCK, BLOCK).mean(axis=(2, 4))  # [d, rows, cols]
        for share in (float(s) for s in args.shares.split(",")):
            chosen = block_err >= np.quantile(block_err, 1 - share)
            masks = [np.kron(chosen[k], np.ones((BLOCK, BLOCK), np.float32))[..., None] for k in range(d)]
            residual = [np.where(masks[k] > 0, np.clip(source[i].astype(np.int16) - frames[i] + 128, 0, 255), 128)
                        .astype(np.uint8) for k, i in enumerate(dropped)]
            for refresh_crf in (crf - 4, crf, crf + 4):
                decoded, refresh_bytes = x264_round_trip(residual, refresh_crf, "medium")
                out = list(frames)
                for k, i in enumerate(dropped):
                    added = frames[i] + masks[k] * (decoded[k].astype(np.float32) - 128)
                    out[i] = np.clip(added, 0, 255).astype(np.uint8)
                points.append({"kind": "refresh", "crf": crf, "share": share, "refresh_crf": refresh_crf,
                               "bytes": n_bytes + refresh_bytes, "psnr": round(mean_psnr(out, source), 3),
                               "plain_bytes": n_bytes, "plain_psnr": round(mean_psnr(frames, source), 3)})
                print(json.dumps(points[-1]), flush=True)
    for crf in (int(c) for c in args.plain_crfs.split(",")):
        frames, n_bytes = rebuild(crf)
        points.append({"kind": "plain", "crf": crf, "bytes": n_bytes, "psnr": round(mean_psnr(frames, source), 3)})
        print(json.dumps(points[-1]), flush=True)
    plain = sorted((p["bytes"], p["psnr"]) for p in points if p["kind"] == "plain")
    compared = []
    for p in points:
        # plain every-4th at the same bytes, interpolated in log(bytes); only inside the plain
        # curve's range (no extrapolation: beyond its finest CRF the gain would be made up)
        if p["kind"] == "refresh" and plain[0][0] <= p["bytes"] <= plain[-1][0]:
            p["plain_psnr_at_equal_bytes"] = round(float(np.interp(np.log(p["bytes"]), [np.log(b) for b, _ in plain],
                                                                   [q for _, q in plain])), 3)
            p["gain_db"] = round(p["psnr"] - p["plain_psnr_at_equal_bytes"], 3)
            compared.append(p)
    if compared:
        best = max(compared, key=lambda p: p["gain_db"])
        median = float(np.median([p["gain_db"] for p in compared]))
        print(f"{len(compared)} refresh points inside the plain curve; best vs plain at equal bytes: "
              f"{best['gain_db']:+.2f} dB ({best}); median {median:+.2f} dB")
    if args.json:
        args.json.write_text(json.dumps({"video": args.video.name, "frames": n, "points": points}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
