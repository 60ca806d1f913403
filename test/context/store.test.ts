// Persistence of the workspace context: reopen without recompute, incremental
// saves, damaged segments, a changed model, kill -9 mid-save, a full disk.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import os from 'node:os';
import { createHash } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { SalaModel } from '../../engine/model/sala-model.js';
import { loadTokenizer, type Tokenizer } from '../../engine/model/tokenizer.js';
import { WorkspaceContext, type ContextFile } from '../../engine/context/workspace-context.js';
import { ContextStore, StoreError, modelFingerprint } from '../../engine/context/store.js';
import { fileText } from './helpers/save-loop.js';
import { SALA_TINY_A as FIXTURE } from '../helpers/fixtures.js';

let model: SalaModel;
let tokenizer: Tokenizer;
let modelId: string;

before(async () => {
  model = await SalaModel.load(FIXTURE);
  tokenizer = await loadTokenizer(FIXTURE, model.config.vocabSize);
  modelId = await modelFingerprint(FIXTURE);
});

function file(name: string, text: string): ContextFile {
  return { path: name, text, contentHash: createHash('sha256').update(text).digest('hex'), mtimeMs: 0 };
}
const files = Array.from({ length: 8 }, (_, i) => file(`src/m${i}.ts`, `export const v${i} = ${i};\n`.repeat(8 + i)));
const options = { checkpointEvery: 256, compactAt: 1 };

async function answer(context: WorkspaceContext, question = 'What is v3?'): Promise<string> {
  const stream = context.ask(question, { maxTokens: 8 });
  let next = await stream.next();
  while (!next.done) next = await stream.next();
  return next.value.text;
}

async function build(dir: string, segmentTokens = 400) {
  const context = new WorkspaceContext(model, tokenizer, options);
  await context.update(files);
  const store = new ContextStore(dir, modelId, segmentTokens);
  await context.withState((state) => store.save(model, state));
  return { context, store };
}

async function reopen(dir: string, segmentTokens = 400) {
  const store = new ContextStore(dir, modelId, segmentTokens);
  const { state, report } = await store.load(model);
  const context = state ? WorkspaceContext.restore(model, tokenizer, options, state) : undefined;
  return { store, context, report };
}

test('a reopened store answers exactly as before and costs no model compute', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'panorama-store-'));
  const { context } = await build(dir);
  const expected = await answer(context);
  const forward = model.forward.bind(model);
  let calls = 0;
  model.forward = (...args) => {
    calls++;
    return forward(...args);
  };
  let reopened;
  try {
    reopened = await reopen(dir);
  } finally {
    model.forward = forward;
  }
  assert.equal(calls, 0, 'no forward pass while reopening');
  assert.ok(reopened.context);
  // (What was fed in this process, and the checkpoints kept for in-place edits, are per process.)
  const persisted = (stats: ReturnType<WorkspaceContext['stats']>) => ({ ...stats, encodedTokens: 0, recentCheckpointBytes: 0 });
  assert.deepEqual(persisted(reopened.context.stats()), persisted(context.stats()));
  assert.equal(reopened.context.stats().encodedTokens, 0, 'nothing re-encoded');
  for (const [layer, cache] of context.sequence.sparse) {
    assert.deepEqual(reopened.context.sequence.sparse.get(layer)?.compressedKeys(), cache.compressedKeys(), `layer ${layer}: compressed keys restored as saved`);
  }
  assert.deepEqual(reopened.context.sequence.tokens, context.sequence.tokens);
  assert.equal(await answer(reopened.context), expected);
});

test('saving after an edit writes only the new tail, not the whole context', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'panorama-store-'));
  const { context, store } = await build(dir);
  const total = await store.diskBytes();
  await context.update([file('src/m2.ts', 'export const v2 = 22;\n')]);
  const { bytesWritten } = await context.withState((state) => store.save(model, state));
  assert.ok(bytesWritten < total / 4, `wrote ${bytesWritten} of ${total} bytes`);
  const reopened = await reopen(dir);
  assert.ok(reopened.context);
  assert.equal(reopened.context.span('src/m2.ts')?.start, context.span('src/m2.ts')?.start);
  assert.deepEqual(reopened.context.sequence.deadRanges, context.sequence.deadRanges);
  assert.equal(await answer(reopened.context), await answer(context));
});

test('an in-place edit of the last file rewrites the store from the change on: reopened, it answers as the live context', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'panorama-store-'));
  const { context, store } = await build(dir);
  const last = files[files.length - 1];
  const before = context.span(last.path);
  await context.update([file(last.path, last.text.replace(/7;\n$/, '77;\n'))]);
  assert.equal(context.span(last.path)?.start, before?.start, 'edited in place');
  assert.equal(context.stats().deadTokens, 0);
  await context.withState((state) => store.save(model, state));
  const reopened = await reopen(dir);
  assert.ok(reopened.context);
  assert.deepEqual(reopened.context.sequence.tokens, context.sequence.tokens);
  assert.deepEqual(JSON.parse(JSON.stringify(reopened.context.layout())), JSON.parse(JSON.stringify(context.layout())));
  assert.equal(await answer(reopened.context, 'What is v7?'), await answer(context, 'What is v7?'));
});

test('a patched file keeps its pieces through save and reopen; the next edit patches it again, as in the live context', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'panorama-store-'));
  const { context, store } = await build(dir);
  const target = files[2];
  const lines = target.text.split('\n');
  lines[4] = 'export const v2 = 222;';
  await context.update([file(target.path, lines.join('\n'))]);
  assert.ok(context.span(target.path)?.pieces, 'patched');
  await context.withState((state) => store.save(model, state));
  const reopened = await reopen(dir);
  assert.ok(reopened.context);
  assert.deepEqual(JSON.parse(JSON.stringify(reopened.context.layout())), JSON.parse(JSON.stringify(context.layout())));
  assert.deepEqual(reopened.context.fileIds(target.path), context.format.file(target.path, lines.join('\n')).ids);
  assert.equal(await answer(reopened.context, 'What is v2?'), await answer(context, 'What is v2?'));
  lines[7] = 'export const v2 = 2222;';
  for (const c of [context, reopened.context]) await c.update([file(target.path, lines.join('\n'))]);
  assert.equal(reopened.context.span(target.path)?.pieces?.length, 5);
  assert.deepEqual(reopened.context.sequence.tokens, context.sequence.tokens);
  assert.deepEqual(reopened.context.fileIds(target.path), context.format.file(target.path, lines.join('\n')).ids);
});

test('a damaged segment is detected and only the files after the last good checkpoint are lost', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'panorama-store-'));
  const { context } = await build(dir, 300);
  const segments = readdirSync(dir)
    .filter((n) => n.startsWith('seg-'))
    .sort((a, b) => Number(a.split('-')[1]) - Number(b.split('-')[1]));
  assert.ok(segments.length >= 3, `segments: ${segments.join(', ')}`);
  const victim = path.join(dir, segments[2]);
  const bytes = readFileSync(victim);
  bytes[bytes.length >> 1] ^= 0xff;
  writeFileSync(victim, bytes);
  const { context: partial, report } = await reopen(dir, 300);
  assert.ok(partial);
  assert.match(report.notes.join('\n'), /segment seg-600-300-\w+\.bin is damaged/);
  assert.ok(report.restoredTokens > 0 && report.restoredTokens <= 600);
  assert.ok(report.lostFiles.length > 0 && report.lostFiles.length < files.length);
  // Re-feeding what was lost gives back the same context.
  await partial.update(files.filter((f) => report.lostFiles.includes(f.path)));
  assert.deepEqual(partial.sequence.tokens, context.sequence.tokens);
  assert.equal(await answer(partial), await answer(context));
});

test('a different model, another format or a garbled manifest means a clean rebuild, with the reason', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'panorama-store-'));
  await build(dir);
  const other = new ContextStore(dir, 'another-model');
  const changed = await other.load(model);
  assert.equal(changed.state, undefined);
  assert.match(changed.report.notes.join(), /model changed/);
  assert.equal(readdirSync(dir).filter((n) => n.startsWith('seg-')).length, 0, 'stale segments removed');
  await build(dir);
  writeFileSync(path.join(dir, 'manifest.json'), '{"format": 1, "mod');
  const garbled = await reopen(dir);
  assert.equal(garbled.context, undefined);
  assert.match(garbled.report.notes.join(), /manifest is unreadable/);
});

test('kill -9 during indexing and compaction: the reopened store holds at least everything acknowledged', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'panorama-kill-'));
  for (const delay of [900, 1700, 2600]) {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, 'helpers', 'save-loop.ts'), FIXTURE, dir, modelId], { stdio: ['ignore', 'pipe', 'pipe'] });
    let acknowledged = -1;
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      for (const line of output.trim().split('\n')) if (line.startsWith('saved ')) acknowledged = Math.max(acknowledged, Number(line.slice(6)));
    });
    await new Promise((resolve) => child.stdout.once('data', resolve));
    await new Promise((resolve) => setTimeout(resolve, delay));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.on('exit', resolve));
    const { context, report } = await reopen(dir, 300);
    assert.ok(context, report.notes.join('; '));
    assert.deepEqual(report.lostFiles, [], report.notes.join('; '));
    // Round i writes file f(i mod 6) with mtime i: the newest round restored is at least the last acknowledged one…
    const spans = context.layout();
    const newest = Math.max(...spans.map((s) => s.mtimeMs));
    assert.ok(newest >= acknowledged, `restored round ${newest} < acknowledged ${acknowledged}`);
    // …and every restored span holds exactly the text of its round (the store is consistent).
    for (const span of spans) {
      // (Later rounds' small edits are patches: the file's ids come from its pieces.)
      const text = tokenizer.decode(context.fileIds(span.path)!.slice(span.headerTokens));
      assert.equal(text, fileText(span.mtimeMs), span.path);
    }
    assert.ok(!readdirSync(dir).some((n) => n.includes('.tmp-')), 'temporary files cleaned up');
  }
});

test('a full disk (ENOSPC) is a clear error and the last saved state stays readable', async (t) => {
  const mountPoint = mkdtempSync(path.join(os.tmpdir(), 'panorama-full-'));
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mountPoint]);
  if (mounted.status !== 0) {
    t.skip(`cannot mount a small tmpfs here (${mounted.stderr.toString().trim()}); needs root`);
    return;
  }
  try {
    const dir = path.join(mountPoint, 'store');
    mkdirSync(dir);
    const context = new WorkspaceContext(model, tokenizer, options);
    await context.update(files.slice(0, 1));
    const store = new ContextStore(dir, modelId, 400);
    await context.withState((state) => store.save(model, state));
    const saved = context.stats().sequenceTokens;
    await context.update(files.slice(1));
    await assert.rejects(
      context.withState((state) => store.save(model, state)),
      (err: Error) => err instanceof StoreError && /no space left on the device/.test(err.message),
    );
    const { context: reopened } = await reopen(dir);
    assert.ok(reopened);
    assert.equal(reopened.stats().sequenceTokens, saved);
  } finally {
    spawnSync('umount', [mountPoint]);
  }
});
