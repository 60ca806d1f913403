// Long-context decoding on the execution device: decode ms/token against context
// length for (i) dense attention with every KV block on the device, (ii) sparse
// (InfLLM-V2) attention with every block on the device, (iii) sparse attention with
// the K/V offloaded to host memory and a device block pool (NOSA). Also: device
// memory for KV, block-cache hit rate, bytes uploaded per token, and the physical
// floor of each figure from rates measured in the same run.
//
// Contexts are built by a real prefill of a short text, whose K/V, compressed keys
// and tokens are then tiled up to each length (sparse layers are NoPE, so tiled keys
// are valid keys; the Lightning state is the real one). Decode steps then run at
// that length exactly as they would after a real prefill.
//
//   npm run bench:offload -- --device webgpu --models default,9b --out docs/benchmarks/offload-webgpu.json
//   npm run bench:offload -- --device cpu --quick         (the CPU subset that CI runs)
import { parseArgs } from 'node:util';
import { mkdirSync, writeFileSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import { SalaModel, type Sequence } from '../engine/model/sala-model.js';
import { loadConfig, derivedSizes, type SalaConfig } from '../engine/model/config.js';
import { loadWeights, type WeightMap } from '../engine/model/weights.js';
import { loadTokenizer } from '../engine/model/tokenizer.js';
import { isDeviceRequest, type DeviceKind } from '../engine/runtime/device.js';
import { GraphSession } from '../engine/runtime/session.js';
import { GraphBuilder } from '../engine/runtime/graph-builder.js';
import { DeviceTensors, release } from '../engine/runtime/device-tensors.js';
import type { ResidentOptions } from '../engine/model/resident-decoder.js';
import { SALA_9B_SHAPE, sharedLayerRandomModel } from './random-model.js';
import { lineChart } from './svg-chart.js';

export type Mode = 'dense' | 'sparse-device' | 'sparse-offload';
export const MODES: Mode[] = ['dense', 'sparse-device', 'sparse-offload'];

export interface OffloadRow {
  model: string;
  context: number;
  mode: Mode;
  decodeMsPerToken?: number;
  /** Why there is no figure (out of memory, over the time limit). */
  skipped?: string;
  hitRate?: number;
  blockBytesPerToken?: number;
  otherBytesPerToken?: number;
  deviceKvBytes?: number;
  hostKvBytes?: number;
  /** Bytes a step must read from device memory (weights, KV it attends to, Lightning states), and its floor at the measured bandwidth. */
  deviceBytesPerToken?: number;
  floorMs?: number;
  /** With PANORAMA_PROFILE_RUNS: session runs and wall ms per token, by graph. */
  profile?: Record<string, { runsPerToken: number; msPerToken: number }>;
}

export interface DeviceRates {
  /** Device memory read GB/s (a large reduction), host→device GB/s, fp32 MatMul TFLOP/s. */
  deviceGBps: number;
  uploadGBps: number;
  matmulTflops: number;
  /** One-row products against a weight of gemvBytes: Gemm(transB) as the graphs use, MatMul on a transposed weight. */
  gemvGemmMs: number;
  gemvMatMulMs: number;
  gemvBytes: number;
}

export interface ModelSpec {
  name: string;
  config: SalaConfig;
  weights: WeightMap;
  parameters: number;
  /** Real tokens to prefill before tiling (a text when the model has a tokenizer). */
  tile: number[];
}

export interface OffloadBenchOptions {
  device: DeviceKind;
  contexts: number[];
  steps: number;
  warmup: number;
  modes?: Mode[];
  /** Offload pool: slots per KV head and layer (default: 4 × the blocks one step selects). */
  poolBlocks?: number;
  /** A mode whose step took longer than this is not run at longer contexts. */
  stepLimitMs?: number;
  log?: (line: string) => void;
  /** Also decode a few steps on the CPU host path and report the largest logit difference. */
  check?: boolean;
}

export interface CheckResult {
  steps: number;
  maxAbsLogitDiff: number;
  sameArgmax: boolean;
}

function bytesPerFloat(): number {
  return 4; // the graphs run in fp32
}

/** Appends copies of the sequence's first `tileLength` tokens (K/V and ids) until it holds `target` tokens. */
export function tileSequence(sequence: Sequence, tileLength: number, target: number): void {
  for (const cache of sequence.sparse.values()) {
    const { keys, values } = cache.rows(0, tileLength);
    cache.reserve(target);
    while (cache.length < target) {
      const take = Math.min(tileLength, target - cache.length);
      const rowSize = keys.length / tileLength;
      cache.append(keys.subarray(0, take * rowSize), values.subarray(0, take * rowSize));
    }
    cache.compressedKeys();
  }
  while (sequence.tokens.length < target) sequence.tokens.push(sequence.tokens[sequence.tokens.length % tileLength]);
}

/** Bytes one decode step reads from device memory at a context, for the floor. */
function deviceBytes(config: SalaConfig, parameters: number, context: number, mode: Mode): number {
  const sizes = derivedSizes(config);
  const f = bytesPerFloat();
  const weights = (parameters - config.vocabSize * config.hiddenSize) * f + config.hiddenSize * f; // one embedding row, every other weight
  const lightning = sizes.lightningLayers.length * 2 * sizes.lightningHeads * sizes.lightningHeadDim * sizes.lightningHeadDim * f;
  const keysPerHead = mode === 'dense' || context < config.sparse.denseLen ? context : Math.min(context, (sizes.topkTotal + 1) * config.sparse.blockSize);
  const kv = sizes.sparseLayers.length * config.numKeyValueHeads * keysPerHead * sizes.sparseHeadDim * f * 2;
  return weights + lightning + kv;
}

export async function measureRates(device: DeviceKind): Promise<DeviceRates> {
  const tensors = new DeviceTensors(device);
  // Every measurement ends in a scalar on the host: a run whose outputs stay on the
  // device returns before the device is done, so only a host output times the work.
  const outputs = { y: 'cpu' as const };
  // Device read bandwidth: the max of 256 Mi floats (1 GiB read).
  const n = device === 'cpu' ? 1 << 24 : 1 << 28;
  const add = new GraphBuilder('bandwidth');
  add.output(add.reduceMax(add.input('x', 'float', ['n']), [0], false), 'y', 'float', []);
  const addSession = await GraphSession.create('bandwidth', add.toModel(), { device, outputs });
  const hostX = new ort.Tensor('float32', new Float32Array(n), [n]);
  let started = performance.now();
  const x = await tensors.upload(hostX);
  const uploadGBps = (n * 4) / ((performance.now() - started) / 1000) / 1e9;
  release((await addSession.run({ x })).y);
  started = performance.now();
  const reps = 5;
  for (let i = 0; i < reps; i++) release((await addSession.run({ x })).y);
  const deviceGBps = (reps * n * 4) / ((performance.now() - started) / 1000) / 1e9;
  // MatMul rate: 4096² · 4096 fp32 (1024 on the CPU), plus a negligible sum.
  const m = device === 'cpu' ? 1024 : 4096;
  const mm = new GraphBuilder('matmul');
  mm.output(mm.reduceSum(mm.matmul(mm.input('a', 'float', [m, m]), mm.input('b', 'float', [m, m])), [0, 1], false), 'y', 'float', []);
  const mmSession = await GraphSession.create('matmul', mm.toModel(), { device, outputs });
  const a = await tensors.upload(new ort.Tensor('float32', new Float32Array(m * m).fill(0.5), [m, m]));
  release((await mmSession.run({ a, b: a })).y);
  started = performance.now();
  for (let i = 0; i < reps; i++) release((await mmSession.run({ a, b: a })).y);
  const matmulTflops = (reps * 2 * m ** 3) / ((performance.now() - started) / 1000) / 1e12;
  // Decode's weight-streaming product, y = x Wᵀ for one row against a 16384 × 4096 weight
  // (268 MB): as the graphs write it (Gemm with transB) and as a MatMul on a pre-transposed weight.
  const rows = device === 'cpu' ? 4096 : 16384;
  const gemv = async (transposed: boolean): Promise<number> => {
    const gb = new GraphBuilder('gemv');
    const xv = gb.input('x', 'float', [1, 4096]);
    const w = gb.input('w', 'float', transposed ? [4096, rows] : [rows, 4096]);
    const y = transposed ? gb.matmul(xv, w) : gb.op('Gemm', [xv, w], { transB: 1 });
    gb.output(gb.reduceSum(y, [0, 1], false), 'y', 'float', []);
    const session = await GraphSession.create('gemv', gb.toModel(), { device, outputs });
    const weight = await tensors.upload(new ort.Tensor('float32', new Float32Array(rows * 4096).fill(0.001), transposed ? [4096, rows] : [rows, 4096]));
    const input = new ort.Tensor('float32', new Float32Array(4096).fill(1), [1, 4096]);
    await session.run({ x: input, w: weight });
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) await session.run({ x: input, w: weight });
    const ms = (performance.now() - t0) / 10;
    release(weight);
    await session.release();
    return ms;
  };
  const gemvGemmMs = await gemv(false);
  const gemvMatMulMs = await gemv(true);
  release(x);
  release(a);
  await Promise.all([addSession.release(), mmSession.release(), tensors.release()]);
  return { deviceGBps, uploadGBps, matmulTflops, gemvGemmMs, gemvMatMulMs, gemvBytes: rows * 4096 * 4 };
}

/** The device's resident offload decoder against the CPU host path, from the same prefill. */
async function checkAgainstCpu(spec: ModelSpec, model: SalaModel, steps: number): Promise<CheckResult> {
  const cpu = await SalaModel.create(spec.config, spec.weights, { device: 'cpu' });
  const onCpu = cpu.newSequence();
  const onDevice = model.newSequence();
  let hostRow = await cpu.forward(onCpu, spec.tile);
  await model.forward(onDevice, spec.tile);
  const decoder = await model.residentDecoder(onDevice, { placement: 'offload', maxTokens: spec.tile.length + steps + 1 });
  let worst = 0;
  let sameArgmax = true;
  for (let i = 0; i < steps; i++) {
    const id = argmax(hostRow);
    const deviceRow = await decoder.step(id);
    hostRow = await cpu.forward(onCpu, [id]);
    for (let j = 0; j < hostRow.length; j++) worst = Math.max(worst, Math.abs(hostRow[j] - deviceRow[j]));
    sameArgmax &&= argmax(hostRow) === argmax(deviceRow);
  }
  await decoder.close();
  await cpu.release();
  return { steps, maxAbsLogitDiff: worst, sameArgmax };
}

export async function benchModel(spec: ModelSpec, options: OffloadBenchOptions): Promise<{ rows: OffloadRow[]; prefillTokensPerSecond: number; check?: CheckResult }> {
  const log = options.log ?? (() => {});
  const modes = options.modes ?? MODES;
  const model = await SalaModel.create(spec.config, spec.weights, { device: options.device });
  const check = options.check ? await checkAgainstCpu(spec, model, 8) : undefined;
  if (check) log(`  ${spec.name}: resident decoder on ${options.device} vs CPU host path, ${check.steps} steps: max |Δlogit| ${check.maxAbsLogitDiff.toExponential(2)}, same argmax ${check.sameArgmax}`);
  const maxContext = Math.max(...options.contexts);
  const sequence = model.newSequence(maxContext + 64);
  let started = performance.now();
  await model.forward(sequence, spec.tile);
  const prefillTokensPerSecond = spec.tile.length / ((performance.now() - started) / 1000);
  log(`  ${spec.name}: prefill of the ${spec.tile.length}-token tile ${prefillTokensPerSecond.toFixed(0)} tok/s`);
  const tileLength = spec.tile.length;
  const rows: OffloadRow[] = [];
  const overLimit = new Set<Mode>();
  const sizes = derivedSizes(spec.config);
  const hostKvPerToken = sizes.sparseLayers.length * spec.config.numKeyValueHeads * sizes.sparseHeadDim * bytesPerFloat() * 2;
  for (const context of options.contexts) {
    if (sequence.length > context) continue;
    tileSequence(sequence, tileLength, context);
    for (const mode of modes) {
      const row: OffloadRow = { model: spec.name, context, mode, hostKvBytes: context * hostKvPerToken };
      rows.push(row);
      if (overLimit.has(mode)) {
        row.skipped = `over ${options.stepLimitMs} ms/token at a shorter context`;
        continue;
      }
      // Each mode decodes from the same state: a checkpoint of the tiled sequence.
      const checkpoint = sequence.checkpoint();
      const resident: ResidentOptions = {
        placement: mode === 'sparse-offload' ? 'offload' : 'device',
        attention: mode === 'dense' ? 'dense' : 'auto',
        poolBlocks: options.poolBlocks,
        maxTokens: context + options.warmup + options.steps + 1,
      };
      try {
        const decoder = await model.residentDecoder(sequence, resident);
        let id = spec.tile[context % tileLength];
        for (let i = 0; i < options.warmup; i++) await decoder.step(id);
        const before = decoder.snapshot();
        GraphSession.profile?.clear();
        started = performance.now();
        for (let i = 0; i < options.steps; i++) {
          const logits = await decoder.step(id);
          id = argmax(logits);
        }
        const ms = (performance.now() - started) / options.steps;
        const after = decoder.snapshot();
        await decoder.close();
        const requests = after.hits + after.misses - before.hits - before.misses;
        Object.assign(row, {
          decodeMsPerToken: ms,
          hitRate: mode === 'sparse-offload' && requests > 0 ? (after.hits - before.hits) / requests : undefined,
          blockBytesPerToken: (after.blockBytes - before.blockBytes) / options.steps,
          otherBytesPerToken: (after.otherBytes - before.otherBytes) / options.steps,
          deviceKvBytes: after.deviceKvBytes,
          deviceBytesPerToken: deviceBytes(spec.config, spec.parameters, context, mode),
        });
        if (GraphSession.profile) {
          row.profile = Object.fromEntries([...GraphSession.profile].map(([name, e]) => [name, { runsPerToken: e.runs / options.steps, msPerToken: e.ms / options.steps }]));
          log(`    per token: ${[...GraphSession.profile].map(([name, e]) => `${name} ${(e.runs / options.steps).toFixed(0)}× ${(e.ms / options.steps).toFixed(2)} ms`).join(', ')}`);
        }
        if (options.stepLimitMs !== undefined && ms > options.stepLimitMs) overLimit.add(mode);
        log(`  ${spec.name} @ ${context} ${mode}: ${ms.toFixed(2)} ms/token` + (row.hitRate !== undefined ? `, hit rate ${(100 * row.hitRate).toFixed(1)}%` : '') + `, ${(row.blockBytesPerToken! / 1024).toFixed(0)} KiB blocks up/token, device KV ${(after.deviceKvBytes / 2 ** 20).toFixed(0)} MiB`);
      } catch (err) {
        row.skipped = err instanceof Error ? err.message.split('\n')[0].slice(0, 160) : String(err);
        overLimit.add(mode);
        log(`  ${spec.name} @ ${context} ${mode}: failed (${row.skipped})`);
      }
      sequence.rollback(checkpoint);
    }
  }
  await model.release();
  return { rows, prefillTokensPerSecond, check };
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** The repository's own TypeScript, tokenized: a real text for the real model's tile. */
async function codeTile(modelDir: string, config: SalaConfig, length: number): Promise<number[]> {
  const tokenizer = await loadTokenizer(modelDir, config.vocabSize);
  const root = path.resolve(__dirname, '../engine');
  const ids: number[] = [];
  for (const folder of readdirSync(root)) {
    for (const file of readdirSync(path.join(root, folder)).filter((f) => f.endsWith('.ts'))) {
      ids.push(...tokenizer.encode(`<|file|>engine/${folder}/${file}\n${readFileSync(path.join(root, folder, file), 'utf8')}`));
      if (ids.length >= length) return ids.slice(0, length);
    }
  }
  return ids;
}

/** Pseudo-random token ids (the random model has no tokenizer). */
function randomTile(length: number, vocab: number): number[] {
  let state = 12345;
  return Array.from({ length }, () => {
    state = (state * 1103515245 + 12345) >>> 0;
    return 3 + (state % (vocab - 3));
  });
}

export async function defaultModelSpec(tileLength: number): Promise<ModelSpec> {
  const dir = path.resolve(__dirname, '../models/panorama-code-13m');
  const config = await loadConfig(dir);
  const { weights } = await loadWeights(dir, config);
  const parameters = [...new Set(weights.values())].reduce((n, w) => n + w.length, 0);
  return { name: 'panorama-code-13m', config, weights, parameters, tile: await codeTile(dir, config, tileLength) };
}

export function nineBSpec(tileLength: number): ModelSpec {
  const { config, weights, parameters } = sharedLayerRandomModel(SALA_9B_SHAPE);
  return { name: 'random MiniCPM-SALA-9B shape', config, weights, parameters, tile: randomTile(tileLength, config.vocabSize) };
}

export function offloadTable(rows: OffloadRow[], rates?: DeviceRates): string {
  const lines = [
    '| model | context | mode | decode ms/token | floor ms | hit rate | blocks up KiB/token | other up KiB/token | device KV MiB | host KV MiB |',
    '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    const floor = rates && r.deviceBytesPerToken ? (r.deviceBytesPerToken / (rates.deviceGBps * 1e9)) * 1000 + (r.blockBytesPerToken ?? 0) / (rates.uploadGBps * 1e9) * 1000 : undefined;
    r.floorMs = floor;
    const mib = (b?: number) => (b === undefined ? '–' : (b / 2 ** 20).toFixed(b < 2 ** 20 ? 2 : 0));
    lines.push(
      `| ${r.model} | ${r.context} | ${r.mode} | ${r.decodeMsPerToken?.toFixed(2) ?? `– (${r.skipped})`} | ${floor?.toFixed(2) ?? '–'} | ` +
        `${r.hitRate === undefined ? '–' : `${(100 * r.hitRate).toFixed(1)}%`} | ${r.blockBytesPerToken === undefined ? '–' : (r.blockBytesPerToken / 1024).toFixed(1)} | ` +
        `${r.otherBytesPerToken === undefined ? '–' : (r.otherBytesPerToken / 1024).toFixed(1)} | ${mib(r.deviceKvBytes)} | ${mib(r.hostKvBytes)} |`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      device: { type: 'string', default: 'webgpu' },
      models: { type: 'string' },
      contexts: { type: 'string' },
      steps: { type: 'string' },
      quick: { type: 'boolean', default: false },
      'pool-blocks': { type: 'string' },
      'step-limit-ms': { type: 'string', default: '2000' },
      out: { type: 'string' },
      check: { type: 'string', default: 'default' },
      modes: { type: 'string' },
      tile: { type: 'string' },
      'skip-rates': { type: 'boolean', default: false },
    },
  });
  if (!isDeviceRequest(values.device!) || values.device === 'auto') throw new Error(`--device must be cpu, webgpu or cuda, got ${values.device}`);
  const device = values.device as DeviceKind;
  const contexts = values.contexts ? values.contexts.split(',').map(Number) : values.quick ? [4096] : [8192, 32768, 131072, 262144, 524288, 1048576];
  const steps = Number(values.steps ?? (values.quick ? 4 : 16));
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const rates = values['skip-rates'] ? undefined : await measureRates(device);
  if (rates) log(`bench:offload on ${device}: device read ${rates.deviceGBps.toFixed(0)} GB/s, upload ${rates.uploadGBps.toFixed(2)} GB/s, fp32 MatMul ${rates.matmulTflops.toFixed(2)} TFLOP/s; ` +
    `one-row product over ${(rates.gemvBytes / 2 ** 20).toFixed(0)} MiB: Gemm(transB) ${rates.gemvGemmMs.toFixed(2)} ms (${(rates.gemvBytes / rates.gemvGemmMs / 1e6).toFixed(0)} GB/s), MatMul ${rates.gemvMatMulMs.toFixed(2)} ms (${(rates.gemvBytes / rates.gemvMatMulMs / 1e6).toFixed(0)} GB/s)`);
  const rows: OffloadRow[] = [];
  const prefill: Record<string, number> = {};
  const checks: Record<string, CheckResult> = {};
  for (const name of (values.models ?? (values.quick ? 'default' : 'default,9b')).split(',')) {
    const tile = values.tile ? Number(values.tile) : undefined;
    const spec = name === '9b' ? nineBSpec(tile ?? 2048) : await defaultModelSpec(tile ?? (values.quick ? 2048 : 4096));
    const result = await benchModel(spec, {
      device,
      contexts,
      steps,
      warmup: 3,
      poolBlocks: values['pool-blocks'] ? Number(values['pool-blocks']) : undefined,
      stepLimitMs: Number(values['step-limit-ms']),
      check: values.check!.split(',').includes(name),
      modes: values.modes ? (values.modes.split(',') as Mode[]) : undefined,
      log,
    });
    rows.push(...result.rows);
    if (result.check) checks[spec.name] = result.check;
    prefill[spec.name] = result.prefillTokensPerSecond;
  }
  const markdown = offloadTable(rows, rates);
  process.stdout.write(`${markdown}\n`);
  if (values.out) {
    mkdirSync(path.dirname(values.out), { recursive: true });
    const machine = { device, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, node: process.version, date: new Date().toISOString() };
    writeFileSync(values.out, JSON.stringify({ machine, rates, steps, prefillTileTokensPerSecond: prefill, checks, rows }, null, 2));
    writeFileSync(values.out.replace(/\.json$/, '.md'), `${markdown}\n`);
    for (const model of new Set(rows.map((r) => r.model))) {
      const mine = rows.filter((r) => r.model === model);
      const slug = model.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
      writeFileSync(
        values.out.replace(/\.json$/, `-${slug}.svg`),
        lineChart({
          title: `${model}: decode ms/token (${device})`,
          xLabel: 'context tokens',
          yLabel: 'ms/token',
          series: MODES.map((mode) => ({
            name: mode,
            points: mine.filter((r) => r.mode === mode && r.decodeMsPerToken !== undefined).map((r) => [r.context, r.decodeMsPerToken!] as [number, number]),
          })),
        }),
      );
    }
  }
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`bench:offload failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  });
}
