// A workspace folder as a persistent, fresh context: build, reopen, resume, watch.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import os from 'node:os';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { SalaModel } from '../../engine/model/sala-model.js';
import { loadTokenizer, type Tokenizer } from '../../engine/model/tokenizer.js';
import { WorkspaceIndex, type IndexProgress } from '../../engine/context/workspace-index.js';
import { SALA_TINY_A as FIXTURE } from '../helpers/fixtures.js';

let model: SalaModel;
let tokenizer: Tokenizer;
const opened: WorkspaceIndex[] = [];

before(async () => {
  model = await SalaModel.load(FIXTURE);
  tokenizer = await loadTokenizer(FIXTURE, model.config.vocabSize);
});
after(async () => {
  await Promise.all(opened.map((index) => index.close()));
});

function workspace(files: number, linesEach = 6): string {
  const root = mkdtempSync(path.join(os.tmpdir(), 'panorama-ws-'));
  mkdirSync(path.join(root, 'src'));
  mkdirSync(path.join(root, 'node_modules'));
  writeFileSync(path.join(root, '.gitignore'), 'node_modules/\n');
  writeFileSync(path.join(root, 'node_modules', 'dep.js'), 'module.exports = 1;\n');
  writeFileSync(path.join(root, 'src', 'image.png'), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 0, 0, 0]));
  for (let i = 0; i < files; i++) {
    writeFileSync(path.join(root, 'src', `m${i}.ts`), Array.from({ length: linesEach }, (_, j) => `export const c${i}_${j} = ${i * j};`).join('\n') + '\n');
  }
  return root;
}

async function open(root: string, storeDir: string, extra: { signal?: AbortSignal; saveEvery?: number; onProgress?: (p: IndexProgress) => void } = {}) {
  const result = await WorkspaceIndex.open(root, model, tokenizer, { storeDir, modelId: 'fixture', ...extra });
  opened.push(result.index);
  return result;
}

test('indexing lays out the workspace, skips what it must with reasons, and reopens without re-encoding', async () => {
  const root = workspace(10);
  const store = mkdtempSync(path.join(os.tmpdir(), 'panorama-store-'));
  const progress: IndexProgress[] = [];
  const first = await open(root, store, { onProgress: (p) => progress.push(p) });
  assert.equal(first.report.files, 11, '10 sources + .gitignore');
  assert.ok(first.report.skipped.some((s) => s.path === 'src/image.png' && s.reason === 'binary'));
  assert.ok(!first.index.context.layout().some((s) => s.path.startsWith('node_modules/')));
  assert.equal(first.report.encodedTokens, first.report.tokens);
  const last = progress[progress.length - 1];
  assert.equal(last.phase, 'ready');
  assert.equal(last.tokensDone, last.tokensTotal);
  await first.index.close();

  const second = await open(root, store);
  assert.equal(second.report.encodedTokens, 0);
  assert.equal(second.report.store.restoredTokens, first.index.context.stats().sequenceTokens);
  assert.deepEqual(second.index.context.sequence.tokens, first.index.context.sequence.tokens);
});

test('an edit made while closed is picked up on reopen: only that file is encoded, at the tail', async () => {
  const root = workspace(8);
  const store = mkdtempSync(path.join(os.tmpdir(), 'panorama-store-'));
  const first = await open(root, store);
  await first.index.close();
  writeFileSync(path.join(root, 'src', 'm3.ts'), 'export const edited = true;\n');
  rmSync(path.join(root, 'src', 'm5.ts'));
  const second = await open(root, store);
  const span = second.index.context.span('src/m3.ts');
  assert.ok(span);
  assert.equal(second.report.encodedTokens, span.end - span.start);
  assert.equal(span.end, second.index.context.stats().sequenceTokens, 'the new version is last');
  assert.equal(second.index.context.span('src/m5.ts'), undefined);
});

test('an interrupted index keeps what it saved and the next run resumes to the same context', async () => {
  const root = workspace(30, 10);
  const store = mkdtempSync(path.join(os.tmpdir(), 'panorama-store-'));
  const controller = new AbortController();
  let files = 0;
  await assert.rejects(
    open(root, store, {
      saveEvery: 300,
      signal: controller.signal,
      onProgress: (p) => {
        files = p.filesDone;
        if (p.filesDone >= 12) controller.abort(new Error('interrupted'));
      },
    }),
    /interrupted/,
  );
  assert.ok(files >= 12);
  const resumed = await open(root, store);
  assert.ok(resumed.report.store.restoredTokens > 0, 'something was saved before the interrupt');
  assert.ok(resumed.report.encodedTokens < resumed.report.tokens, 'not everything was encoded again');
  const fresh = await open(root, mkdtempSync(path.join(os.tmpdir(), 'panorama-store-')));
  assert.equal(resumed.report.tokens, fresh.report.tokens);
  assert.deepEqual(new Set(resumed.index.context.layout().map((s) => s.path)), new Set(fresh.index.context.layout().map((s) => s.path)));
});

test('watching: an edit on disk reaches the context and the store', async () => {
  const root = workspace(5);
  const store = mkdtempSync(path.join(os.tmpdir(), 'panorama-store-'));
  const { index } = await open(root, store);
  await index.watch();
  writeFileSync(path.join(root, 'src', 'm1.ts'), 'export const watched = 1;\n');
  const text = () => {
    const span = index.context.span('src/m1.ts');
    return span ? tokenizer.decode(index.context.sequence.tokens.slice(span.start + span.headerTokens, span.end)) : '';
  };
  const deadline = Date.now() + 20_000;
  while (text() !== 'export const watched = 1;\n' && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(text(), 'export const watched = 1;\n');
  await index.close();
  const reopened = await open(root, store);
  assert.equal(reopened.report.encodedTokens, 0, 'the watched edit was saved');
});

test('files left out for the token budget are listed, remembered, and not tokenized again on reopen', async () => {
  const { PromptFormat } = await import('../../engine/context/prompt-format.js');
  const root = workspace(20, 10);
  const store = mkdtempSync(path.join(os.tmpdir(), 'panorama-store-'));
  const first = await open(root, store, {});
  const everything = first.report.tokens;
  await first.index.close();
  rmSync(store, { recursive: true, force: true });
  const budget = Math.floor(everything / 2);
  const limited = await WorkspaceIndex.open(root, model, tokenizer, { storeDir: store, modelId: 'fixture', budget });
  opened.push(limited.index);
  assert.ok(limited.report.tokens <= budget);
  assert.ok(limited.report.excluded.length > 0, 'some files left out');
  assert.equal(limited.report.files + limited.report.excluded.length, first.report.files);
  await limited.index.close();
  const original = PromptFormat.prototype.file;
  const tokenized: string[] = [];
  PromptFormat.prototype.file = function (this: InstanceType<typeof PromptFormat>, file: string, content: string) {
    tokenized.push(file);
    return original.call(this, file, content);
  };
  try {
    const again = await WorkspaceIndex.open(root, model, tokenizer, { storeDir: store, modelId: 'fixture', budget });
    opened.push(again.index);
    assert.equal(again.report.encodedTokens, 0);
    assert.deepEqual(again.report.excluded.map((e) => e.path).sort(), limited.report.excluded.map((e) => e.path).sort());
    assert.deepEqual(tokenized, [], 'nothing re-tokenized');
  } finally {
    PromptFormat.prototype.file = original;
  }
});
