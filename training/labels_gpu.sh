#!/usr/bin/env bash
# Device run: FrameMAE labels of one train pack part on the GPU (network) + 16 CPU processes
# (the codec's flow / compose stages), resumable; the label folder comes back as $OUT/labels.tgz.
# Usage: OUT=dir bash training/labels_gpu.sh PACK SECONDS   (PACK from --write-pack; SECONDS per process)
set -u
pack=$1; budget=$2
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 FRAMERS_ORT_THREADS=1 OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
python3 -c "import cv2, numpy, torch, onnxruntime; print(cv2.__version__, numpy.__version__, torch.__version__, torch.cuda.is_available())"
n=${JOBS:-$(nproc --all)}; echo "processes $n"  # nproc alone honours OMP_NUM_THREADS=1
start=$(date +%s)
for i in $(seq 0 $((n-1))); do
  timeout $budget python3 -m training.labels --split train --reconstructor framemae --engine torch --device cuda \
    --short-side 96 --n 4096 --seed 0 --chunk 8 --pack $pack --shard $i/$n --quiet > $OUT/log_$i.txt 2>&1 &
done
wait
echo "elapsed $(( $(date +%s) - start )) s"
ls data/selector/train_framemae_s96 | wc -l
tail -3 $OUT/log_0.txt
tar czf $OUT/labels.tgz data/selector/train_framemae_s96
cat $OUT/log_*.txt | grep -i -E "error|traceback" | head -5
rm -f $OUT/log_*.txt
