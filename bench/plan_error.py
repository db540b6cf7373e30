"""How far the adaptive mode's plan (its predicted PSNR) misses what the first coding gives.

The first coding of the kept frames is estimated after coding from x264's own error and a
decoded and rebuilt sample (``AdaptiveSelector.after_coding``; within ±0.5 dB of the achieved PSNR
on every val point, BENCHMARKS.md section 0). When that estimate comes out more than 1 dB over the
target, the kept frames are coded a second time (``recode_plan``), which costs about as much as
the first coding again (issue 12's time bound). This measures, per clip and target, the first
coding's estimate − the first plan's prediction, and how often a second coding followed (what
``selector.TARGET_MARGIN_DB`` trades: fewer second codings against more first codings short).
Run it on *train* clips (a calibration; val is for evaluation):

    .venv/bin/python bench/plan_error.py ../shared/data/videos/train --targets 28,34,40 \\
        --fitted-by model_store/ratemodel/1.4.0 --max-videos 30 --json bench/results/plan_error_train.json

Each clip's first ``--frames`` frames are cut losslessly (``h264_reference.write_trimmed``, as
``bench/rd.py`` does) and compressed with ``framers.pipeline.compress(target_psnr=T)`` into a
temporary ``.frs``; nothing is rebuilt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framers.h264_reference import write_trimmed
from framers.pipeline import compress

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".264", ".mov", ".webm", ".gif")


def first_coding(report: dict[str, Any]) -> dict[str, Any]:
    """The first plan's prediction, the first coding's estimate (dB) and whether (and why) the
    kept frames were coded again, from a compress result's adaptive report."""
    recoded = report.get("recoded")
    if recoded:
        return {"predicted": recoded.get("first_predicted"), "estimated": recoded.get("first_estimate"),
                "recoded": recoded.get("reason")}
    return {"predicted": report.get("predicted_psnr"), "estimated": report.get("estimated_psnr"), "recoded": None}


def measure(path: Path, targets: list[float], frames: int) -> list[dict[str, Any]]:
    """One row per target: clip, target, predicted, estimated, recoded, segments, seconds."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="framers-plan-") as tmp:
        source = Path(tmp) / "source.mkv"
        write_trimmed(path, frames, source)
        for target in targets:
            started = time.perf_counter()
            result = compress(source, Path(tmp) / "out.frs", target_psnr=target)
            report = result.adaptive or {}
            rows.append({"video": path.name, "target_psnr": target, **first_coding(report),
                         "segments": [[s["start"], s["stop"], s["stride"], s["crf"]]
                                      for s in report.get("segments", [])],
                         "seconds": round(time.perf_counter() - started, 2)})
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Percentiles of estimated − predicted (dB) and of the first estimate − target, the share of
    points coded again (by reason)."""
    ok = [r for r in rows if r["predicted"] is not None and r["estimated"] is not None]
    miss = np.array([r["estimated"] - r["predicted"] for r in ok])
    over = np.array([r["estimated"] - r["target_psnr"] for r in ok])
    pct = [10, 25, 50, 75, 90]
    return {"points": len(ok),
            "estimated_minus_predicted": dict(zip(map(str, pct), np.round(np.percentile(miss, pct), 2).tolist(),
                                                  strict=True)) if ok else {},
            "mean_estimated_minus_predicted": round(float(miss.mean()), 3) if ok else None,
            "first_estimate_minus_target": dict(zip(map(str, pct), np.round(np.percentile(over, pct), 2).tolist(),
                                                    strict=True)) if ok else {},
            "recoded": {reason: sum(r["recoded"] == reason for r in rows) for reason in ("over", "short")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--targets", default="28,34,40")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--max-videos", type=int, default=1000)
    parser.add_argument("--json", type=Path, required=True, help="rows and summary (a rerun resumes)")
    parser.add_argument("--fitted-by", type=Path,
                        help="a rate model folder: only the clips its coding fit used (the train clips no fit "
                             "used stay held out, BENCHMARKS.md section 0)")
    args = parser.parse_args(argv)
    targets = [float(t) for t in args.targets.split(",")]
    data: dict[str, Any] = json.loads(args.json.read_text()) if args.json.exists() else {"rows": []}
    done = {r["video"] for r in data["rows"]}
    # a fixed order that interleaves sources (sorted names cluster one source's clips together)
    fitted = (set(json.loads((args.fitted_by / "config.json").read_text())["training"]["coding_videos"])
              if args.fitted_by else None)
    videos = sorted((p for p in args.folder.iterdir()
                     if p.suffix.lower() in VIDEO_SUFFIXES and (fitted is None or p.name in fitted)),
                    key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())[: args.max_videos]
    for path in videos:
        if path.name in done:
            continue
        try:
            rows = measure(path, targets, args.frames)
        except Exception as exc:  # a clip that fails is reported, the others go on
            print(f"{path.name}: {type(exc).__name__}: {exc}", flush=True)
            continue
        data["rows"].extend(rows)
        data["summary"] = summary(data["rows"])
        data["settings"] = {"folder": str(args.folder), "targets": targets, "frames": args.frames}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1) + "\n")
        print(path.name, " ".join(f"{r['target_psnr']:g}: {r['predicted']}→{r['estimated']}"
                                  f"{' (' + r['recoded'] + ')' if r['recoded'] else ''}" for r in rows), flush=True)
    print(json.dumps(data.get("summary"), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
