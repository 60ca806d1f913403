import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EngineStatus, InitializeResult } from '../../engine/server/protocol.js';
import { formatTokens, remoteStatusView, statusView } from '../../extension/status-text.js';

const info: InitializeResult = {
  protocolVersion: 1,
  engineVersion: '0.1.0',
  model: { dir: '/m', name: 'm', parameters: 1, vocabSize: 2 },
  device: { kind: 'cpu', reason: 'requested' },
};
const base: EngineStatus = { state: 'ready', files: 12, liveTokens: 123_456, deadTokens: 0, tokenBudget: 1_000_000, device: 'cpu', excludedFiles: 0 };

test('token counts are short', () => {
  assert.deepEqual([999, 1_500, 12_345, 1_234_567, 12_000_000].map(formatTokens), ['999', '1.5K', '12K', '1.2M', '12M']);
});

test('indexing shows a percentage, ready shows tokens and device', () => {
  const running = { kind: 'running', info } as const;
  assert.equal(statusView(running, { ...base, state: 'indexing', progress: 0.427 }).label, 'Panorama: indexing 42%');
  const ready = statusView(running, base);
  assert.equal(ready.label, 'Panorama: ready, 123K tokens in context on cpu');
  assert.match(ready.tooltip, /12 files, 123K of 1.0M tokens/);
  assert.equal(statusView(running, { ...base, state: 'paused' }).severity, 'warning');
});

test('failures are errors whose tooltip carries the reason', () => {
  const failed = statusView({ kind: 'failed', message: 'model missing' }, undefined);
  assert.equal(failed.severity, 'error');
  assert.match(failed.tooltip, /model missing/);
  const engineError = statusView({ kind: 'running', info }, { ...base, state: 'error', error: 'disk full' });
  assert.match(engineError.tooltip, /disk full/);
});

test('the remote backend shows its host, what the last request cost, and what to fix', () => {
  const idle = remoteStatusView({ baseUrl: 'http://gpu-box:8000/v1', model: '' });
  assert.equal(idle.label, 'Panorama: remote gpu-box:8000');
  assert.match(idle.tooltip, /Model: the server's first model/);
  const last = {
    kind: 'chat',
    model: 'openbmb/MiniCPM-SALA',
    firstTokenMs: 812.4,
    totalMs: 4210,
    usage: { promptTokens: 101_234, completionTokens: 90, cachedTokens: 100_992 },
    prefix: { hash: 'abc123def456', chars: 398_000, files: 210, excluded: 3 },
  } as const;
  const used = remoteStatusView({ baseUrl: 'http://gpu-box:8000/v1', model: '', last });
  assert.match(used.tooltip, /Model: openbmb\/MiniCPM-SALA/);
  assert.match(used.tooltip, /210 files, 398K chars \(prefix abc123def456\), 3 files left out/);
  assert.match(used.tooltip, /Last chat: first token 812 ms, 4210 ms, 101K prompt tokens \(101K from the prefix cache\)/);
  const failed = remoteStatusView({ baseUrl: 'http://gpu-box:8000/v1', model: '', last, lastError: 'The remote server is busy (429).' });
  assert.equal(failed.severity, 'error');
  assert.match(failed.tooltip, /Error: The remote server is busy/);
  const unset = remoteStatusView({ baseUrl: '', model: '', problem: 'No remote server is set: put its address in the panorama.remote.baseUrl setting.' });
  assert.equal(unset.severity, 'warning');
  assert.equal(unset.label, 'Panorama: remote backend not set up');
  assert.match(unset.tooltip, /panorama\.remote\.baseUrl/);
});
