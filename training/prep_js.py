"""Collect TypeScript/JavaScript sources from npm packages on the developer machine.

usage: python3 training/prep_js.py OUT.jsonl.xz DIR_OR_TGZ...
Each argument is a node_modules folder (every package in it is taken) or an `npm pack` .tgz.
Writes one JSON line per package: {"name", "version", "license", "files": [[path, text], ...]}.
Minified/bundled files, source maps and duplicates are skipped.
"""
import hashlib
import io
import json
import lzma
import os
import sys
import tarfile

from data import looks_like_source  # the same source-shape filter as the Python corpus

EXT = (".ts", ".tsx", ".mts", ".cts", ".js", ".mjs", ".cjs", ".jsx")
MAX_FILE = 300_000
MAX_PKG = 6_000_000


def good(path, text):
    p = path.lower()
    if not p.endswith(EXT) or ".min." in p or p.endswith(".map"):
        return False
    if len(text) > MAX_FILE or not looks_like_source(text):
        return False
    # bundles: umd/iife wrappers in dist folders duplicate the sources
    if ("/umd/" in p or "/bundles/" in p or p.endswith(".umd.js")) and len(text) > 20000:
        return False
    return True


def pkg_from_files(items, name, version, lic, seen):
    files = []
    total = 0
    # prefer src/ and .ts over compiled output: sort so that typed sources come first
    def rank(pt):
        path = pt[0]
        r = 0 if "/src/" in path or path.startswith("src/") else 1
        r += 0 if path.endswith((".ts", ".tsx", ".mts")) else 1
        return (r, path)
    for path, text in sorted(items, key=rank):
        if not good(path, text):
            continue
        h = hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()
        if h in seen:
            continue
        seen.add(h)
        if total + len(text) > MAX_PKG:
            break
        files.append([f"{name}/{path}", text])
        total += len(text)
    files.sort(key=lambda f: f[0])
    return {"name": name, "version": version, "license": lic, "files": files}


def from_tgz(path, seen):
    items = []
    meta = {}
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            if not m.isfile():
                continue
            rel = m.name.split("/", 1)[1] if "/" in m.name else m.name
            if rel == "package.json":
                meta = json.loads(tf.extractfile(m).read().decode("utf-8", "replace"))
                continue
            if not rel.lower().endswith(EXT) or m.size > MAX_FILE or "node_modules/" in rel:
                continue
            items.append((rel, tf.extractfile(m).read().decode("utf-8", "replace")))
    return pkg_from_files(items, meta.get("name", os.path.basename(path)), meta.get("version", "?"),
                          str(meta.get("license", "?")), seen)


def from_dir(pdir, seen):
    meta = json.load(open(os.path.join(pdir, "package.json")))
    items = []
    for root, dirs, fs in os.walk(pdir):
        dirs[:] = [d for d in dirs if d != "node_modules"]
        for f in fs:
            full = os.path.join(root, f)
            if not f.lower().endswith(EXT) or os.path.getsize(full) > MAX_FILE:
                continue
            items.append((os.path.relpath(full, pdir), open(full, encoding="utf-8", errors="replace").read()))
    return pkg_from_files(items, meta.get("name", os.path.basename(pdir)), meta.get("version", "?"),
                          str(meta.get("license", "?")), seen)


def main():
    out = sys.argv[1]
    seen = set()
    pkgs = []
    names = set()
    for arg in sys.argv[2:]:
        if arg.endswith(".tgz"):
            p = from_tgz(arg, seen)
            if p["name"] not in names:
                pkgs.append(p)
                names.add(p["name"])
            continue
        for d in sorted(os.listdir(arg)):
            cands = [os.path.join(arg, d)]
            if d.startswith("@"):
                cands = [os.path.join(arg, d, x) for x in sorted(os.listdir(os.path.join(arg, d)))]
            for c in cands:
                if not os.path.exists(os.path.join(c, "package.json")):
                    continue
                p = from_dir(c, seen)
                if p["name"] not in names:
                    pkgs.append(p)
                    names.add(p["name"])
    pkgs = [p for p in pkgs if p["files"]]
    with lzma.open(out, "wt", encoding="utf-8", preset=6) as f:
        for p in pkgs:
            f.write(json.dumps(p) + "\n")
    tot = sum(len(t) for p in pkgs for _, t in p["files"])
    print(f"{len(pkgs)} packages, {sum(len(p['files']) for p in pkgs)} files, {tot / 1e6:.1f} MB text -> {out}"
          f" ({os.path.getsize(out) / 1e6:.1f} MB)")
    with open(out + ".licenses.tsv", "w") as f:
        for p in pkgs:
            f.write(f"{p['name']}\t{p['version']}\t{p['license']}\t{len(p['files'])}\n")


if __name__ == "__main__":
    main()
