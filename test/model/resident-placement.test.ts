// Where a generation's decoder keeps the sparse KV (generation.ts, residentPlacement): all on a
// CUDA device while the whole context's KV fits ALL_ON_DEVICE_KV_BYTES, offloaded otherwise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { loadConfig } from '../../engine/model/config.js';
import { ALL_ON_DEVICE_KV_BYTES, residentPlacement } from '../../engine/model/generation.js';

const MODEL = path.resolve(__dirname, '../../models/panorama-code-13m');

test('CUDA keeps the KV on the device up to the budget, block by block; past it, elsewhere and with a pool size, it offloads', async () => {
  const config = await loadConfig(MODEL);
  // 3 sparse layers × 1 KV head × 64 values × fp32 × (K, V) = 1,536 bytes a token, 98,304 a block.
  const blockBytes = 3 * 1 * 64 * 4 * 2 * config.sparse.blockSize;
  const fitting = Math.floor(ALL_ON_DEVICE_KV_BYTES / blockBytes) * config.sparse.blockSize;
  assert.equal(fitting, 1_398_080);
  assert.equal(residentPlacement('cuda', config, fitting), 'device');
  assert.equal(residentPlacement('cuda', config, fitting + 1), 'offload', 'one token more needs one block more');
  assert.equal(residentPlacement('cuda', config, 100_000, { poolBytes: 256 * 2 ** 20 }), 'offload');
  assert.equal(residentPlacement('cuda', config, 100_000, { poolBlocks: 64 }), 'offload');
  assert.equal(residentPlacement('webgpu', config, 100_000), 'offload');
  assert.equal(residentPlacement('cpu', config, 100_000), 'offload');
});
