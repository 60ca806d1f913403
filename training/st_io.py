"""Minimal safetensors reader/writer on NumPy (no dependency on the safetensors package).

Supports F32, F16, BF16 (read as float32), I8, I32, I64. The format: 8-byte little-endian
header length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw data.
"""
import json
import struct

import numpy as np

_NP = {"F32": np.float32, "F16": np.float16, "I8": np.int8, "I32": np.int32, "I64": np.int64,
       "U8": np.uint8}


def read(path, bf16_as_f32=True):
    """Returns {name: np.ndarray}. BF16 tensors come back as float32 (exact)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        raw = data[a:b]
        dt = meta["dtype"]
        shape = meta["shape"]
        if dt == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32).reshape(shape)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(_NP[dt]).newbyteorder("<")).reshape(shape)
        out[name] = arr.copy()
    return out


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def write(path, tensors, metadata=None):
    """tensors: {name: np.ndarray} of float32/float16/int8/int32/int64. Written in name order."""
    header = {}
    blobs = []
    off = 0
    rev = {np.dtype(v): k for k, v in _NP.items()}
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        dt = rev[arr.dtype]
        b = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


def quantize_rows_i8(w):
    """Symmetric per-row int8: W[o,i] ~= q[o,i] * scale[o], scale = absmax/127."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def load_dequantized(path):
    """Reads a checkpoint the way the engine does: I8 weights times their `<name>_scale` rows."""
    t = read(path)
    out = {}
    for name, arr in t.items():
        if name.endswith("_scale") and name[: -len("_scale")] in t:
            continue
        if arr.dtype == np.int8:
            s = t[name + "_scale"].astype(np.float32)
            out[name] = arr.astype(np.float32) * s[:, None]
        else:
            out[name] = arr.astype(np.float32)
    return out
