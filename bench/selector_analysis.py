"""Two checks behind BENCHMARKS.md section 3 that the other selector reports do not print.

* How often ``framemae``'s and ``linear``'s exhaustive-search best pairs agree on the val label
  clips (the same frames: the val windows are decoded again and ``linear``'s 28 errors computed
  exactly, ``training.label_errors.pair_errors_linear``).
* Per-video paired differences of ``framers`` against the other selectors in ``framers evaluate``
  JSONs (mean, standard error, wins / losses over videos).

    .venv/bin/python bench/selector_analysis.py --labels data/selector/val_framemae_s96 \\
        --evals bench/results/eval_selector_native.json bench/results/eval_selector_native_framers.json \\
        --json bench/results/selector_analysis.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from training.label_errors import pair_errors_linear
from training.label_windows import label_window, val_windows
from training.labels import load_labels


def label_agreement(folder: Path) -> dict[str, Any]:
    labels = load_labels(folder)
    meta = json.loads((folder / "meta.json").read_text())
    _, videos = val_windows(int(meta["per_video"]), int(meta["max_frames"]))
    agree = [
        pair_errors_linear(*label_window(videos[str(v)], int(s), int(meta["short_side"]))).mean(-1).argmin()
        == mse.mean(-1).argmin()
        for v, s, mse in zip(labels["video"], labels["start"], labels["mse"], strict=True)
    ]
    return {"labels": str(folder), "clips": len(agree), "best_pair_agreement_linear_vs_framemae": float(np.mean(agree))}


def paired_differences(paths: list[Path], method: str) -> dict[str, Any]:
    psnr: dict[str, dict[str, float]] = {}  # method → video → PSNR
    for path in paths:
        for video in json.loads(path.read_text())["videos"]:
            for name, result in video["methods"].items():
                if result.get("psnr") is not None:
                    psnr.setdefault(name, {})[video["video"]] = float(result["psnr"])
    out = {}
    for other in sorted(set(psnr) - {method}):
        common = sorted(set(psnr[method]) & set(psnr[other]))
        d = np.array([psnr[method][v] - psnr[other][v] for v in common])
        out[other] = {"videos": len(d), "mean_db": float(d.mean()), "stderr_db": float(d.std(ddof=1) / np.sqrt(len(d))),
                      "wins": int((d > 0).sum()), "losses": int((d < 0).sum())}
    return {"method": method, "against": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--evals", type=Path, nargs="+", required=True)
    parser.add_argument("--method", default="framers+framemae")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = {"agreement": label_agreement(args.labels), "paired": paired_differences(args.evals, args.method)}
    text = json.dumps(report, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
