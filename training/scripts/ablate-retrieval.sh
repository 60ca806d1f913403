#!/bin/bash
# The retrieval fine-tune's ablations (MODEL.md, "Retrieval fine-tune"): the same start, rows, schedule
# and training time, three arms —
#   line   questions answered with the definition's line (the shipped format, docs/workspace-questions.md)
#   path   the same questions answered with `path:line` (the first model's format; prep.py --answer-form path)
#   none   the same rows without question documents (train.py --no-questions)
# Each starts from the model before the retrieval fine-tune (commit 0817c6e, which answered `path:line`,
# so the `path` arm starts in its own format) and is evaluated in its own answer format.
#   usage (repo root, a machine with a GPU): bash training/scripts/ablate-retrieval.sh [OUT_DIR] [ARMS]
#   MINUTES   training time per arm (default 7); DATA, JS as in train.sh
# Writes OUT_DIR/ARM/{model.safetensors,train.log,metrics.json}; `npm run eval:model -- --model DIR` then
# measures each arm through the engine (copy config.json and tokenizer.json from models/panorama-code-13m).
set -euo pipefail
OUT_DIR=${1:-training/runs/ablate-retrieval}
ARMS=${2:-line path none}
DATA=${DATA:-training/data/ablate}
JS=${JS:-training/data/js_corpus.jsonl.xz}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
# The start, from git (or placed there beforehand where the checkout has no history).
[ -f "$OUT_DIR/init.safetensors" ] || git show 0817c6e:models/panorama-code-13m/model.safetensors > "$OUT_DIR/init.safetensors"
for arm in $ARMS; do
  form=$([ "$arm" = path ] && echo path || echo line)
  if [ ! -f "$DATA-$form/stream.npy" ]; then
    python3 training/prep.py --js "$JS" --out "$DATA-$form" --tokenizer models/panorama-code-13m/tokenizer.json \
      --answer-form "$form" > "$OUT_DIR/prep-$form.log" 2>&1 || { tail -30 "$OUT_DIR/prep-$form.log"; exit 1; }
  fi
  mkdir -p "$OUT_DIR/$arm"
  python3 training/train.py --data "$DATA-$form" --config training/configs/panorama-code-13m.json \
    --init-from "$OUT_DIR/init.safetensors" --lr 1e-3 --warmup 50 --minutes "${MINUTES:-7}" \
    $([ "$arm" = none ] && echo --no-questions) --export-dir "$OUT_DIR/$arm/w" > "$OUT_DIR/$arm/train.log" 2>&1
  tail -2 "$OUT_DIR/$arm/train.log"
  python3 training/export.py "$OUT_DIR/$arm/w" "$OUT_DIR/$arm/model.safetensors"
  python3 training/evaluate.py --weights "$OUT_DIR/$arm/model.safetensors" --config training/configs/panorama-code-13m.json \
    --tokenizer models/panorama-code-13m/tokenizer.json --heldout "$DATA-$form/heldout.pkl" --out "$OUT_DIR/$arm/metrics.json" \
    --answer-form "$form" --bpb 24 --fim 0 --needle 8192:25,32768:8 --dense-needle "" | tail -4
done
