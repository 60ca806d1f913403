// CPU benchmark of the engine: prefill tokens/s and decode ms/token at several
// context lengths, for the fixture model and a random ~20M-parameter SALA model,
// plus the sparse-vs-dense decode ratio at the longest context, measured side by
// side in one run (the dense run continues a copy of the same sequence).
//
//   npm run bench -- --quick            (1K, 8K, 32K; few decode steps)
//   npm run bench -- --out FILE.json    (also writes the results as JSON)
import { parseArgs } from 'node:util';
import { writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { SalaModel, type Sequence } from '../engine/model/sala-model.js';
import { loadConfig, type SalaConfig } from '../engine/model/config.js';
import { loadWeights, type WeightMap } from '../engine/model/weights.js';
import { denseVariant, randomModel, SMALL_20M } from './random-model.js';
import { benchModel as benchOffload, defaultModelSpec, offloadTable, prefillTable, type OffloadRow, type PrefillRow } from './offload.js';

interface Row {
  model: string;
  parameters: number;
  context: number;
  path: 'dense' | 'sparse';
  prefillTokensPerSecond: number;
  decodeMsPerToken: number;
  denseDecodeMsPerToken?: number;
  sparseSpeedup?: number;
}

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    out: { type: 'string' },
    contexts: { type: 'string' },
    threads: { type: 'string' },
  },
});
const contexts = values.contexts ? values.contexts.split(',').map(Number) : [1024, 8000, 32768];
const decodeSteps = values.quick ? 8 : 32;
const threads = values.threads ? Number(values.threads) : 0;

function tokens(count: number, vocab: number): number[] {
  let state = 12345;
  return Array.from({ length: count }, () => {
    state = (state * 1103515245 + 12345) >>> 0;
    return 3 + (state % (vocab - 3));
  });
}

async function decodeMs(model: SalaModel, sequence: Sequence, steps: number): Promise<number> {
  await model.forward(sequence, [5]); // first call at a new shape pays onnxruntime's allocation
  const started = performance.now();
  for (let i = 0; i < steps; i++) await model.forward(sequence, [5 + i]);
  return (performance.now() - started) / steps;
}

async function benchModel(name: string, config: SalaConfig, weights: WeightMap, parameters: number): Promise<Row[]> {
  const model = await SalaModel.create(config, weights, { threads });
  const dense = await SalaModel.create(denseVariant(config), weights, { threads });
  const rows: Row[] = [];
  const longest = Math.max(...contexts);
  for (const context of contexts) {
    const ids = tokens(context, config.vocabSize);
    const sequence = model.newSequence(context + 2 * decodeSteps + 4);
    const started = performance.now();
    await model.forward(sequence, ids);
    const prefillTokensPerSecond = context / ((performance.now() - started) / 1000);
    const path = context >= config.sparse.denseLen ? 'sparse' : 'dense';
    const row: Row = { model: name, parameters, context, path, prefillTokensPerSecond, decodeMsPerToken: 0 };
    if (context === longest && path === 'sparse') {
      const copy = sequence.clone();
      row.decodeMsPerToken = await decodeMs(model, sequence, decodeSteps);
      row.denseDecodeMsPerToken = await decodeMs(dense, copy, decodeSteps);
      row.sparseSpeedup = row.denseDecodeMsPerToken / row.decodeMsPerToken;
    } else {
      row.decodeMsPerToken = await decodeMs(model, sequence, decodeSteps);
    }
    rows.push(row);
    process.stderr.write(`  ${name} @ ${context}: ${row.prefillTokensPerSecond.toFixed(0)} tok/s prefill, ${row.decodeMsPerToken.toFixed(1)} ms/token decode\n`);
  }
  await model.release();
  await dense.release();
  return rows;
}

function table(rows: Row[]): string {
  const lines = ['| model | params | context | attention | prefill tok/s | decode ms/token | dense decode ms/token | sparse speedup |', '|---|---:|---:|---|---:|---:|---:|---:|'];
  for (const r of rows) {
    lines.push(
      `| ${r.model} | ${(r.parameters / 1e6).toFixed(1)}M | ${r.context} | ${r.path} | ${r.prefillTokensPerSecond.toFixed(0)} | ${r.decodeMsPerToken.toFixed(2)} | ` +
        `${r.denseDecodeMsPerToken?.toFixed(2) ?? '–'} | ${r.sparseSpeedup ? `${r.sparseSpeedup.toFixed(2)}×` : '–'} |`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const fixtureDir = path.resolve(__dirname, '../test/fixtures/sala-tiny-a');
  const rows: Row[] = [];
  process.stderr.write(`bench: CPU, ${os.cpus().length} cores, contexts ${contexts.join(', ')}, ${decodeSteps} decode steps\n`);
  try {
    const config = await loadConfig(fixtureDir);
    const { weights } = await loadWeights(fixtureDir, config);
    const parameters = [...weights.values()].reduce((n, w) => n + w.length, 0);
    rows.push(...(await benchModel('sala-tiny-a (fixture)', config, weights, parameters)));
  } catch (err) {
    process.stderr.write(`bench: skipping the fixture model (${err instanceof Error ? err.message : String(err)})\n`);
  }
  const random = randomModel(SMALL_20M);
  rows.push(...(await benchModel('random 20M (9B sparse_config)', random.config, random.weights, random.parameters)));

  // The device-resident decoder on the CPU provider: the offload path (host store, block
  // pool bookkeeping, batched miss uploads) and its all-resident and dense comparison points,
  // decoding and prefilling a 128-token chunk after the context.
  const offload: OffloadRow[] = [];
  const prefill: PrefillRow[] = [];
  try {
    const spec = await defaultModelSpec(2048);
    const result = await benchOffload(spec, {
      device: 'cpu',
      contexts: values.quick ? [4096] : [8192, 32768],
      steps: decodeSteps,
      warmup: 2,
      prefillTokens: 128,
      log: (line) => process.stderr.write(`${line}\n`),
    });
    offload.push(...result.rows);
    prefill.push(...result.prefill);
  } catch (err) {
    process.stderr.write(`bench: the offload path failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  }
  const markdown = `${table(rows)}\n\nResident decoder on the CPU provider (default model, KV offload vs all resident vs dense):\n\n${offloadTable(offload)}\n\n${prefillTable(prefill)}`;
  process.stdout.write(`${markdown}\n`);
  if (values.out) {
    mkdirSync(path.dirname(values.out), { recursive: true });
    const machine = { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, node: process.version, date: new Date().toISOString() };
    writeFileSync(values.out, JSON.stringify({ machine, decodeSteps, rows, offload, prefill }, null, 2));
    writeFileSync(values.out.replace(/\.json$/, '.md'), `${markdown}\n`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
