"""Evaluate reconstructors on every val clip at a 25 % frame budget.

    python -m training.evaluate_val --out bench/framemae_val [--model-dir DIR] [--plain-dir DIR]
        [--max-frames 480] [--ssim-every 4]

For each val video (manifest split ``val``) all frames are decoded from the source, the kept
frames are simulated losslessly with the codec layouts — ``uniform`` (slots (1, 5): frames 2, 3,
10, 11 of each 16-frame clip) and ``stride`` (frames 0, 4, 8, 12) — and ``hold``, ``linear``,
``framemae`` (and the ``plain`` ablation, uniform slots only) rebuild all frames from the same
kept frames. PSNR: RGB, peak 255, per frame capped at 60 dB, mean over all frames including the
kept ones (``framers.metrics``); a set's PSNR is the mean over its videos; also the PSNR of the
mean MSE. SSIM (``framers.metrics``, full RGB) on every frame of every ``--ssim-every``-th clip.
Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from framers import metrics
from framers.geometry import CLIP_LEN
from framers.reconstructors.base import KeptFrame, Reconstructor
from framers.reconstructors.classical import HoldReconstructor, LinearReconstructor
from framers.reconstructors.framemae import FrameMAEReconstructor
from training.cache import DATA_ROOT, decode_rgb

PATTERNS: dict[str, tuple[int, ...]] = {"uniform": (2, 3, 10, 11), "stride": (0, 4, 8, 12)}


def kept_indices(n_frames: int, offsets: tuple[int, ...]) -> list[int]:
    return [c + o for c in range(0, n_frames, CLIP_LEN) for o in offsets if c + o < n_frames]


def psnr_of_mse(value: float) -> float:
    return metrics.psnr_from_mse(value)


def evaluate_video(
    frames: np.ndarray, methods: dict[str, Reconstructor], offsets: tuple[int, ...], ssim_every: int
) -> dict[str, dict[str, Any]]:
    n = len(frames)
    idx = kept_indices(n, offsets)
    results: dict[str, dict[str, Any]] = {}
    refs: dict[int, metrics.Reference] = {}
    for name, rec in methods.items():

        def kept_stream() -> Iterator[KeptFrame]:
            for i in idx:
                yield KeptFrame(i, frames[i])

        psnrs, mses, ssims = [], [], []
        seconds = 0.0
        stream = rec.reconstruct(kept_stream(), n, CLIP_LEN)
        for i in range(n):
            t1 = time.perf_counter()
            out = next(stream)
            seconds += time.perf_counter() - t1
            value = metrics.mse(frames[i], out)
            mses.append(value)
            psnrs.append(metrics.psnr_from_mse(value))
            if ssim_every and (i // CLIP_LEN) % ssim_every == 0:
                if i not in refs:
                    refs[i] = metrics.Reference(frames[i], scales=1)
                ssims.append(metrics.structural(refs[i], out, weights=(1.0,))[0])
        results[name] = {
            "psnr": float(np.mean(psnrs)),
            "psnr_of_mean_mse": psnr_of_mse(float(np.mean(mses))),
            "mean_mse": float(np.mean(mses)),
            "ssim": float(np.mean(ssims)) if ssims else None,
            "ssim_frames": len(ssims),
            "seconds": seconds,
            "fps": n / seconds if seconds > 0 else None,
        }
    return results


def summarize(per_video: list[dict[str, Any]], pattern: str, method: str) -> dict[str, Any]:
    rows = [v["results"][pattern][method] for v in per_video if method in v["results"].get(pattern, {})]
    if not rows:
        return {}
    ssim = [r["ssim"] for r in rows if r["ssim"] is not None]
    return {
        "videos": len(rows),
        "psnr": float(np.mean([r["psnr"] for r in rows])),
        "psnr_of_mean_mse": psnr_of_mse(float(np.mean([r["mean_mse"] for r in rows]))),
        "ssim": float(np.mean(ssim)) if ssim else None,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# FrameMAE val evaluation ({report['model_version']})",
        "",
        f"Command: `{report['command']}`",
        "",
        "PSNR: RGB, per-frame cap 60 dB, mean over all frames incl. kept; set = mean over videos. "
        f"SSIM on every frame of every {report['ssim_every']}-th clip. "
        f"Frames per video capped at {report['max_frames']}.",
        "",
    ]
    for pattern, summary in report["overall"].items():
        lines += [
            f"## {pattern}",
            "",
            "| method | videos | PSNR (dB) | PSNR of mean MSE (dB) | SSIM |",
            "|---|---|---|---|---|",
        ]
        for method, s in summary.items():
            if s:
                ssim = f"{s['ssim']:.4f}" if s["ssim"] is not None else "–"
                lines.append(f"| {method} | {s['videos']} | {s['psnr']:.2f} | {s['psnr_of_mean_mse']:.2f} | {ssim} |")
        lines.append("")
    lines += [
        "## Per video (PSNR dB: hold / linear / framemae [/ plain])",
        "",
        "| video | frames | size | pattern | hold | linear | framemae | plain | learned − linear |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in report["videos"]:
        for pattern, res in v["results"].items():

            def val(m: str, res: dict[str, Any] = res) -> str:
                return f"{res[m]['psnr']:.2f}" if m in res else "–"

            best = "framemae" if "framemae" in res else "plain"
            diff = res[best]["psnr"] - res["linear"]["psnr"] if best in res and "linear" in res else float("nan")
            lines.append(
                f"| {v['file']} | {v['frames']} | {v['width']}×{v['height']} | {pattern} | {val('hold')} | "
                f"{val('linear')} | {val('framemae')} | {val('plain')} | {diff:+.2f} |"
            )
    return "\n".join(lines) + "\n"


def merge_reports(paths: list[Path], out: Path) -> None:
    """Combine reports of the same videos run with different --patterns / --methods."""
    reports = [json.loads(p.read_text()) for p in paths]
    merged = dict(reports[0])
    merged["command"] = " ; ".join(r["command"] for r in reports)
    by_file: dict[str, dict[str, Any]] = {}
    for r in reports:
        for v in r["videos"]:
            entry = by_file.setdefault(v["file"], {**v, "results": {}})
            for pattern, res in v["results"].items():
                entry["results"].setdefault(pattern, {}).update(res)
    merged["videos"] = list(by_file.values())
    patterns = [p for p in PATTERNS if any(p in v["results"] for v in merged["videos"])]
    merged["overall"] = {
        p: {m: summarize(merged["videos"], p, m) for m in ("hold", "linear", "framemae", "framemae-nogate", "plain")}
        for p in patterns
    }
    out.with_suffix(".json").write_text(json.dumps(merged, indent=1))
    out.with_suffix(".md").write_text(markdown(merged))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/framemae_val"))
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--plain-dir", type=Path, default=None)
    parser.add_argument("--max-frames", type=int, default=480)
    parser.add_argument("--ssim-every", type=int, default=4)
    parser.add_argument("--only", default=None, help="substring filter on file names")
    parser.add_argument(
        "--methods", default="hold,linear,framemae", help="subset of hold,linear,framemae,framemae-nogate"
    )
    parser.add_argument("--patterns", default="uniform,stride")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=None,
        help="only merge these report JSONs (e.g. one per pattern) into --out",
    )
    args = parser.parse_args()
    if args.merge:
        merge_reports(args.merge, args.out)
        return
    cv2.setNumThreads(1)

    framemae = FrameMAEReconstructor(args.model_dir)
    base: dict[str, Reconstructor] = {
        "hold": HoldReconstructor(),
        "linear": LinearReconstructor(),
        "framemae": framemae,
        "framemae-nogate": FrameMAEReconstructor(args.model_dir, gate=False),
    }
    base = {k: v for k, v in base.items() if k in args.methods.split(",")}
    patterns = {k: v for k, v in PATTERNS.items() if k in args.patterns.split(",")}
    plain = FrameMAEReconstructor(args.plain_dir) if args.plain_dir else None
    with open(DATA_ROOT / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "val"]
    if args.only:
        rows = [r for r in rows if args.only in r["file"]]
    report: dict[str, Any] = {
        "model_version": framemae.model_versions["framemae"],
        "model_dir": str(framemae.model_dir),
        "plain_dir": str(args.plain_dir),
        "command": "python -m training.evaluate_val "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "max_frames": args.max_frames,
        "ssim_every": args.ssim_every,
        "videos": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for row in rows:
        path = DATA_ROOT / row["file"]
        frames = decode_rgb(path, args.max_frames)
        entry: dict[str, Any] = {
            "file": row["file"],
            "frames": len(frames),
            "width": frames.shape[2],
            "height": frames.shape[1],
            "results": {},
        }
        for pattern, offsets in patterns.items():
            methods = dict(base)
            if plain is not None and pattern == "uniform":
                methods["plain"] = plain
            entry["results"][pattern] = evaluate_video(frames, methods, offsets, args.ssim_every)
        report["videos"].append(entry)
        res = entry["results"]
        print(
            f"{row['file']}: "
            + "; ".join(f"{p}: " + " ".join(f"{m} {r['psnr']:.2f}" for m, r in res[p].items()) for p in res),
            flush=True,
        )
        report["overall"] = {
            p: {
                m: summarize(report["videos"], p, m) for m in ("hold", "linear", "framemae", "framemae-nogate", "plain")
            }
            for p in patterns
        }
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
        args.out.with_suffix(".md").write_text(markdown(report))
    for p, summary in report["overall"].items():
        print(p, {m: round(s["psnr"], 3) for m, s in summary.items() if s})


if __name__ == "__main__":
    main()
