// EngineService in-process on the fixture model: the lifecycle paths that are racy
// to hit through a child process (pausing mid-index, resuming from the store).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SalaModel } from '../../engine/model/sala-model.js';
import { loadTokenizer, type Tokenizer } from '../../engine/model/tokenizer.js';
import { EngineService, EngineNotReadyError, RequestCancelledError, workspaceStoreDir } from '../../engine/server/engine-service.js';
import type { EngineStatus } from '../../engine/server/protocol.js';
import { FIXTURE, removeTempDirs, tempDir, waitFor } from './helpers.js';

let model: SalaModel;
let tokenizer: Tokenizer;
const services: EngineService[] = [];

before(async () => {
  model = await SalaModel.load(FIXTURE);
  tokenizer = await loadTokenizer(FIXTURE, model.config.vocabSize);
});
after(async () => {
  await Promise.all(services.map((s) => s.close()));
  removeTempDirs();
});

function bigWorkspace(files: number): string {
  const root = tempDir('panorama-svc-ws-');
  mkdirSync(path.join(root, 'src'));
  for (let i = 0; i < files; i++) {
    writeFileSync(path.join(root, 'src', `f${String(i).padStart(2, '0')}.ts`), Array.from({ length: 12 }, (_, j) => `export const v${i}_${j} = ${i} * ${j};`).join('\n') + '\n');
  }
  return root;
}

function service(root: string, storeDir: string, logs: string[]): EngineService {
  const s = new EngineService({ root, storeDir, model, tokenizer, modelId: 'fixture', watch: false, log: (_level, message) => logs.push(message) });
  services.push(s);
  return s;
}

test('pausing mid-index stops encoding and keeps what was encoded; resuming encodes only the rest', async () => {
  const root = bigWorkspace(10);
  const storeDir = workspaceStoreDir(tempDir('panorama-svc-store-'), root);
  const logs: string[] = [];
  const s = service(root, storeDir, logs);
  const seen: EngineStatus[] = [];
  let pausing: Promise<EngineStatus> | undefined;
  s.onStatus((status) => {
    seen.push(status);
    if (!pausing && status.state === 'indexing' && (status.progress ?? 0) > 0.2) pausing = s.setPaused(true);
  });
  s.start();
  await waitFor('a pause mid-index', () => pausing, 60_000, 20);
  const paused = await pausing;
  assert.equal(paused?.state, 'paused');
  assert.throws(
    () => s.assertReady(),
    (err: unknown) => err instanceof EngineNotReadyError && /paused before the workspace was fully open; resume it first/.test(err.message),
  );
  await assert.rejects(s.ask({ question: 'q' }), EngineNotReadyError);

  await s.setPaused(false);
  await waitFor('ready after resume', () => (s.status().state === 'ready' ? true : undefined), 60_000, 50);
  const summary = logs.find((line) => /encoded now/.test(line)) ?? '';
  const [, encoded, reopened] = /\((\d+) encoded now, (\d+) reopened\)/.exec(summary) ?? [];
  assert.ok(Number(reopened) > 0, `resumed from the store: ${summary}`);
  assert.ok(Number(encoded) > 0, summary);
  assert.equal(s.status().files, 10);
  assert.ok(seen.some((x) => x.progress !== undefined && x.progress > 0 && x.progress < 1));
});

test('an ask cancelled before it starts resolves as cancelled; a cancelled complete throws RequestCancelledError', async () => {
  const root = bigWorkspace(2);
  const s = service(root, workspaceStoreDir(tempDir('panorama-svc-store-'), root), []);
  s.start();
  await s.whenSettled();
  assert.equal(s.status().state, 'ready');
  const aborted = AbortSignal.abort(new Error('no'));
  const result = await s.ask({ question: 'what is v0_1?', maxTokens: 50 }, { signal: aborted });
  assert.equal(result.finishReason, 'cancelled');
  await assert.rejects(s.complete({ path: 'src/f00.ts', prefix: 'export', suffix: '', maxTokens: 5 }, { signal: aborted }), RequestCancelledError);
  // The context is unchanged by cancelled requests: a normal one still works.
  const answer = await s.ask({ question: 'what is v0_1?', maxTokens: 3 });
  assert.ok(['eos', 'stop', 'length'].includes(answer.finishReason));
  assert.equal(s.counters.cancelled, 2);
  assert.equal(s.activeRequests, 0);
});

test('a workspace that cannot be opened reports state error with what to do', async () => {
  const missing = path.join(tempDir('panorama-svc-gone-'), 'nope');
  const s = service(missing, workspaceStoreDir(tempDir('panorama-svc-store-'), missing), []);
  s.start();
  await s.whenSettled();
  const status = s.status();
  assert.equal(status.state, 'error');
  assert.match(status.error ?? '', /opening the workspace failed: .*Reindex/);
  assert.throws(() => s.assertReady(), EngineNotReadyError);
});
