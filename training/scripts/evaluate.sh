#!/bin/bash
# Step 3: held-out metrics of the shipped int8 model, and the ablation: a model trained without the
# long-context and question data for 40M tokens (the main run's schedule), compared with the main
# run's 40M-token snapshot. The ablation trains while the main metrics run (both on one GPU).
#   usage (repo root): bash training/scripts/evaluate.sh [OUT_DIR]   (default training/runs/main)
#   DATA    the working folder train.sh used (default training/data/pano; rebuilt when missing)
#   JS      the TS/JS corpus from prep_js.py (default training/data/js_corpus.jsonl.xz)
#   NEEDLE  needle lengths and contexts (default 8192:25,65536:6,262144:2,1048576:1)
#   TOTAL_MIN  the main run's schedule, which the ablation follows (default 14, as train.sh)
# Writes $OUT_DIR/metrics_{main,ablation,snap40m}.json and the logs.
set -euo pipefail
OUT_DIR=${1:-training/runs/main}
DATA=${DATA:-training/data/pano}
JS=${JS:-training/data/js_corpus.jsonl.xz}
M=models/panorama-code-13m
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
[ -f "$DATA/stream.npy" ] || python3 training/prep.py --js "$JS" --out "$DATA" --tokenizer "$M/tokenizer.json" > "$OUT_DIR/prep3.log" 2>&1
python3 training/train.py --data "$DATA" --config "$M/config.json" --ablation --minutes "${TOTAL_MIN:-14}" \
  --max-tokens 40.1e6 --export-dir "$DATA/ablation" > "$OUT_DIR/abl_train.log" 2>&1 &
EV=(python3 training/evaluate.py --config "$M/config.json" --tokenizer "$M/tokenizer.json" --heldout "$DATA/heldout.pkl")
"${EV[@]}" --weights "$M/model.safetensors" --out "$OUT_DIR/metrics_main.json" \
  --needle "${NEEDLE:-8192:25,65536:6,262144:2,1048576:1}" --dense-needle 8192,65536,262144 > "$OUT_DIR/eval_main.log" 2>&1
wait
python3 training/export.py "$DATA/ablation" "$DATA/ablation_int8.safetensors"
python3 training/export.py "$DATA/snap40m" "$DATA/snap40m_int8.safetensors"
S=(--bpb 24 --fim 100 --needle 8192:10,65536:3 --dense-needle 0)
"${EV[@]}" --weights "$DATA/ablation_int8.safetensors" "${S[@]}" --out "$OUT_DIR/metrics_ablation.json" > "$OUT_DIR/eval_abl.log" 2>&1 &
"${EV[@]}" --weights "$DATA/snap40m_int8.safetensors" "${S[@]}" --out "$OUT_DIR/metrics_snap40m.json" > "$OUT_DIR/eval_snap.log" 2>&1
wait
tail -3 "$OUT_DIR/abl_train.log"; cat "$OUT_DIR/eval_main.log" "$OUT_DIR/eval_abl.log" "$OUT_DIR/eval_snap.log" | grep -v Warning
