// The CPU subset of bench:offload, run as the CLI it is: the offload path (host
// store, block-pool bookkeeping, batched miss uploads) and its comparison points
// must keep running and keep reporting sane figures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { OffloadRow, PrecisionCheck, PrefillRow } from '../../bench/offload.js';

const run = promisify(execFile);
const root = path.resolve(__dirname, '../..');

test('bench:offload --device cpu --quick writes decode and prefill rows for dense, sparse on-device and sparse offloaded (and the host path\'s prefill), in fp32 and fp16 side by side', { timeout: 300_000 }, async () => {
  const out = path.join(mkdtempSync(path.join(os.tmpdir(), 'offload-bench-')), 'offload.json');
  await run(process.execPath, ['--import', 'tsx', 'bench/offload.ts', '--device', 'cpu', '--models', 'default', '--quick', '--skip-rates', '--tile', '1024', '--contexts', '3072', '--steps', '3', '--pool-blocks', '36', '--check', 'default', '--precision', 'fp32,fp16', '--prefill-tokens', '128', '--out', out], { cwd: root });
  type Check = { maxAbsLogitDiff: number; sameArgmax: boolean };
  const result = JSON.parse(readFileSync(out, 'utf8')) as {
    rows: OffloadRow[];
    prefill: PrefillRow[];
    checks: Record<string, Record<'fp32' | 'fp16', Check>>;
    precisionChecks: Record<string, PrecisionCheck>;
  };
  assert.deepEqual(result.rows.map((r) => `${r.mode} ${r.precision}`), ['dense fp32', 'dense fp16', 'sparse-device fp32', 'sparse-device fp16', 'sparse-offload fp32', 'sparse-offload fp16']);
  for (const row of result.rows) assert.ok(row.decodeMsPerToken! > 0, `${row.mode} ${row.precision} decoded`);
  const [dense, device, offload] = result.rows.filter((r) => r.precision === 'fp32');
  assert.ok(offload.hitRate! > 0.5 && offload.hitRate! <= 1, `hit rate ${offload.hitRate}`);
  assert.ok(offload.blockBytesPerToken! > 0, 'misses were uploaded');
  assert.equal(device.blockBytesPerToken, 0);
  // 36 slots of 48 blocks: the pool holds less KV than the host (and the all-resident modes hold it all).
  assert.ok(offload.deviceKvBytes! < device.deviceKvBytes!, `${offload.deviceKvBytes} < ${device.deviceKvBytes}`);
  assert.equal(dense.deviceKvBytes, device.deviceKvBytes);
  // The CPU provider runs the resident graphs: same logits as the host path; fp16 weights close to them.
  const { fp32, fp16 } = result.checks['panorama-code-13m'];
  assert.ok(fp32.maxAbsLogitDiff < 1e-4 && fp32.sameArgmax, JSON.stringify(fp32));
  assert.ok(fp16.maxAbsLogitDiff > 0 && fp16.maxAbsLogitDiff < 0.05 && fp16.sameArgmax, JSON.stringify(fp16));
  const precision = result.precisionChecks['panorama-code-13m'];
  assert.ok(precision.maxAbsLogitDiff > 0 && precision.maxAbsLogitDiff < 0.05 && precision.sameArgmaxSteps === precision.steps, JSON.stringify(precision));
  // fp16 reads half the bytes of weights per token.
  assert.ok(result.rows[1].deviceBytesPerToken! < result.rows[0].deviceBytesPerToken!);
  // Prefill of a 128-token chunk after the context, every mode on the resident decoder, and the host path.
  assert.deepEqual(result.prefill.map((r) => `${r.mode} ${r.precision}`), ['dense fp32', 'dense fp16', 'sparse-device fp32', 'sparse-device fp16', 'sparse-offload fp32', 'sparse-offload fp16', 'host-path fp32', 'host-path fp16']);
  for (const row of result.prefill) assert.ok(row.tokensPerSecond! > 0 && row.tokens === 128, `${row.mode} ${row.precision} prefilled`);
  const [denseFill, deviceFill, offloadFill] = result.prefill.filter((r) => r.precision === 'fp32');
  // All-resident modes upload only the chunk's own blocks (~2 per head and layer for 128 tokens); the 36-slot pool also its misses, in groups of rows.
  assert.equal(denseFill.blockBytesPerToken, deviceFill.blockBytesPerToken);
  assert.ok(offloadFill.blockBytesPerToken! > deviceFill.blockBytesPerToken!, `${offloadFill.blockBytesPerToken} > ${deviceFill.blockBytesPerToken}`);
  assert.ok(offloadFill.hitRate! > 0 && offloadFill.hitRate! < 1, `prefill hit rate ${offloadFill.hitRate}`);
  assert.equal(deviceFill.attendCallsPerLayer, 1);
  assert.ok(offloadFill.attendCallsPerLayer! > 1);
  assert.ok(existsSync(out.replace(/\.json$/, '-panorama-code-13m-prefill.svg')));
  assert.ok(existsSync(out.replace(/\.json$/, '.md')) && existsSync(out.replace(/\.json$/, '-panorama-code-13m.svg')));
});
