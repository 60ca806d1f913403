// Decode ms/token and prefill tokens/s against context, per execution provider, side
// by side in one process: each provider runs the path the product uses on it (CUDA
// and the CPU: the host executor, weights baked into per-layer sessions on CUDA;
// WebGPU: the resident decoder, KV offloaded to host memory through a device block
// pool). Beside each figure, its hardware floor from rates measured in the same run
// on the same provider: weight bytes a step reads ÷ the provider's streaming read rate,
// and prefill FLOPs ÷ its fp16 matrix-product rate.
//
// Contexts are tiled from a real prefill (bench/offload.ts, tileSequence): sparse
// layers are NoPE, so tiled keys are valid keys and a step costs what it would after
// a real prefill of that length.
//
//   npm run bench:gpu-step -- --devices cuda,webgpu --models default,9b --precisions fp16,int4 --out docs/benchmarks/gpu-step.json
//   npm run bench:gpu-step -- --devices cpu --models default --precisions fp32 --contexts 8192 --steps 4   (a quick CPU run)
//   npm run bench:gpu-step -- --render docs/benchmarks/gpu-step-cuda.json   (its markdown again from the JSON)
import { parseArgs } from 'node:util';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SalaModel } from '../engine/model/sala-model.js';
import type { KvPlacement, ResidentOptions, SparseStep } from '../engine/model/resident-decoder.js';
import { argmax } from '../engine/model/sampling.js';
import { isDeviceRequest, isPrecisionRequest, keepsTensorsOnDevice, type DeviceKind, type Precision } from '../engine/runtime/device.js';
import { GraphBuilder } from '../engine/runtime/graph-builder.js';
import { GraphSession, f16, f32 } from '../engine/runtime/session.js';
import { derivedSizes, type SalaConfig } from '../engine/model/config.js';
import { bakeInputs } from '../engine/runtime/bake.js';
import { defaultModelSpec, nineBSpec, tileSequence, weightBytesPerToken, type ModelSpec } from './offload.js';
import { lineChart } from './svg-chart.js';

/** A prefill row form (ResidentOptions.rowAttention), with '@host' where the selection of resident blocks comes to the host first (prefillSelection 'host'). */
type RowAttention = NonNullable<ResidentOptions['rowAttention']> | `${NonNullable<ResidentOptions['rowAttention']>}@host`;

interface Floors {
  /** Weights streamed by an fp16 vector × matrix product (a decode step's shape), GB/s. */
  readGBps: number;
  /** fp16 matrix products on the device, TFLOP/s. */
  matmulTflops: number;
  /** Host → device: a 256 MiB fp32 input from host memory, reduced on the device, GB/s (the offload path's bus). */
  h2dGBps: number;
}

interface StepRow {
  model: string;
  device: DeviceKind;
  /** Tokens the sequence held when the row's prefill began: the context measured (a check on `context`). */
  contextTokens?: number;
  /** Where the resident decoder keeps the sparse layers' past KV ('host' for the host executor). */
  placement?: KvPlacement | 'host';
  /** How the resident decoder's prefill attends a row group (ResidentOptions.rowAttention; '@host': prefillSelection 'host'). */
  rowAttention?: RowAttention;
  /** Offload: how missed blocks reach the device pool (BlockUpload; PANORAMA_BLOCK_UPLOAD, PANORAMA_PIN_HOST_KV). */
  blockUpload?: BlockUpload;
  /** Captured and offload decode steps: how the selection's stage 1 reads the compressed keys (StageOne; PANORAMA_STAGE_ONE). */
  stageOne?: StageOne;
  /** KV on the device: how a decode step's sparse layer runs (ResidentOptions.sparseStep). */
  sparseStep?: SparseStep;
  /** Tokens per prefill chunk (the forward plan's chunkSize); the executor's own when absent. */
  chunkSize?: number;
  /** Device memory one prefill attention call's scores may take (ResidentOptions.attentionBytes); the decoder's default when absent. */
  attentionBytes?: number;
  /** CUDA: 'cuda-graphs' or 'io-binding' (the binding addon, with or without decode-step CUDA graphs), or 'host-fed' (see deviceEntry). */
  cudaRuns?: CudaRuns;
  precision: Precision;
  context: number;
  prefillTokens?: number;
  /** The first prefill call after the decoder was made (the figure every earlier report gives). */
  prefillTokensPerSecond?: number;
  /** With --prefill-calls N > 1: the later calls, each of prefillTokens more, one after another (an index's steady state). */
  prefillWarmTokensPerSecond?: number;
  prefillFloorTokensPerSecond?: number;
  decodeMsPerToken?: number;
  decodeFloorMs?: number;
  /** Host ↔ device bytes per decode step (the host executor's inputs and outputs; the resident decoder's uploads). */
  busBytesPerToken?: number;
  /** With PANORAMA_PROFILE_RUNS set: session runs and wall ms per decode step, by graph (layer suffixes folded). */
  profile?: Record<string, { runsPerToken: number; msPerToken: number }>;
  /** The same for the whole prefill (runs and ms of the prefill, not per token). */
  prefillProfile?: Record<string, { runsPerToken: number; msPerToken: number }>;
  /** The same for the later prefill calls together (--prefill-calls). */
  prefillWarmProfile?: Record<string, { runsPerToken: number; msPerToken: number }>;
  /** How far above its floor: measured ÷ floor (decode), floor ÷ measured (prefill). */
  decodeOverFloor?: number;
  prefillUnderFloor?: number;
  /** The greedy tokens of the timed steps (rows of one model and context that differ only in how they run should agree). */
  decodeIds?: number[];
  skipped?: string;
}

type CudaRuns = 'cuda-graphs' | 'io-binding' | 'host-fed';
/** Offload misses: the addon's copies from the host store page-locked ('direct', the default) or gathered into page-locked staging ('staged'), or ScatterND runs ('scatter'). */
type BlockUpload = 'direct' | 'staged' | 'scatter';
/** A decode step's stage 1 (captured or offloaded): each store read once in its rows ('keys-major', the default) or transposed first ('transposed'). */
type StageOne = 'keys-major' | 'transposed';

/**
 * A --devices entry: a provider; for CUDA, how its runs go: 'cuda' (the binding addon,
 * decode-step Lightning layers replayed as CUDA graphs: the product's default),
 * 'cuda-nograph' (the addon without the graphs), 'cuda-host' (no addon: onnxruntime-node
 * copies every input and output; the comparison point).
 */
function deviceEntry(entry: string): { device: DeviceKind; cudaRuns?: CudaRuns } {
  if (entry === 'cuda-host') return { device: 'cuda', cudaRuns: 'host-fed' };
  if (entry === 'cuda-nograph') return { device: 'cuda', cudaRuns: 'io-binding' };
  if (!isDeviceRequest(entry) || entry === 'auto') throw new Error(`--devices takes cpu, webgpu, cuda, cuda-nograph and cuda-host, got ${entry}`);
  return { device: entry, cudaRuns: entry === 'cuda' ? 'cuda-graphs' : undefined };
}

/** Runs `body` with the binding addon and CUDA graphs on or off, as the entry asks. */
async function withCudaRuns<T>(cudaRuns: CudaRuns | undefined, body: () => Promise<T>): Promise<T> {
  const before = { addon: process.env.PANORAMA_ORT_ADDON, graph: process.env.PANORAMA_CUDA_GRAPH };
  if (cudaRuns === 'host-fed') process.env.PANORAMA_ORT_ADDON = 'off';
  if (cudaRuns === 'io-binding') process.env.PANORAMA_CUDA_GRAPH = '0';
  try {
    return await body();
  } finally {
    for (const [name, value] of [
      ['PANORAMA_ORT_ADDON', before.addon],
      ['PANORAMA_CUDA_GRAPH', before.graph],
    ] as const) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** How a row's sparse decode step ran, in its label (the default, replayed where steps are captured, says nothing). */
const STEP_LABEL: Record<SparseStep, string> = { captured: '', fused: ' (sparse step as a session run)', split: ' (split step)' };
/** How a row's offload misses moved, in its label (the default says nothing). */
const UPLOAD_LABEL: Record<BlockUpload, string> = { direct: '', staged: ' (misses staged, store not page-locked)', scatter: ' (misses by ScatterND)' };

async function timeRuns(run: () => Promise<unknown>, runs: number): Promise<number> {
  await run();
  await run();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    await run();
    times.push(performance.now() - started);
  }
  return median(times);
}

/** The provider's rates, through onnxruntime on that provider: weights baked in, as the executors hold them. */
async function measureFloors(device: DeviceKind): Promise<Floors> {
  const small = device === 'cpu';
  // Read: one fp16 vector × a baked [4096, cols] fp16 matrix (1 GiB on a GPU), the shape of every
  // decode-step product: the weights are read once, nothing else moves. (A reduction of a baked
  // tensor alone would be folded to a constant when the session is created.)
  const cols = small ? 16384 : 131072;
  const read = new GraphBuilder('floor_read');
  read.output(read.matmul(read.input('v', 'float16', [1, 4096]), read.input('w', 'float16', [4096, cols])), 'y', 'float16', [1, cols]);
  const w = f16(new Float32Array(cols * 4096).fill(0.001), [4096, cols]);
  const readSession = await GraphSession.create('floor_read', bakeInputs(read.toModel(), { w }), { device });
  const v = f16(new Float32Array(4096).fill(1), [1, 4096]);
  const readMs = await timeRuns(() => readSession.run({ v }), 10);
  await readSession.release();
  // Products: 4 chained n×n fp16 MatMuls on a baked weight; the left operand made on the device.
  const n = small ? 1024 : 8192;
  const mm = new GraphBuilder('floor_matmul');
  const seed = mm.input('seed', 'float16', [1, n]);
  const weight = mm.input('w', 'float16', [n, n]);
  let x = mm.op('Expand', [seed, mm.int64s([n, n])]);
  for (let i = 0; i < 4; i++) x = mm.matmul(x, weight);
  mm.output(mm.op('ReduceSum', [x, mm.int64s([0, 1])], { keepdims: 0 }), 'y', 'float16', []);
  const mmSession = await GraphSession.create('floor_matmul', bakeInputs(mm.toModel(), { w: f16(new Float32Array(n * n).fill(1 / n), [n, n]) }), { device });
  const mmMs = await timeRuns(() => mmSession.run({ seed: f16(new Float32Array(n).fill(0.5), [1, n]) }), 5);
  await mmSession.release();
  const floats = small ? 2 ** 24 : 2 ** 26;
  const bus = new GraphBuilder('floor_h2d');
  bus.output(bus.op('ReduceSum', [bus.input('x', 'float', [floats]), bus.int64s([0])], { keepdims: 0 }), 'y', 'float', []);
  const busSession = await GraphSession.create('floor_h2d', bus.toModel(), { device });
  const hostData = f32(new Float32Array(floats).fill(1), [floats]);
  const busMs = await timeRuns(() => busSession.run({ x: hostData }), 5);
  await busSession.release();
  return { readGBps: (cols * 4096 * 2) / (readMs / 1000) / 1e9, matmulTflops: (4 * 2 * n ** 3) / (mmMs / 1000) / 1e12, h2dGBps: (floats * 4) / (busMs / 1000) / 1e9 };
}

/**
 * Bytes the host executor moves between host and device per decode step at `context`:
 * Lightning states in and out, the blocks each sparse layer attends to and its compressed
 * keys (fp32), the logits back.
 */
export function hostExecutorBusBytes(config: SalaConfig, context: number): number {
  const sizes = derivedSizes(config);
  const { blockSize, kernelStride, denseLen } = config.sparse;
  const state = sizes.lightningHeads * sizes.lightningHeadDim * sizes.lightningHeadDim * 4;
  const blocks = Math.ceil(context / blockSize);
  const width = context < denseLen ? blocks : Math.min(sizes.topkTotal, blocks);
  const row = config.numKeyValueHeads * sizes.sparseHeadDim * 4;
  const gathered = 2 * width * blockSize * row;
  const compressed = context < denseLen ? 0 : (context / kernelStride + context / (4 * kernelStride)) * row;
  return sizes.lightningLayers.length * 2 * state + sizes.sparseLayers.length * (gathered + compressed) + config.vocabSize * 4;
}

/**
 * Under node --cpu-prof: a closure that logs the monotonic µs from now to when it is called (a prefill call, the timed steps),
 * the clock the profile's samples are stamped with, so its samples can be cut to that window.
 */
function cpuProfileWindow(): ((what: string, log: (line: string) => void) => void) | undefined {
  if (!process.execArgv.some((arg) => arg.startsWith('--cpu-prof'))) return undefined;
  const from = process.hrtime.bigint() / 1000n;
  return (what, log) => log(`      cpu profile window, ${what}: ${from}–${process.hrtime.bigint() / 1000n} µs`);
}

function foldedProfile(steps: number): Record<string, { runsPerToken: number; msPerToken: number }> | undefined {
  if (!GraphSession.profile) return undefined;
  const out: Record<string, { runsPerToken: number; msPerToken: number }> = {};
  for (const [name, entry] of GraphSession.foldedProfile()) out[name] = { runsPerToken: entry.runs / steps, msPerToken: entry.ms / steps };
  return out;
}

function profileLine(profile: Record<string, { runsPerToken: number; msPerToken: number }>): string {
  return JSON.stringify(Object.fromEntries(Object.entries(profile).map(([k, v]) => [k, `${v.runsPerToken.toFixed(0)} runs ${v.msPerToken.toFixed(2)} ms`])));
}

/** What one run measures for each model, provider and precision: the lists are crossed (runCases). */
interface RunOptions {
  contexts: number[];
  placements: readonly KvPlacement[];
  rowAttention: readonly RowAttention[];
  sparseSteps: readonly SparseStep[];
  blockUploads: readonly BlockUpload[];
  stageOnes: readonly StageOne[];
  /** undefined: the executor's own chunk / score budget. */
  chunkSizes: readonly (number | undefined)[];
  attentionBytes: readonly (number | undefined)[];
  steps: number;
  warmup: number;
  prefillTokens: number;
  /** Prefill calls of prefillTokens each, one after another: the first is timed alone, the rest together. */
  prefillCalls: number;
  deadline: number;
}

/** Measures every case of one model, provider and precision into `rows` as each finishes (a later failure keeps the rows before it). */
async function runModel(
  spec: ModelSpec,
  device: DeviceKind,
  precision: Precision,
  floors: Floors,
  options: RunOptions,
  log: (line: string) => void,
  rows: StepRow[],
): Promise<void> {
  const loadStarted = performance.now();
  const model = await SalaModel.create(spec.config, spec.weights, { device, precision, hostKvBytes: 0 });
  if (model.device.kind !== device) throw new Error(`${device} did not start: ${model.device.reason}`);
  log(`  ${spec.name} ${device} ${precision}: loaded in ${((performance.now() - loadStarted) / 1000).toFixed(1)} s (${model.device.reason})`);
  const weightBytes = weightBytesPerToken(spec.config, spec.parameters, precision);
  const decodeFloorMs = (weightBytes / (floors.readGBps * 1e9)) * 1000;
  const prefillFloor = (floors.matmulTflops * 1e12) / (2 * spec.parameters);
  try {
    const maxContext = Math.max(...options.contexts);
    const prefillTotal = options.prefillTokens * options.prefillCalls;
    const sequence = model.newSequence(maxContext + prefillTotal + options.warmup + options.steps + 8);
    await model.forward(sequence, spec.tile);
    const tiled = sequence.checkpoint();
    const tileLength = spec.tile.length;
    // The host executor has no placement: its KV is always in host memory.
    const placements = keepsTensorsOnDevice(device) ? options.placements : (['host'] as const);
    for (const { context, placement, rowAttention, sparseStep, stageOne, blockUpload, chunkSize, attentionBytes } of runCases(options, placements)) {
      const base = {
        model: spec.name,
        device,
        precision,
        context,
        placement,
        rowAttention,
        sparseStep,
        stageOne,
        blockUpload,
        chunkSize,
        attentionBytes,
        decodeFloorMs,
        prefillFloorTokensPerSecond: prefillFloor,
      };
      if (performance.now() > options.deadline) {
        rows.push({ ...base, skipped: 'over the run’s time budget' });
        continue;
      }
      setBlockUpload(blockUpload);
      if (stageOne === 'transposed') process.env.PANORAMA_STAGE_ONE = 'transposed';
      else delete process.env.PANORAMA_STAGE_ONE;
      // Tiling only grows the sequence: a shorter context after a longer one starts from the tile.
      if (sequence.length > context) sequence.rollback(tiled);
      tileSequence(sequence, tileLength, context);
      const contextTokens = sequence.length;
      const checkpoint = sequence.checkpoint();
      const callIds = (call: number) => Array.from({ length: options.prefillTokens }, (_, i) => spec.tile[(context + call * options.prefillTokens + i) % tileLength]);
      const ids = callIds(0);
      const resident =
        placement === 'host'
          ? undefined
          : await model.residentDecoder(sequence, {
              placement,
              rowAttention: rowAttention.replace('@host', '') as ResidentOptions['rowAttention'],
              prefillSelection: rowAttention.endsWith('@host') ? 'host' : 'device',
              sparseStep,
              attentionBytes,
              maxTokens: context + prefillTotal + options.warmup + options.steps + 1,
            });
      const feed = (more: number[]) => (resident ? resident.prefill(more, { chunkSize }) : model.forward(sequence, more, { chunkSize }));
      GraphSession.profile?.clear();
      let started = performance.now();
      const window = cpuProfileWindow();
      let logits = await feed(ids);
      const prefillMs = performance.now() - started;
      window?.('first prefill call', log);
      const prefillTokensPerSecond = ids.length / (prefillMs / 1000);
      const prefillProfile = foldedProfile(1);
      // Later calls find the sessions run once and their memory held, as an index's chunks after the first do.
      let warmMs = 0;
      GraphSession.profile?.clear();
      for (let call = 1; call < options.prefillCalls; call++) {
        const more = callIds(call);
        started = performance.now();
        const callWindow = cpuProfileWindow();
        logits = await feed(more);
        warmMs += performance.now() - started;
        callWindow?.(`prefill call ${call + 1}`, log);
      }
      const prefillWarmTokensPerSecond = options.prefillCalls > 1 ? ((options.prefillCalls - 1) * options.prefillTokens) / (warmMs / 1000) : undefined;
      const prefillWarmProfile = options.prefillCalls > 1 ? foldedProfile(1) : undefined;
      // Untimed steps first: CUDA graphs are captured on a decoder's first steps.
      for (let step = 0; step < options.warmup; step++) logits = resident ? await resident.step(argmax(logits)) : await model.forward(sequence, [argmax(logits)]);
      GraphSession.profile?.clear();
      const before = resident?.snapshot();
      const decodeIds: number[] = [];
      started = performance.now();
      const stepsWindow = cpuProfileWindow();
      for (let step = 0; step < options.steps; step++) {
        const next = argmax(logits);
        decodeIds.push(next);
        logits = resident ? await resident.step(next) : await model.forward(sequence, [next]);
      }
      const decodeMsPerToken = (performance.now() - started) / options.steps;
      stepsWindow?.(`${options.steps} decode steps`, log);
      const profile = foldedProfile(options.steps);
      const after = resident?.snapshot();
      const busBytesPerToken =
        before && after ? (after.blockBytes + after.otherBytes - before.blockBytes - before.otherBytes) / options.steps : hostExecutorBusBytes(spec.config, context);
      await resident?.close();
      sequence.rollback(checkpoint);
      const row = {
        ...base,
        contextTokens,
        busBytesPerToken,
        profile,
        prefillProfile,
        prefillTokens: ids.length,
        prefillTokensPerSecond,
        prefillWarmTokensPerSecond,
        prefillWarmProfile,
        decodeMsPerToken,
        decodeOverFloor: decodeMsPerToken / decodeFloorMs,
        prefillUnderFloor: prefillFloor / prefillTokensPerSecond,
        decodeIds,
      };
      rows.push(row);
      log(
        `    ${context} ${placement}${sparseStep ? ` (${sparseStep})` : ''}${stageOne === 'transposed' ? ' (stage 1 transposed)' : ''}${blockUpload ? ` (blocks: ${blockUpload})` : ''} ${prefillForm(row)}: prefill ${prefillTokensPerSecond.toFixed(0)} tok/s (floor ${prefillFloor.toFixed(0)}), decode ${decodeMsPerToken.toFixed(2)} ms/token (floor ${decodeFloorMs.toFixed(3)}, ${row.decodeOverFloor.toFixed(0)}×), bus ${(busBytesPerToken / 2 ** 20).toFixed(1)} MiB/token`,
      );
      if (profile) log(`      decode step: ${profileLine(profile)}`);
      if (prefillProfile) log(`      prefill (${prefillMs.toFixed(0)} ms): ${profileLine(prefillProfile)}`);
      if (prefillWarmTokensPerSecond !== undefined) log(`      later prefill calls: ${prefillWarmTokensPerSecond.toFixed(0)} tok/s (${warmMs.toFixed(0)} ms)`);
      if (prefillWarmProfile) log(`      later prefill calls (${warmMs.toFixed(0)} ms): ${profileLine(prefillWarmProfile)}`);
    }
  } finally {
    setBlockUpload(undefined);
    delete process.env.PANORAMA_STAGE_ONE;
    await model.release();
  }
}

/** Sets the environment the engine reads for how offload misses move (undefined: its defaults). */
function setBlockUpload(form: BlockUpload | undefined): void {
  delete process.env.PANORAMA_BLOCK_UPLOAD;
  delete process.env.PANORAMA_PIN_HOST_KV;
  if (form === 'scatter') process.env.PANORAMA_BLOCK_UPLOAD = 'scatter';
  if (form === 'staged') process.env.PANORAMA_PIN_HOST_KV = '0';
}

/** The sparse-step forms a placement runs: offloaded, 'fused' is 'split' (its selection comes back to the host either way); the host executor has none. */
function stepForms(forms: readonly SparseStep[], placement: KvPlacement | 'host'): (SparseStep | undefined)[] {
  if (placement === 'device') return [...forms];
  if (placement === 'host') return [undefined];
  return [...new Set(forms.map((form) => (form === 'captured' ? form : 'split')))];
}

/** Every combination a run measures, in order: context, placement, then the prefill and step forms (the host executor has one form). */
function runCases(options: RunOptions, placements: readonly (KvPlacement | 'host')[]) {
  return options.contexts.flatMap((context) =>
    placements.flatMap((placement) =>
      (placement === 'host' ? (['auto'] as const) : options.rowAttention).flatMap((rowAttention) =>
        stepForms(options.sparseSteps, placement).flatMap((sparseStep) =>
          (sparseStep === 'captured' || placement === 'offload' ? options.stageOnes : [undefined]).flatMap((stageOne) =>
            (placement === 'offload' ? options.blockUploads : [undefined]).flatMap((blockUpload) =>
              options.chunkSizes.flatMap((chunkSize) =>
                options.attentionBytes.map((attentionBytes) => ({ context, placement, rowAttention, sparseStep, stageOne, blockUpload, chunkSize, attentionBytes })),
              ),
            ),
          ),
        ),
      ),
    ),
  );
}

/** How a row prefilled: its row form, and the chunk and score budget where the run named them. */
function prefillForm(r: Pick<StepRow, 'rowAttention' | 'chunkSize' | 'attentionBytes'>): string {
  return `${r.rowAttention ?? ''}${r.chunkSize ? `, chunk ${r.chunkSize}` : ''}${r.attentionBytes ? `, ≤ ${r.attentionBytes / 2 ** 20} MiB` : ''}`;
}

function markdown(floors: Record<string, Floors>, rows: StepRow[]): string {
  const lines = ['| device | weights read GB/s | fp16 TFLOP/s | host → device GB/s |', '|---|---:|---:|---:|'];
  for (const [device, f] of Object.entries(floors)) lines.push(`| ${device} | ${f.readGBps.toFixed(0)} | ${f.matmulTflops.toFixed(1)} | ${f.h2dGBps.toFixed(1)} |`);
  // Later prefill calls get their own column only in runs that made them.
  const warm = rows.some((r) => r.prefillWarmTokensPerSecond !== undefined);
  lines.push(
    '',
    `| model | device | precision | KV | rows attend | context | prefill tok/s |${warm ? ' later calls tok/s |' : ''} floor | decode ms/token | floor ms | × floor | bus MiB/token |`,
    `|---|---|---|---|---|---:|---:|${warm ? '---:|' : ''}---:|---:|---:|---:|---:|`,
  );
  for (const r of rows) {
    const device = r.cudaRuns ? `${r.device} (${r.cudaRuns})` : r.device;
    const kv = `${r.placement ?? ''}${STEP_LABEL[r.sparseStep ?? 'captured']}${r.stageOne === 'transposed' ? ' (stage 1 over transposed keys)' : ''}${UPLOAD_LABEL[r.blockUpload ?? 'direct']} | ${r.placement === 'host' ? '' : prefillForm(r)}`;
    const later = warm ? ` ${r.prefillWarmTokensPerSecond?.toFixed(0) ?? ''} |` : '';
    if (r.skipped) lines.push(`| ${r.model} | ${device} | ${r.precision} | ${kv} | ${r.context} | ${r.skipped} |${warm ? ' |' : ''} | | | | |`);
    else
      lines.push(
        `| ${r.model} | ${device} | ${r.precision} | ${kv} | ${r.context} | ${r.prefillTokensPerSecond!.toFixed(0)} |${later} ${r.prefillFloorTokensPerSecond!.toFixed(0)} | ${r.decodeMsPerToken!.toFixed(2)} | ${r.decodeFloorMs!.toFixed(3)} | ${r.decodeOverFloor!.toFixed(0)}× | ${(r.busBytesPerToken! / 2 ** 20).toFixed(1)} |`,
      );
  }
  lines.push('', ...tokenAgreement(rows));
  return lines.join('\n') + '\n';
}

/** Whether rows of one model, precision and context wrote the same greedy tokens, however they ran. */
function tokenAgreement(rows: StepRow[]): string[] {
  const groups = new Map<string, StepRow[]>();
  for (const r of rows) {
    if (!r.decodeIds) continue;
    const key = `${r.model} ${r.device} ${r.precision} ${r.context}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  return [...groups].map(([key, group]) => {
    const first = group[0].decodeIds!.join(',');
    const differing = group.filter((r) => r.decodeIds!.join(',') !== first).length;
    const steps = group[0].decodeIds!.length;
    return differing === 0
      ? `- ${key}: ${group.length} rows, the same ${steps} greedy tokens.`
      : `- ${key}: ${differing} of ${group.length} rows wrote other greedy tokens than the first.`;
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      devices: { type: 'string', default: 'cuda,webgpu' },
      models: { type: 'string', default: 'default,9b' },
      precisions: { type: 'string', default: 'fp16,int4' },
      contexts: { type: 'string', default: '8192,32768,131072' },
      steps: { type: 'string', default: '16' },
      warmup: { type: 'string', default: '3' },
      placements: { type: 'string', default: 'offload' },
      'row-attention': { type: 'string', default: 'auto' },
      'attention-mib': { type: 'string' },
      'sparse-step': { type: 'string', default: 'captured' },
      // Offload rows: 'direct' (the addon's copies from the page-locked store, the default), 'staged' (through page-locked staging), 'scatter' (ScatterND runs).
      'block-upload': { type: 'string', default: 'direct' },
      // Captured device rows: 'keys-major' (the default) and/or 'transposed' (the selection's stage 1 as first written).
      'stage-one': { type: 'string', default: 'keys-major' },
      prefill: { type: 'string', default: '512' },
      // Prefill calls of --prefill tokens each: the first after the decoder was made, timed alone; the rest together.
      'prefill-calls': { type: 'string', default: '1' },
      // 'default': the executor's own (the forward plan's 512; 2,048 through the resident decoder on CUDA).
      chunks: { type: 'string', default: 'default' },
      tile: { type: 'string', default: '2048' },
      'budget-s': { type: 'string', default: '3000' },
      out: { type: 'string' },
      render: { type: 'string' },
    },
  });
  if (values.render) {
    // --render run.json: the run's markdown again from its JSON (after the table changed).
    const run = JSON.parse(readFileSync(values.render, 'utf8')) as { floors: Record<string, Floors>; rows: StepRow[] };
    writeFileSync(values.render.replace(/\.json$/, '.md'), markdown(run.floors, run.rows));
    return;
  }
  const entries = values.devices!.split(',').map(deviceEntry);
  const devices = [...new Set(entries.map((entry) => entry.device))];
  const precisions = values.precisions!.split(',');
  for (const precision of precisions) if (!isPrecisionRequest(precision) || precision === 'auto') throw new Error(`--precisions takes fp32, fp16 and int4, got ${precision}`);
  const contexts = values.contexts!.split(',').map(Number);
  const placements = values.placements!.split(',');
  for (const placement of placements) if (placement !== 'offload' && placement !== 'device') throw new Error(`--placements takes offload and device, got ${placement}`);
  const rowAttention = values['row-attention']!.split(',');
  for (const form of rowAttention) {
    if (!['auto', 'union', 'per-row'].includes(form.replace(/@host$/, ''))) throw new Error(`--row-attention takes auto, union and per-row, each with @host or not, got ${form}`);
  }
  const sparseSteps = values['sparse-step']!.split(',');
  for (const form of sparseSteps) if (form !== 'captured' && form !== 'fused' && form !== 'split') throw new Error(`--sparse-step takes captured, fused and split, got ${form}`);
  const blockUploads = values['block-upload']!.split(',');
  for (const form of blockUploads) if (!['direct', 'staged', 'scatter'].includes(form)) throw new Error(`--block-upload takes direct, staged and scatter, got ${form}`);
  const stageOnes = values['stage-one']!.split(',');
  for (const form of stageOnes) if (form !== 'keys-major' && form !== 'transposed') throw new Error(`--stage-one takes keys-major and transposed, got ${form}`);
  const chunkSizes = values.chunks!.split(',').map((size) => (size === 'default' ? undefined : Number(size)));
  for (const size of chunkSizes) {
    if (size !== undefined && (!Number.isInteger(size) || size < 1)) throw new Error(`--chunks takes 'default' and whole numbers of tokens ≥ 1, got ${values.chunks}`);
  }
  const prefillCalls = Number(values['prefill-calls']);
  if (!Number.isInteger(prefillCalls) || prefillCalls < 1) throw new Error(`--prefill-calls takes a whole number ≥ 1, got ${values['prefill-calls']}`);
  const attentionBytes = values['attention-mib'] === undefined ? [undefined] : values['attention-mib'].split(',').map((mib) => Number(mib) * 2 ** 20);
  for (const bytes of attentionBytes) {
    if (bytes !== undefined && !(bytes > 0)) throw new Error(`--attention-mib takes MiB above 0, got ${values['attention-mib']}`);
  }
  const options = {
    contexts,
    chunkSizes,
    sparseSteps: sparseSteps as SparseStep[],
    blockUploads: blockUploads as BlockUpload[],
    stageOnes: stageOnes as StageOne[],
    placements: placements as KvPlacement[],
    rowAttention: rowAttention as RowAttention[],
    attentionBytes,
    warmup: Number(values.warmup),
    steps: Number(values.steps),
    prefillTokens: Number(values.prefill),
    prefillCalls,
    deadline: performance.now() + Number(values['budget-s']) * 1000,
  };
  const log = (line: string) => process.stderr.write(line + '\n');
  const floors: Record<string, Floors> = {};
  const rows: StepRow[] = [];
  const save = () => {
    if (!values.out) return;
    mkdirSync(path.dirname(values.out), { recursive: true });
    writeFileSync(values.out, JSON.stringify({ date: new Date().toISOString(), options: { ...options, deadline: undefined }, floors, rows }, null, 1) + '\n');
    writeFileSync(values.out.replace(/\.json$/, '.md'), markdown(floors, rows));
  };
  for (const device of devices) {
    floors[device] = await measureFloors(device);
    log(
      `${device}: read ${floors[device].readGBps.toFixed(0)} GB/s, fp16 products ${floors[device].matmulTflops.toFixed(1)} TFLOP/s, host → device ${floors[device].h2dGBps.toFixed(1)} GB/s`,
    );
    save();
  }
  for (const name of values.models!.split(',')) {
    const spec = name === '9b' ? nineBSpec(Number(values.tile)) : await defaultModelSpec(Number(values.tile));
    for (const { device, cudaRuns } of entries) {
      for (const precision of precisions as Precision[]) {
        if (performance.now() > options.deadline) break;
        const measured: StepRow[] = [];
        let failed: string | undefined;
        try {
          await withCudaRuns(cudaRuns, () => runModel(spec, device, precision, floors[device], options, log, measured));
        } catch (err) {
          failed = err instanceof Error ? err.message.split('\n')[0] : String(err);
          log(`  ${spec.name} ${device} ${precision}: ${failed}`);
        }
        rows.push(...measured.map((row) => ({ ...row, cudaRuns })));
        if (failed) rows.push({ model: spec.name, device, cudaRuns, precision, context: 0, skipped: failed.slice(0, 200) });
        save();
      }
    }
  }
  if (values.out) {
    for (const model of [...new Set(rows.map((r) => r.model))]) {
      const key = (r: StepRow) =>
        `${r.device}${r.cudaRuns ? ` ${r.cudaRuns}` : ''} ${r.precision}${r.placement ? ` KV ${r.placement}` : ''}${STEP_LABEL[r.sparseStep ?? 'captured']}`;
      const series = [...new Set(rows.filter((r) => r.model === model).map(key))].map((name, i) => ({
        name,
        color: i,
        points: rows.filter((r) => r.model === model && key(r) === name && r.decodeMsPerToken !== undefined).map((r) => [r.context, r.decodeMsPerToken!] as [number, number]),
      }));
      const slug = model.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
      writeFileSync(values.out.replace(/\.json$/, `-${slug}.svg`), lineChart({ title: `${model}: decode ms/token`, xLabel: 'context (tokens)', yLabel: 'ms/token', series }));
    }
  }
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`bench:gpu-step failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  });
}
