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
// Each model runs in every --precision (fp32 and fp16 weights on a GPU by default)
// from the same prefilled state, side by side, with the fp16 logits checked against
// fp32's on the device.
//
//   npm run bench:offload -- --device webgpu --models default,9b --out docs/benchmarks/offload-webgpu.json
//   npm run bench:offload -- --device cpu --quick         (the CPU subset; bench:offload:check checks its figures)
import { parseArgs } from 'node:util';
import { mkdirSync, writeFileSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import { SalaModel, type Sequence } from '../engine/model/sala-model.js';
import { loadConfig, derivedSizes, expectedWeights, type SalaConfig } from '../engine/model/config.js';
import { loadWeights, type WeightMap } from '../engine/model/weights.js';
import { loadTokenizer } from '../engine/model/tokenizer.js';
import { argmax } from '../engine/model/sampling.js';
import { f16BitsToFloat } from '../engine/model/safetensors.js';
import { toHalfBits } from '../engine/runtime/half.js';
import { isDeviceRequest, isPrecisionRequest, type DeviceKind, type Precision } from '../engine/runtime/device.js';
import { GraphSession, f16, f32 } from '../engine/runtime/session.js';
import { GraphBuilder } from '../engine/runtime/graph-builder.js';
import { DeviceTensors, release } from '../engine/runtime/device-tensors.js';
import type { ResidentDecoder, ResidentOptions } from '../engine/model/resident-decoder.js';
import { SALA_9B_SHAPE, sharedLayerRandomModel } from './random-model.js';
import { lineChart } from './svg-chart.js';

/**
 * 'dense-gather' is dense in a decoder with room for 4× the run, so its steps gather the past
 * blocks instead of reading the store in place (resident-step.ts): the form 'dense' replaced,
 * measured only when named.
 */
export type Mode = 'dense' | 'dense-gather' | 'sparse-device' | 'sparse-offload';
export const MODES: Mode[] = ['dense', 'sparse-device', 'sparse-offload'];
const isDense = (mode: string) => mode === 'dense' || mode === 'dense-gather';

export interface OffloadRow {
  model: string;
  context: number;
  mode: Mode;
  /** Precision of the weights (runs before fp16 existed have none: fp32). */
  precision?: Precision;
  decodeMsPerToken?: number;
  /** Why there is no figure (out of memory, over the time limit). */
  skipped?: string;
  hitRate?: number;
  blockBytesPerToken?: number;
  otherBytesPerToken?: number;
  deviceKvBytes?: number;
  hostKvBytes?: number;
  /** Bytes a step must read from device memory (weights, KV it attends to, Lightning states), and its floor at the products' measured streaming rate. */
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
  /** One-row products against a 16384 × 4096 fp32 weight (gemvBytes): Gemm(transB) as the graphs use, MatMul on a transposed weight. */
  gemvGemmMs: number;
  gemvMatMulMs: number;
  gemvBytes: number;
  /** The same against its fp16 copy (gemvHalfBytes), fp32 in and out through Casts as the graphs do it. */
  gemvHalfGemmMs?: number;
  gemvHalfMatMulMs?: number;
  gemvHalfBytes?: number;
  /** ‖y − y_ref‖ / ‖y_ref‖ of each one-row product (Gemm form) against float64 on the host from the same rounded inputs. */
  gemvRelError?: number;
  gemvHalfRelError?: number;
  /** One block written into a [2, slots, 64, 128] fp32 pool of poolWriteBytes (a ScatterND, which copies the pool). */
  poolWriteMs?: number;
  poolWriteBytes?: number;
  /** With --gemv-sweep: split-K one-row products y = x B (B [K, N] as [S, K/S, N], partial rows summed in fp32), both precisions. */
  gemvSweep?: GemvVariant[];
}

export interface GemvVariant {
  precision: Precision;
  k: number;
  n: number;
  splits: number;
  ms: number;
  gbps: number;
  relError?: number;
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
  /** Weight precisions to decode in, side by side from the same state (default fp32). */
  precisions?: Precision[];
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
  /** Also time a prefill of this many tokens (one chunk) after each context: in every decode mode on the resident decoder, and through the host path. */
  prefillTokens?: number;
  /** A prefill slower than this many tokens/s is not run at longer contexts. */
  prefillMinTokensPerSecond?: number;
  /** Nor one whose time, scaled by the context from the last it ran at, would pass this (dense attention grows with the context). */
  prefillLimitMs?: number;
}

/**
 * How a prefill chunk ran: on the resident decoder in one of the decode modes (every
 * layer on the device; blocks at slot = id, or through the offload pool), or through
 * the host path (SalaModel.forward: K/V in host memory, each group's selected blocks
 * gathered on the host and uploaded per call).
 */
export type PrefillMode = Mode | 'host-path';
export const PREFILL_MODES: PrefillMode[] = [...MODES, 'host-path'];

/** Prefill rate after a context: a chunk of new tokens fed in one call. */
export interface PrefillRow {
  model: string;
  context: number;
  /** Runs before the resident prefill existed have none: host-path. */
  mode?: PrefillMode;
  precision: Precision;
  tokens: number;
  tokensPerSecond?: number;
  skipped?: string;
  /** Resident modes: pool hit rate (offload), K/V bytes uploaded per token fed, attention calls per layer and chunk. */
  hitRate?: number;
  blockBytesPerToken?: number;
  attendCallsPerLayer?: number;
  /** FLOPs of the chunk (weight products + attention over what it attends to) and their floor at the measured MatMul rate. */
  flops?: number;
  floorMs?: number;
}

export interface CheckResult {
  steps: number;
  maxAbsLogitDiff: number;
  sameArgmax: boolean;
}

/** fp16 decoding against fp32 on the device: the same ids fed to both from one state. */
export interface PrecisionCheck {
  context: number;
  steps: number;
  maxAbsLogitDiff: number;
  /** The largest |logit| of the fp32 rows, for scale. */
  maxAbsLogit: number;
  /** Steps whose argmax agrees. */
  sameArgmaxSteps: number;
}

/** KV, Lightning states and activations are fp32 in either precision. */
const KV_BYTES = 4;

/** Bytes per weight of a large matrix: int4 is half a byte plus a 4-byte scale and a 4-bit zero point per 32. */
function matrixBytes(precision: Precision): number {
  return precision === 'fp16' ? 2 : precision === 'int4' ? 0.5 + 4 / 32 + 0.5 / 32 : 4;
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

/** Bytes of weights one decode step reads: every matrix but the embedding table (one row of it), every norm. */
export function weightBytesPerToken(config: SalaConfig, parameters: number, precision: Precision): number {
  let norms = 0;
  for (const [name, shape] of expectedWeights(config)) if (name.endsWith('norm.weight')) norms += shape.reduce((a, b) => a * b, 1);
  const table = config.vocabSize * config.hiddenSize;
  // A tied lm_head reads the table once in full; an untied table is read a row at a time.
  const matrices = parameters - norms - (config.tieWordEmbeddings ? 0 : table);
  // The embedding row is fp16 in int4 (a gathered table is not quantized).
  return matrices * matrixBytes(precision) + config.hiddenSize * (precision === 'fp32' ? 4 : 2) + norms * 4;
}

/** Bytes one decode step reads from device memory at a context, for the floor. */
function deviceBytes(config: SalaConfig, parameters: number, context: number, mode: Mode, precision: Precision): number {
  const sizes = derivedSizes(config);
  const lightning = sizes.lightningLayers.length * 2 * sizes.lightningHeads * sizes.lightningHeadDim * sizes.lightningHeadDim * KV_BYTES;
  const keysPerHead = isDense(mode) || context < config.sparse.denseLen ? context : Math.min(context, (sizes.topkTotal + 1) * config.sparse.blockSize);
  const kv = sizes.sparseLayers.length * config.numKeyValueHeads * keysPerHead * sizes.sparseHeadDim * KV_BYTES * 2;
  return weightBytesPerToken(config, parameters, precision) + lightning + kv;
}

/** FLOPs of prefilling `tokens` after `context`: every weight product, attention over what each query attends to (every key when dense or below dense_len, else its selected blocks), Lightning's state updates. */
function prefillFlops(config: SalaConfig, parameters: number, context: number, tokens: number, mode: PrefillMode): number {
  const sizes = derivedSizes(config);
  const keys = isDense(mode) || context < config.sparse.denseLen ? context + tokens / 2 : Math.min(context, (sizes.topkTotal + 1) * config.sparse.blockSize);
  const sparse = sizes.sparseLayers.length * 4 * config.numAttentionHeads * sizes.sparseHeadDim * keys;
  const lightning = sizes.lightningLayers.length * 4 * sizes.lightningHeads * sizes.lightningHeadDim * sizes.lightningHeadDim;
  return tokens * (2 * parameters + sparse + lightning);
}

/** Streaming rate of the graphs' one-row product in a precision (Gemm with transB), GB/s. */
export function gemvGBps(rates: DeviceRates, precision: Precision): number | undefined {
  if (precision === 'fp32') return rates.gemvBytes / rates.gemvGemmMs / 1e6;
  return rates.gemvHalfGemmMs && rates.gemvHalfBytes ? rates.gemvHalfBytes / rates.gemvHalfGemmMs / 1e6 : undefined;
}

export async function measureRates(device: DeviceKind, options: { sweep?: boolean } = {}): Promise<DeviceRates> {
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
  // (268 MB in fp32, 134 MB in fp16): as the graphs write it (Gemm with transB; in fp16
  // with the Casts around it) and as a MatMul on a pre-transposed weight. Random values
  // (a constant weight can stream faster than real data), fixed seed.
  const rows = device === 'cpu' ? 4096 : 16384;
  const cols = 4096;
  const weightValues = uniform(rows * cols, 0.02, 7);
  const inputValues = uniform(cols, 1, 11);
  const transposedValues = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) transposedValues[c * rows + r] = weightValues[r * cols + c];
  const gemv = async (precision: Precision, transposed: boolean): Promise<{ ms: number; relError?: number }> => {
    const gb = new GraphBuilder('gemv');
    const type = precision === 'fp16' ? 'float16' : 'float';
    const xv = gb.input('x', 'float', [1, cols]);
    const w = gb.input('w', type, transposed ? [cols, rows] : [rows, cols]);
    const operand = precision === 'fp16' ? gb.cast(xv, 'float16') : xv;
    const product = transposed ? gb.matmul(operand, w) : gb.op('Gemm', [operand, w], { transB: 1 });
    const y = precision === 'fp16' ? gb.cast(product, 'float') : product;
    gb.output(gb.reduceSum(y, [0, 1], false), 'sum', 'float', []);
    gb.output(y, 'y', 'float', [1, rows]);
    const session = await GraphSession.create('gemv', gb.toModel(), { device, outputs: { sum: 'cpu', y: 'gpu-buffer' } });
    const values = transposed ? transposedValues : weightValues;
    const dims = transposed ? [cols, rows] : [rows, cols];
    const weight = await tensors.upload(precision === 'fp16' ? f16(values, dims) : f32(values, dims));
    const input = f32(inputValues, [1, cols]);
    release((await session.run({ x: input, w: weight })).y);
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) release((await session.run({ x: input, w: weight })).y);
    const ms = (performance.now() - t0) / 10;
    let relError: number | undefined;
    if (!transposed) {
      const out = await session.run({ x: input, w: weight });
      const got = (await tensors.download(out.y)).data;
      release(out.y);
      if (got instanceof Float32Array) relError = relativeError(got, gemvReference(values, inputValues, rows, cols, precision));
    }
    release(weight);
    await session.release();
    return { ms, relError };
  };
  const sweep: GemvVariant[] = [];
  if (options.sweep) {
    for (const [k, n] of [
      [4096, 16384],
      [16384, 4096],
      [4096, 4096],
    ]) {
      const b = uniform(k * n, 0.02, 13);
      const xs = uniform(k, 1, 17);
      for (const precision of ['fp32', 'fp16'] as const) {
        for (const splits of [1, 4, 8, 16, 32]) {
          const variant = await splitGemv(tensors, device, b, xs, k, n, precision, splits);
          sweep.push(variant);
        }
      }
    }
  }
  // A block written into an all-on-the-device pool: ScatterND returns a new tensor, so
  // each write copies the pool (1 GiB: the 9B shape's K pool per layer at 1M tokens).
  const poolSlots = device === 'cpu' ? 512 : 16384;
  const reader = new GraphBuilder('pool_read');
  const pooled = reader.input('pool', 'float', ['h', 's', 'b', 'd']);
  reader.output(reader.reduceSum(reader.op('Gather', [pooled, reader.int64s([0])], { axis: 1 }), [0, 1, 2, 3], false), 'y', 'float', []);
  const readSession = await GraphSession.create('pool_read', reader.toModel(), { device, outputs });
  let pool = await tensors.zeros([2, poolSlots, 64, 128]);
  const block = await tensors.upload(f32(new Float32Array(64 * 128).fill(1), [1, 64, 128]));
  const slot = (i: number) => new ort.Tensor('int64', BigInt64Array.of(0n, BigInt(1 + (i % (poolSlots - 1)))), [1, 2]);
  pool = await tensors.scatter(pool, slot(0), block);
  release((await readSession.run({ pool })).y);
  started = performance.now();
  for (let i = 0; i < reps; i++) release((await readSession.run({ pool })).y);
  const readMs = (performance.now() - started) / reps;
  started = performance.now();
  for (let i = 0; i < reps; i++) pool = await tensors.scatter(pool, slot(i + 1), block);
  release((await readSession.run({ pool })).y);
  const poolWriteMs = Math.max(0, performance.now() - started - readMs) / reps;
  release(pool);
  release(block);
  await readSession.release();
  const single = await gemv('fp32', false);
  const singleT = await gemv('fp32', true);
  const half = await gemv('fp16', false);
  const halfT = await gemv('fp16', true);
  release(x);
  release(a);
  await Promise.all([addSession.release(), mmSession.release(), tensors.release()]);
  return {
    deviceGBps,
    uploadGBps,
    matmulTflops,
    gemvGemmMs: single.ms,
    gemvMatMulMs: singleT.ms,
    gemvBytes: rows * cols * 4,
    gemvHalfGemmMs: half.ms,
    gemvHalfMatMulMs: halfT.ms,
    gemvHalfBytes: rows * cols * 2,
    gemvRelError: single.relError,
    gemvHalfRelError: half.relError,
    gemvSweep: sweep,
    poolWriteMs,
    poolWriteBytes: 2 * poolSlots * 64 * 128 * 4,
  };
}

/** y = x B as S batched products over K/S each, partial sums added in fp32 (a split-K product out of standard ops). */
async function splitGemv(
  tensors: DeviceTensors,
  device: DeviceKind,
  b: Float32Array,
  xs: Float32Array,
  k: number,
  n: number,
  precision: Precision,
  splits: number,
): Promise<GemvVariant> {
  const gb = new GraphBuilder('gemv_split');
  const type = precision === 'fp16' ? 'float16' : 'float';
  const xv = gb.input('x', 'float', [1, k]);
  const w = gb.input('w', type, [splits, k / splits, n]);
  const operand = gb.reshape(precision === 'fp16' ? gb.cast(xv, 'float16') : xv, [splits, 1, k / splits]);
  const partial = gb.matmul(operand, w); // [S, 1, N]
  const y = gb.reduceSum(precision === 'fp16' ? gb.cast(partial, 'float') : partial, [0], false); // [1, N]
  gb.output(gb.reduceSum(y, [0, 1], false), 'sum', 'float', []);
  gb.output(y, 'y', 'float', [1, n]);
  const session = await GraphSession.create('gemv_split', gb.toModel(), { device, outputs: { sum: 'cpu', y: 'gpu-buffer' } });
  const dims = [splits, k / splits, n];
  const weight = await tensors.upload(precision === 'fp16' ? f16(b, dims) : f32(b, dims));
  const input = f32(xs, [1, k]);
  release((await session.run({ x: input, w: weight })).y);
  const times: number[] = [];
  for (let i = 0; i < 10; i++) {
    const t0 = performance.now();
    release((await session.run({ x: input, w: weight })).y);
    times.push(performance.now() - t0);
  }
  const ms = times.sort((p, q) => p - q)[5];
  const out = await session.run({ x: input, w: weight });
  const got = (await tensors.download(out.y)).data;
  release(out.y);
  let relError: number | undefined;
  if (got instanceof Float32Array) {
    const round = (v: Float32Array): Float32Array => (precision === 'fp16' ? Float32Array.from(toHalfBits(v), f16BitsToFloat) : v);
    const br = round(b);
    const xr = round(xs);
    const want = new Float64Array(n);
    for (let row = 0; row < k; row++) for (let col = 0; col < n; col++) want[col] += xr[row] * br[row * n + col];
    relError = relativeError(got, want);
  }
  release(weight);
  await session.release();
  const bytes = k * n * (precision === 'fp16' ? 2 : 4);
  return { precision, k, n, splits, ms, gbps: bytes / ms / 1e6, relError };
}

/** Deterministic uniform values in [−scale, scale]. */
function uniform(n: number, scale: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let state = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    out[i] = (((state >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

/** y = x Wᵀ in float64 from the operands as the device sees them (rounded to fp16 in fp16). */
function gemvReference(weight: Float32Array, input: Float32Array, rows: number, cols: number, precision: Precision): Float64Array {
  const round = (v: Float32Array): Float32Array => (precision === 'fp16' ? Float32Array.from(toHalfBits(v), f16BitsToFloat) : v);
  const w = round(weight);
  const xr = round(input);
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    for (let c = 0; c < cols; c++) sum += w[r * cols + c] * xr[c];
    y[r] = sum;
  }
  return y;
}

function relativeError(got: Float32Array, want: Float64Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return Math.sqrt(num / den);
}

/** The device's resident offload decoder against the CPU host path, from the same prefill. */
async function checkAgainstCpu(spec: ModelSpec, model: SalaModel, steps: number): Promise<CheckResult> {
  const cpu = await SalaModel.create(spec.config, spec.weights, { device: 'cpu', precision: 'fp32' });
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

/**
 * fp16 against fp32 on the device, from one state: fp32 decodes greedily, then fp16
 * is fed the same ids (so one early disagreement does not make every later row differ).
 */
async function comparePrecisions(reference: SalaModel, other: SalaModel, sequence: Sequence, first: number, steps: number): Promise<PrecisionCheck> {
  const context = sequence.length;
  const run = async (model: SalaModel, ids: number[]): Promise<Float32Array[]> => {
    const checkpoint = sequence.checkpoint();
    const decoder = await model.residentDecoder(sequence, { placement: 'offload', maxTokens: context + steps + 1 });
    const rows: Float32Array[] = [];
    for (let i = 0; i < steps; i++) {
      rows.push(await decoder.step(ids[i]));
      if (ids.length <= i + 1) ids.push(argmax(rows[i]));
    }
    await decoder.close();
    sequence.rollback(checkpoint);
    return rows;
  };
  const ids = [first];
  const want = await run(reference, ids);
  const got = await run(other, ids);
  let maxAbsLogitDiff = 0;
  let maxAbsLogit = 0;
  let sameArgmaxSteps = 0;
  want.forEach((row, i) => {
    for (let j = 0; j < row.length; j++) {
      maxAbsLogitDiff = Math.max(maxAbsLogitDiff, Math.abs(row[j] - got[i][j]));
      maxAbsLogit = Math.max(maxAbsLogit, Math.abs(row[j]));
    }
    if (argmax(row) === argmax(got[i])) sameArgmaxSteps++;
  });
  return { context, steps, maxAbsLogitDiff, maxAbsLogit, sameArgmaxSteps };
}

export interface ModelResult {
  prefill: PrefillRow[];
  rows: OffloadRow[];
  prefillTokensPerSecond: number;
  /** Per precision: the device's resident decoder against the CPU host path (fp32). */
  checks: Partial<Record<Precision, CheckResult>>;
  precisionCheck?: PrecisionCheck;
}

export async function benchModel(spec: ModelSpec, options: OffloadBenchOptions): Promise<ModelResult> {
  const log = options.log ?? (() => {});
  const modes = options.modes ?? MODES;
  const precisions = options.precisions ?? ['fp32'];
  // One model per precision, from the same host weights; all decode from one prefilled state.
  const models = new Map<Precision, SalaModel>();
  for (const precision of precisions) {
    const started = performance.now();
    const model = await SalaModel.create(spec.config, spec.weights, { device: options.device, precision });
    if (model.precision.kind !== precision) throw new Error(`${precision} is not available on ${options.device}: ${model.precision.reason}`);
    models.set(precision, model);
    log(`  ${spec.name}: ${precision} weights loaded onto ${options.device} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
  const checks: Partial<Record<Precision, CheckResult>> = {};
  if (options.check) {
    for (const [precision, model] of models) {
      const check = await checkAgainstCpu(spec, model, 8);
      checks[precision] = check;
      log(
        `  ${spec.name}: ${precision} resident decoder on ${options.device} vs fp32 CPU host path, ${check.steps} steps: max |Δlogit| ${check.maxAbsLogitDiff.toExponential(2)}, same argmax ${check.sameArgmax}`,
      );
    }
  }
  const prefillModel = models.get(precisions[0])!;
  const maxContext = Math.max(...options.contexts);
  // Room for the decode steps and a prefill chunk: growing a 1M-token store past its capacity copies all of it.
  const sequence = prefillModel.newSequence(maxContext + 64 + (options.prefillTokens ?? 0));
  let started = performance.now();
  await prefillModel.forward(sequence, spec.tile);
  const prefillTokensPerSecond = spec.tile.length / ((performance.now() - started) / 1000);
  log(`  ${spec.name}: ${precisions[0]} prefill of the ${spec.tile.length}-token tile ${prefillTokensPerSecond.toFixed(0)} tok/s`);
  const tileLength = spec.tile.length;
  const rows: OffloadRow[] = [];
  const overLimit = new Set<string>();
  const sizes = derivedSizes(spec.config);
  const hostKvPerToken = sizes.sparseLayers.length * spec.config.numKeyValueHeads * sizes.sparseHeadDim * KV_BYTES * 2;
  let precisionCheck: PrecisionCheck | undefined;
  const prefill: PrefillRow[] = [];
  // Per precision and mode: too slow at a shorter context (not run again), warmed up.
  const prefillLimits = new Set<string>();
  const prefillWarmed = new Set<string>();
  const prefillHistory: PrefillHistory = new Map();
  for (const context of options.contexts) {
    if (sequence.length > context) continue;
    tileSequence(sequence, tileLength, context);
    const fp32 = models.get('fp32');
    const fp16 = models.get('fp16');
    if (fp32 && fp16 && !precisionCheck) {
      precisionCheck = await comparePrecisions(fp32, fp16, sequence, spec.tile[context % tileLength], 8);
      log(
        `  ${spec.name} @ ${context}: fp16 vs fp32 on ${options.device}, ${precisionCheck.steps} steps fed the same ids: max |Δlogit| ${precisionCheck.maxAbsLogitDiff.toExponential(2)} (max |logit| ${precisionCheck.maxAbsLogit.toFixed(2)}), same argmax at ${precisionCheck.sameArgmaxSteps}/${precisionCheck.steps} steps`,
      );
    }
    for (const mode of modes) {
      for (const [precision, model] of models) {
        const row: OffloadRow = { model: spec.name, context, mode, precision, hostKvBytes: context * hostKvPerToken };
        rows.push(row);
        const limitKey = `${precision}:${mode}`;
        if (overLimit.has(limitKey)) {
          row.skipped = `over ${options.stepLimitMs} ms/token at a shorter context`;
          continue;
        }
        // Each mode decodes from the same state: a checkpoint of the tiled sequence.
        const checkpoint = sequence.checkpoint();
        const prefillTokens = options.prefillTokens ?? 0;
        const resident: ResidentOptions = {
          placement: mode === 'sparse-offload' ? 'offload' : 'device',
          attention: isDense(mode) ? 'dense' : 'auto',
          poolBlocks: options.poolBlocks,
          // Room for a warm-up prefill and the timed one before the decode steps.
          maxTokens: (mode === 'dense-gather' ? 4 : 1) * (context + 2 * prefillTokens + options.warmup + options.steps + 1),
        };
        try {
          let decoder = await model.residentDecoder(sequence, resident);
          if (prefillTokens > 0) {
            // The chunk's prefill on this mode's decoder, then its decode steps from there (a
            // prefill that fails leaves the decoder unusable: decode starts again from the checkpoint).
            const failed = await prefillResident(decoder, {
              spec,
              context,
              mode,
              precision,
              tokens: prefillTokens,
              tileLength,
              prefill,
              limits: prefillLimits,
              warmed: prefillWarmed,
              history: prefillHistory,
              minTokensPerSecond: options.prefillMinTokensPerSecond,
              limitMs: options.prefillLimitMs,
              log,
            });
            if (failed) {
              await decoder.close().catch(() => {});
              sequence.rollback(checkpoint);
              decoder = await model.residentDecoder(sequence, resident);
            }
          }
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
            deviceBytesPerToken: deviceBytes(spec.config, spec.parameters, context, mode, precision),
          });
          if (GraphSession.profile) {
            row.profile = Object.fromEntries([...GraphSession.profile].map(([name, e]) => [name, { runsPerToken: e.runs / options.steps, msPerToken: e.ms / options.steps }]));
            log(
              `    per token: ${[...GraphSession.profile].map(([name, e]) => `${name} ${(e.runs / options.steps).toFixed(0)}× ${(e.ms / options.steps).toFixed(2)} ms`).join(', ')}`,
            );
          }
          if (options.stepLimitMs !== undefined && ms > options.stepLimitMs) overLimit.add(limitKey);
          log(
            `  ${spec.name} @ ${context} ${mode} ${precision}: ${ms.toFixed(2)} ms/token` +
              (row.hitRate !== undefined ? `, hit rate ${(100 * row.hitRate).toFixed(1)}%` : '') +
              `, ${(row.blockBytesPerToken! / 1024).toFixed(0)} KiB blocks up/token, device KV ${(after.deviceKvBytes / 2 ** 20).toFixed(0)} MiB`,
          );
        } catch (err) {
          row.skipped = err instanceof Error ? err.message.split('\n')[0].slice(0, 160) : String(err);
          overLimit.add(limitKey);
          log(`  ${spec.name} @ ${context} ${mode} ${precision}: failed (${row.skipped})`);
        }
        sequence.rollback(checkpoint);
      }
    }
    if (options.prefillTokens) {
      const n = options.prefillTokens;
      const ids = prefillIds(spec, context, n, tileLength);
      const checkpoint = sequence.checkpoint();
      for (const [precision, model] of models) {
        const limitKey = `${precision}:host-path`;
        const row: PrefillRow = { model: spec.name, context, mode: 'host-path', precision, tokens: n, flops: prefillFlops(spec.config, spec.parameters, context, n, 'host-path') };
        prefill.push(row);
        if (prefillLimits.has(limitKey)) {
          row.skipped = `under ${options.prefillMinTokensPerSecond} tok/s at a shorter context`;
          continue;
        }
        row.skipped = prefillSkip(prefillHistory, limitKey, context, options.prefillLimitMs);
        if (row.skipped) continue;
        try {
          // The first chunk also compiles the device's kernels for these shapes: it is run once untimed.
          if (!prefillWarmed.has(limitKey)) {
            await model.forward(sequence, ids, { logits: 'last', chunkSize: n });
            sequence.rollback(checkpoint);
            prefillWarmed.add(limitKey);
          }
          GraphSession.profile?.clear();
          started = performance.now();
          await model.forward(sequence, ids, { logits: 'last', chunkSize: n });
          const ms = performance.now() - started;
          prefillHistory.set(limitKey, { context, ms });
          row.tokensPerSecond = n / (ms / 1000);
          logProfile(log, ms);
          if (options.prefillMinTokensPerSecond !== undefined && row.tokensPerSecond < options.prefillMinTokensPerSecond) prefillLimits.add(limitKey);
          log(`  ${spec.name} @ ${context} prefill host-path ${precision}: ${n} tokens at ${row.tokensPerSecond.toFixed(0)} tok/s`);
        } catch (err) {
          row.skipped = err instanceof Error ? err.message.split('\n')[0].slice(0, 160) : String(err);
          prefillLimits.add(limitKey);
          log(`  ${spec.name} @ ${context} prefill host-path ${precision}: failed (${row.skipped})`);
        }
        sequence.rollback(checkpoint);
      }
    }
  }
  for (const model of models.values()) await model.release();
  return { rows, prefill, prefillTokensPerSecond, checks, precisionCheck };
}

/** Per precision and mode: where a prefill ran last, and how long it took. */
type PrefillHistory = Map<string, { context: number; ms: number }>;

/** Why a prefill at `context` is not run, judged from the last one of its mode (undefined: run it). */
function prefillSkip(history: PrefillHistory, limitKey: string, context: number, limitMs?: number): string | undefined {
  const last = history.get(limitKey);
  if (!last || limitMs === undefined) return undefined;
  const predicted = (last.ms * context) / last.context;
  return predicted > limitMs
    ? `predicted ${(predicted / 1000).toFixed(0)} s from ${(last.ms / 1000).toFixed(1)} s at ${last.context} (limit ${(limitMs / 1000).toFixed(0)} s)`
    : undefined;
}

/** The tokens a prefill after `context` feeds: the tile, continued. */
function prefillIds(spec: ModelSpec, context: number, tokens: number, tileLength: number): number[] {
  return Array.from({ length: tokens }, (_, i) => spec.tile[(context + i) % tileLength]);
}

function logProfile(log: (line: string) => void, ms: number): void {
  if (!GraphSession.profile) return;
  const graphs = [...GraphSession.profile].sort((a, b) => b[1].ms - a[1].ms);
  const inRuns = graphs.reduce((t, [, e]) => t + e.ms, 0);
  log(
    `    prefill ${ms.toFixed(0)} ms: host work outside session runs ${(ms - inRuns).toFixed(0)} ms; ${graphs.map(([name, e]) => `${name} ${e.runs}× ${e.ms.toFixed(0)} ms`).join(', ')}`,
  );
}

/**
 * Times one chunk's prefill on a resident decoder (after an untimed one the first time
 * a mode runs: it compiles the device's kernels) and adds its row. True if it failed.
 */
async function prefillResident(
  decoder: ResidentDecoder,
  run: {
    spec: ModelSpec;
    context: number;
    mode: Mode;
    precision: Precision;
    tokens: number;
    tileLength: number;
    prefill: PrefillRow[];
    limits: Set<string>;
    warmed: Set<string>;
    history: PrefillHistory;
    minTokensPerSecond?: number;
    limitMs?: number;
    log: (line: string) => void;
  },
): Promise<boolean> {
  const { spec, context, mode, precision, tokens, log } = run;
  const limitKey = `${precision}:${mode}`;
  const row: PrefillRow = { model: spec.name, context, mode, precision, tokens, flops: prefillFlops(spec.config, spec.parameters, context, tokens, mode) };
  run.prefill.push(row);
  if (run.limits.has(limitKey)) {
    row.skipped = `under ${run.minTokensPerSecond} tok/s at a shorter context`;
    return false;
  }
  row.skipped = prefillSkip(run.history, limitKey, context, run.limitMs);
  if (row.skipped) return false;
  const ids = prefillIds(spec, context, tokens, run.tileLength);
  try {
    if (!run.warmed.has(limitKey)) {
      await decoder.prefill(ids, { chunkSize: tokens });
      run.warmed.add(limitKey);
    }
    const before = decoder.snapshot();
    GraphSession.profile?.clear();
    const started = performance.now();
    await decoder.prefill(ids, { chunkSize: tokens });
    const ms = performance.now() - started;
    run.history.set(limitKey, { context, ms });
    const after = decoder.snapshot();
    const requests = after.hits + after.misses - before.hits - before.misses;
    const sparseLayers = derivedSizes(spec.config).sparseLayers.length;
    Object.assign(row, {
      tokensPerSecond: tokens / (ms / 1000),
      hitRate: mode === 'sparse-offload' && requests > 0 ? (after.hits - before.hits) / requests : undefined,
      blockBytesPerToken: (after.blockBytes - before.blockBytes) / tokens,
      attendCallsPerLayer: (after.prefillAttendCalls - before.prefillAttendCalls) / Math.max(1, sparseLayers),
    });
    logProfile(log, ms);
    if (run.minTokensPerSecond !== undefined && row.tokensPerSecond! < run.minTokensPerSecond) run.limits.add(limitKey);
    log(
      `  ${spec.name} @ ${context} prefill ${mode} ${precision}: ${tokens} tokens at ${row.tokensPerSecond!.toFixed(0)} tok/s` +
        (row.hitRate !== undefined ? `, hit rate ${(100 * row.hitRate).toFixed(1)}%` : '') +
        `, ${(row.blockBytesPerToken! / 1024).toFixed(0)} KiB blocks up/token, ${row.attendCallsPerLayer!.toFixed(1)} attention calls per layer`,
    );
    return false;
  } catch (err) {
    row.skipped = err instanceof Error ? err.message.split('\n')[0].slice(0, 160) : String(err);
    run.limits.add(limitKey);
    log(`  ${spec.name} @ ${context} prefill ${mode} ${precision}: failed (${row.skipped})`);
    return true;
  }
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

/**
 * The rate a floor is computed at: the device's memory bandwidth when given (--peak-gbps,
 * e.g. the card's datasheet figure), else the best rate measured in the run.
 */
function floorGBps(rates: DeviceRates, precision: Precision, peakGBps?: number): number {
  return peakGBps ?? Math.max(rates.deviceGBps, gemvGBps(rates, precision) ?? 0);
}

export function offloadTable(rows: OffloadRow[], rates?: DeviceRates, peakGBps?: number): string {
  const lines = [
    '| model | context | mode | precision | decode ms/token | floor ms | hit rate | blocks up KiB/token | other up KiB/token | device KV MiB | host KV MiB |',
    '|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    // The floor: what the step reads from device memory at the products' streaming rate, plus the missed blocks at the upload rate.
    const rate = rates ? floorGBps(rates, r.precision ?? 'fp32', peakGBps) : undefined;
    const floor =
      rates && rate && r.deviceBytesPerToken ? (r.deviceBytesPerToken / (rate * 1e9)) * 1000 + ((r.blockBytesPerToken ?? 0) / (rates.uploadGBps * 1e9)) * 1000 : undefined;
    r.floorMs = floor;
    const mib = (b?: number) => (b === undefined ? '–' : (b / 2 ** 20).toFixed(b < 2 ** 20 ? 2 : 0));
    lines.push(
      `| ${r.model} | ${r.context} | ${r.mode} | ${r.precision ?? 'fp32'} | ${r.decodeMsPerToken?.toFixed(2) ?? `– (${r.skipped})`} | ${floor?.toFixed(2) ?? '–'} | ` +
        `${r.hitRate === undefined ? '–' : `${(100 * r.hitRate).toFixed(1)}%`} | ${r.blockBytesPerToken === undefined ? '–' : (r.blockBytesPerToken / 1024).toFixed(1)} | ` +
        `${r.otherBytesPerToken === undefined ? '–' : (r.otherBytesPerToken / 1024).toFixed(1)} | ${mib(r.deviceKvBytes)} | ${mib(r.hostKvBytes)} |`,
    );
  }
  return lines.join('\n');
}

export function prefillTable(rows: PrefillRow[]): string {
  const percent = (v?: number) => (v === undefined ? '–' : `${(100 * v).toFixed(1)}%`);
  return [
    '| model | context | mode | precision | tokens fed | prefill tok/s | floor tok/s (FLOPs at the measured MatMul rate) | hit rate | blocks up KiB/token | attention calls per layer |',
    '|---|---:|---|---|---:|---:|---:|---:|---:|---:|',
    ...rows.map(
      (r) =>
        `| ${r.model} | ${r.context} | ${r.mode ?? 'host-path'} | ${r.precision} | ${r.tokens} | ${r.tokensPerSecond?.toFixed(0) ?? `– (${r.skipped})`} | ${r.floorMs ? (r.tokens / (r.floorMs / 1000)).toFixed(0) : '–'} | ` +
        `${percent(r.hitRate)} | ${r.blockBytesPerToken === undefined ? '–' : (r.blockBytesPerToken / 1024).toFixed(1)} | ${r.attendCallsPerLayer?.toFixed(1) ?? '–'} |`,
    ),
  ].join('\n');
}

/**
 * One line per mode and precision (fp16 dashed beside fp32 in the mode's color) of a
 * figure against context; `value` is undefined where a row has no figure.
 */
function modeChart<Row extends { context: number; precision?: Precision }>(
  title: string,
  yLabel: string,
  modes: readonly string[],
  rows: Row[],
  modeOf: (row: Row) => string,
  value: (row: Row) => number | undefined,
): string {
  const precisions = [...new Set(rows.map((r) => r.precision ?? 'fp32'))].sort();
  return lineChart({
    title,
    xLabel: 'context tokens',
    yLabel,
    series: modes
      .flatMap((mode, color) =>
        precisions.map((precision) => ({
          name: precisions.length > 1 ? `${mode} ${precision}` : mode,
          color,
          dashed: precision === 'fp16' && precisions.length > 1,
          points: rows.filter((r) => modeOf(r) === mode && (r.precision ?? 'fp32') === precision && value(r) !== undefined).map((r) => [r.context, value(r)!] as [number, number]),
        })),
      )
      .filter((series) => series.points.length > 0),
  });
}

/** Prefill tokens/s against context, one line per mode. */
export function prefillChart(title: string, rows: PrefillRow[]): string {
  return modeChart(
    title,
    'prefill tokens/s',
    PREFILL_MODES,
    rows,
    (r) => r.mode ?? 'host-path',
    (r) => r.tokensPerSecond,
  );
}

/** Decode ms/token against context, one line per mode. */
export function decodeChart(title: string, rows: OffloadRow[]): string {
  return modeChart(
    title,
    'ms/token',
    MODES,
    rows,
    (r) => r.mode,
    (r) => r.decodeMsPerToken,
  );
}

function describeRates(device: DeviceKind, rates: DeviceRates): string {
  const gbps = (bytes: number, ms?: number) => (ms === undefined ? '–' : `${ms.toFixed(2)} ms (${(bytes / ms / 1e6).toFixed(0)} GB/s)`);
  return (
    `bench:offload on ${device}: device read ${rates.deviceGBps.toFixed(0)} GB/s, upload ${rates.uploadGBps.toFixed(2)} GB/s, fp32 MatMul ${rates.matmulTflops.toFixed(2)} TFLOP/s; ` +
    `one-row product over ${(rates.gemvBytes / 2 ** 20).toFixed(0)} MiB fp32: Gemm(transB) ${gbps(rates.gemvBytes, rates.gemvGemmMs)}, MatMul ${gbps(rates.gemvBytes, rates.gemvMatMulMs)}, rel. error ${rates.gemvRelError?.toExponential(1) ?? '–'}; ` +
    `over ${((rates.gemvHalfBytes ?? 0) / 2 ** 20).toFixed(0)} MiB fp16: Gemm(transB) ${gbps(rates.gemvHalfBytes ?? 0, rates.gemvHalfGemmMs)}, MatMul ${gbps(rates.gemvHalfBytes ?? 0, rates.gemvHalfMatMulMs)}, rel. error ${rates.gemvHalfRelError?.toExponential(1) ?? '–'}` +
    (rates.poolWriteMs === undefined
      ? ''
      : `; one block into a ${((rates.poolWriteBytes ?? 0) / 2 ** 20).toFixed(0)} MiB pool ${gbps(rates.poolWriteBytes ?? 0, rates.poolWriteMs)} of pool copied`)
  );
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
      precision: { type: 'string' },
      'skip-rates': { type: 'boolean', default: false },
      'rates-only': { type: 'boolean', default: false },
      'gemv-sweep': { type: 'boolean', default: false },
      'peak-gbps': { type: 'string' },
      'prefill-tokens': { type: 'string' },
      'prefill-limit-ms': { type: 'string', default: '30000' },
    },
  });
  if (!isDeviceRequest(values.device!) || values.device === 'auto') throw new Error(`--device must be cpu, webgpu or cuda, got ${values.device}`);
  const device = values.device as DeviceKind;
  const precisions = (values.precision ?? (device === 'cpu' ? 'fp32' : 'fp32,fp16')).split(',').map((p) => {
    if (!isPrecisionRequest(p) || p === 'auto') throw new Error(`--precision takes fp32, fp16, int4 or a list (fp32,fp16), got ${p}`);
    return p;
  });
  const contexts = values.contexts ? values.contexts.split(',').map(Number) : values.quick ? [4096] : [8192, 32768, 131072, 262144, 524288, 1048576];
  const steps = Number(values.steps ?? (values.quick ? 4 : 16));
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const rates = values['skip-rates'] ? undefined : await measureRates(device, { sweep: values['gemv-sweep'] });
  const peakGBps = values['peak-gbps'] ? Number(values['peak-gbps']) : undefined;
  if (rates) log(describeRates(device, rates));
  for (const v of rates?.gemvSweep ?? [])
    log(
      `  split-K one-row product ${v.precision} K ${v.k} N ${v.n} S ${v.splits}: ${v.ms.toFixed(3)} ms, ${v.gbps.toFixed(0)} GB/s, rel. error ${v.relError?.toExponential(1) ?? '–'}`,
    );
  const rows: OffloadRow[] = [];
  const prefillRows: PrefillRow[] = [];
  const prefill: Record<string, number> = {};
  const checks: Record<string, Partial<Record<Precision, CheckResult>>> = {};
  const precisionChecks: Record<string, PrecisionCheck> = {};
  const machine = { device, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, node: process.version, date: new Date().toISOString() };
  // Written after every model, so a run cut short by a time limit keeps what it measured.
  const save = (): void => {
    if (!values.out) return;
    mkdirSync(path.dirname(values.out), { recursive: true });
    writeFileSync(
      values.out,
      JSON.stringify({ machine, rates, peakGBps, steps, precisions, prefillTileTokensPerSecond: prefill, checks, precisionChecks, rows, prefill: prefillRows }, null, 2),
    );
  };
  save();
  const models = values['rates-only'] ? [] : (values.models ?? (values.quick ? 'default' : 'default,9b')).split(',');
  for (const name of models) {
    const tile = values.tile ? Number(values.tile) : undefined;
    const spec = name === '9b' ? nineBSpec(tile ?? 2048) : await defaultModelSpec(tile ?? (values.quick ? 2048 : 4096));
    const result = await benchModel(spec, {
      device,
      precisions,
      contexts,
      steps,
      warmup: 3,
      poolBlocks: values['pool-blocks'] ? Number(values['pool-blocks']) : undefined,
      stepLimitMs: Number(values['step-limit-ms']),
      check: values.check!.split(',').includes(name),
      modes: values.modes ? parseModes(values.modes) : undefined,
      prefillTokens: values['prefill-tokens'] ? Number(values['prefill-tokens']) : undefined,
      prefillMinTokensPerSecond: 20,
      prefillLimitMs: Number(values['prefill-limit-ms']),
      log,
    });
    rows.push(...result.rows);
    for (const row of result.prefill) if (rates) row.floorMs = ((row.flops ?? 0) / (rates.matmulTflops * 1e12)) * 1000;
    prefillRows.push(...result.prefill);
    if (Object.keys(result.checks).length > 0) checks[spec.name] = result.checks;
    if (result.precisionCheck) precisionChecks[spec.name] = result.precisionCheck;
    prefill[spec.name] = result.prefillTokensPerSecond;
    offloadTable(rows, rates, peakGBps);
    save();
  }
  const markdown = offloadTable(rows, rates, peakGBps) + (prefillRows.length > 0 ? `\n\n${prefillTable(prefillRows)}` : '');
  process.stdout.write(`${markdown}\n`);
  if (values.out) {
    save();
    writeFileSync(values.out.replace(/\.json$/, '.md'), `${markdown}\n`);
    for (const model of new Set(rows.map((r) => r.model))) {
      const slug = model.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
      writeFileSync(
        values.out.replace(/\.json$/, `-${slug}.svg`),
        decodeChart(
          `${model}: decode ms/token (${device})`,
          rows.filter((r) => r.model === model),
        ),
      );
      const prefillOf = prefillRows.filter((r) => r.model === model && r.tokensPerSecond !== undefined);
      if (prefillOf.length > 0)
        writeFileSync(values.out.replace(/\.json$/, `-${slug}-prefill.svg`), prefillChart(`${model}: prefill tokens/s after the context (${device})`, prefillOf));
    }
  }
}

// (The file name check: bundled into another benchmark, every module is `require.main`.)
if (require.main === module && /offload\.[jt]s$/.test(process.argv[1] ?? '')) {
  main().catch((err: unknown) => {
    process.stderr.write(`bench:offload failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  });
}

function parseModes(list: string): Mode[] {
  const modes = list.split(',');
  for (const mode of modes)
    if (!isDense(mode) && !MODES.includes(mode as Mode)) throw new Error(`--modes takes dense, dense-gather, sparse-device and sparse-offload, got ${mode}`);
  return modes as Mode[];
}
