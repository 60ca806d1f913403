// The model cache: where it is, what counts as a usable model.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { downloadDir, listModels, panoramaHome, partialDownloads, writeMarker, findModel, registerModel } from '../../engine/hub/model-cache.js';

const home = mkdtempSync(path.join(os.tmpdir(), 'panorama-cache-'));
after(() => rmSync(home, { recursive: true, force: true }));

test('PANORAMA_HOME wins; otherwise the platform cache folder', () => {
  assert.equal(panoramaHome({ PANORAMA_HOME: '/data/panorama' }), path.resolve('/data/panorama'));
  if (process.platform === 'linux') {
    assert.equal(panoramaHome({ XDG_CACHE_HOME: '/xdg' }), path.join('/xdg', 'panorama'));
    assert.equal(panoramaHome({}), path.join(os.homedir(), '.cache', 'panorama'));
  }
});

test('a download is listed only while its marker names files that are all there at their size', () => {
  const commit = 'a'.repeat(40);
  const dir = downloadDir(home, 'org/model', commit);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'config.json'), '{}');
  writeFileSync(path.join(dir, 'model.safetensors'), Buffer.alloc(100));
  assert.deepEqual(listModels(home), [], 'no marker yet');
  writeMarker(dir, {
    repo: 'org/model',
    revision: 'main',
    commit,
    files: [
      { path: 'config.json', size: 2 },
      { path: 'model.safetensors', size: 100 },
    ],
    completedAt: new Date().toISOString(),
  });
  assert.deepEqual(
    listModels(home).map((m) => m.name),
    ['org/model'],
  );
  assert.equal(findModel(home, 'org/model@aaaa')?.dir, dir);
  writeFileSync(path.join(dir, 'model.safetensors'), Buffer.alloc(50)); // truncated since
  assert.deepEqual(listModels(home), []);
  assert.equal(partialDownloads(home)[0].repo, 'org/model');
});

test("a registered name cannot take another folder's name", () => {
  const a = path.join(home, 'a');
  const b = path.join(home, 'b');
  for (const dir of [a, b]) {
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'config.json'), '{}');
  }
  registerModel(home, a, 'mine');
  assert.throws(() => registerModel(home, b, 'mine'), /the name "mine" is taken by .*; pick another with --name/);
  assert.throws(() => registerModel(home, path.join(home, 'missing')), /is not a model folder: it has no config\.json/);
});
