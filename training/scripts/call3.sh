#!/bin/bash
# Device call 3: ablation training (no long-context / question data, 40M tokens, same schedule as the
# main run's 40M-token snapshot) in the background, held-out metrics of the shipped int8 model,
# then metrics of the ablation and of the main run's 40M-token snapshot.
export PYTHONUNBUFFERED=1
T0=$(date +%s)
M=models/panorama-code-13m
[ -f /tmp/pano/stream.npy ] || python3 training/prep.py --js .train-carry/js_corpus.jsonl.xz --out /tmp/pano \
  --tokenizer .train-carry/tokenizer.json > $OUT/prep3.log 2>&1
python3 training/train.py --data /tmp/pano --config $M/config.json --ablation --minutes 14 \
  --max-tokens 40.1e6 --export-dir /tmp/abl --deadline $((T0 + 330)) > $OUT/abl_train.log 2>&1 &
EV="python3 training/evaluate.py --config $M/config.json --tokenizer .train-carry/tokenizer.json --heldout /tmp/pano/heldout.pkl"
timeout $((T0 + 400 - $(date +%s))) $EV --weights $M/model.safetensors --out $OUT/metrics_main.json \
  --needle ${NEEDLE:-8192:25,65536:6,262144:2,1048576:1} --dense-needle 8192,65536,262144 > $OUT/eval_main.log 2>&1
wait
python3 training/export.py /tmp/abl /tmp/abl_int8.safetensors
S="--bpb 24 --fim 100 --needle 8192:10,65536:3 --dense-needle 0"
timeout $((T0 + 575 - $(date +%s))) $EV --weights /tmp/abl_int8.safetensors $S --out $OUT/metrics_ablation.json > $OUT/eval_abl.log 2>&1 &
timeout $((T0 + 575 - $(date +%s))) $EV --weights .train-carry/snap40m_int8.safetensors $S --out $OUT/metrics_snap40m.json > $OUT/eval_snap.log 2>&1
wait
tail -3 $OUT/abl_train.log; cat $OUT/eval_main.log $OUT/eval_abl.log $OUT/eval_snap.log | grep -v Warning
