#!/usr/bin/env bash
# The prepared GPU check of issue 17 (bench/gpu_check.py): CUDA used for real, CPU/CUDA parity of
# every ONNX model, codec fps at 480p and 1080p beside decode and decode+encode, h264_nvenc.
#
#   bench/gpu.sh [OUT_DIR] [gpu_check.py flags...]      OUT_DIR default: $OUT, else bench/results/gpu
#
# Python: $FRAMERS_GPU_PYTHON when set (an interpreter that already has onnxruntime-gpu and the
# project's dependencies); else a virtualenv .venv-gpu with the `gpu` extra (onnxruntime-gpu; it
# conflicts with the `cpu` extra's onnxruntime, hence its own venv), from the package index or,
# offline, from the wheels in $GPU_WHEELS (pip --no-index --find-links).
# Dry run on a machine without a GPU (exercises every step with the CPU provider standing in):
#   FRAMERS_GPU_PYTHON=.venv/bin/python bench/gpu.sh /tmp/gpu --allow-cpu --resolutions 240p --frames 16
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results/gpu}"
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then out="$1"; shift; fi

py="${FRAMERS_GPU_PYTHON:-}"
if [ -z "$py" ]; then
  [ -x .venv-gpu/bin/python ] || python3 -m venv .venv-gpu
  pip_args=(-q)
  if [ -n "${GPU_WHEELS:-}" ]; then pip_args+=(--no-index --find-links "$GPU_WHEELS"); fi
  .venv-gpu/bin/pip install "${pip_args[@]}" -e ".[gpu]"
  py=.venv-gpu/bin/python
fi
if "$py" -c 'import importlib.metadata as m; m.version("onnxruntime")' >/dev/null 2>&1 \
   && "$py" -c 'import importlib.metadata as m; m.version("onnxruntime-gpu")' >/dev/null 2>&1; then
  # Both builds install the same `onnxruntime` module: whichever came last wins, silently.
  echo "warning: onnxruntime and onnxruntime-gpu are both installed in $py; uninstall onnxruntime" >&2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
mkdir -p "$out"
PYTHONUNBUFFERED=1 exec "$py" bench/gpu_check.py --out "$out" "$@"
