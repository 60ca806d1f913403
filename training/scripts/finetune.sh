#!/bin/bash
# Step 4: the retrieval fine-tune that produced the shipped weights — start from a model file, train on
# the workspace-question format (docs/workspace-questions.md), export int8, evaluate.
#   usage (repo root): bash training/scripts/finetune.sh [OUT_DIR]      (default training/runs/finetune)
#   INIT          the weights to start from (default models/panorama-code-13m/model.safetensors)
#   MINUTES       training time (default 21.5: the shipped run was three runs of ~7 min, each
#                 resuming the last — resume with `train.py --resume --auto-total --deadline ...`)
#   DATA, JS      as in train.sh; the tokenizer is the shipped one (same ids)
# Writes $OUT_DIR/w (fp16 weights), $OUT_DIR/model.safetensors (int8), the logs and metrics.json.
set -euo pipefail
OUT_DIR=${1:-training/runs/finetune}
DATA=${DATA:-training/data/pano}
JS=${JS:-training/data/js_corpus.jsonl.xz}
INIT=${INIT:-models/panorama-code-13m/model.safetensors}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
python3 training/prep.py --js "$JS" --out "$DATA" --tokenizer models/panorama-code-13m/tokenizer.json > "$OUT_DIR/prep.log" 2>&1 || { tail -30 "$OUT_DIR/prep.log"; exit 1; }
tail -9 "$OUT_DIR/prep.log"
python3 training/train.py --data "$DATA" --config training/configs/panorama-code-13m.json --init-from "$INIT" \
  --lr 1e-3 --warmup 50 --minutes "${MINUTES:-21.5}" --ckpt "$DATA/ckpt.pt" --export-dir "$OUT_DIR/w" > "$OUT_DIR/train.log" 2>&1
tail -3 "$OUT_DIR/train.log"
python3 training/export.py "$OUT_DIR/w" "$OUT_DIR/model.safetensors"
python3 training/evaluate.py --weights "$OUT_DIR/model.safetensors" --config training/configs/panorama-code-13m.json \
  --tokenizer models/panorama-code-13m/tokenizer.json --heldout "$DATA/heldout.pkl" --out "$OUT_DIR/metrics.json" \
  --bpb 24 --fim 0 --needle 8192:25,32768:8,131072:3 --dense-needle "" | tail -5
