"""Write test/fixtures/default-model/: prompt ids and float32 PyTorch logits of the shipped model.

usage (repo root, CPU is fine; needs node for the JS tokenizer):
  python3 training/make_parity_fixture.py models/panorama-code-13m test/fixtures/default-model
The weights are read exactly as the engine reads them (I8 rows x F32 scale -> float32).
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402
from model import SalaForCausalLM, load_state, rope_cos_sin, select_blocks, sparse_attention_ref  # noqa: E402

LAST = 4
DECODE_STEPS = 4


def prompts(repo):
    src = open(os.path.join(repo, "training/model.py")).read()
    ts = open(os.path.join(repo, "training/tokenize.cjs")).read()
    short = "def fibonacci(n):\n    if n < 2:\n        return n\n    return "
    lines = src.split("\n")
    i = 60
    fim = ("<|file|>training/model.py\n<|fim_prefix|>" + "\n".join(lines[30:i]) + "\n<|fim_suffix|>\n"
           + "\n".join(lines[i + 1:i + 20]) + "<|fim_middle|>")
    ctx = "<|file|>training/tokenize.cjs\n" + ts + "<|file|>training/model.py\n" + src[:7000] + "\n"
    chat = ctx + "<|user|>Where is `alibi_slopes` defined?<|end|><|assistant|>"
    return {"short": short, "fim": fim, "chat_sparse": chat}


@torch.no_grad()
def decode_reference(model, prompt, steps):
    """Greedy decode as the engine runs it: the prompt in one prefill, then one token at a time.
    Each layer keeps its inputs at every position as they were computed then; a Lightning layer is
    re-run over them (exact: its recurrence is causal), a sparse layer attends from the new token
    alone, over K/V of all positions, with the decode selection rule (no prefill visibility formula).
    Returns ([steps + 1] logit rows, greedy ids)."""
    c = model.c
    layers = model.model.layers
    x = model.model.embed_tokens(torch.tensor(prompt)[None]) * c.scale_emb
    cos, sin = rope_cos_sin(torch.arange(len(prompt)), c.head_dim, c.rope_theta, "cpu")
    inputs = []
    for layer in layers:
        inputs.append(x)
        x = layer(x, cos, sin, {})
    rows = [model.logits_from_hidden(model.model.norm(x))[0, -1].numpy().astype("<f4")]
    greedy = [int(rows[-1].argmax())]
    for _ in range(steps):
        L = inputs[0].shape[1] + 1
        cos, sin = rope_cos_sin(torch.arange(L), c.head_dim, c.rope_theta, "cpu")
        xn = model.model.embed_tokens(torch.tensor([[greedy[-1]]])) * c.scale_emb
        for li, layer in enumerate(layers):
            inputs[li] = torch.cat([inputs[li], xn], 1)
            normed = layer.input_layernorm(inputs[li])
            if layer.sparse:
                attn = sparse_decode_step(layer.self_attn, normed, c)
            else:
                attn = layer.self_attn(normed, cos, sin, {})[:, -1:]
            h = xn + attn * c.residual_scale
            xn = h + layer.mlp(layer.post_attention_layernorm(h)) * c.residual_scale
        rows.append(model.logits_from_hidden(model.model.norm(xn))[0, -1].numpy().astype("<f4"))
        greedy.append(int(rows[-1].argmax()))
    return rows, greedy


def sparse_decode_step(attn, normed, c):
    """The sparse layer's output for the last position only, as one decode step computes it."""
    L = normed.shape[1]
    q = attn.q_proj(normed[:, -1:]).view(1, 1, attn.H, attn.D).transpose(1, 2)
    k = attn.k_proj(normed).view(1, L, attn.Hk, attn.D).transpose(1, 2)
    v = attn.v_proj(normed).view(1, L, attn.Hk, attn.D).transpose(1, 2)
    if L < c.dense_len:
        G = attn.H // attn.Hk
        kr, vr = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)
        p = torch.softmax(q @ kr.transpose(-1, -2) / math.sqrt(attn.D), dim=-1)
        o = p @ vr
    else:
        o = sparse_attention_ref(q, k, v, select_blocks(q, k, c, decode=True), c)
    o = o.transpose(1, 2).reshape(1, 1, attn.H * attn.D) * torch.sigmoid(attn.o_gate(normed[:, -1:]))
    return attn.o_proj(o)


def main():
    mdir, out = sys.argv[1], sys.argv[2]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.makedirs(out, exist_ok=True)
    cfg = json.load(open(os.path.join(mdir, "config.json")))
    model = SalaForCausalLM(cfg)
    load_state(model, st_io.load_dequantized(os.path.join(mdir, "model.safetensors")))
    model.eval()
    ps = prompts(repo)
    tmp = tempfile.mkdtemp()
    files = []
    for k, t in ps.items():
        f = os.path.join(tmp, k + ".txt")
        open(f, "w").write(t)
        files.append(f)
    ids_all = json.loads(subprocess.check_output(["node", os.path.join(repo, "training/tokenize.cjs"), mdir] + files,
                                                 cwd=repo))
    manifest = {"model": os.path.basename(os.path.normpath(mdir)), "dense_len": cfg["sparse_config"]["dense_len"],
                "rows": f"logits of the last {LAST} positions", "prompts": {}}
    for (k, text), ids in zip(ps.items(), ids_all):
        rec = []
        with torch.no_grad():
            lg = model(torch.tensor(ids)[None], {"record_topk": rec},
                       positions=torch.arange(len(ids) - LAST, len(ids)))[0].numpy().astype("<f4")
        np.save(os.path.join(out, f"{k}_ids.npy"), np.asarray(ids, dtype="<i4"))
        np.save(os.path.join(out, f"{k}_logits_last{LAST}.npy"), lg)
        entry = {"tokens": len(ids), "path": "sparse" if len(ids) >= cfg["sparse_config"]["dense_len"] else "dense",
                 "argmax_last": int(lg[-1].argmax()), "text": text if len(text) < 400 else text[:200] + " ... " + text[-120:]}
        if rec:
            topk = np.stack([r[0, :, -1].numpy() for r in rec]).astype("<i4")  # [sparse layer, kv head, k]
            np.save(os.path.join(out, f"{k}_last_topk.npy"), topk)
            entry["last_topk_shape"] = list(topk.shape)
        manifest["prompts"][k] = entry
        print(k, entry["tokens"], entry["path"], entry["argmax_last"], flush=True)
    # Greedy decode across dense_len: the prompt ends 2 tokens short of it, so decode steps 0-1
    # attend densely and steps 2-4 are the first sparse ones.
    dense_len = cfg["sparse_config"]["dense_len"]
    prompt = list(ids_all[list(ps).index("chat_sparse")][:dense_len - 2])
    prompt_len = len(prompt)
    rows, greedy = decode_reference(model, prompt, DECODE_STEPS)
    seq = prompt
    np.save(os.path.join(out, "decode_cross_ids.npy"), np.asarray(seq[:prompt_len], dtype="<i4"))
    np.save(os.path.join(out, "decode_cross_greedy.npy"), np.asarray(greedy, dtype="<i4"))
    np.save(os.path.join(out, "decode_cross_logits.npy"), np.stack(rows))
    manifest["prompts"]["decode_cross"] = {
        "tokens": prompt_len, "decode_steps": DECODE_STEPS, "greedy": greedy,
        "rows": "the prompt's last logits, then one row per decode step (kv lengths "
                f"{prompt_len + 1}..{prompt_len + DECODE_STEPS}; sparse from {dense_len})"}
    print("decode_cross", prompt_len, greedy, flush=True)
    json.dump(manifest, open(os.path.join(out, "manifest.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
