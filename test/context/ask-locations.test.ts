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
import { QUESTION_TOPK } from '../../engine/context/questions.js';

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

async function ask(context: WorkspaceContext, question: string, maxTokens = 40) {
  const stream = context.ask(question, { maxTokens });
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

test('a lookup is answered with a workspace line holding the name; a name that is nowhere, not found; other questions run free', async () => {
  const texts = Object.fromEntries(['selection.ts', 'sparse-kv-cache.ts'].map((name) => [name, readFileSync(path.join(KV, name), 'utf8')]));
  const context = new WorkspaceContext(model, tokenizer);
  await context.update(Object.entries(texts).map(([name, text]) => file(name, text)));
  const live = new Set(Object.values(texts).flatMap((t) => t.split('\n').map((l) => l.trim())));

  for (const question of ['Where is `visibleCount` defined?', 'where is SparseKvCache used']) {
    const result = await ask(context, question, 160);
    assert.ok(result.lookup && result.lookup.candidateLines > 0, `${question}: ${JSON.stringify(result.lookup)}`);
    const name = result.lookup.name;
    for (const line of result.text.split('\n')) {
      assert.ok(live.has(line) && new RegExp(`\\b${name}\\b`).test(line), `${question} → ${JSON.stringify(line)}`);
    }
    assert.ok(result.locations.length > 0);
  }
  const defined = await ask(context, 'Where is `visibleCount` defined?');
  assert.match(defined.text, /function visibleCount\b/);

  const absent = await ask(context, 'Where is `frobnicateWidgets` defined?');
  assert.equal(absent.text, '`frobnicateWidgets` is not in the workspace.');
  assert.deepEqual(absent.lookup, { name: 'frobnicateWidgets', kind: 'defined', candidateLines: 0 });

  // The chat attaches the open editor's file: a lookup is still held to the workspace's lines.
  const withFile = context.ask('Where is `visibleCount` defined?', { maxTokens: 40, selection: { path: 'sparse-kv-cache.ts', text: texts['sparse-kv-cache.ts'] } });
  let withFileNext = await withFile.next();
  while (!withFileNext.done) withFileNext = await withFile.next();
  assert.deepEqual(withFileNext.value.lookup, defined.lookup);
  assert.equal(withFileNext.value.text, defined.text);

  const other = await ask(context, 'What does this code do?');
  assert.equal(other.lookup, undefined);
  const unaided = context.ask('Where is `visibleCount` defined?', { maxTokens: 40, grounded: false });
  let next = await unaided.next();
  while (!next.done) next = await unaided.next();
  assert.equal(next.value.lookup, undefined);
});

test("a question reads more blocks than the prefill selects (QUESTION_TOPK), and the model's own topk reads fewer", async () => {
  const texts = Object.fromEntries(['block-pool.ts', 'selection.ts', 'sparse-kv-cache.ts'].map((name) => [name, readFileSync(path.join(KV, name), 'utf8')]));
  const context = new WorkspaceContext(model, tokenizer);
  await context.update(Object.entries(texts).map(([name, text]) => file(name, text)));
  const blocksRead = async (topk?: number) => {
    const stream = context.ask('Where is `BlockPool` defined?', { maxTokens: 20, topk });
    let next = await stream.next();
    while (!next.done) next = await stream.next();
    return { blocks: next.value.blockHits.length, answer: next.value.text };
  };
  const { topk } = model.config.sparse;
  const trained = await blocksRead(topk);
  const question = await blocksRead();
  assert.ok(QUESTION_TOPK > topk, 'the default model trained with fewer');
  assert.ok(question.blocks > trained.blocks, `blocks read: ${question.blocks} with the question's budget, ${trained.blocks} with topk ${topk}`);
  assert.ok(question.blocks >= 2 * topk, `${question.blocks} blocks`);
});
