// Where block selection spends its time, the 9B shape (MiniCPM-SALA-9B's sparse layers: 2 KV
// heads, 16 query heads each, 128-wide), at the compressed-key capacities of a context:
//   - a decode step: the captured selection graph whole (the default form and stage 1 over
//     transposed stores), and its parts alone — stage 1, the coarse log-sum-exp as one
//     reduction and in two stages (what stage 1 uses), pooling + top-k; each replayed as a
//     CUDA graph on CUDA (one session run elsewhere);
//   - a prefill chunk of --prefill-rows rows after the context: the device's selection graph
//     whole, its stage 1 with the coarse log-sum-exp in one pass and chunked, and that
//     log-sum-exp alone in both forms; session runs, as the prefill runs them.
// Inputs on the device.
//
//   npm run bench:selection -- --device cuda --contexts 131072,1048576 [--prefill-rows 256,2048] --out docs/benchmarks/selection-cuda.json
import { parseArgs } from 'node:util';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type * as ort from 'onnxruntime-node';
import { GraphBuilder, type Value } from '../engine/runtime/graph-builder.js';
import { GraphSession, bool, f32, i64 } from '../engine/runtime/session.js';
import { DeviceTensors } from '../engine/runtime/device-tensors.js';
import { isDeviceRequest, type DeviceKind } from '../engine/runtime/device.js';
import { derivedSizes, parseConfig } from '../engine/model/config.js';
import { sparseHeads } from '../engine/model/graph-parts.js';
import { buildSparseSelect, chunkedLogSumExp, stageOneKeysMajor, stageOneRows } from '../engine/model/sparse-select-graph.js';
import { forwardPlan } from '../engine/model/forward-plan.js';
import { buildSparseSelectCaptured, capturedTopK, pooledTopBlocks, type StepCapacity } from '../engine/model/captured-sparse-graph.js';
import { SALA_9B_SHAPE } from './random-model.js';

interface PartRow {
  context: number;
  part: string;
  msPerRun: number;
}

const cfg = parseConfig(SALA_9B_SHAPE, 'MiniCPM-SALA-9B shape');
const { hs, H, Hk, G, blockSize: B } = sparseHeads(cfg);

/** Values in [−0.5, 0.5] (nothing measured depends on them). */
function pattern(n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898) * 0.5);
}

/** A graph with one output, its inputs, and the output's shape and type. */
interface Part {
  name: string;
  model: Uint8Array;
  feeds: Record<string, ort.Tensor>;
  output: { name: string; dims: number[]; type: 'float' | 'int64' };
  /** Replayed as a CUDA graph on CUDA (default true); prefill graphs run as the prefill runs them. */
  capture?: boolean;
}

async function timePart(device: DeviceKind, tensors: DeviceTensors, part: Part, runs: number): Promise<number> {
  const session = await GraphSession.create(part.name, part.model, {
    device,
    threads: 1,
    outputs: { [part.output.name]: 'gpu-buffer' },
    cudaGraph: device === 'cuda' && part.capture !== false,
  });
  const size = part.output.dims.reduce((a, b) => a * b, 1);
  const out = await tensors.upload(part.output.type === 'float' ? f32(new Float32Array(size), part.output.dims) : i64(new BigInt64Array(size), part.output.dims));
  try {
    const into = { [part.output.name]: out };
    // The first run captures the graph; two more settle it.
    for (let i = 0; i < 3; i++) await session.run(part.feeds, into, 1);
    const started = performance.now();
    for (let i = 0; i < runs; i++) await session.run(part.feeds, into, 1);
    return (performance.now() - started) / runs;
  } finally {
    await session.release();
  }
}

/** The parts at the capacities of `context` tokens. */
async function partsAt(context: number, tensors: DeviceTensors): Promise<Part[]> {
  const capacity: StepCapacity = { blocks: context / B, fineRows: context / 16, coarseRows: context / 64 };
  const { blocks: NB, fineRows: N1, coarseRows: N2 } = capacity;
  const K = capturedTopK(cfg, capacity);
  const up = (tensor: ort.Tensor) => tensors.upload(tensor);
  const q = await up(f32(pattern(H * hs), [1, H, hs]));
  const fine = await up(f32(pattern(N1 * Hk * hs), [N1, Hk, hs]));
  const coarse = await up(f32(pattern(N2 * Hk * hs), [N2, Hk, hs]));
  const excluded = await up(bool(new Uint8Array(NB), [NB]));
  const step = await up(i64([context - 5, N1 - 1, N2 - 1]));
  const selection = { q, c1_store: fine, c2_store: coarse, step, block_excluded: excluded };
  const selected: Part['output'] = { name: 'selected', dims: [Hk, K], type: 'int64' };
  const parts: Part[] = [];

  parts.push({ name: 'selection', model: buildSparseSelectCaptured(cfg, capacity), feeds: selection, output: selected });
  process.env.PANORAMA_STAGE_ONE = 'transposed';
  parts.push({ name: 'selection, stage 1 over transposed stores', model: buildSparseSelectCaptured(cfg, capacity), feeds: selection, output: selected });
  delete process.env.PANORAMA_STAGE_ONE;

  {
    const g = new GraphBuilder('stage_one');
    const scores = stageOneKeysMajor(
      g,
      cfg,
      g.input('q', 'float', [1, H, hs]),
      g.input('c1_store', 'float', [N1, Hk, hs]),
      g.input('c2_store', 'float', [N2, Hk, hs]),
      g.input('fine_visible', 'int64', [1]),
      g.input('coarse_visible', 'int64', [1]),
    );
    g.output(scores, 'scores', 'float', [Hk, N1]);
    const feeds = { q, c1_store: fine, c2_store: coarse, fine_visible: await up(i64([N1 - 1])), coarse_visible: await up(i64([N2 - 1])) };
    parts.push({ name: 'stage 1', model: g.toModel(), feeds, output: { name: 'scores', dims: [Hk, N1], type: 'float' } });
  }
  const logits = await up(f32(pattern(N2 * H), [N2, Hk, G]));
  for (const [name, reduce] of [
    ['coarse log-sum-exp, one reduction', (g: GraphBuilder, x: Value) => g.reduceLogSumExp(x, [0])],
    ['coarse log-sum-exp, two stages', (g: GraphBuilder, x: Value) => chunkedLogSumExp(g, x, 0, 3)],
  ] as const) {
    const g = new GraphBuilder('coarse_lse');
    g.output(reduce(g, g.input('x', 'float', [N2, Hk, G])), 'y', 'float', [1, Hk, G]);
    parts.push({ name, model: g.toModel(), feeds: { x: logits }, output: { name: 'y', dims: [1, Hk, G], type: 'float' } });
  }
  {
    // Pooling and top-k as the captured selection runs them.
    const g = new GraphBuilder('pool_top_k');
    const top = pooledTopBlocks(g, cfg, capacity, g.input('scores', 'float', [Hk, N1]), g.input('position', 'int64', [1]), g.input('block_excluded', 'bool', [NB]));
    g.output(top, 'selected', 'int64', [Hk, K]);
    const feeds = { scores: await up(f32(pattern(Hk * N1), [Hk, N1])), position: await up(i64([context - 5])), block_excluded: excluded };
    parts.push({ name: 'pooling + top-k', model: g.toModel(), feeds, output: selected });
  }
  return parts;
}

/** Scores a prefill's stage 1 may hold before the part is skipped (it would not fit beside its intermediates). */
const PREFILL_SCORE_LIMIT = 4 * 2 ** 30;

/** A prefill chunk of `rows` rows after `context − rows` tokens: the device's selection and its stage 1. */
async function prefillPartsAt(context: number, rows: number, tensors: DeviceTensors): Promise<Part[]> {
  const plan = forwardPlan(cfg, derivedSizes(cfg), context - rows, new Array<number>(rows).fill(0), { chunkSize: rows });
  const selection = plan.chunks[0].selection!;
  const { fineCount: N1, coarseCount: N2, rawK } = selection;
  const NB = plan.chunks[0].blocks;
  const label = `prefill, ${rows} rows`;
  if (H * rows * N1 * 4 > PREFILL_SCORE_LIMIT) {
    console.log(`${context} ${label}: skipped (stage 1 would hold ${((H * rows * N1 * 4) / 2 ** 30).toFixed(1)} GiB of scores)`);
    return [];
  }
  const up = (tensor: ort.Tensor) => tensors.upload(tensor);
  const q = await up(f32(pattern(rows * H * hs), [rows, H, hs]));
  const fine = await up(f32(pattern(N1 * Hk * hs), [N1, Hk, hs]));
  const coarse = await up(f32(pattern(N2 * Hk * hs), [N2, Hk, hs]));
  const fineVisible = await up(i64(selection.fineVisible));
  const coarseVisible = await up(i64(selection.coarseVisible));
  const feeds = {
    q,
    c1_store: fine,
    c2_store: coarse,
    fine_count: await up(i64([N1])),
    coarse_count: await up(i64([N2])),
    query_positions: await up(i64(Array.from({ length: rows }, (_, i) => context - rows + i))),
    fine_visible: fineVisible,
    coarse_visible: coarseVisible,
    pool_pads: await up(i64(selection.poolPads)),
    k: await up(i64([rawK])),
    block_excluded: await up(bool(new Uint8Array(NB), [NB])),
  };
  const parts: Part[] = [
    { name: `${label}: selection`, model: buildSparseSelect(cfg, true), feeds, output: { name: 'selected', dims: [Hk, rows, rawK], type: 'int64' }, capture: false },
  ];
  // Each log-sum-exp form, and the one-pass form as it was before 2026-12-08 (ReduceLogSumExp, the log-sum-exp subtracted from the scores).
  for (const [form, previous] of [
    ['one-pass', false],
    ['chunked', false],
    ['one-pass', true],
  ] as const) {
    const g = new GraphBuilder('stage_one_rows');
    const scores = stageOneRows(
      g,
      cfg,
      g.input('q', 'float', [rows, H, hs]),
      g.input('c1', 'float', [N1, Hk, hs]),
      g.input('c2', 'float', [N2, Hk, hs]),
      g.input('fine_visible', 'int64', [rows]),
      g.input('coarse_visible', 'int64', [rows]),
      form,
      previous,
    );
    g.output(scores, 'scores', 'float', [Hk, rows, N1]);
    const stageFeeds = { q, c1: fine, c2: coarse, fine_visible: fineVisible, coarse_visible: coarseVisible };
    parts.push({
      name: `${label}: stage 1, log-sum-exp ${form}${previous ? ', as before 2026-12-08' : ''}`,
      model: g.toModel(),
      feeds: stageFeeds,
      output: { name: 'scores', dims: [Hk, rows, N1], type: 'float' },
      capture: false,
    });
  }
  const logits = await up(f32(pattern(H * rows * N2), [Hk, G, rows, N2]));
  for (const [form, reduce] of [
    ['one-pass', (g: GraphBuilder, x: Value) => g.reduceLogSumExp(x, [-1])],
    ['chunked', (g: GraphBuilder, x: Value) => chunkedLogSumExp(g, x, 3, 4)],
  ] as const) {
    const g = new GraphBuilder('coarse_lse_rows');
    g.output(reduce(g, g.input('x', 'float', [Hk, G, rows, N2])), 'y', 'float', [Hk, G, rows, 1]);
    parts.push({
      name: `${label}: coarse log-sum-exp ${form} alone`,
      model: g.toModel(),
      feeds: { x: logits },
      output: { name: 'y', dims: [Hk, G, rows, 1], type: 'float' },
      capture: false,
    });
  }
  return parts;
}

function table(rows: PartRow[], device: string): string {
  const contexts = [...new Set(rows.map((r) => r.context))];
  const parts = [...new Set(rows.map((r) => r.part))];
  const lines = [
    `ms per run on ${device}, the 9B shape's sparse layer (one layer; a decode step runs 8)`,
    '',
    `| part | ${contexts.map((c) => `${c / 1024}K tokens`).join(' | ')} |`,
    `|---|${contexts.map(() => '---:').join('|')}|`,
  ];
  for (const part of parts) lines.push(`| ${part} | ${contexts.map((c) => rows.find((r) => r.context === c && r.part === part)?.msPerRun.toFixed(3) ?? '–').join(' | ')} |`);
  return lines.join('\n') + '\n';
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      device: { type: 'string', default: 'cuda' },
      contexts: { type: 'string', default: '131072,1048576' },
      runs: { type: 'string', default: '50' },
      out: { type: 'string' },
      'prefill-rows': { type: 'string', default: '' },
    },
  });
  const device = values.device!;
  if (!isDeviceRequest(device) || device === 'auto') throw new Error(`--device takes cpu, cuda and webgpu, got ${device}`);
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs takes a whole number ≥ 1, got ${values.runs}`);
  const contexts = values.contexts!.split(',').map(Number);
  for (const context of contexts) {
    if (!Number.isInteger(context) || context < 64 * B || context % (64 * B) !== 0) throw new Error(`--contexts takes multiples of ${64 * B} tokens, got ${context}`);
  }
  const prefillRows = values['prefill-rows']!.split(',')
    .filter((r) => r !== '')
    .map(Number);
  for (const r of prefillRows) if (!Number.isInteger(r) || r < 1) throw new Error(`--prefill-rows takes whole numbers ≥ 1, got ${values['prefill-rows']}`);
  const tensors = new DeviceTensors(device);
  const rows: PartRow[] = [];
  for (const context of contexts) {
    const prefill = [];
    for (const r of prefillRows) prefill.push(...(await prefillPartsAt(context, r, tensors)));
    for (const part of [...(await partsAt(context, tensors)), ...prefill]) {
      const msPerRun = await timePart(device, tensors, part, runs);
      rows.push({ context, part: part.name, msPerRun });
      console.log(`${context} ${part.name}: ${msPerRun.toFixed(3)} ms`);
    }
  }
  await tensors.release();
  if (values.out) {
    mkdirSync(path.dirname(values.out), { recursive: true });
    writeFileSync(values.out, JSON.stringify({ date: new Date().toISOString(), device, runs, rows }, null, 2) + '\n');
    writeFileSync(values.out.replace(/\.json$/, '.md'), table(rows, device));
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:selection failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
