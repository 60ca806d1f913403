"""Held-out metrics: bits per byte, single-line FIM exact match, needle-in-workspace accuracy
(the answer to "Where is `X` defined?" is X's definition line, docs/workspace-questions.md).

usage:
  python3 training/evaluate.py --weights models/panorama-code-13m/model.safetensors \
      --config models/panorama-code-13m/config.json --tokenizer models/panorama-code-13m/tokenizer.json \
      --heldout training/data/pano/heldout.pkl --out OUT_DIR/metrics.json \
      [--needle 8192:25,65536:8,262144:3,1048576:2] [--dense-needle 8192,65536,262144] [--fim 300] [--bpb 48]
--weights may also be a folder of weights_part*.safetensors (fp16 training export).
All forward passes are float32 (TF32 matmuls allowed unless --no-tf32), sparse layers use the
gather reference implementation of InfLLM-V2 (the same function the fixtures check).
Greedy exact match is computed teacher-forced: greedy decoding reproduces the reference answer
iff the argmax at every answer position (and at the closing token) equals the reference token.
"""
import argparse
import json
import math
import os
import pickle
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data as D  # noqa: E402
import st_io  # noqa: E402
from model import SalaForCausalLM, load_state  # noqa: E402


def load_model(config, weights, device, int8=False):
    model = SalaForCausalLM(json.load(open(config)))
    if os.path.isdir(weights):
        t = {}
        for f in sorted(os.listdir(weights)):
            if f.startswith("weights_part"):
                t.update({k: v.astype(np.float32) for k, v in st_io.read(os.path.join(weights, f)).items()})
    else:
        t = st_io.load_dequantized(weights)
    if int8:  # what the shipped int8 checkpoint holds (per-row absmax/127), dequantized
        for k, v in t.items():
            if v.ndim == 2:
                q, sc = st_io.quantize_rows_i8(v)
                t[k] = q.astype(np.float32) * sc[:, None]
    load_state(model, t)
    return model.to(device).eval()


class Ev:
    def __init__(self, model, tok, heldout, device, seed=0, answer_form="line"):
        self.m, self.tok, self.dev = model, tok, device
        self.answer_form = answer_form  # needle answers: the definition line, or `path:line`
        self.rng = random.Random(seed)
        self.repos = heldout
        vocab = tok.get_vocab()
        self.nbytes = np.zeros(model.c.vocab_size, dtype=np.int64)
        for s, i in vocab.items():
            if i >= len(D.SPECIALS) and i < len(self.nbytes):
                self.nbytes[i] = len(s)  # ByteLevel: one char per byte
        self._doc_cache = {}

    def enc(self, s):
        return self.tok.encode(s, add_special_tokens=False).ids

    def file_ids(self, path, text):
        k = (path, len(text))
        if k not in self._doc_cache:
            self._doc_cache[k] = self.enc(D.file_doc(path, text))
        return self._doc_cache[k]

    @torch.no_grad()
    def logits_at(self, ids, positions, force_dense=False):
        x = torch.tensor(ids, dtype=torch.long, device=self.dev)[None]
        opts = {"impl": "ref", "force_dense": force_dense, "sel_chunk": 2048, "attn_chunk": 1024}
        return self.m(x, opts, positions=torch.tensor(positions, device=self.dev))[0]

    # -------------------------------------------------------------------------------- bpb
    def bpb(self, n_rows=48, T=4096):
        ids = []
        for name, files in self.repos:
            for p, t in files:
                ids.extend(self.file_ids(p, t))
            ids.append(D.EOT)
        ids = np.asarray(ids)
        starts = np.linspace(0, len(ids) - T - 2, n_rows).astype(np.int64)
        nll, nb, ntok = 0.0, 0, 0
        for s in starts:
            x = ids[s:s + T + 1]
            lg = self.logits_at(x[:-1].tolist(), list(range(T)))
            y = torch.tensor(x[1:], device=self.dev)
            l = F.cross_entropy(lg, y, reduction="none")
            keep = torch.tensor(self.nbytes[x[1:]] > 0, device=self.dev)
            nll += l[keep].sum().item()
            nb += int(self.nbytes[x[1:]].sum())
            ntok += int(keep.sum())
        return {"bits_per_byte": nll / nb / math.log(2), "tokens": ntok, "bytes": nb,
                "rows": n_rows, "row_tokens": T, "loss_per_token_nats": nll / ntok}

    # -------------------------------------------------------------------------------- FIM
    def fim(self, n=300, pre_chars=3000, suf_chars=1000, form="file"):
        """form file: the whole-file FIM string alone; inline: the file as the editor holds it, then the
        engine's inline request (restated prefix, a suffix of at most two lines), as eval:model asks it."""
        files = [(p, t) for _, fs in self.repos for p, t in fs if D.lang_of(p) != "c"]
        ok = 0
        done = 0
        by_lang = {}
        while done < n:
            p, t = self.rng.choice(files)
            r = D.fim_doc(p, t, self.rng, single_line=True)
            if r is None:
                continue
            pre, mid, suf = r
            pre, suf = pre[-pre_chars:], suf[:suf_chars]
            if form == "inline":
                ctx = self.enc(D.file_doc(p, pre + suf) + D.inline_prompt(p, pre, suf))
            else:
                ctx = self.enc(D.fim_string(p, pre, suf))
            ans = self.enc(mid) + [D.EOT]
            ids = ctx + ans
            pos = list(range(len(ctx) - 1, len(ids) - 1))
            pred = self.logits_at(ids, pos).argmax(-1).tolist()
            hit = pred == ans
            ok += hit
            done += 1
            lang = D.lang_of(p)
            b = by_lang.setdefault(lang, [0, 0])
            b[0] += hit
            b[1] += 1
        return {"exact_match": ok / n, "n": n, "form": form, "by_lang": {k: v[0] / v[1] for k, v in by_lang.items()},
                "n_by_lang": {k: v[1] for k, v in by_lang.items()}}

    # -------------------------------------------------------------------------------- needle
    def needle_context(self, N, n_q, depths):
        """Files of held-out repos (random start, repo order kept) up to ~N tokens, plus n_q
        'where is X defined' questions whose definitions sit at the given depths."""
        order = list(range(len(self.repos)))
        self.rng.shuffle(order)
        files, ids, starts = [], [], []
        budget = N - 60 * n_q
        k = 0
        first = True
        while len(ids) < budget and k < 4 * len(order):
            name, fs = self.repos[order[k % len(order)]]
            k += 1
            j0 = self.rng.randrange(len(fs)) if first else 0
            first = False
            for p, t in fs[j0:]:
                fi = self.file_ids(p, t)
                if len(ids) + len(fi) > budget:
                    if len(fi) > 2000:
                        continue
                    break
                starts.append(len(ids))
                files.append((p, t))
                ids.extend(fi)
        defs = {}
        for fi, (p, t) in enumerate(files):
            for nm, line in D.definitions(p, t):
                defs.setdefault(nm, []).append((fi, p, line))
        uniq = {}
        for nm, v in defs.items():
            if len(v) == 1 and len(nm) >= 4 and not nm.startswith("__"):
                uniq.setdefault(v[0][0], []).append((nm, v[0][1], v[0][2]))
        qs = []
        cand_files = sorted(uniq)
        for d in depths:
            target = d * len(ids)
            fi = min(cand_files, key=lambda f: abs(starts[f] - target))
            nm, p, line = self.rng.choice(uniq[fi])
            row = files[fi][1].split("\n")[line - 1].strip()
            answer = f"{p}:{line}" if self.answer_form == "path" else row
            qs.append((f"Where is `{nm}` defined?", answer, starts[fi] / len(ids), p))
        return ids, qs

    def needle(self, N, n_ctx, n_q=4, force_dense=False, contexts=None):
        res = []
        made = []
        t0 = time.time()
        for ci in range(n_ctx):
            if contexts is not None:
                ids, qs = contexts[ci]
            else:
                depths = [(i + self.rng.random()) / n_q for i in range(n_q)]
                ids, qs = self.needle_context(N, n_q, depths)
            made.append((ids, qs))
            seq = list(ids)
            spans = []
            for q, a, depth, path in qs:
                seq += self.enc(D.qa_string(q))
                ans = self.enc(a) + [D.END]
                # the engine resolves an answer from its first tokens when they name one line
                spans.append((len(seq), ans, range(min(4, len(ans))), depth))
                seq += ans
            pos = [p - 1 + i for p, ans, _, _ in spans for i in range(len(ans))]
            pred = self.logits_at(seq, pos, force_dense=force_dense).argmax(-1).tolist()
            k = 0
            for p, ans, path_tok, depth in spans:
                pr = pred[k:k + len(ans)]
                k += len(ans)
                res.append({"exact": pr == ans, "start": all(pr[i] == ans[i] for i in path_tok),
                            "depth": depth})
        n = len(res)
        return {"tokens": len(seq), "n_questions": n, "n_contexts": n_ctx, "force_dense": force_dense,
                "exact_match": sum(r["exact"] for r in res) / n,
                "start_match": sum(r["start"] for r in res) / n,
                "seconds": time.time() - t0,
                "by_depth": [[round(r["depth"], 2), int(r["exact"]), int(r["start"])] for r in res]}, made


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--bpb", type=int, default=48)
    ap.add_argument("--fim", type=int, default=300)
    ap.add_argument("--fim-form", choices=["file", "inline"], default="file")
    ap.add_argument("--answer-form", choices=["line", "path"], default="line",
                    help="needle answers as the definition's line (shipped) or `path:line` (prep.py --answer-form)")
    ap.add_argument("--needle", default="8192:25,65536:8,262144:3,1048576:2")
    ap.add_argument("--dense-needle", default="8192,65536,262144")
    ap.add_argument("--no-tf32", action="store_true")
    ap.add_argument("--int8", action="store_true", help="quantize 2-D weights per row as shipped")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = not a.no_tf32
    torch.backends.cudnn.allow_tf32 = not a.no_tf32
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(a.tokenizer)
    model = load_model(a.config, a.weights, a.device, a.int8)
    held = pickle.load(open(a.heldout, "rb"))
    ev = Ev(model, tok, held, a.device, a.seed, a.answer_form)
    out = {"weights": a.weights, "tf32": not a.no_tf32, "int8": a.int8}

    def dump():
        json.dump(out, open(a.out, "w"), indent=1)

    t0 = time.time()
    if a.bpb:
        out["bpb"] = ev.bpb(a.bpb)
        print(f"[eval] bpb {out['bpb']['bits_per_byte']:.4f} ({time.time() - t0:.0f}s)", flush=True)
        dump()
    if a.fim:
        out["fim"] = ev.fim(a.fim, form=a.fim_form)
        print(f"[eval] FIM single-line exact {out['fim']['exact_match']:.3f} {out['fim']['by_lang']} "
              f"({time.time() - t0:.0f}s)", flush=True)
        dump()
    dense = {int(x) for x in a.dense_needle.split(",") if x}
    out["needle"] = {}
    for spec in [s for s in a.needle.split(",") if s]:
        N, n = (int(x) for x in spec.split(":"))
        ev.rng = random.Random(a.seed * 1000 + N)
        r, made = ev.needle(N, n)
        out["needle"][str(N)] = r
        print(f"[eval] needle {N}: exact {r['exact_match']:.3f} start {r['start_match']:.3f} "
              f"({r['n_questions']} q, {r['seconds']:.0f}s)", flush=True)
        dump()
        if N in dense:
            r2, _ = ev.needle(N, n, force_dense=True, contexts=made)
            out["needle"][str(N) + "_dense"] = r2
            print(f"[eval] needle {N} forced dense: exact {r2['exact_match']:.3f} start {r2['start_match']:.3f} "
                  f"({r2['seconds']:.0f}s)", flush=True)
            dump()
    out["seconds"] = time.time() - t0
    dump()


if __name__ == "__main__":
    main()
