#!/bin/bash
# Step 2c: the completion fine-tune that produced the shipped weights (MODEL.md, "Completion
# fine-tune"): from the retrieval fine-tune's weights, fill-in-the-middle in the engine's inline form
# and inline-completion documents among the workspace questions, then a shorter run on fresh data.
#   usage (repo root): bash training/scripts/finetune-completion.sh [OUT_DIR]   (default training/runs/completion)
#   INIT   the weights to start from (required): the retrieval fine-tune's, which shipped before these:
#          git show eadeac7:models/panorama-code-13m/model.safetensors > training/runs/retrieval.safetensors
#   JS     as in train.sh
# About 17 minutes of one H200: 15 min of training, then 5.6 min; data builds of ~100 s each on 16 cores.
# The shipped runs 1 and 2 were one 15-minute schedule cut in two (`train.py --resume --auto-total`);
# here they are one run. Writes $OUT_DIR/model.safetensors (int8) and metrics.json.
set -euo pipefail
OUT_DIR=${1:-training/runs/completion}
JS=${JS:-training/data/js_corpus.jsonl.xz}
INIT=${INIT:?set INIT to the weights to start from (see the usage above)}
CONFIG=training/configs/panorama-code-13m.json
TOK=models/panorama-code-13m/tokenizer.json
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
prep() {  # DATA SEED COMPLETE_SHARE
  python3 training/prep.py --js "$JS" --out "$1" --tokenizer "$TOK" --seed "$2" --complete-share "$3" \
    --fim-rate 0.3 --fim-form inline > "$1.prep.log" 2>&1 || { tail -30 "$1.prep.log"; exit 1; }
  tail -4 "$1.prep.log"
}
# Runs 1 + 2: 30% of the stream's files end in an inline fill-in request, 40% of the question documents
# in an inline completion; middles and answers weigh 3×.
prep training/data/completion-s0 0 0.4
python3 training/train.py --data training/data/completion-s0 --config "$CONFIG" --init-from "$INIT" \
  --lr 1e-3 --warmup 50 --minutes 15 --weight-fim --export-dir "$OUT_DIR/w12" > "$OUT_DIR/train12.log" 2>&1
tail -2 "$OUT_DIR/train12.log"
python3 training/export.py "$OUT_DIR/w12" "$OUT_DIR/run12.safetensors"
# Run 3: data drawn again (seed 1, half the question documents end in a completion), from run 2's int8 weights.
prep training/data/completion-s1 1 0.5
python3 training/train.py --data training/data/completion-s1 --config "$CONFIG" --init-from "$OUT_DIR/run12.safetensors" \
  --lr 5e-4 --warmup 30 --minutes 5.6 --weight-fim --seed 1 --export-dir "$OUT_DIR/w" > "$OUT_DIR/train3.log" 2>&1
tail -2 "$OUT_DIR/train3.log"
python3 training/export.py "$OUT_DIR/w" "$OUT_DIR/model.safetensors"
python3 training/evaluate.py --weights "$OUT_DIR/model.safetensors" --config "$CONFIG" --tokenizer "$TOK" \
  --heldout training/data/completion-s1/heldout.pkl --out "$OUT_DIR/metrics.json" \
  --bpb 24 --fim 200 --fim-form inline --needle 8192:25 --dense-needle "" | tail -4
