// A workspace fed through a resident decoder (the CPU provider through the binding addon,
// PANORAMA_NATIVE_CPU=1: the CUDA path's code with host memory as its device). There the
// pieces of a long file grow with the rate they run at; every token of the file must still
// be fed once, in order, where its span says, as on the host executor.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { SalaModel } from '../../engine/model/sala-model.js';
import { loadTokenizer, type Tokenizer } from '../../engine/model/tokenizer.js';
import { WorkspaceContext, type ContextFile } from '../../engine/context/workspace-context.js';
import { idsOf } from '../../engine/context/file-span.js';
import { PIECE_TOKENS } from '../../engine/context/context-core.js';
import { setEnv } from '../helpers/env.js';

const MODEL = path.resolve(__dirname, '../../models/panorama-code-13m');
let model: SalaModel;
let tokenizer: Tokenizer;
let restoreEnv: () => void;

before(async () => {
  restoreEnv = setEnv({ PANORAMA_NATIVE_CPU: '1' });
  model = await SalaModel.load(MODEL, { device: 'cpu' });
  tokenizer = await loadTokenizer(MODEL, model.config.vocabSize);
});
after(async () => {
  await model.release();
  restoreEnv();
});

function file(name: string, text: string): ContextFile {
  return { path: name, text, contentHash: createHash('sha256').update(text).digest('hex'), mtimeMs: 0 };
}

/** Numbered functions, so a skipped or repeated stretch shows in the decoded text. */
function source(n: number, functions: number): string {
  return Array.from({ length: functions }, (_, i) => `export function scale${n}_${i}(values: number[]): number[] {\n  return values.map((v) => v * ${i} + ${n});\n}\n`).join('\n');
}

test('a long file fed in growing pieces on the device is in the sequence whole, in order, where its span says', async () => {
  assert.equal(model.feedsOnDevice, true, 'the resident decoder feeds (the binding addon is built)');
  const context = new WorkspaceContext(model, tokenizer);
  // Past dense_len first, so the long file is fed in pieces (between them a completion could run).
  await context.update([file('src/a.ts', source(1, 60)), file('src/b.ts', source(2, 40))]);
  assert.ok(context.sequence.length > model.config.sparse.denseLen);
  const long = file('src/long.ts', source(3, 400));
  await context.update([long]);
  const span = context.span('src/long.ts');
  assert.ok(span);
  assert.ok(span.end - span.start > 20 * PIECE_TOKENS, `${span.end - span.start} tokens: many pieces`);
  assert.equal(context.sequence.length, span.end);
  const text = tokenizer.decode(idsOf(span, context.sequence.tokens).slice(span.headerTokens));
  assert.equal(text, long.text);
  for (const [layer, cache] of context.sequence.sparse) assert.equal(cache.length, span.end, `layer ${layer}: one K/V row per token`);
});
