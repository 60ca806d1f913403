#!/bin/bash
# Device call 2 (machine still warm from call 1): resume from /tmp/pano/ckpt.pt (model + AdamW)
# and train until this call's deadline; the cosine schedule is stretched to end at the deadline.
export PYTHONUNBUFFERED=1
T0=$(date +%s)
python3 training/train.py --data /tmp/pano --config training/configs/panorama-code-13m.json --resume --auto-total \
  --deadline $((T0 + 575)) --ckpt /tmp/pano/ckpt.pt --export-dir $OUT/w2 --seed 1 > $OUT/train2.log 2>&1
tail -4 $OUT/train2.log
cp /tmp/pano/snap40m/* $OUT/ 2>/dev/null   # the 40M-token snapshot used by the ablation comparison
