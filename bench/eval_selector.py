"""Evaluate the learned ``framers`` selector against exhaustive search on val clips.

Uses the val labels of ``training.labels`` (per-frame MSE of all 28 kept pairs of each val clip,
codec-aligned clips, context = uniform kept frames of the neighbouring clips) and the stored
selector model as exported (ONNX Runtime on the stored global views, exactly the inference path
of ``framers.selector_model``). Reports

* top-1 / top-5 accuracy against the exhaustive-search label (pair of lowest clip MSE),
* PSNR (mean of per-frame PSNR capped at 60 dB, over the clip's 16 frames) of the pair chosen by
  ``framers``, ``oracle`` (the label), ``uniform`` (slots 1, 5) and ``random`` (the mean over
  all 28 pairs = the expectation of a uniformly random pair, and one seeded draw),
  averaged over clips and over videos (clips of a video averaged first), and the PSNR of the
  mean MSE (weights hard, moving clips).

    .venv/bin/python bench/eval_selector.py --labels data/selector/val_linear_native \
        --json bench/results/selector_eval.json --markdown bench/results/selector_eval.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from framers.geometry import CLIP_LEN, N_PAIRS, PAIRS, UNIFORM_PAIR
from framers.model_store import model_dir, read_config
from framers.selector_model import LearnedSelector
from training.labels import load_labels, window_psnr

CHANCE = {"top1": 1 / N_PAIRS, "top5": 5 / N_PAIRS}
PAPER = {"top1": 0.271, "top5": 0.505}


def evaluate(logits: np.ndarray, mse: np.ndarray, videos: np.ndarray, seed: int = 0) -> dict[str, Any]:
    n = len(mse)
    rows = np.arange(n)
    clip_mse = mse.mean(-1)  # [N, 28]
    label = clip_mse.argmin(1)
    order = np.argsort(-logits, axis=1)
    psnr = window_psnr(mse)  # [N, 28]
    rng = np.random.default_rng(seed)
    picks = {
        "framers": order[:, 0],
        "oracle": label,
        "uniform": np.full(n, UNIFORM_PAIR),
        "random (one draw)": rng.integers(0, N_PAIRS, n),
    }
    names = sorted(set(videos.tolist()))

    def per_video(values: np.ndarray) -> float:
        return float(np.mean([values[videos == v].mean() for v in names]))

    methods: dict[str, dict[str, float]] = {}
    for name, idx in picks.items():
        p = psnr[rows, idx]
        methods[name] = {"psnr_clips": float(p.mean()), "psnr_videos": per_video(p),
                         "psnr_of_mean_mse": float(10 * np.log10(255.0**2 / clip_mse[rows, idx].mean()))}
    methods["random (expected)"] = {"psnr_clips": float(psnr.mean()), "psnr_videos": per_video(psnr.mean(1)),
                                    "psnr_of_mean_mse": float(10 * np.log10(255.0**2 / clip_mse.mean()))}
    methods["best frame-mean PSNR pair"] = {"psnr_clips": float(psnr.max(1).mean()),
                                            "psnr_videos": per_video(psnr.max(1)),
                                            "psnr_of_mean_mse": float("nan")}
    counts = np.bincount(order[:, 0], minlength=N_PAIRS)
    # the accuracy a constant guess of the uniform pair gets (labels are far from balanced)
    uniform_top1 = float((label == UNIFORM_PAIR).mean())
    freq = np.bincount(label, minlength=N_PAIRS)
    best5 = np.argsort(-freq)[:5]  # the 5 most frequent val labels: the best constant top-5 guess
    constant_top5 = float(np.isin(label, best5).mean())
    return {
        "clips": n,
        "videos": len(names),
        "top1": float((order[:, 0] == label).mean()),
        "top5": float((order[:, :5] == label[:, None]).any(1).mean()),
        "chance": CHANCE,
        "constant_uniform_top1": uniform_top1,
        "constant_best5_top5": constant_top5,
        "paper": PAPER,
        "methods": methods,
        "framers_minus_oracle_db": methods["framers"]["psnr_clips"] - methods["oracle"]["psnr_clips"],
        "framers_minus_uniform_db": methods["framers"]["psnr_clips"] - methods["uniform"]["psnr_clips"],
        "framers_top_choices": {str(PAIRS[i]): int(counts[i]) for i in np.argsort(-counts)[:5]},
        "label_top_pairs": {str(PAIRS[i]): int(c) for i, c in
                            sorted(enumerate(np.bincount(label, minlength=N_PAIRS)), key=lambda t: -t[1])[:5]},
    }


def markdown(result: dict[str, Any]) -> str:
    short = result["label_meta"].get("short_side")
    res = "native" if not short else f"short side ~{short}"
    lines = [
        f"# Frame Selector on val clips ({result['labels']})",
        "",
        f"Selector {result['models']['selector']} (FrameMAE {result['models']['framemae']}), "
        f"labels: {result['label_meta'].get('reconstructor')} reconstructor at "
        f"{res} "
        f"resolution; {result['clips']} clips of {result['videos']} videos.",
        "",
        "| metric | framers | chance (uniform guess over 28) | paper |",
        "|---|---|---|---|",
        f"| top-1 | {result['top1']:.1%} | {CHANCE['top1']:.1%} | {PAPER['top1']:.1%} |",
        f"| top-5 | {result['top5']:.1%} | {CHANCE['top5']:.1%} | {PAPER['top5']:.1%} |",
        "",
        f"Labels are unbalanced: always answering the uniform pair (1, 5) scores top-1 "
        f"{result['constant_uniform_top1']:.1%}; the 5 most frequent val labels as a fixed top-5 guess "
        f"score {result['constant_best5_top5']:.1%} (an upper bound for any constant top-5).",
        "",
        "| pair chosen by | PSNR, mean over clips (dB) | mean over videos (dB) | PSNR of mean MSE (dB) |",
        "|---|---|---|---|",
    ]
    for name, m in result["methods"].items():
        lines.append(f"| {name} | {m['psnr_clips']:.2f} | {m['psnr_videos']:.2f} | {m['psnr_of_mean_mse']:.2f} |")
    lines += ["", f"framers − oracle: {result['framers_minus_oracle_db']:+.2f} dB; "
              f"framers − uniform: {result['framers_minus_uniform_db']:+.2f} dB.", "",
              f"Most chosen pairs: {result['framers_top_choices']}; most frequent labels: {result['label_top_pairs']}.",
              ""]
    return "\n".join(lines)


def speed(videos: list[Path], runs: int) -> list[dict[str, Any]]:
    """fps of decoding alone vs decoding + ``framers`` selection (clips read, views resized, the
    model run) on the same video, runs interleaved; median over runs, with CPU ms per frame."""
    import statistics
    import time

    from framers.selectors import UniformSelector
    from framers.video import FrameReader

    selector = LearnedSelector(2)
    uniform = UniformSelector(2)

    def run(video: Path, chooser: Any) -> tuple[int, float, float]:
        def open_clips() -> Any:
            with FrameReader(video) as reader:
                yield from reader.clips(CLIP_LEN)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        frames = sum(len(c) for c, _ in chooser.select(open_clips))
        return frames, time.perf_counter() - wall0, time.process_time() - cpu0

    rows = []
    for video in videos:
        samples: dict[str, list[tuple[int, float, float]]] = {"decode+uniform": [], "decode+framers": []}
        run(video, selector)  # warm-up (session, caches)
        for _ in range(runs):
            samples["decode+uniform"].append(run(video, uniform))
            samples["decode+framers"].append(run(video, selector))
        for name, vals in samples.items():
            rows.append({"video": video.name, "method": name, "frames": vals[0][0],
                         "fps_median": statistics.median(v[0] / v[1] for v in vals),
                         "cpu_ms_per_frame_median": statistics.median(1000 * v[2] / v[0] for v in vals),
                         "fps_runs": [round(v[0] / v[1], 1) for v in vals]})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=Path, default=Path("data/selector/val_linear_native"))
    parser.add_argument("--selector-version", default=None)
    parser.add_argument("--json", type=Path, default=Path("bench/results/selector_eval.json"))
    parser.add_argument("--markdown", type=Path, default=Path("bench/results/selector_eval.md"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed", type=Path, nargs="*", default=None,
                        help="instead: selection speed on these videos (decode alone vs decode + framers)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.speed:
        import os

        rows = speed(args.speed, args.runs)
        report = {"runs": args.runs, "loadavg_at_end": os.getloadavg(), "cpus": os.cpu_count(), "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        lines = ["| video | method | fps (median) | CPU ms / frame | runs |", "|---|---|---|---|---|"]
        lines += [f"| {r['video']} | {r['method']} | {r['fps_median']:.1f} | {r['cpu_ms_per_frame_median']:.2f} | "
                  f"{r['fps_runs']} |" for r in rows]
        args.markdown.write_text("\n".join(lines) + f"\n\nload average at end: {report['loadavg_at_end']}\n")
        print("\n".join(lines))
        return

    data = load_labels(args.labels)
    meta = json.loads((args.labels / "meta.json").read_text())
    selector = LearnedSelector(2, selector_version=args.selector_version)
    views = data["view"]
    if views.shape[2] != selector.view:
        raise SystemExit(f"label views are {views.shape[2]} px, the selector wants {selector.view}")
    logits = np.concatenate([selector.scores(views[i:i + 16]) for i in range(0, len(views), 16)])
    result = evaluate(logits, data["mse"], data["video"], args.seed)
    result.update({"labels": str(args.labels), "label_meta": meta, "models": selector.model_versions,
                   "selector_config": read_config(model_dir("selector", args.selector_version)).get("training")})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    args.markdown.write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
