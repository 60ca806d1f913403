// Merges bench:offload result files (several runs, each of some contexts or modes) into
// one table and charts, decode and prefill.
//   node --import tsx bench/offload-report.ts DIR [--prefix P] run1.json run2.json …   (later files add rows, never replace)
// Outputs go to DIR as P + table.md, prefill-table.md, decode-*.svg, prefill-*.svg, hit-rate.svg.
// Rows are keyed by model, context, mode and precision (rows without one are fp32);
// ratios compare rows of one precision, and "fp32 ÷ fp16" the two precisions.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { MODES, PREFILL_MODES, decodeChart, prefillChart, type OffloadRow, type PrefillRow } from './offload.js';
import { lineChart } from './svg-chart.js';

const [dir, ...rest] = process.argv.slice(2);
const prefixAt = rest.indexOf('--prefix');
const prefix = prefixAt >= 0 ? rest.splice(prefixAt, 2)[1] : '';
const files = rest;
const rows: (OffloadRow & { run: string })[] = [];
const prefillRows: (PrefillRow & { run: string })[] = [];
for (const file of files) {
  const data = JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as { rows: OffloadRow[]; prefill?: PrefillRow[] };
  for (const row of data.prefill ?? []) {
    const mode = row.mode ?? 'host-path';
    if (prefillRows.some((r) => r.model === row.model && r.context === row.context && r.mode === mode && r.precision === row.precision)) continue;
    prefillRows.push({ ...row, mode, run: file.replace(/\.json$/, '') });
  }
  for (const row of data.rows) {
    const precision = row.precision ?? 'fp32';
    if (rows.some((r) => r.model === row.model && r.context === row.context && r.mode === row.mode && r.precision === precision)) continue;
    rows.push({ ...row, precision, run: file.replace(/\.json$/, '') });
  }
}
rows.sort(
  (a, b) => a.model.localeCompare(b.model) || a.context - b.context || MODES.indexOf(a.mode) - MODES.indexOf(b.mode) || (a.precision ?? '').localeCompare(b.precision ?? '') * -1,
);
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
writeFileSync(path.join(dir, `${prefix}table.md`), `${lines.join('\n')}\n`);
for (const model of new Set(rows.map((r) => r.model))) {
  const mine = rows.filter((r) => r.model === model);
  const slug = model.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
  writeFileSync(path.join(dir, `${prefix}decode-${slug}.svg`), decodeChart(`${model}: decode ms/token, WebGPU on one H100 (fp16 dashed)`, mine));
}
// One precision's hit rates (fp32 where the runs have it): the pool's bookkeeping does not depend on it.
const hitRatePrecision = rows.some((r) => r.precision === 'fp32') ? 'fp32' : 'fp16';
writeFileSync(
  path.join(dir, `${prefix}hit-rate.svg`),
  lineChart({
    title: 'Offload block-cache hit rate (%)',
    xLabel: 'context tokens',
    yLabel: 'hit rate %',
    logY: false,
    series: [...new Set(rows.map((r) => r.model))].map((model) => ({
      name: model.replace('random MiniCPM-SALA-9B shape', '9B shape (random)'),
      points: rows.filter((r) => r.model === model && r.precision === hitRatePrecision && r.hitRate !== undefined).map((r) => [r.context, 100 * r.hitRate!] as [number, number]),
    })),
  }),
);
process.stdout.write(`${lines.join('\n')}\n`);

// Prefill: tok/s per mode, sparse against dense, offload against all-on-device, resident against the host path.
prefillRows.sort(
  (a, b) => a.model.localeCompare(b.model) || a.context - b.context || PREFILL_MODES.indexOf(a.mode!) - PREFILL_MODES.indexOf(b.mode!) || a.precision.localeCompare(b.precision),
);
const prefillLines = [
  '| model | context | mode | precision | prefill tok/s | × dense | offload ÷ on-device (time) | × host path | hit rate | blocks up MiB/token | attention calls per layer | run |',
  '|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|',
];
for (const r of prefillRows) {
  const same = (mode: string) => prefillRows.find((o) => o.model === r.model && o.context === r.context && o.mode === mode && o.precision === r.precision)?.tokensPerSecond;
  const rate = r.tokensPerSecond;
  const dense = same('dense');
  const device = same('sparse-device');
  const host = same('host-path');
  const ratio = (x?: number) => (x === undefined ? '–' : `${x.toFixed(2)}×`);
  prefillLines.push(
    `| ${r.model} | ${r.context} | ${r.mode} | ${r.precision} | ${rate?.toFixed(0) ?? `– (${r.skipped})`} | ${r.mode !== 'dense' && r.mode !== 'host-path' && dense && rate ? ratio(rate / dense) : '–'} | ` +
      `${r.mode === 'sparse-offload' && device && rate ? ratio(device / rate) : '–'} | ${r.mode !== 'host-path' && host && rate ? ratio(rate / host) : '–'} | ` +
      `${r.hitRate === undefined ? '–' : `${(100 * r.hitRate).toFixed(1)}%`} | ${r.blockBytesPerToken === undefined ? '–' : (r.blockBytesPerToken / 2 ** 20).toFixed(2)} | ${r.attendCallsPerLayer?.toFixed(1) ?? '–'} | ${r.run} |`,
  );
}
if (prefillRows.length > 0) {
  writeFileSync(path.join(dir, `${prefix}prefill-table.md`), `${prefillLines.join('\n')}\n`);
  for (const model of new Set(prefillRows.map((r) => r.model))) {
    const slug = model.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
    writeFileSync(
      path.join(dir, `${prefix}prefill-${slug}.svg`),
      prefillChart(
        `${model}: prefill tokens/s after the context, WebGPU on one H100`,
        prefillRows.filter((r) => r.model === model && r.tokensPerSecond !== undefined),
      ),
    );
  }
  process.stdout.write(`\n${prefillLines.join('\n')}\n`);
}
