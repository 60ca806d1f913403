// Merges bench:offload result files (several device runs: a session's device time
// comes in pieces) into one table and charts.
//   node --import tsx bench/offload-report.ts DIR run1.json run2.json …   (later files add rows, never replace)
// Rows are keyed by model, context, mode and precision (rows without one are fp32);
// ratios compare rows of one precision, and "fp32 ÷ fp16" the two precisions.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { MODES, decodeChart, type OffloadRow } from './offload.js';
import { lineChart } from './svg-chart.js';

const [dir, ...files] = process.argv.slice(2);
const rows: (OffloadRow & { run: string })[] = [];
for (const file of files) {
  const data = JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as { rows: OffloadRow[] };
  for (const row of data.rows) {
    const precision = row.precision ?? 'fp32';
    if (rows.some((r) => r.model === row.model && r.context === row.context && r.mode === row.mode && r.precision === precision)) continue;
    rows.push({ ...row, precision, run: file.replace(/\.json$/, '') });
  }
}
rows.sort((a, b) => a.model.localeCompare(b.model) || a.context - b.context || MODES.indexOf(a.mode) - MODES.indexOf(b.mode) || (a.precision ?? '').localeCompare(b.precision ?? '') * -1);
const mib = (b?: number) => (b === undefined ? '–' : (b / 2 ** 20).toFixed(0));
const lines = [
  '| model | context | mode | precision | decode ms/token | fp32 ÷ fp16 | × dense | offload ÷ on-device | hit rate | blocks up MiB/token | device KV MiB | host KV MiB | device ÷ host KV | run |',
  '|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
];
for (const r of rows) {
  const same = (mode: string, precision = r.precision) => rows.find((o) => o.model === r.model && o.context === r.context && o.mode === mode && o.precision === precision);
  const dense = same('dense')?.decodeMsPerToken;
  const device = same('sparse-device')?.decodeMsPerToken;
  const ms = r.decodeMsPerToken;
  const single = r.precision === 'fp16' ? same(r.mode, 'fp32') : undefined;
  const speedup = single?.decodeMsPerToken && ms && single.run === r.run ? `${(single.decodeMsPerToken / ms).toFixed(2)}×` : '–';
  lines.push(
    `| ${r.model} | ${r.context} | ${r.mode} | ${r.precision} | ${ms?.toFixed(1) ?? `– (${r.skipped})`} | ${speedup} | ${r.mode !== 'dense' && dense && ms ? `${(dense / ms).toFixed(2)}×` : '–'} | ` +
      `${r.mode === 'sparse-offload' && device && ms ? `${(ms / device).toFixed(2)}×` : '–'} | ${r.hitRate === undefined ? '–' : `${(100 * r.hitRate).toFixed(1)}%`} | ` +
      `${r.blockBytesPerToken === undefined ? '–' : (r.blockBytesPerToken / 2 ** 20).toFixed(2)} | ${mib(r.deviceKvBytes)} | ${mib(r.hostKvBytes)} | ` +
      `${r.deviceKvBytes && r.hostKvBytes ? `${((100 * r.deviceKvBytes) / r.hostKvBytes).toFixed(1)}%` : '–'} | ${r.run} |`,
  );
}
writeFileSync(path.join(dir, 'table.md'), `${lines.join('\n')}\n`);
for (const model of new Set(rows.map((r) => r.model))) {
  const mine = rows.filter((r) => r.model === model);
  const slug = model.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
  writeFileSync(path.join(dir, `decode-${slug}.svg`), decodeChart(`${model}: decode ms/token, WebGPU on one H100 (fp16 dashed)`, mine));
}
writeFileSync(
  path.join(dir, 'hit-rate.svg'),
  lineChart({
    title: 'Offload block-cache hit rate (%)',
    xLabel: 'context tokens',
    yLabel: 'hit rate %',
    logY: false,
    series: [...new Set(rows.map((r) => r.model))].map((model) => ({
      name: model.replace('random MiniCPM-SALA-9B shape', '9B shape (random)'),
      points: rows.filter((r) => r.model === model && r.precision === 'fp32' && r.hitRate !== undefined).map((r) => [r.context, 100 * r.hitRate!] as [number, number]),
    })),
  }),
);
process.stdout.write(`${lines.join('\n')}\n`);
