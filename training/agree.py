"""The PyTorch twin against the engine on the items `npm run eval:model` asked: the shared subset.

usage:
  npm run eval:model -- --sizes 8k,32k --dump-only --dump-questions questions.json
  python3 training/agree.py --questions questions.json --engine docs/benchmarks/model-eval.json \
      --weights models/panorama-code-13m/model.safetensors --config models/panorama-code-13m/config.json \
      --tokenizer models/panorama-code-13m/tokenizer.json --out agree.json [--device cuda]

For each context size in both files, every question the engine asked unaided (the model's
own answer, `grounded: false`) is put after the same context (`<|file|>path\\n` + text, in
the engine's order) in the chat format; the engine's answer is teacher-forced and the twin's
argmax compared at every answer token (the twin would write the same answer greedily iff all
agree). The bits-per-byte rows are scored on the same ids. Same seed, same items: the dump
and the report must come from runs with the same --seed and model.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data as D  # noqa: E402
from evaluate import load_model  # noqa: E402


@torch.no_grad()
def logits_at(model, ids, positions, device):
    x = torch.tensor(ids, dtype=torch.long, device=device)[None]
    opts = {"impl": "ref", "force_dense": False, "sel_chunk": 2048, "attn_chunk": 1024}
    return model(x, opts, positions=torch.tensor(positions, device=device))[0]


class Encoder:
    """Python `tokenizers` where installed, else the engine's own JS tokenizer (training/tokenize.cjs;
    the two give identical ids, MODEL.md)."""

    def __init__(self, tokenizer_path):
        self.dir = os.path.dirname(os.path.abspath(tokenizer_path))
        vocab = json.load(open(tokenizer_path))["model"]["vocab"]
        self.vocab = vocab
        try:
            from tokenizers import Tokenizer
            self.tok = Tokenizer.from_file(tokenizer_path)
        except ImportError:
            self.tok = None

    def encode_batch(self, texts):
        if self.tok is not None:
            return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]
        with tempfile.TemporaryDirectory() as d:
            files = []
            for i, t in enumerate(texts):
                files.append(os.path.join(d, f"{i}.txt"))
                open(files[-1], "w", encoding="utf-8").write(t)
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenize.cjs")
            out = subprocess.run(["node", script, self.dir, *files], check=True, capture_output=True, text=True).stdout
        return json.loads(out)


def agree_size(model, enc, device, size_dump, texts, asks):
    questions = [D.qa_string(f"Where is `{a['name']}` {'used' if a['kind'] == 'used' else 'defined'}?") for a in asks]
    encoded = enc.encode_batch([D.file_doc(p, texts[p]) for p in size_dump["files"]] + questions + [a["answer"] for a in asks])
    nf = len(size_dump["files"])
    ctx = [i for ids in encoded[:nf] for i in ids]
    rows = []
    for k, a in enumerate(asks):
        prompt = ctx + encoded[nf + k]
        answer = encoded[nf + len(asks) + k]
        target = answer + [D.END]
        ids = prompt + target
        pred = logits_at(model, ids[:-1], list(range(len(prompt) - 1, len(ids) - 1)), device).argmax(-1).tolist()
        same = [p == t for p, t in zip(pred, target)]
        rows.append({"kind": a["kind"], "name": a["name"], "answer_tokens": len(answer),
                     "same_answer": all(same[:len(answer)]), "same_first": bool(same[0]) if same else True,
                     "ends_same": bool(same[-1]), "agreeing_tokens": sum(same[:len(answer)])})
    n = len(rows)
    return {"size": size_dump["size"], "tokens": len(ctx), "questions": n,
            "same_answer": sum(r["same_answer"] for r in rows), "same_first_token": sum(r["same_first"] for r in rows),
            "token_agreement": sum(r["agreeing_tokens"] for r in rows) / max(1, sum(r["answer_tokens"] for r in rows)),
            "items": rows}


def bits_per_byte(model, enc, device, rows):
    nbytes = np.zeros(model.c.vocab_size, dtype=np.int64)
    for s, i in enc.vocab.items():
        if i >= len(D.SPECIALS) and i < len(nbytes):
            nbytes[i] = len(s)  # ByteLevel: one char per byte (bench/eval/bits-per-byte.ts tokenBytes)
    nll, nb = 0.0, 0
    for r in rows:
        x = np.asarray(r["ids"])
        lg = logits_at(model, x[:-1].tolist(), list(range(len(x) - 1)), device)
        y = torch.tensor(x[1:], device=device)
        loss = F.cross_entropy(lg.float(), y, reduction="none")
        keep = torch.tensor(nbytes[x[1:]] > 0, device=device)
        nll += loss[keep].sum().item()
        nb += int(nbytes[x[1:]].sum())
    return nll / nb / math.log(2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", required=True, help="eval:model --dump-questions output")
    ap.add_argument("--engine", required=True, help="eval:model report (JSON) of the same seed and model")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 as the engine computes
    enc = Encoder(a.tokenizer)
    model = load_model(a.config, a.weights, a.device)
    dump = json.load(open(a.questions))
    report = json.load(open(a.engine))
    if dump["seed"] != report["seed"]:
        sys.exit(f"the question set has seed {dump['seed']} and the report {report['seed']}: run both with the same --seed")
    t0 = time.time()
    out = {"weights": a.weights, "device": a.device, "seed": dump["seed"], "sizes": []}
    engine_sizes = {s["size"]: s for s in report["sizes"]}
    for size_dump in dump["sizes"]:
        s = engine_sizes.get(size_dump["size"])
        if s is None:
            continue
        asks = [x for x in s["items"]["asks"] if not x["grounded"] and x["kind"] in ("defined", "used")]
        r = agree_size(model, enc, a.device, size_dump, dump["texts"], asks)
        if r["tokens"] != s["tokens"]:
            sys.exit(f"{size_dump['size']}: the context is {r['tokens']} tokens here and {s['tokens']} in the report: not the same items")
        out["sizes"].append(r)
        print(f"[agree] {size_dump['size']}: same answer {r['same_answer']}/{r['questions']}, same first token "
              f"{r['same_first_token']}/{r['questions']}, tokens {r['token_agreement']:.3f} ({time.time() - t0:.0f}s)", flush=True)
    engine_bpb = report["bitsPerByte"]
    rows = dump["bitsPerByte"]
    twin = bits_per_byte(model, enc, a.device, rows)
    out["bits_per_byte"] = {"twin": twin, "engine": engine_bpb["bitsPerByte"], "rows": len(rows)}
    print(f"[agree] bits per byte: twin {twin:.4f}, engine {engine_bpb['bitsPerByte']:.4f} ({len(rows)} rows)", flush=True)
    out["seconds"] = time.time() - t0
    json.dump(out, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
