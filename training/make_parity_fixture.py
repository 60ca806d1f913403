"""Write test/fixtures/default-model/: prompt ids and float32 PyTorch logits of the shipped model.

usage (repo root, CPU is fine; needs node for the JS tokenizer):
  python3 training/make_parity_fixture.py models/panorama-code-13m test/fixtures/default-model
The weights are read exactly as the engine reads them (I8 rows x F32 scale -> float32).
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402
from model import SalaForCausalLM, load_state  # noqa: E402

LAST = 4


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
    json.dump(manifest, open(os.path.join(out, "manifest.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
