"""Check training/model.py against the golden fixtures of the public MiniCPM-SALA code.

usage: python3 training/verify_fixture.py FIXTURE_DIR [--device cuda]
Exits non-zero if prefill logits differ by more than 1e-4 or any selected block differs.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402
from model import SalaForCausalLM, load_state  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fixture")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--decode", action="store_true", help="also check decode logits by re-prefill")
    a = ap.parse_args()
    if a.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    fx = a.fixture
    cfg = json.load(open(os.path.join(fx, "config.json")))
    model = SalaForCausalLM(cfg)
    load_state(model, st_io.read(os.path.join(fx, "model.safetensors")))
    model = model.to(a.device).eval()
    ld = lambda n: np.load(os.path.join(fx, n))  # noqa: E731
    ok = True
    t0 = time.time()
    with torch.no_grad():
        ids = torch.from_numpy(ld("short_prompt_ids.npy").astype(np.int64))[None].to(a.device)
        lg = model(ids).cpu().numpy()[0]
        d = np.abs(lg - ld("short_logits.npy")).max()
        print(f"short  prefill logits max|diff| = {d:.3e}")
        ok &= d <= 1e-4

        ids = torch.from_numpy(ld("long_prompt_ids.npy").astype(np.int64))[None].to(a.device)
        rec = []
        lg = model(ids, opts={"record_topk": rec}).cpu().numpy()[0]
        d = np.abs(lg[-64:] - ld("long_logits_last64.npy")).max()
        print(f"long   prefill logits (last 64) max|diff| = {d:.3e}")
        ok &= d <= 1e-4
        topk = np.stack([r[0].cpu().numpy() for r in rec])  # [layers, Hk, T, k]
        ref = ld("long_prefill_topk.npy")
        same = (topk == ref)
        print(f"long   prefill top-k: shape {topk.shape} vs {ref.shape}; identical rows "
              f"{int(same.all(-1).sum())}/{same.shape[0] * same.shape[1] * same.shape[2]}")
        if not same.all():
            bad = np.argwhere(~same.all(-1))[:5]
            for l_, h_, t_ in bad:
                print("   mismatch", l_, h_, t_, topk[l_, h_, t_], ref[l_, h_, t_])
        ok &= bool(same.all())

        ids = torch.from_numpy(ld("cross_prompt_ids.npy").astype(np.int64))[None].to(a.device)
        lg = model(ids).cpu().numpy()[0]
        d = np.abs(lg[-1:] - ld("cross_logits_last.npy")).max()
        print(f"cross  prefill logits (last) max|diff| = {d:.3e}")
        ok &= d <= 1e-4

        if a.decode:
            for sc in ("short", "long", "cross"):
                p = ld(f"{sc}_prompt_ids.npy").astype(np.int64)
                di = ld(f"{sc}_decode_ids.npy").astype(np.int64)
                dl = ld(f"{sc}_decode_logits.npy")
                diffs = []
                for s in range(len(di)):
                    seq = np.concatenate([p, di[: s + 1]])
                    lg = model(torch.from_numpy(seq)[None].to(a.device),
                               positions=torch.tensor([len(seq) - 1])).cpu().numpy()[0, 0]
                    diffs.append(np.abs(lg - dl[s]).max())
                print(f"{sc:6s} decode-by-reprefill max|diff| per step: " + " ".join(f"{x:.1e}" for x in diffs))
    print(f"fixture check {'PASSED' if ok else 'FAILED'} on {a.device} in {time.time() - t0:.1f}s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
