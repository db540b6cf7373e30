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

The same figures of the points a ``bench/rd.py`` run measured (no compression):

    .venv/bin/python bench/plan_error.py --from-rd bench/results/rd_val.json

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
    """The first plan's prediction, the first coding's estimate (dB), whether (and why) the kept
    frames were coded again, and the first plan's segments ([start, stop, stride, CRF]), from a
    compress result's adaptive report."""
    segments = [[s["start"], s["stop"], s["stride"], s["crf"]] for s in report.get("segments", [])]
    recoded = report.get("recoded")
    if recoded:
        return {"predicted": recoded.get("first_predicted"), "estimated": recoded.get("first_estimate"),
                "recoded": recoded.get("reason"), "segments": recoded.get("first_segments", segments)}
    return {"predicted": report.get("predicted_psnr"), "estimated": report.get("estimated_psnr"), "recoded": None,
            "segments": segments}


def rows_of_rd(path: Path, method: str = "adaptive+framemae") -> list[dict[str, Any]]:
    """The same rows from a ``bench/rd.py`` JSON's adaptive points (``rd_measure`` records the first
    plan of a point coded again since the fourteenth session; older points lack it and are left
    out of the figures)."""
    rows = []
    for clip in json.loads(path.read_text())["clips"]:
        for p in clip.get("methods", {}).get(method, {}).get("points", []):
            if "target_psnr" not in p:
                continue
            recoded = p.get("recoded_reason") if p.get("recoded") else None
            rows.append({"video": clip["video"], "target_psnr": p["target_psnr"], "recoded": recoded,
                         "predicted": p.get("first_predicted") if recoded else p.get("predicted_psnr"),
                         "estimated": p.get("first_estimate") if recoded else p.get("estimated_psnr"),
                         "segments": p.get("first_segments") if recoded else p.get("segments")})
    return rows


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
                         "seconds": round(time.perf_counter() - started, 2)})
    return rows


def _percentiles(values: list[float]) -> dict[str, float]:
    """10/25/50/75/90th percentiles (dB, 2 decimals); {} for no values."""
    pct = [10, 25, 50, 75, 90]
    return dict(zip(map(str, pct), np.round(np.percentile(values, pct), 2).tolist(), strict=True)) if values else {}


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Percentiles of estimated − predicted (dB; all points, and those whose first plan keeps
    every frame) and of the first estimate − target, the points coded again (by reason)."""
    ok = [r for r in rows if r["predicted"] is not None and r["estimated"] is not None]
    miss = [r["estimated"] - r["predicted"] for r in ok]
    every = [r["estimated"] - r["predicted"] for r in ok if r.get("segments") and all(s[2] == 1 for s in r["segments"])]
    return {"points": len(ok),
            "estimated_minus_predicted": _percentiles(miss),
            "mean_estimated_minus_predicted": round(float(np.mean(miss)), 3) if ok else None,
            "estimated_minus_predicted_every_frame_kept": _percentiles(every),
            "first_estimate_minus_target": _percentiles([r["estimated"] - r["target_psnr"] for r in ok]),
            "recoded": {reason: sum(r["recoded"] == reason for r in rows) for reason in ("over", "short")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?", help="clips to compress (not with --from-rd)")
    parser.add_argument("--from-rd", type=Path, help="no compression: the figures of a bench/rd.py JSON's points")
    parser.add_argument("--targets", default="28,34,40")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--max-videos", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="rows and summary (a rerun resumes); required with a folder")
    parser.add_argument("--fitted-by", type=Path,
                        help="a rate model folder: only the clips its coding fit used (the train clips no fit "
                             "used stay held out, BENCHMARKS.md section 0)")
    args = parser.parse_args(argv)
    if args.from_rd is not None:
        print(json.dumps(summary(rows_of_rd(args.from_rd)), indent=1))
        return 0
    if args.folder is None or args.json is None:
        parser.error("give a folder and --json, or --from-rd")
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
