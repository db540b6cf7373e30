#!/usr/bin/env bash
# Train the selector head variants on FrameMAE labels and pick one by the held-out *train*
# videos' regret (never by val). Each run also prints its val metrics, reported alongside.
# ~15 min on 2 cores for 4096 windows (15 epochs of ~30 s per variant, two variants at a time).
#   training/sweep_selector.sh [TRAIN_LABELS] [VAL_LABELS] [OUT_ROOT]
# Needs the encoder tokens of both label folders (python -m training.selector features ...,
# --flip for the train folder). Two runs at a time (one per core here).
set -euo pipefail
cd "$(dirname "$0")/.."
train=${1:-data/selector/train_framemae_s96}
val=${2:-data/selector/val_framemae_s96}
root=${3:-runs/selector_sweep}
py=${PYTHON:-.venv/bin/python}
common=(--train "$train" --val "$val" --framemae model_store/framemae/1.0.0 --prior --pick-best
        --tune-uniform-bias --epochs 15)
declare -A variants=(
  [soft_t0.5]="--loss soft --tau 0.5"
  [soft_t1.0]="--loss soft --tau 1.0"
  [regret]="--loss regret --tau 0.5 --regret 1.0"
  [soft_t0.5_flip]="--loss soft --tau 0.5 --flip"
)
mkdir -p "$root"
names=("${!variants[@]}")
for ((i = 0; i < ${#names[@]}; i += 2)); do
  for name in "${names[@]:i:2}"; do
    # shellcheck disable=SC2086
    "$py" -m training.selector train "${common[@]}" ${variants[$name]} --out "$root/$name" \
      > "$root/$name.log" 2>&1 &
  done
  wait
done
"$py" -m training.selector baselines --train "$train" --val "$val" --json "$root/baselines.json" > /dev/null
"$py" - "$root" <<'PY'
import json, sys
from pathlib import Path
rows = []
for report in sorted(Path(sys.argv[1]).glob("*/report.json")):
    r = json.loads(report.read_text())
    rows.append((r["held_out"]["regret_db_window_mse"], report.parent.name, r))
rows.sort()
print(f"{'variant':16s} held-out regret  val top1  val top5  val PSNR  val regret")
for regret, name, r in rows:
    v = r["val"]
    print(f"{name:16s} {regret:15.3f} {v['top1']:9.3f} {v['top5']:9.3f} {v['psnr_selector']:9.3f} {v['regret_db_window_mse']:11.3f}")
base = json.loads((Path(sys.argv[1]) / "baselines.json").read_text())
for name, m in base["held_out"].items():
    v = base["val"].get(name)
    val = f"{v['top1']:9.3f} {v['top5']:9.3f} {v['psnr_selector']:9.3f} {v['regret_db_window_mse']:11.3f}" if v else ""
    print(f"{'[' + name + ']':16s} {m['regret_db_window_mse']:15.3f} {val}")
print("chosen (lowest held-out regret):", rows[0][1])
PY
