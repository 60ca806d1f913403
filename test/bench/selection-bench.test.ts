// bench:selection on the CPU provider, as a real child process: every part of the decode
// selection and of a prefill chunk's timed at each context, a table of them, and clear
// errors for a bad context or row count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const run = promisify(execFile);
const root = path.resolve(__dirname, '../..');

test("bench:selection times the captured selection, a prefill chunk's, and their parts at each context", async () => {
  const out = path.join(mkdtempSync(path.join(os.tmpdir(), 'selection-')), 'selection.json');
  const args = ['--import', 'tsx', 'bench/selection.ts', '--device', 'cpu', '--contexts', '8192,16384', '--prefill-rows', '64', '--runs', '2', '--out', out];
  await run(process.execPath, args, { cwd: root, timeout: 120_000 });
  const report: { rows: { context: number; part: string; msPerRun: number }[] } = JSON.parse(readFileSync(out, 'utf8'));
  const parts = [
    'selection',
    'selection, stage 1 over transposed stores',
    'stage 1',
    'coarse log-sum-exp, one reduction',
    'coarse log-sum-exp, two stages',
    'pooling + top-k',
    ...[
      'selection',
      'stage 1, log-sum-exp one-pass',
      'stage 1, log-sum-exp chunked',
      'stage 1, log-sum-exp one-pass, as before 2026-12-08',
      'coarse log-sum-exp one-pass alone',
      'coarse log-sum-exp chunked alone',
    ].map((p) => `prefill, 64 rows: ${p}`),
  ];
  assert.deepEqual(
    report.rows.map((r) => `${r.context} ${r.part}`),
    [8192, 16384].flatMap((context) => parts.map((part) => `${context} ${part}`)),
  );
  for (const row of report.rows) assert.ok(row.msPerRun > 0 && row.msPerRun < 1000, JSON.stringify(row));
  const table = readFileSync(out.replace(/\.json$/, '.md'), 'utf8');
  assert.match(table, /\| coarse log-sum-exp, two stages \| [\d.]+ \| [\d.]+ \|/);
  assert.match(table, /\| prefill, 64 rows: stage 1, log-sum-exp chunked \| [\d.]+ \| [\d.]+ \|/);
});

test('bench:selection refuses a prefill row count that is not a whole number', async () => {
  const args = ['--import', 'tsx', 'bench/selection.ts', '--device', 'cpu', '--contexts', '8192', '--prefill-rows', '0'];
  await assert.rejects(run(process.execPath, args, { cwd: root, timeout: 60_000 }), /--prefill-rows takes whole numbers ≥ 1, got 0/);
});

test('bench:selection refuses a context that is not a whole number of 64-block groups', async () => {
  const args = ['--import', 'tsx', 'bench/selection.ts', '--device', 'cpu', '--contexts', '5000'];
  await assert.rejects(run(process.execPath, args, { cwd: root, timeout: 60_000 }), /--contexts takes multiples of 4096 tokens, got 5000/);
});
