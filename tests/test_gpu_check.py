"""bench/gpu.sh's check (bench/gpu_check.py) on this CPU-only machine: its dry run goes through
every step, and without the dry-run flag it refuses a build that cannot use CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU_SH = ROOT / "bench" / "gpu.sh"


def run_gpu_sh(out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FRAMERS_GPU_PYTHON": sys.executable}
    return subprocess.run(["bash", str(GPU_SH), str(out), *flags], capture_output=True, text=True, env=env,
                          timeout=120, cwd=ROOT)


def test_dry_run_goes_through_every_step(tmp_path: Path, make_clip: Callable[..., Path]) -> None:
    source = make_clip(width=96, height=64, frames=16)
    result = run_gpu_sh(tmp_path / "out", "--allow-cpu", "--resolutions", "240p", "--frames", "16", "--runs", "1",
                        "--repeats", "1", "--batch", "1", "--source", str(source),
                        "--cache-dir", str(tmp_path / "videos"))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["ok"] and report["dry_run"]
    models = {p["model"] for p in report["parity"]}
    in_store = {f"{c.parent.parent.name}/{c.parent.name}" for c in (ROOT / "model_store").glob("*/*/model.onnx")}
    assert models == in_store and models
    assert all(p["max_abs_diff"] == 0.0 for p in report["parity"])  # CPU against CPU: identical
    methods = report["throughput"]["240p"]["methods"]
    assert set(methods) == {"decode", "decode+encode", "compress/default", "compress/stride4",
                            "reconstruct/framemae", "reconstruct/linear"}
    assert all(m["frames"] == 16 and m["fps"] > 0 for m in methods.values())
    assert methods["reconstruct/framemae"]["model_share"] > 0 and methods["decode"]["model_share"] == 0
    assert report["codec_sessions"]  # the codec's models ran and were inspected
    assert "in_build" in report["nvenc"]
    compose = report["compose"]["240p"]  # numpy vs ONNX composition (bench/compose_paths.py)
    assert compose["max_abs_diff"] <= 1 and set(compose["ms_per_frame"]) == {"numpy", "onnx"}
    encoders = report["encoders"]
    assert encoders["auto_picks"] in ("libx264", "h264_nvenc") and encoders["fps"]["240p"]["libx264"]["fps"] > 0


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this build has CUDA")
def test_refuses_to_pass_without_cuda(tmp_path: Path) -> None:
    result = run_gpu_sh(tmp_path, "--resolutions", "240p", "--frames", "16")
    assert result.returncode == 1
    assert "GPU CHECK FAILED" in result.stderr and "CUDAExecutionProvider" in result.stderr
    assert json.loads((tmp_path / "gpu_check.json").read_text())["ok"] is False
