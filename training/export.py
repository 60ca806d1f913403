"""Export fp16 training weights to the shipped format: I8 2-D weights + F32 `<name>_scale` rows,
F32 norm weights (the engine dequantizes W[o,i] = q[o,i] * scale[o]).

usage: python3 training/export.py WEIGHTS_DIR_OR_FILE OUT.safetensors
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402


def load_parts(src):
    if os.path.isdir(src):
        t = {}
        for f in sorted(os.listdir(src)):
            if f.startswith("weights_part") and f.endswith(".safetensors"):
                t.update(st_io.read(os.path.join(src, f)))
        return {k: v.astype(np.float32) for k, v in t.items()}
    return st_io.load_dequantized(src)


def export_int8(t, out, metadata=None):
    o = {}
    for k, v in t.items():
        if v.ndim == 2:
            q, s = st_io.quantize_rows_i8(v)
            o[k] = q
            o[k + "_scale"] = s
        else:
            o[k] = v.astype(np.float32)
    st_io.write(out, o, metadata or {"format": "pt", "quantization": "int8 per-row absmax/127"})
    return o


if __name__ == "__main__":
    t = load_parts(sys.argv[1])
    export_int8(t, sys.argv[2])
    print(sys.argv[2], os.path.getsize(sys.argv[2]))
