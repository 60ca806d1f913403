// The engine service's workspace map on the fixture model, in process: files waiting
// and being encoded while indexing, left-out files with their reasons, an edit seen
// by the watcher, and answers' overlays kept by request id.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SalaModel } from '../../engine/model/sala-model.js';
import { loadTokenizer, type Tokenizer } from '../../engine/model/tokenizer.js';
import { EngineService } from '../../engine/server/engine-service.js';
import type { WorkspaceMap } from '../../engine/server/protocol.js';
import { KEPT_OVERLAYS } from '../../engine/server/map-state.js';
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

function workspace(files: number): string {
  const root = tempDir('panorama-map-ws-');
  mkdirSync(path.join(root, 'src', 'deep'), { recursive: true });
  mkdirSync(path.join(root, 'node_modules'));
  writeFileSync(path.join(root, '.gitignore'), 'node_modules/\n');
  writeFileSync(path.join(root, 'node_modules', 'dep.js'), 'module.exports = 1;\n');
  writeFileSync(path.join(root, 'logo.bin'), Buffer.from([0, 1, 2, 0, 4, 5]));
  for (let i = 0; i < files; i++) {
    const text = Array.from({ length: 12 }, (_, j) => `export const v${i}_${j} = ${i} * ${j};`).join('\n') + '\n';
    writeFileSync(path.join(root, 'src', i % 3 === 0 ? 'deep' : '', `f${String(i).padStart(2, '0')}.ts`), text);
  }
  return root;
}

function fileCells(map: WorkspaceMap) {
  return new Map(map.cells.filter((c) => c.kind === 'file').map((c) => [c.path, c]));
}

test('while indexing the map shows files waiting and one being encoded; when ready, all encoded and the left-out ones with reasons', async () => {
  const root = workspace(30);
  const service = new EngineService({ root, model, tokenizer, modelId: 'fixture', watch: true });
  services.push(service);
  const maps: WorkspaceMap[] = [service.workspaceMap()];
  const seen = new Promise<void>((resolve) => {
    service.onStatus(() => {
      const map = service.workspaceMap();
      maps.push(map);
      if (map.totals.filesByState[3] > 0) resolve();
    });
  });
  service.start();
  await seen;
  await service.whenSettled();
  assert.equal(maps[0].phase, 'scanning');
  const during = maps.find((m) => m.phase === 'indexing' && m.totals.filesByState[3] > 0);
  assert.ok(during, 'a map taken while indexing has waiting files');
  assert.equal(during.totals.filesByState[2], 1, 'exactly one file is being encoded');
  const ready = service.workspaceMap();
  assert.equal(ready.phase, 'ready');
  const cells = fileCells(ready);
  assert.equal(cells.get('src/f01.ts')?.state, 'encoded');
  assert.equal(cells.get('src/deep/f00.ts')?.state, 'encoded');
  assert.equal(cells.get('node_modules')?.reason, 'ignored');
  assert.equal(cells.get('logo.bin')?.reason, 'binary');
  assert.equal(ready.totals.filesByState[0], 31, '30 sources and .gitignore');
  assert.equal(ready.totals.tokens, service.status().liveTokens);

  // an edit on disk reaches the map through the watcher
  const edited = path.join(root, 'src', 'f01.ts');
  writeFileSync(edited, Array.from({ length: 12 }, (_, j) => `export const v1_${j} = 1 * ${j === 5 ? 55 : j};`).join('\n') + '\n');
  await waitFor('the edit to be patched in', () => (fileCells(service.workspaceMap()).get('src/f01.ts')?.state === 'patched' ? true : undefined), 20_000);
  const patched = fileCells(service.workspaceMap()).get('src/f01.ts');
  assert.ok((patched?.patchedTokens ?? 0) > 0 && (patched?.deadTokens ?? 0) > 0, 'its patch and what it replaced');
  assert.ok(service.workspaceMap().totals.deadTokens > 0);
});

test('an ask with a request id keeps its overlay (the last few); its top places are the answer’s sources', async () => {
  const root = workspace(24);
  const service = new EngineService({ root, model, tokenizer, modelId: 'fixture', watch: false });
  services.push(service);
  service.start();
  await service.whenSettled();
  const result = await service.ask({ question: 'What is v7_3?', maxTokens: 8 }, { requestId: 'a1' });
  assert.deepEqual(Object.keys(result).sort(), ['finishReason', 'locations', 'promptTokens', 'sources', 'text'], 'the wire result carries no map data');
  const overlay = service.answerOverlay('a1');
  assert.ok(overlay);
  assert.ok(result.sources.length > 0);
  assert.deepEqual(
    overlay.places
      .slice(0, result.sources.length)
      .map((p) => `${p.path}:${p.startLine}`)
      .sort(),
    result.sources.map((s) => `${s.path}:${s.startLine}`).sort(),
  );
  assert.equal(service.answerOverlay('nope'), undefined);
  await service.ask({ question: 'no id', maxTokens: 1 });
  for (let i = 0; i < KEPT_OVERLAYS; i++) await service.ask({ question: `q${i}`, maxTokens: 1 }, { requestId: `b${i}` });
  assert.equal(service.answerOverlay('a1'), undefined, 'the oldest went');
  assert.ok(service.answerOverlay(`b${KEPT_OVERLAYS - 1}`));
});
