// bench:offload:check — the CPU subset of bench:offload run as the CLI it is, with its
// figures checked: the offload path (host store, block-pool bookkeeping, batched miss
// uploads) and its comparison points keep running and keep reporting sane numbers, in
// fp32 and fp16 side by side. About 15 s on two cores, most of it fp16 (which the CPU
// provider runs slowly); test/bench/offload-bench.test.ts runs the fp32 part in about 8 s.
//
//   npm run bench:offload:check                 (fp32 and fp16)
//   npm run bench:offload:check -- --precision fp32
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import type { OffloadRow, PrecisionCheck, PrefillRow } from './offload.js';

type Precision = 'fp32' | 'fp16';
type Check = { maxAbsLogitDiff: number; sameArgmax: boolean };

export interface QuickReport {
  rows: OffloadRow[];
  prefill: PrefillRow[];
  checks: Record<string, Partial<Record<Precision, Check>>>;
  precisionChecks: Record<string, PrecisionCheck>;
}

const MODEL = 'panorama-code-13m';
const root = path.resolve(__dirname, '..');

/** Runs bench/offload.ts's quick CPU subset in `precisions`; returns the report and where it was written. */
export async function runQuickOffload(precisions: readonly Precision[]): Promise<{ report: QuickReport; out: string }> {
  const out = path.join(mkdtempSync(path.join(os.tmpdir(), 'offload-bench-')), 'offload.json');
  const args = [
    '--device',
    'cpu',
    '--models',
    'default',
    '--quick',
    '--skip-rates',
    '--tile',
    '1024',
    '--contexts',
    '6144',
    '--steps',
    '3',
    '--pool-blocks',
    '36',
    '--check',
    'default',
    '--precision',
    precisions.join(','),
    '--prefill-tokens',
    '128',
    '--out',
    out,
  ];
  await promisify(execFile)(process.execPath, ['--import', 'tsx', 'bench/offload.ts', ...args], { cwd: root });
  return { report: JSON.parse(readFileSync(out, 'utf8')) as QuickReport, out };
}

/** The figures of a quick run that must hold on any machine. */
export function checkQuickOffload({ report, out }: { report: QuickReport; out: string }, precisions: readonly Precision[]): void {
  const byMode = (mode: string) => precisions.map((p) => `${mode} ${p}`);
  assert.deepEqual(
    report.rows.map((r) => `${r.mode} ${r.precision}`),
    ['dense', 'sparse-device', 'sparse-offload'].flatMap(byMode),
  );
  for (const row of report.rows) assert.ok(row.decodeMsPerToken! > 0, `${row.mode} ${row.precision} decoded`);
  const [dense, device, offload] = report.rows.filter((r) => r.precision === 'fp32');
  assert.ok(offload.hitRate! > 0.5 && offload.hitRate! <= 1, `hit rate ${offload.hitRate}`);
  assert.ok(offload.blockBytesPerToken! > 0, 'misses were uploaded');
  assert.equal(device.blockBytesPerToken, 0);
  // 36 slots of 96 blocks (at 3,072 tokens the shipped weights' selections all stay in the pool): the pool holds less KV than the host (and the all-resident modes hold it all).
  assert.ok(offload.deviceKvBytes! < device.deviceKvBytes!, `${offload.deviceKvBytes} < ${device.deviceKvBytes}`);
  assert.equal(dense.deviceKvBytes, device.deviceKvBytes);
  // The CPU provider runs the resident graphs: same logits as the host path; fp16 weights close to them.
  const checks = report.checks[MODEL];
  assert.ok(checks.fp32 && checks.fp32.maxAbsLogitDiff < 1e-4 && checks.fp32.sameArgmax, JSON.stringify(checks.fp32));
  if (precisions.includes('fp16')) {
    assert.ok(checks.fp16 && checks.fp16.maxAbsLogitDiff > 0 && checks.fp16.maxAbsLogitDiff < 0.05 && checks.fp16.sameArgmax, JSON.stringify(checks.fp16));
    const precision = report.precisionChecks[MODEL];
    assert.ok(precision.maxAbsLogitDiff > 0 && precision.maxAbsLogitDiff < 0.05 && precision.sameArgmaxSteps === precision.steps, JSON.stringify(precision));
    // fp16 reads half the bytes of weights per token.
    assert.ok(report.rows[1].deviceBytesPerToken! < report.rows[0].deviceBytesPerToken!);
  }
  // Prefill of a 128-token chunk after the context, every mode on the resident decoder, and the host path.
  assert.deepEqual(
    report.prefill.map((r) => `${r.mode} ${r.precision}`),
    ['dense', 'sparse-device', 'sparse-offload', 'host-path'].flatMap(byMode),
  );
  for (const row of report.prefill) assert.ok(row.tokensPerSecond! > 0 && row.tokens === 128, `${row.mode} ${row.precision} prefilled`);
  const [denseFill, deviceFill, offloadFill] = report.prefill.filter((r) => r.precision === 'fp32');
  // All-resident modes upload only the chunk's own blocks (~2 per head and layer for 128 tokens); the 36-slot pool also its misses, in groups of rows.
  assert.equal(denseFill.blockBytesPerToken, deviceFill.blockBytesPerToken);
  assert.ok(offloadFill.blockBytesPerToken! > deviceFill.blockBytesPerToken!, `${offloadFill.blockBytesPerToken} > ${deviceFill.blockBytesPerToken}`);
  assert.ok(offloadFill.hitRate! > 0 && offloadFill.hitRate! < 1, `prefill hit rate ${offloadFill.hitRate}`);
  assert.equal(deviceFill.attendCallsPerLayer, 1);
  assert.ok(offloadFill.attendCallsPerLayer! > 1);
  for (const suffix of ['.md', `-${MODEL}.svg`, `-${MODEL}-prefill.svg`]) assert.ok(existsSync(out.replace(/\.json$/, suffix)), `${suffix} written`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { precision: { type: 'string', default: 'fp32,fp16' } } });
  const precisions = (values.precision ?? '').split(',').map((p) => {
    if (p !== 'fp32' && p !== 'fp16') throw new Error(`--precision takes fp32, fp16 or fp32,fp16, got "${p}"`);
    return p;
  });
  if (!precisions.includes('fp32')) throw new Error('--precision must include fp32: the other figures are checked against it');
  const started = performance.now();
  const run = await runQuickOffload(precisions);
  checkQuickOffload(run, precisions);
  process.stdout.write(`bench:offload:check: ${precisions.join(', ')} figures hold (${((performance.now() - started) / 1000).toFixed(0)} s); report in ${run.out}\n`);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`bench:offload:check failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  });
}
