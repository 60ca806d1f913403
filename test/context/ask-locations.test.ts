// Ask on the shipped default model: the answer's copied line comes back as a place
// (path:line in the file as it is now) that leads the sources, and an edit above it
// moves the place with the line. docs/workspace-questions.md
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { SalaModel } from '../../engine/model/sala-model.js';
import { loadTokenizer, type Tokenizer } from '../../engine/model/tokenizer.js';
import { WorkspaceContext, type ContextFile } from '../../engine/context/workspace-context.js';

const MODEL = path.resolve(__dirname, '../../models/panorama-code-13m');
const KV = path.resolve(__dirname, '../../engine/kv');
let model: SalaModel;
let tokenizer: Tokenizer;

before(async () => {
  model = await SalaModel.load(MODEL);
  tokenizer = await loadTokenizer(MODEL, model.config.vocabSize);
});

function file(name: string, text: string): ContextFile {
  return { path: name, text, contentHash: createHash('sha256').update(text).digest('hex'), mtimeMs: 0 };
}

async function ask(context: WorkspaceContext, question: string) {
  const stream = context.ask(question, { maxTokens: 40 });
  let next = await stream.next();
  while (!next.done) next = await stream.next();
  return next.value;
}

test('"Where is `BlockPool` defined?" resolves to its line, first among the sources, and follows an edit above it', async () => {
  const texts = Object.fromEntries(['block-pool.ts', 'selection.ts', 'sparse-kv-cache.ts'].map((name) => [name, readFileSync(path.join(KV, name), 'utf8')]));
  const context = new WorkspaceContext(model, tokenizer);
  await context.update(Object.entries(texts).map(([name, text]) => file(name, text)));
  const line = texts['block-pool.ts'].split('\n').findIndex((l) => l.startsWith('export class BlockPool')) + 1;
  assert.ok(line > 0);

  const before = await ask(context, 'Where is `BlockPool` defined?');
  assert.deepEqual(before.locations[0], { path: 'block-pool.ts', line, text: 'export class BlockPool {' });
  assert.equal(before.sources[0].path, 'block-pool.ts');
  assert.ok(before.sources[0].startLine <= line && line <= before.sources[0].endLine, `first source ${JSON.stringify(before.sources[0])}`);

  // three lines inserted at the top (a patch): the same line is now three further down
  const edited = `// one\n// two\n// three\n${texts['block-pool.ts']}`;
  await context.update([file('block-pool.ts', edited)]);
  const after = await ask(context, 'Where is `BlockPool` defined?');
  assert.equal(after.locations[0]?.line, line + 3);
  for (const place of [...before.locations, ...after.locations]) assert.ok(place.text.length > 0);
});

test('every place an answer gives is a live line of that file, verbatim', async () => {
  const texts = Object.fromEntries(['selection.ts', 'sparse-kv-cache.ts'].map((name) => [name, readFileSync(path.join(KV, name), 'utf8')]));
  const context = new WorkspaceContext(model, tokenizer);
  await context.update(Object.entries(texts).map(([name, text]) => file(name, text)));
  for (const question of ['Where is `SparseKvCache` defined?', 'Where is `selectBlocks` used?', 'Where is `frobnicateWidgets` defined?']) {
    const result = await ask(context, question);
    for (const place of result.locations) assert.equal(texts[place.path].split('\n')[place.line - 1].trim(), place.text, `${question} → ${place.path}:${place.line}`);
  }
  const absent = await ask(context, 'Where is `frobnicateWidgets` defined?');
  assert.deepEqual(absent.locations, []);
});
