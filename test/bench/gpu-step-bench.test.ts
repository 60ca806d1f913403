// bench:gpu-step on the CPU provider, as a real child process: the figures and floors it
// writes are positive and consistent, and the bus estimate grows with the context.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { hostExecutorBusBytes } from '../../bench/gpu-step.js';
import { parseConfig } from '../../engine/model/config.js';
import { SALA_9B_SHAPE } from '../../bench/random-model.js';

const run = promisify(execFile);
const root = path.resolve(__dirname, '../..');

test('bench:gpu-step writes decode, prefill (first call and later calls) and floor figures for each context and precision', async () => {
  const out = path.join(mkdtempSync(path.join(os.tmpdir(), 'gpu-step-')), 'gpu-step.json');
  const args = [
    '--import',
    'tsx',
    'bench/gpu-step.ts',
    '--devices',
    'cpu',
    '--models',
    'default',
    '--precisions',
    'fp32,int4',
    '--contexts',
    '4096,2048',
    '--steps',
    '2',
    '--prefill',
    '32',
    '--prefill-calls',
    '3',
    '--tile',
    '512',
    '--out',
    out,
  ];
  await run(process.execPath, args, { cwd: root, timeout: 120_000 });
  const report = JSON.parse(readFileSync(out, 'utf8'));
  const floors = report.floors.cpu;
  assert.ok(floors.readGBps > 0 && floors.matmulTflops > 0 && floors.h2dGBps > 0, JSON.stringify(floors));
  assert.equal(report.rows.length, 4);
  // A shorter context after a longer one is measured at its own length.
  assert.deepEqual(
    report.rows.map((r: { context: number; contextTokens: number }) => `${r.context}:${r.contextTokens}`),
    ['4096:4096', '2048:2048', '4096:4096', '2048:2048'],
  );
  for (const row of report.rows) {
    assert.equal(row.skipped, undefined);
    assert.ok(row.decodeMsPerToken > 0 && row.prefillTokensPerSecond > 0 && row.prefillWarmTokensPerSecond > 0, JSON.stringify(row));
    assert.ok(Math.abs(row.decodeOverFloor - row.decodeMsPerToken / row.decodeFloorMs) < 1e-9);
  }
  const [fp32, int4] = ['fp32', 'int4'].map((p) => report.rows.find((r: { precision: string }) => r.precision === p));
  assert.ok(int4.decodeFloorMs < fp32.decodeFloorMs / 4, 'int4 weights are under a quarter of fp32 bytes');
  assert.match(readFileSync(out.replace(/\.json$/, '.md'), 'utf8'), /\| prefill tok\/s \| later calls tok\/s \|/);
  assert.ok(existsSync(out.replace(/\.json$/, '-panorama-code-13m.svg')));
});

test('the host executor’s bus estimate: Lightning states every step, selected blocks and compressed keys past dense_len', () => {
  const config = parseConfig(SALA_9B_SHAPE, '9b');
  const at8k = hostExecutorBusBytes(config, 8192);
  const at128k = hostExecutorBusBytes(config, 131072);
  // 24 Lightning layers × (2 MiB in + 2 MiB out) alone are 96 MiB.
  assert.ok(at8k > 96 * 2 ** 20);
  assert.ok(at128k > at8k, 'compressed keys grow with the context');
  // Measured on an H200 as 197 / 272 MiB (docs/benchmarks/gpu.md).
  assert.ok(Math.abs(at8k / 2 ** 20 - 197.3) < 1 && Math.abs(at128k / 2 ** 20 - 272.3) < 1, `${at8k / 2 ** 20} / ${at128k / 2 ** 20}`);
});

test('bench:gpu-step --block-upload: offload rows with the missed blocks copied from the store, staged and through ScatterND, the same tokens', async () => {
  const out = path.join(mkdtempSync(path.join(os.tmpdir(), 'gpu-step-')), 'uploads.json');
  const args = ['--import', 'tsx', 'bench/gpu-step.ts', '--devices', 'cpu', '--models', 'default', '--precisions', 'fp32', '--contexts', '8192'];
  args.push('--placements', 'offload', '--block-upload', 'direct,staged,scatter', '--steps', '4', '--warmup', '1', '--prefill', '64', '--tile', '512', '--out', out);
  // The binding addon on the CPU provider: the CUDA path's code, host memory as its device.
  const { stderr } = await run(process.execPath, args, { cwd: root, timeout: 120_000, env: { ...process.env, PANORAMA_NATIVE_CPU: '1', PANORAMA_PROFILE_RUNS: '1' } });
  const report = JSON.parse(readFileSync(out, 'utf8'));
  assert.deepEqual(
    report.rows.map((r: { blockUpload: string }) => r.blockUpload),
    ['direct', 'staged', 'scatter'],
  );
  const [direct, staged, scatter] = report.rows;
  for (const row of [staged, scatter]) assert.deepEqual(row.decodeIds, direct.decodeIds);
  // The same blocks moved; ScatterND also uploads its index tensors.
  assert.equal(staged.busBytesPerToken, direct.busBytesPerToken);
  assert.ok(scatter.busBytesPerToken >= direct.busBytesPerToken);
  // Each row's prefill wrote its pool one way only.
  for (const row of [direct, staged]) assert.ok(row.prefillProfile.write_rows && !row.prefillProfile.scatter_float_4, JSON.stringify(row.prefillProfile));
  assert.ok(scatter.prefillProfile.scatter_float_4 && !scatter.prefillProfile.write_rows, JSON.stringify(scatter.prefillProfile));
  const table = readFileSync(out.replace(/\.json$/, '.md'), 'utf8');
  assert.match(table, /offload \(misses by ScatterND\)/);
  assert.match(table, /offload \(misses staged, store not page-locked\)/);
  assert.match(stderr, /8192 offload \(captured\) \(blocks: direct\)/);
});

test('bench:gpu-step --stage-one and --sparse-step: selection in place and transposed, offloaded steps captured and split, the same tokens', async () => {
  const out = path.join(mkdtempSync(path.join(os.tmpdir(), 'gpu-step-')), 'stage-one.json');
  const args = ['--import', 'tsx', 'bench/gpu-step.ts', '--devices', 'cpu', '--models', 'default', '--precisions', 'fp32', '--contexts', '8192'];
  args.push('--placements', 'offload,device', '--stage-one', 'keys-major,transposed', '--sparse-step', 'captured,split');
  args.push('--steps', '4', '--warmup', '1', '--prefill', '64', '--tile', '512', '--out', out);
  const env = { ...process.env, PANORAMA_NATIVE_CPU: '1', PANORAMA_CUDA_GRAPH: '1', PANORAMA_PROFILE_RUNS: '1' };
  await run(process.execPath, args, { cwd: root, timeout: 240_000, env });
  const rows: { placement: string; sparseStep?: string; stageOne?: string; decodeIds: number[]; profile: Record<string, unknown> }[] = JSON.parse(readFileSync(out, 'utf8')).rows;
  assert.deepEqual(
    rows.map((r) => `${r.placement} ${r.sparseStep} ${r.stageOne}`),
    [
      'offload captured keys-major',
      'offload captured transposed',
      'offload split keys-major',
      'offload split transposed',
      'device captured keys-major',
      'device captured transposed',
      'device split undefined',
    ],
  );
  for (const row of rows) assert.deepEqual(row.decodeIds, rows[0].decodeIds, `${row.placement} ${row.sparseStep} ${row.stageOne}`);
  const ran = (row: (typeof rows)[number], ...graphs: string[]) => graphs.map((name) => (row.profile[name] ? name : `-${name}`)).join(' ');
  // Offloaded and captured: the selection and the attention as two graphs a layer, no session-run selection.
  assert.equal(ran(rows[0], 'sparse_select_captured', 'sparse_attend_captured', 'sparse_select_step'), 'sparse_select_captured sparse_attend_captured -sparse_select_step');
  // Split: the one-query selection graph, or the general one when transposed.
  assert.equal(ran(rows[2], 'sparse_select_step', 'sparse_select_resident', 'sparse_attend_resident'), 'sparse_select_step -sparse_select_resident sparse_attend_resident');
  assert.equal(ran(rows[3], 'sparse_select_step', 'sparse_select_resident'), '-sparse_select_step sparse_select_resident');
  assert.equal(ran(rows[4], 'sparse_step_captured', 'sparse_select_captured'), 'sparse_step_captured -sparse_select_captured');
});
