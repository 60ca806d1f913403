#!/bin/bash
# Step 1 of training the default model: check model.py against the reference fixtures, build the
# corpus, tokenizer and training streams, then train.
#   usage (repo root): bash training/scripts/train.sh [OUT_DIR]      (default training/runs/main)
#   TOTAL_MIN     length of the learning-rate schedule in minutes (default 14)
#   STOP_AFTER_S  stop after this many seconds, saving model + AdamW to $DATA/ckpt.pt for resume.sh
#                 (default 575); 0 runs the whole schedule
# The defaults are the shipped model's recipe: this step, then resume.sh for 575 s more.
#   DATA          working folder for the streams and checkpoints (default training/data/pano)
#   JS            the TS/JS corpus from prep_js.py (default training/data/js_corpus.jsonl.xz)
# Writes $OUT_DIR/w1 (fp16 weights), the tokenizer and the logs.
set -euo pipefail
OUT_DIR=${1:-training/runs/main}
DATA=${DATA:-training/data/pano}
JS=${JS:-training/data/js_corpus.jsonl.xz}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 training/verify_fixture.py test/fixtures/sala-tiny-a --device cuda > "$OUT_DIR/prep.log" 2>&1; tail -6 "$OUT_DIR/prep.log"
python3 training/prep.py --js "$JS" --out "$DATA" >> "$OUT_DIR/prep.log" 2>&1 || { tail -30 "$OUT_DIR/prep.log"; exit 1; }
tail -8 "$OUT_DIR/prep.log"
cp "$DATA/tokenizer.json" "$DATA/stats.json" "$DATA/tokenizer_probe.json" "$OUT_DIR/"
STOP_AFTER_S=${STOP_AFTER_S:-575}
DEADLINE=()
[ "$STOP_AFTER_S" -gt 0 ] && DEADLINE=(--deadline $((T0 + STOP_AFTER_S)))
python3 training/train.py --data "$DATA" --config training/configs/panorama-code-13m.json \
  --minutes "${TOTAL_MIN:-14}" "${DEADLINE[@]}" --ckpt "$DATA/ckpt.pt" \
  --snapshot-tokens 40e6 --snapshot-dir "$DATA/snap40m" --export-dir "$OUT_DIR/w1" > "$OUT_DIR/train1.log" 2>&1
grep -E "check|params|schedule|step (1|2|3|25|50|100|200|300|400|500|600|700|800|900|1000) |snapshot|done|Error|error" "$OUT_DIR/train1.log" | tail -40
tail -5 "$OUT_DIR/train1.log"
