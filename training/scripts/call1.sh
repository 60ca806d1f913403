#!/bin/bash
# Device call 1: fixture check, data/tokenizer build, then training until the deadline.
# usage (device tool, repo root): bash training/scripts/call1.sh   (carry: .train-carry)
export PYTHONUNBUFFERED=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 training/verify_fixture.py .train-carry/sala-tiny-a --device cuda > $OUT/prep.log 2>&1; tail -6 $OUT/prep.log
python3 training/prep.py --js .train-carry/js_corpus.jsonl.xz --out /tmp/pano >> $OUT/prep.log 2>&1 || { tail -30 $OUT/prep.log; exit 1; }
tail -8 $OUT/prep.log
cp /tmp/pano/tokenizer.json /tmp/pano/stats.json /tmp/pano/tokenizer_probe.json $OUT/
python3 training/train.py --data /tmp/pano --config training/configs/panorama-code-13m.json \
  --minutes ${TOTAL_MIN:-14} --deadline $((T0 + ${CALL_S:-570})) --ckpt /tmp/pano/ckpt.pt \
  --snapshot-tokens 40e6 --snapshot-dir /tmp/pano/snap40m --export-dir $OUT/w1 > $OUT/train1.log 2>&1
grep -E "check|params|schedule|step (1|2|3|25|50|100|200|300|400|500|600|700|800|900|1000) |snapshot|done|Error|error" $OUT/train1.log | tail -40
tail -5 $OUT/train1.log
ls -la /tmp/pano
