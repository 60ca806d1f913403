// Fit numbers for the real MiniCPM-SALA-9B config (written from the spec's config table).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseConfig } from '../../engine/model/config.js';
import { checkFit, estimateFit, weightBytes } from '../../engine/hub/fit.js';

const SALA_9B = parseConfig(JSON.parse(readFileSync(path.join(__dirname, 'fixtures', 'minicpm-sala-9b.config.json'), 'utf8')));
const CONTEXT = 131_072;
const GB = 1e9;

test('the 9B has 9.48B parameters; its weights are 37.9 GB in fp32, 19.0 in fp16, 6.5 in int4 (embedding fp16)', () => {
  const e = estimateFit(SALA_9B, 'gpu', 'fp16', CONTEXT);
  assert.equal(e.parameters, 9_477_203_968);
  assert.equal((weightBytes(SALA_9B, 'fp32') / GB).toFixed(1), '37.9');
  assert.equal((weightBytes(SALA_9B, 'fp16') / GB).toFixed(1), '19.0');
  // int4: 0.640625 B per matrix parameter; the 73448 × 4096 embedding stays fp16 (2 B).
  const embedding = 73448 * 4096;
  const norms = 4096 * (2 * 32 + 1) + 24 * (2 * 128 + 4096);
  assert.equal(weightBytes(SALA_9B, 'int4'), (9_477_203_968 - embedding - norms) * 0.640625 + embedding * 2 + norms * 4);
  assert.equal((weightBytes(SALA_9B, 'int4') / GB).toFixed(1), '6.5');
});

test('context: 16 KiB of K/V per token from the 8 sparse layers, 48 MiB of Lightning state from the 24 others', () => {
  const e = estimateFit(SALA_9B, 'cpu', 'fp32', CONTEXT);
  assert.equal(e.kvBytesPerToken, 8 * 2 * 2 * 128 * 4);
  assert.equal(e.lightningStateBytes, 24 * 32 * 128 * 128 * 4);
  // a GPU holds the block pool (4 × 128 slots × 64 tokens per KV head and sparse layer) and compressed keys
  const gpu = estimateFit(SALA_9B, 'gpu', 'fp16', CONTEXT);
  const pool = 8 * 2 * 512 * 64 * 128 * 2 * 4;
  const compressed = 8 * 2 * 128 * 4 * (1 / 16 + 1 / 64) * CONTEXT;
  assert.equal(gpu.gpuBytes, weightBytes(SALA_9B, 'fp16') + pool + compressed + e.lightningStateBytes + 768 * 2 ** 20);
  assert.equal((gpu.gpuBytes / GB).toFixed(1), '20.4');
});

test('a GPU with 8 GB refuses fp16 and names int4 or the CPU; 24 GB fits fp16', () => {
  const small = checkFit(SALA_9B, { hostMemoryBytes: 64 * GB, gpuMemoryBytes: 8 * 2 ** 30 }, 'gpu', 'fp16', CONTEXT);
  assert.equal(small.fits, false);
  assert.equal(small.reason, 'needs 20.4 GB of GPU memory in fp16, this GPU has 8.6: use int4 (8.0 GB) or the CPU (fp32, 39.0 GB of memory to load)');
  assert.equal(checkFit(SALA_9B, { hostMemoryBytes: 64 * GB, gpuMemoryBytes: 24 * GB }, 'gpu', 'fp16', CONTEXT).fits, true);
});

test('loading needs 4 bytes a parameter of host memory on any device: a 32 GB machine cannot load the 9B, even for a GPU', () => {
  const verdict = checkFit(SALA_9B, { hostMemoryBytes: 32 * GB, gpuMemoryBytes: 80 * GB }, 'gpu', 'int4', CONTEXT);
  assert.equal(verdict.fits, false);
  assert.match(
    verdict.reason ?? '',
    /^needs 39\.0 GB of memory in int4 on the GPU \(6\.5 GB of weights on the GPU; loading reads them as fp32 first: 39\.0 GB\), this machine has 32\.0$/,
  );
});

test('on the CPU with 16 GB the 9B is refused in every precision; with 64 GB fp32 fits at 128K', () => {
  for (const precision of ['fp32', 'fp16', 'int4'] as const) {
    const verdict = checkFit(SALA_9B, { hostMemoryBytes: 16 * GB }, 'cpu', precision, CONTEXT);
    assert.equal(verdict.fits, false, precision);
    assert.match(verdict.reason ?? '', /this machine has 16\.0$/);
  }
  assert.equal(checkFit(SALA_9B, { hostMemoryBytes: 64 * GB }, 'cpu', 'fp32', CONTEXT).fits, true);
});

test('a long context spills K/V to disk past 40% of RAM instead of refusing', () => {
  const long = checkFit(SALA_9B, { hostMemoryBytes: 48 * GB, gpuMemoryBytes: 80 * GB }, 'gpu', 'int4', 2_097_152);
  assert.equal(long.fits, true, long.reason);
  assert.ok(long.estimate.kvBytesPerToken * 2_097_152 > 0.4 * 48 * GB, 'the K/V alone is past the in-memory share');
});

test('speed scales with parameter count from the measured rates', () => {
  const gpu = estimateFit(SALA_9B, 'gpu', 'int4', CONTEXT);
  assert.equal(gpu.decodeMsPerToken, 12.97, 'the 9B shape itself was measured (CUDA, int4)');
  assert.equal(gpu.indexTokensPerSecond, 1912);
  // Precisions not measured on CUDA keep WebGPU's ratios between them.
  assert.equal(estimateFit(SALA_9B, 'gpu', 'fp16', CONTEXT).decodeMsPerToken.toFixed(2), ((12.97 * 218.1) / 175.8).toFixed(2));
  const cpu = estimateFit(SALA_9B, 'cpu', 'fp32', CONTEXT);
  assert.equal(cpu.decodeMsPerToken.toFixed(0), ((23.2 * 9_477_203_968) / 21.2e6).toFixed(0));
  assert.ok(cpu.indexTokensPerSecond > 2 && cpu.indexTokensPerSecond < 3);
});
