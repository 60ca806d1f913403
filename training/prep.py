"""Build the tokenizer, the training streams and the held-out evaluation material.

usage: python3 training/prep.py --js training/data/js_corpus.jsonl.xz --out training/data/pano [--tok-out DIR]
The Python corpus is this machine's site-packages (run it in the environment you train in).
~1-2 min on 16 cores.
Outputs in --out:
  tokenizer.json, tokenizer_config.json
  stream.npy      uint16 repository-level token stream (train packages; 20% of files FIM-transformed)
  qa_{T}.npy/qa_{T}_off.npy   question/answer documents that fit in T tokens (ragged)
  heldout.pkl     held-out packages: [(repo, [(path, text)])]
  stats.json
"""
import argparse
import json
import multiprocessing
import os
import pickle
import random
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data as D  # noqa: E402


def encode_all(tok, texts, bs=4096):
    out = []
    for i in range(0, len(texts), bs):
        out.extend(e.ids for e in tok.encode_batch(texts[i:i + bs], add_special_tokens=False))
    return out


_REPOS = []


def _set_repos(repos):
    global _REPOS
    _REPOS = repos


def _foreign_names(rng, repo, files=20):
    """Names defined in some files of another repository (absent names that look like real ones)."""
    picked = rng.sample(repo["files"], min(files, len(repo["files"])))
    return sorted({n for path, text in picked for n, _ in D.definitions(path, text)})


def _qa_docs(job):
    """One worker's share of question documents: (seed, count, char budget, options) -> [str].
    options: complete_share (documents ending in an inline completion), foreign_absent (absent
    names taken from other repositories), balance_langs (half JS/TS, half Python repositories),
    answer_form (data.make_questions)."""
    seed, count, budget, opts = job
    rng = random.Random(seed)
    by_lang = {"js": [r for r in _REPOS if r["lang"] == "js"], "python": [r for r in _REPOS if r["lang"] == "python"]}
    langs = [lang for lang, rs in by_lang.items() if rs]
    out = []
    for _ in range(count):
        r = rng.choice(by_lang[rng.choice(langs)]) if opts["balance_langs"] else rng.choice(_REPOS)
        if opts["complete_share"] and rng.random() < opts["complete_share"]:
            d = D.completion_doc(r["files"], rng, char_budget=budget)
        else:
            foreign = _foreign_names(rng, rng.choice(_REPOS)) if opts["foreign_absent"] else ()
            d = D.qa_doc(r["files"], rng, char_budget=budget, n_q=rng.choice([3, 4, 5, 6]), foreign=foreign,
                         answer_form=opts["answer_form"])
        if d:
            out.append(d)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--js", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer", default=None, help="reuse this tokenizer.json instead of training one")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--fim-rate", type=float, default=0.2)
    ap.add_argument("--fim-form", choices=["file", "inline"], default="file",
                    help="file: a whole file's FIM (the from-scratch model); inline: the file, then the engine's inline request")
    ap.add_argument("--qa", default="4096:16000,16384:3000,32768:800", help="T:count of QA documents")
    # Off in the shipped recipe: together they cost lookups in the 2026-12-02 ablation (MODEL.md).
    ap.add_argument("--complete-share", type=float, default=0.0,
                    help="share of question documents that end in an inline completion instead of questions")
    ap.add_argument("--foreign-absent", action="store_true",
                    help="half the absent names are real names of other repositories, not recombined pieces")
    ap.add_argument("--balance-langs", action="store_true", help="question documents half JS/TS, half Python")
    ap.add_argument("--answer-form", choices=["line", "path"], default="line",
                    help="definitions and uses answered with their lines (shipped) or `path:line` (the format ablation)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heldout-only", action="store_true", help="only write heldout.pkl (for evaluation)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = random.Random(a.seed)
    t0 = time.time()
    py = D.collect_python()
    js = D.load_js(a.js)
    allp = py + js
    held = [p for p in allp if D.is_heldout(p)]
    train = [p for p in allp if not D.is_heldout(p)]
    if a.heldout_only:
        hrepos = [(p["name"], sorted(p["files"], key=lambda f: f[0])) for p in held]
        pickle.dump(hrepos, open(os.path.join(a.out, "heldout.pkl"), "wb"))
        print(f"[prep] heldout only: {len(hrepos)} packages in {time.time() - t0:.0f}s", flush=True)
        return
    stats = {"packages_train": len(train), "packages_heldout": sorted({p["name"] for p in held})}
    for lang in ("python", "c", "js"):
        stats[f"chars_train_{lang}"] = sum(len(t) for p in train if p["lang"] == lang for _, t in p["files"])
        stats[f"files_train_{lang}"] = sum(len(p["files"]) for p in train if p["lang"] == lang)
    stats["train_package_names"] = sorted(p["name"] for p in train)
    print(f"[prep] corpus collected in {time.time() - t0:.0f}s: " +
          ", ".join(f"{k}={v / 1e6:.1f}M" for k, v in stats.items() if k.startswith("chars")), flush=True)

    # tokenizer ------------------------------------------------------------------------------
    from tokenizers import Tokenizer
    if a.tokenizer:
        tok = Tokenizer.from_file(a.tokenizer)
    else:
        files = [f for p in train for f in p["files"]]
        rng.shuffle(files)
        sample, n = [], 0
        for path, text in files:
            sample.append(D.file_doc(path, text))
            n += len(text)
            if n > 40_000_000:
                break
        tok = D.train_tokenizer(sample, a.vocab)
        print(f"[prep] tokenizer trained on {n / 1e6:.0f}M chars in {time.time() - t0:.0f}s", flush=True)
    tok.save(os.path.join(a.out, "tokenizer.json"))
    json.dump(D.tokenizer_config(), open(os.path.join(a.out, "tokenizer_config.json"), "w"), indent=1)

    # training stream ----------------------------------------------------------------------------
    repos = D.split_repos(train)
    rng.shuffle(repos)
    docs, bounds = [], []
    for r in repos:
        for path, text in r["files"]:
            doc = None
            if rng.random() < a.fim_rate:
                if a.fim_form == "inline":
                    doc = D.inline_fim_doc(path, text, rng)
                else:
                    fim = D.fim_doc(path, text, rng)
                    doc = fim and D.fim_string(path, fim[0], fim[2], fim[1])
            docs.append(doc or D.file_doc(path, text))
        bounds.append(len(docs))
    ids = encode_all(tok, docs)
    parts, b0 = [], 0
    for b in bounds:
        for x in ids[b0:b]:
            parts.append(np.asarray(x, dtype=np.uint16))
        parts.append(np.asarray([D.EOT], dtype=np.uint16))
        b0 = b
    stream = np.concatenate(parts)
    np.save(os.path.join(a.out, "stream.npy"), stream)
    nchar = sum(len(d) for d in docs)
    stats["stream_tokens"] = int(stream.size)
    stats["chars_per_token"] = nchar / stream.size
    print(f"[prep] stream {stream.size / 1e6:.1f}M tokens ({nchar / stream.size:.2f} chars/token) "
          f"at {time.time() - t0:.0f}s", flush=True)

    # question/answer documents -------------------------------------------------------------
    cpt = nchar / stream.size
    big = [r for r in repos if r["lang"] != "c" and len(r["files"]) >= 3]
    for spec in a.qa.split(","):
        T, cnt = (int(x) for x in spec.split(":"))
        jobs = [(a.seed * 7919 + T * 31 + w, int(cnt * 1.3 / a.workers) + 1, int(T * cpt * 0.85),
                 {"complete_share": a.complete_share, "foreign_absent": a.foreign_absent, "balance_langs": a.balance_langs,
                  "answer_form": a.answer_form})
                for w in range(a.workers)]
        with multiprocessing.get_context("fork").Pool(a.workers, initializer=_set_repos, initargs=(big,)) as pool:
            qdocs = [d for part in pool.map(_qa_docs, jobs) for d in part]
        qids = [x for x in encode_all(tok, qdocs) if len(x) <= T][:cnt]
        off = np.cumsum([0] + [len(x) for x in qids]).astype(np.int64)
        np.save(os.path.join(a.out, f"qa_{T}.npy"), np.concatenate([np.asarray(x, np.uint16) for x in qids]))
        np.save(os.path.join(a.out, f"qa_{T}_off.npy"), off)
        stats[f"qa_{T}_docs"] = len(qids)
        stats[f"qa_{T}_mean_len"] = float(np.mean([len(x) for x in qids])) if qids else 0
        print(f"[prep] qa T={T}: {len(qids)} docs, mean {stats[f'qa_{T}_mean_len']:.0f} tokens", flush=True)
        if T == 4096 and qdocs:
            tail = qdocs[0][-400:]
            print("[prep] sample QA tail:", repr(tail), flush=True)

    # held-out -----------------------------------------------------------------------------------
    hrepos = [(p["name"], sorted(p["files"], key=lambda f: f[0])) for p in held]
    pickle.dump(hrepos, open(os.path.join(a.out, "heldout.pkl"), "wb"))
    stats["chars_heldout"] = sum(len(t) for _, fs in hrepos for _, t in fs)
    stats["prep_seconds"] = time.time() - t0
    json.dump(stats, open(os.path.join(a.out, "stats.json"), "w"), indent=1)

    # tokenizer cross-check strings for the JS library
    probe = ["def foo(x):\n    return x + 1\n", "<|file|>src/a.ts\nexport const x: number = 42;\n",
             "<|user|>Where is `foo` defined?<|end|><|assistant|>pkg/mod.py:12<|end|>",
             "    if (a && b) {\n\tconsole.log(`héllo ${name}`); // ünïcode 中文 🚀\n    }\n"]
    json.dump([{"text": s, "ids": tok.encode(s, add_special_tokens=False).ids} for s in probe],
              open(os.path.join(a.out, "tokenizer_probe.json"), "w"))
    print(f"[prep] done in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
