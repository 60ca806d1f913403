"""Train a SALA model on the prepared streams within a wall-clock budget.

usage:
  python3 training/train.py --data training/data/pano --config training/configs/panorama-code-13m.json \
      --minutes 8.5 --ckpt training/data/pano/ckpt.pt --export-dir OUT_DIR [--resume] [--ablation] [--bench]

Batch kinds (all teacher-forced next-token loss on every position):
  s4k : 16 x 4096 tokens, sparse path (>= dense_len), 25% rows end in a workspace-question doc
  d2k : 32 x 1920 tokens, dense path (< dense_len)
  s16k:  4 x 16384 tokens, sparse path, 50% question rows (longer needles)
--ablation trains on d2k rows only, without question documents; --no-questions runs the main cycle without them.
The learning rate follows the wall clock (warm-up 100 steps, cosine to 10% at the deadline),
so a run always ends annealed; --resume continues from --ckpt (model + AdamW) with a new budget.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402
from model import SalaForCausalLM, load_state, select_blocks, sparse_attention_flex, sparse_attention_ref  # noqa: E402

KINDS = {"s4k": (16, 4096, 0.5), "d2k": (32, 1920, 0.0), "s16k": (4, 16384, 0.75), "s32k": (2, 32768, 0.75)}
MAIN_CYCLE = ["s4k", "d2k", "s4k", "s16k", "s4k", "s32k"]
QA_LENGTHS = (32768, 16384, 4096)
# Answer tokens (after <|assistant|>, up to and including <|end|>) weigh this much more in the loss:
# they are a small share of a row, and the workspace questions are what the model is for.
ANSWER_WEIGHT = 3.0
EOT, FIM_MIDDLE, ASSISTANT, END = 0, 4, 6, 7
ABL_CYCLE = ["d2k"]


class Sampler:
    def __init__(self, data, device, seed, use_qa):
        self.stream = torch.from_numpy(np.load(os.path.join(data, "stream.npy")).astype(np.int32)).to(device)
        self.qa = {}
        if use_qa:
            for T in QA_LENGTHS:
                p = os.path.join(data, f"qa_{T}.npy")
                if os.path.exists(p):
                    self.qa[T] = (np.load(p).astype(np.int64), np.load(os.path.join(data, f"qa_{T}_off.npy")))
        self.g = torch.Generator(device=device).manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.device = device

    def batch(self, B, T, qa_frac):
        n = self.stream.numel() - T - 2
        offs = torch.randint(0, n, (B,), generator=self.g, device=self.device)
        rows = self.stream[offs[:, None] + torch.arange(T + 1, device=self.device)[None]].long()
        nq = int(round(B * qa_frac)) if self.qa_T(T) else 0
        if nq:
            toks, off = self.qa[self.qa_T(T)]
            for r in range(nq):
                i = self.rng.integers(len(off) - 1)
                doc = toks[off[i]:off[i + 1]][-(T + 1):]
                rows[r, T + 1 - len(doc):] = torch.from_numpy(doc).to(self.device)
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

    def qa_T(self, T):
        return next((L for L in QA_LENGTHS if T >= L and L in self.qa), None)


def answer_weights(x, weight, fim=False):
    """1 per target, `weight` where the input position lies inside an answer: an assistant turn
    (and with fim, a fill-in-the-middle middle): the last of <|assistant|> (/ <|fim_middle|>) seen
    so far, this position included, comes after the last <|end|> (/ <|endoftext|>)."""
    pos = torch.arange(x.shape[1], device=x.device).expand_as(x)
    opens = (x == ASSISTANT) | (x == FIM_MIDDLE) if fim else x == ASSISTANT
    closes = (x == END) | (x == EOT) if fim else x == END
    opened = torch.where(opens, pos, -1).cummax(1).values
    closed = torch.where(closes, pos, -1).cummax(1).values
    return 1.0 + (weight - 1.0) * (opened > closed).float()


def save_fp16_parts(model, out_dir, prefix="weights", max_bytes=15_000_000):
    sd = {k.replace("._orig_mod", ""): v.detach().float().cpu().numpy().astype(np.float16)
          for k, v in model.state_dict().items()}
    parts, cur, n = [], {}, 0
    for k in sorted(sd):
        if n + sd[k].nbytes > max_bytes and cur:
            parts.append(cur)
            cur, n = {}, 0
        cur[k] = sd[k]
        n += sd[k].nbytes
    parts.append(cur)
    for i, p in enumerate(parts):
        st_io.write(os.path.join(out_dir, f"{prefix}_part{i}.safetensors"), p)
    return len(parts)


def load_fp16_parts(model, src, prefix="weights"):
    """Weights from a folder of fp16 `weights_part*.safetensors`, or from a shipped (int8) model file."""
    if os.path.isfile(src):
        load_state(model, st_io.load_dequantized(src))
        return
    t = {}
    for f in sorted(os.listdir(src)):
        if f.startswith(prefix + "_part") and f.endswith(".safetensors"):
            t.update({k: v.astype(np.float32) for k, v in st_io.read(os.path.join(src, f)).items()})
    load_state(model, t)


def check_flex(cfg, device):
    """flex path == gather reference on random inputs (fp32, TF32 off)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    g = torch.Generator(device=device).manual_seed(1)
    B, H, Hk, T, D = 2, cfg.num_attention_heads, cfg.num_key_value_heads, 4096, cfg.sparse_head_dim
    q = torch.randn(B, H, T, D, device=device, generator=g) * 2
    k = torch.randn(B, Hk, T, D, device=device, generator=g) * 2
    v = torch.randn(B, Hk, T, D, device=device, generator=g)
    idx = select_blocks(q, k, cfg)
    a = sparse_attention_ref(q, k, v, idx, cfg, q_chunk=512)
    b = sparse_attention_flex(q, k, v, idx, cfg)
    torch.backends.cuda.matmul.allow_tf32 = True
    d = (a - b).abs().max().item()
    print(f"[check] flex vs gather reference, T={T}: max|diff| = {d:.2e}", flush=True)
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--minutes", type=float, default=8.0, help="total schedule length (all resumed runs)")
    ap.add_argument("--deadline", type=float, default=0, help="unix time at which this run must have saved")
    ap.add_argument("--auto-total", action="store_true", help="schedule ends at --deadline")
    ap.add_argument("--max-tokens", type=float, default=0)
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init-from", default=None,
                    help="dir with weights_part*.safetensors (fp16), or a shipped model.safetensors (int8)")
    ap.add_argument("--export-dir", default=None)
    ap.add_argument("--ablation", action="store_true")
    ap.add_argument("--no-questions", action="store_true",
                    help="the main rows without question documents (the retrieval-data ablation)")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--answer-weight", type=float, default=ANSWER_WEIGHT)
    ap.add_argument("--weight-fim", action="store_true", help="fill-in-the-middle middles weigh as answers do")
    ap.add_argument("--snapshot-tokens", type=float, default=0)
    ap.add_argument("--snapshot-dir", default=None)
    ap.add_argument("--compile", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    dev = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(a.seed)
    cfgd = json.load(open(a.config))
    model = SalaForCausalLM(cfgd)
    model.init_weights(seed=a.seed)
    model.to(dev)
    nparam = sum(p.numel() for p in model.parameters())
    print(f"[train] params {nparam / 1e6:.2f}M", flush=True)
    c = model.c
    check_flex(c, dev)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    nodecay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    step, tokens, el_prev = 0, 0, 0.0
    if a.resume and a.ckpt and os.path.exists(a.ckpt):
        ck = torch.load(a.ckpt, map_location=dev)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, tokens, el_prev = ck["step"], ck["tokens"], ck.get("elapsed", 0.0)
        print(f"[train] resumed from {a.ckpt} at step {step}, {tokens / 1e6:.1f}M tokens", flush=True)
    elif a.init_from:
        load_fp16_parts(model, a.init_from)
    if a.compile:
        for layer in model.model.layers:
            if layer.sparse:
                layer.mlp.compile()
            else:
                layer.compile()
    sampler = Sampler(a.data, dev, a.seed + step, use_qa=not (a.ablation or a.no_questions))
    cycle = ABL_CYCLE if a.ablation else MAIN_CYCLE
    opts = {"impl": "flex", "sel_chunk": 4096}
    t_start = time.time()
    deadline = a.deadline if a.deadline else t_start + a.minutes * 60 + 30
    budget = a.minutes * 60
    if a.auto_total:
        budget = el_prev + (deadline - 25 - t_start)
    print(f"[train] schedule {budget / 60:.1f} min total, {el_prev / 60:.1f} done before, "
          f"this run until {deadline - t_start - 25:.0f}s", flush=True)
    log = []
    snap_done = a.snapshot_tokens <= 0
    bench_times = {}
    model.train()
    i = 0
    while True:
        el = time.time() - t_start
        if a.bench:
            if i >= 6 * len(set(cycle)):
                break
            kind = sorted(set(cycle))[i // 6]
        else:
            if el_prev + el > budget or time.time() > deadline - 25 or (a.max_tokens and tokens >= a.max_tokens):
                break
            kind = cycle[i % len(cycle)]
        B, T, qa = KINDS[kind]
        warm = min(1.0, (step + 1) / a.warmup)
        prog = min(1.0, (el_prev + el) / budget)
        lr = a.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)))
        for g_ in opt.param_groups:
            g_["lr"] = lr
        x, y = sampler.batch(B, T, qa)
        torch.cuda.synchronize()
        ts = time.time()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x, opts)
        per_token = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1), reduction="none")
        w = answer_weights(x, a.answer_weight, a.weight_fim).view(-1)
        loss = (per_token * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        i += 1
        tokens += B * T
        if a.bench or step % 25 == 0 or step <= 3:
            lv = loss.item()
            torch.cuda.synchronize()
            dt = time.time() - ts
            if a.bench:
                bench_times.setdefault(kind, []).append(dt)
            log.append({"step": step, "tokens": tokens, "kind": kind, "loss": lv, "lr": lr,
                        "gnorm": float(gn), "elapsed": time.time() - t_start})
            print(f"[train] step {step} {kind} loss {lv:.3f} lr {lr:.2e} gn {float(gn):.2f} "
                  f"tok {tokens / 1e6:.1f}M step_s {dt:.3f} el {time.time() - t_start:.0f}s", flush=True)
        if not snap_done and tokens >= a.snapshot_tokens:
            os.makedirs(a.snapshot_dir, exist_ok=True)
            save_fp16_parts(model, a.snapshot_dir)
            json.dump({"step": step, "tokens": tokens}, open(os.path.join(a.snapshot_dir, "info.json"), "w"))
            print(f"[train] snapshot at {tokens / 1e6:.1f}M tokens -> {a.snapshot_dir}", flush=True)
            snap_done = True
    if a.bench:
        for k, v in bench_times.items():
            B, T, _ = KINDS[k]
            med = float(np.median(v[-3:]))
            print(f"[bench] {k}: {B}x{T} step {med * 1000:.0f} ms -> {B * T / med / 1e3:.0f}k tok/s "
                  f"(first step {v[0]:.1f}s incl. compile)", flush=True)
        return
    el_tot = el_prev + time.time() - t_start
    info = {"step": step, "tokens": tokens, "seconds": time.time() - t_start, "train_seconds_total": el_tot,
            "params": nparam,
            "ablation": a.ablation, "no_questions": a.no_questions, "log": log}
    if a.ckpt:
        sd = {k.replace("._orig_mod", ""): v for k, v in model.state_dict().items()}
        torch.save({"model": sd, "opt": opt.state_dict(), "step": step, "tokens": tokens,
                    "elapsed": el_tot}, a.ckpt)
    if a.export_dir:
        os.makedirs(a.export_dir, exist_ok=True)
        save_fp16_parts(model, a.export_dir)
        json.dump(info, open(os.path.join(a.export_dir, "train_log.json"), "w"), indent=0)
    print(f"[train] done: {step} steps, {tokens / 1e6:.1f}M tokens in {time.time() - t_start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
