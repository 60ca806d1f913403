// Bits per byte on held-out code through the engine's own forward, defined as
// training/evaluate.py bpb: rows of T tokens of file documents (`<|file|>path\n…`,
// `<|endoftext|>` after each repository), each row scored from an empty sequence;
// the sum of −log2 p over the predicted tokens that are not special, over the bytes
// those tokens stand for (a byte-level token's vocabulary string has one character a
// byte). Rows start at file starts spread evenly over the held-out text (the PyTorch
// side spreads token offsets; the dumped row ids let it score these very rows).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { SalaModel } from '../../engine/model/sala-model.js';
import type { FileTokens } from './contexts.js';
import type { Repo } from './sources.js';

/** Bytes each token id stands for (0 for added/special tokens), from the model's tokenizer.json. */
export function tokenBytes(modelDir: string, vocabSize: number): Int32Array {
  const json = JSON.parse(readFileSync(path.join(modelDir, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> }; added_tokens?: { id: number }[] };
  const bytes = new Int32Array(vocabSize);
  for (const [piece, id] of Object.entries(json.model.vocab)) if (id < vocabSize) bytes[id] = piece.length;
  for (const added of json.added_tokens ?? []) if (added.id < vocabSize) bytes[added.id] = 0;
  return bytes;
}

/** `rows` rows of `rowTokens` + 1 ids (inputs and the targets one on). */
export function bitsPerByteRows(repos: readonly Repo[], tokens: FileTokens, endOfText: number, rows: number, rowTokens: number): { ids: number[]; start: string }[] {
  const docs = repos.flatMap((r) => r.files.map(([p, t], i) => ({ path: p, text: t, last: i === r.files.length - 1 })));
  const chars = docs.reduce((n, d) => n + d.text.length, 0);
  const out: { ids: number[]; start: string }[] = [];
  let at = 0;
  let offset = 0;
  for (let row = 0; row < rows; row++) {
    // The first file starting at or after this row's share of the text.
    const target = rows > 1 ? (row / (rows - 1)) * chars * 0.98 : 0;
    while (at < docs.length - 1 && offset + docs[at].text.length <= target) offset += docs[at++].text.length;
    const ids: number[] = [];
    for (let k = at; ids.length < rowTokens + 1 && k < at + docs.length; k++) {
      const d = docs[k % docs.length];
      for (const id of tokens.encoded(d.path, d.text).ids) ids.push(id);
      if (d.last) ids.push(endOfText);
    }
    if (ids.length >= rowTokens + 1) out.push({ ids: ids.slice(0, rowTokens + 1), start: docs[at].path });
  }
  return out;
}

export interface BitsPerByte {
  bitsPerByte: number;
  lossPerTokenNats: number;
  rows: number;
  rowTokens: number;
  tokens: number;
  bytes: number;
}

/** Scores the rows through model.forward (logits for every position). */
export async function bitsPerByte(model: SalaModel, rows: readonly { ids: number[] }[], bytes: Int32Array): Promise<BitsPerByte> {
  const vocab = model.config.vocabSize;
  let nll = 0;
  let nBytes = 0;
  let nTokens = 0;
  for (const { ids } of rows) {
    const logits = await model.forward(model.newSequence(ids.length), ids.slice(0, -1), { logits: 'all' });
    for (let i = 0; i + 1 < ids.length; i++) {
      const target = ids[i + 1];
      nBytes += bytes[target];
      if (bytes[target] === 0) continue;
      const row = logits.subarray(i * vocab, (i + 1) * vocab);
      let max = -Infinity;
      for (const v of row) if (v > max) max = v;
      let sum = 0;
      for (const v of row) sum += Math.exp(v - max);
      nll += Math.log(sum) + max - row[target];
      nTokens++;
    }
  }
  return {
    bitsPerByte: nBytes ? nll / nBytes / Math.LN2 : 0,
    lossPerTokenNats: nTokens ? nll / nTokens : 0,
    rows: rows.length,
    rowTokens: rows[0] ? rows[0].ids.length - 1 : 0,
    tokens: nTokens,
    bytes: nBytes,
  };
}
