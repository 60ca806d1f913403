// Where a decode step's block selection spends its time, the 9B shape (MiniCPM-SALA-9B's
// sparse layers: 2 KV heads, 16 query heads each, 128-wide), at the compressed-key
// capacities of a context: the captured selection graph whole (the default form and stage
// 1 over transposed stores), and its parts alone — stage 1, the coarse log-sum-exp as one
// reduction and in two stages (what stage 1 uses), pooling + top-k. Each part is one graph,
// replayed as a CUDA graph on CUDA (one session run elsewhere), inputs on the device.
//
//   npm run bench:selection -- --device cuda --contexts 131072,1048576 --out docs/benchmarks/selection-cuda.json
import { parseArgs } from 'node:util';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type * as ort from 'onnxruntime-node';
import { GraphBuilder, type Value } from '../engine/runtime/graph-builder.js';
import { GraphSession, bool, f32, i64 } from '../engine/runtime/session.js';
import { DeviceTensors } from '../engine/runtime/device-tensors.js';
import { isDeviceRequest, type DeviceKind } from '../engine/runtime/device.js';
import { parseConfig } from '../engine/model/config.js';
import { sparseHeads } from '../engine/model/graph-parts.js';
import { rowsLogSumExp, stageOneKeysMajor } from '../engine/model/sparse-select-graph.js';
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
}

async function timePart(device: DeviceKind, tensors: DeviceTensors, part: Part, runs: number): Promise<number> {
  const session = await GraphSession.create(part.name, part.model, { device, threads: 1, outputs: { [part.output.name]: 'gpu-buffer' }, cudaGraph: device === 'cuda' });
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
    ['coarse log-sum-exp, two stages', rowsLogSumExp],
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
  const tensors = new DeviceTensors(device);
  const rows: PartRow[] = [];
  for (const context of contexts) {
    for (const part of await partsAt(context, tensors)) {
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
