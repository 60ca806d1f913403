// A smoke test of bench:offload on the CPU, run as the CLI it is, in fp32 only (a few
// seconds): the offload path (host store, block-pool bookkeeping, batched miss
// uploads) and its comparison points keep running and report sane figures. The same
// run with fp16 beside it, which takes minutes, is `npm run bench:offload:check`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkQuickOffload, runQuickOffload } from '../../bench/offload-check.js';

const run = promisify(execFile);
const root = path.resolve(__dirname, '../..');

test(
  "bench:offload --device cpu --quick in fp32: decode and prefill rows for dense, sparse on-device and sparse offloaded (and the host path's prefill), the resident graphs equal to the host path",
  { timeout: 120_000 },
  async () => {
    checkQuickOffload(await runQuickOffload(['fp32']), ['fp32']);
  },
);

test(
  'bench:offload --modes dense,dense-gather: dense steps over the store in place beside the gather they replaced; an unknown mode is refused',
  { timeout: 120_000 },
  async () => {
    const out = path.join(mkdtempSync(path.join(os.tmpdir(), 'offload-')), 'dense.json');
    const args = ['--import', 'tsx', 'bench/offload.ts', '--device', 'cpu', '--models', 'default', '--precision', 'fp32', '--contexts', '4096', '--steps', '4'];
    await run(process.execPath, [...args, '--check', 'none', '--modes', 'dense,dense-gather', '--out', out], { cwd: root, timeout: 110_000 });
    const rows: { mode: string; decodeMsPerToken: number; deviceKvBytes: number }[] = JSON.parse(readFileSync(out, 'utf8')).rows;
    assert.deepEqual(
      rows.map((r) => r.mode),
      ['dense', 'dense-gather'],
    );
    for (const r of rows) assert.ok(r.decodeMsPerToken > 0, JSON.stringify(r));
    // The gather's decoder has room for 4× the run (so its steps gather): about 4× the device KV.
    const [inPlace, gather] = rows;
    assert.ok(gather.deviceKvBytes > 3 * inPlace.deviceKvBytes, `${gather.deviceKvBytes} against ${inPlace.deviceKvBytes}`);
    await assert.rejects(
      run(process.execPath, [...args, '--modes', 'dense,sparse'], { cwd: root, timeout: 60_000 }),
      /--modes takes dense, dense-gather, sparse-device and sparse-offload, got sparse/,
    );
  },
);
