#!/bin/bash
# Step 2 (only after train.sh stopped early with STOP_AFTER_S): resume model + AdamW from
# $DATA/ckpt.pt and train for RUN_S more seconds; the cosine schedule is stretched to end then.
#   usage (repo root): bash training/scripts/resume.sh [OUT_DIR]     (default training/runs/main)
#   RUN_S  seconds of training in this run (default 575, as for the shipped model)
#   DATA   the working folder train.sh used (default training/data/pano)
# Writes $OUT_DIR/w2 (fp16 weights) and the log.
set -euo pipefail
OUT_DIR=${1:-training/runs/main}
DATA=${DATA:-training/data/pano}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
T0=$(date +%s)
python3 training/train.py --data "$DATA" --config training/configs/panorama-code-13m.json --resume --auto-total \
  --deadline $((T0 + ${RUN_S:-575})) --ckpt "$DATA/ckpt.pt" --export-dir "$OUT_DIR/w2" --seed 1 > "$OUT_DIR/train2.log" 2>&1
tail -4 "$OUT_DIR/train2.log"
