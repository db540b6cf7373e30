"""FrameMAE's network alone on the CPU: the stored model.onnx against its ``cpu_graph``
(issue 17), one window's worth of tiles, interleaved runs, and onnxruntime's per-operator profile.

    python bench/framemae_net.py --runs 9 --threads 1 --json bench/results/framemae_net.json

A window is 6 tiles of [11, 16, 64, 64] at every resolution from 480p to 1080p (one session call
of 6, as ``framemae.run_tiled`` makes it). Each graph gets its own session (``--threads``
intra-op threads, ORT_ENABLE_ALL as ``framers.runtime``); runs alternate between the graphs so
that background load hits both alike; the median and the minimum are reported, with the share
of each operator type in a profiled run and the max abs difference of the two outputs.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from framers import model_store


def session(path: Path, threads: int, profile_dir: Path | None = None) -> ort.InferenceSession:
    """A CPU session of ``path`` with ``threads`` intra-/inter-op threads (profiling into
    ``profile_dir`` if given)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_dir / path.stem)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def op_shares(path: Path, x: np.ndarray, threads: int) -> dict[str, float]:
    """Share (%) of kernel time per operator type in one profiled run of ``path`` on ``x``."""
    with tempfile.TemporaryDirectory() as tmp:
        s = session(path, threads, Path(tmp))
        s.run(None, {s.get_inputs()[0].name: x})  # warm-up, profiled too: take the last run only
        s.run(None, {s.get_inputs()[0].name: x})
        events = json.loads(Path(s.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    last = runs[-1]
    spent: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= last["ts"]:
            spent[e["args"]["op_name"]] += e["dur"]
    total = sum(spent.values()) or 1
    return {op: round(100.0 * t / total, 1) for op, t in spent.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tiles", type=int, default=6)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.runs < 1 or args.threads < 1 or args.tiles < 1:
        parser.error("--runs, --threads and --tiles must be at least 1")
    folder = model_store.model_dir("framemae")
    config = model_store.read_config(folder)
    entry = config.get("cpu_graph")
    if not entry:
        parser.error(f"{folder}: no cpu_graph in config.json (python -m training.optimize_onnx {folder})")
    graphs = {"model.onnx": folder / config.file, "cpu_graph": folder / entry["file"]}
    dims = tuple(int(d) for d in config.inputs[0].dims[1:])  # [C, T, tile, tile]: fixed in the config
    x = np.random.default_rng(0).random((args.tiles, *dims), dtype=np.float32) - 0.5
    sessions = {name: session(path, args.threads) for name, path in graphs.items()}
    outputs = {name: s.run(None, {s.get_inputs()[0].name: x})[0] for name, s in sessions.items()}
    times: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(args.runs):
        for name, s in sessions.items():
            start = time.perf_counter()
            s.run(None, {s.get_inputs()[0].name: x})
            times[name].append(1000.0 * (time.perf_counter() - start))
    result: dict[str, Any] = {
        "tiles": args.tiles, "threads": args.threads, "runs": args.runs, "onnxruntime": ort.__version__,
        "max_abs_diff": float(np.abs(outputs["model.onnx"] - outputs["cpu_graph"]).max()),
        "graphs": {},
    }
    for name, path in graphs.items():
        result["graphs"][name] = {
            "file": path.name,
            "median_ms": round(float(np.median(times[name])), 1),
            "min_ms": round(min(times[name]), 1),
            "runs_ms": [round(t, 1) for t in times[name]],
            "op_share_pct": op_shares(path, x, args.threads),
        }
    for name, r in result["graphs"].items():
        top = ", ".join(f"{op} {share}" for op, share in list(r["op_share_pct"].items())[:6])
        print(f"{name:11s} median {r['median_ms']:6.1f} ms  min {r['min_ms']:6.1f} ms  ({top} %)")
    print(f"max abs difference of the mixing weights: {result['max_abs_diff']:.2e}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
