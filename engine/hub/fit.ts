// Fit before fetch: from config.json alone, what a model needs on a device in a precision at
// a context budget, counted the way the engine stores things, and what it will cost per token.
//
// Weights, as the engine holds them (engine/model/sala-model.ts, engine/runtime/int4.ts):
//   fp32 4 B/parameter; fp16 2 B (norms stay fp32); int4 MatMulNBits blocks of 32: 0.5 B of
//   codes + a 4 B scale + a 4-bit zero point per block = 0.640625 B, the embedding table fp16.
//   int8 is a storage form only: an I8 checkpoint is dequantized on load and runs in one of these.
// Loading reads every weight as fp32 first (engine/model/weights.ts), so the host needs 4 B per
// parameter while a model loads, whatever it runs in.
// Context: the sparse (minicpm4) layers keep K and V of every token in fp32 on the host
// (2 · kv_heads · head_dim · 4 B per layer; past --host-kv-mb they spill to disk); each
// Lightning layer keeps one heads × head_dim × head_dim fp32 state. On a GPU the decoder holds a
// block pool (4 × the blocks a step selects, per KV head and sparse layer) and compressed keys
// (one per kernel_stride tokens, and one per 4 × kernel_stride) of every token.
//
// Speed: the engine's measured rates, scaled by parameter count (each token multiplies every
// weight once, so time per token grows with the parameters), from the nearest measured model:
//   CPU: a random 21.2M-parameter SALA model at 8K context, fp32 (docs/benchmarks/cpu-quick.md):
//        1,254 tok/s prefill, 23.2 ms/token decode; int4 on the CPU provider unpacks every weight
//        per call (about 30× slower, engine/runtime/device.ts); fp16 on the CPU saves memory, not time.
//   GPU: the MiniCPM-SALA-9B shape at 8K context through CUDA, what --device auto picks on
//        NVIDIA (docs/benchmarks/gpu.md): int4, KV on the GPU, 1,912 tok/s to index (a 2,048-token
//        prefill, H100) and 12.97 ms/token decode (CUDA graphs, H200). fp16 and fp32 were not
//        measured on this path: they take the ratios WebGPU measured between precisions (176 ms
//        int4, 218 fp16, 327 fp32; docs/benchmarks/offload-webgpu.md). WebGPU decoded the 9B
//        9× slower than CUDA (144.5 against 16.5 ms at 128K, separate runs; docs/benchmarks/gpu.md); a smaller
//        GPU is slower.
import { derivedSizes, expectedWeights, type SalaConfig } from '../model/config.js';

export type FitDevice = 'cpu' | 'gpu';
export type FitPrecision = 'fp32' | 'fp16' | 'int4';
export const FIT_PRECISIONS: readonly FitPrecision[] = ['fp32', 'fp16', 'int4'];

const INT4_BYTES_PER_PARAMETER = 0.5 + 4 / 32 + 0.5 / 32;
/** The prefill attention scores' default budget (ResidentOptions.attentionBytes) and activations. */
const GPU_WORKSPACE_BYTES = 768 * 2 ** 20;
/** Host memory the engine itself takes besides weights and context (runtime, graphs, tokenizer, index). */
const HOST_BASE_BYTES = 1 * 2 ** 30;
/** The share of RAM the sparse layers' host K/V may take before spilling to disk (engine/model/sala-model.ts's default). */
const HOST_KV_SHARE = 0.4;

const MEASURED = {
  cpu: { parameters: 21.2e6, indexTokensPerSecond: 1254, decodeMsPerToken: { fp32: 23.2, fp16: 23.2, int4: 23.2 * 30 } },
  gpu: { parameters: 9_477_203_968, indexTokensPerSecond: 1912, decodeMsPerToken: { fp32: (12.97 * 327.2) / 175.8, fp16: (12.97 * 218.1) / 175.8, int4: 12.97 } },
} as const;

export const RATE_BASIS: Record<FitDevice, string> = {
  cpu: 'scaled by parameter count from a 21.2M-parameter model measured on the CPU (docs/benchmarks/cpu-quick.md)',
  gpu: 'scaled by parameter count from the 9B shape measured through CUDA in int4 (docs/benchmarks/gpu.md; fp16 and fp32 by the ratios WebGPU measured); WebGPU decoded it 9× slower, and a smaller GPU is slower',
};

export interface FitEstimate {
  device: FitDevice;
  precision: FitPrecision;
  contextTokens: number;
  parameters: number;
  /** Weights in the form the device holds them. */
  weightBytes: number;
  /** Sparse layers' K and V per token of context (host, fp32). */
  kvBytesPerToken: number;
  /** All Lightning layers' recurrent states of one sequence. */
  lightningStateBytes: number;
  /** Host memory while the model loads (every weight read as fp32, then converted). */
  hostLoadBytes: number;
  /** Host memory while running at the context budget (K/V in memory; past --host-kv-mb it spills to disk). */
  hostRunBytes: number;
  /** GPU memory: weights, the decoder's block pool and compressed keys, Lightning states, workspace. 0 on the CPU. */
  gpuBytes: number;
  indexTokensPerSecond: number;
  decodeMsPerToken: number;
}

function parameterCounts(config: SalaConfig): { total: number; embedding: number; norms: number } {
  let total = 0;
  let norms = 0;
  for (const shape of expectedWeights(config).values()) {
    const size = shape.reduce((a, b) => a * b, 1);
    total += size;
    if (shape.length === 1) norms += size;
  }
  return { total, embedding: config.vocabSize * config.hiddenSize, norms };
}

/** Bytes of weights on the device in `precision`: norms fp32, the embedding fp16 under int4. */
export function weightBytes(config: SalaConfig, precision: FitPrecision): number {
  const { total, embedding, norms } = parameterCounts(config);
  const matrices = total - norms;
  if (precision === 'fp32') return total * 4;
  if (precision === 'fp16') return matrices * 2 + norms * 4;
  return (matrices - embedding) * INT4_BYTES_PER_PARAMETER + embedding * 2 + norms * 4;
}

export function estimateFit(config: SalaConfig, device: FitDevice, precision: FitPrecision, contextTokens: number): FitEstimate {
  const sizes = derivedSizes(config);
  const { total } = parameterCounts(config);
  const sparseLayers = sizes.sparseLayers.length;
  const headDim = sizes.sparseHeadDim;
  const { kvBytesPerToken } = sizes;
  const lightningStateBytes = sizes.lightningLayers.length * sizes.lightningHeads * sizes.lightningHeadDim * sizes.lightningHeadDim * 4;
  const weights = weightBytes(config, precision);
  const context = kvBytesPerToken * contextTokens + lightningStateBytes;

  let gpuBytes = 0;
  if (device === 'gpu') {
    const poolSlots = 4 * Math.max(sizes.topkTotal, Math.ceil(config.sparse.denseLen / config.sparse.blockSize));
    const pool = sparseLayers * config.numKeyValueHeads * poolSlots * config.sparse.blockSize * headDim * 2 * 4;
    const compressedPerToken = sparseLayers * config.numKeyValueHeads * headDim * 4 * (1 / config.sparse.kernelStride + 1 / (4 * config.sparse.kernelStride));
    gpuBytes = weights + pool + compressedPerToken * contextTokens + lightningStateBytes + GPU_WORKSPACE_BYTES;
  }
  // Loading holds the fp32 copy and the converted form of one tensor at a time on top; on the CPU
  // the converted weights stay on the host (fp32 shares the buffers it was read into).
  const hostLoadBytes = HOST_BASE_BYTES + total * 4 + (device === 'cpu' && precision !== 'fp32' ? weights : 0);
  const hostRunBytes = HOST_BASE_BYTES + (device === 'cpu' ? weights : 0) + context;

  const measured = MEASURED[device];
  const scale = total / measured.parameters;
  return {
    device,
    precision,
    contextTokens,
    parameters: total,
    weightBytes: weights,
    kvBytesPerToken,
    lightningStateBytes,
    hostLoadBytes,
    hostRunBytes,
    gpuBytes,
    indexTokensPerSecond: measured.indexTokensPerSecond / scale,
    decodeMsPerToken: measured.decodeMsPerToken[precision] * scale,
  };
}

export interface Machine {
  hostMemoryBytes: number;
  /** The GPU's memory, when one was found (or given). */
  gpuMemoryBytes?: number;
  gpuName?: string;
}

export interface FitVerdict {
  fits: boolean;
  estimate: FitEstimate;
  /** Why not, with what would fit instead. */
  reason?: string;
}

export function gb(bytes: number): string {
  return (bytes / 1e9).toFixed(1);
}

/** Whether `estimate`'s device and precision fit `machine`; if not, the reason and what fits instead. */
export function checkFit(config: SalaConfig, machine: Machine, device: FitDevice, precision: FitPrecision, contextTokens: number): FitVerdict {
  const estimate = estimateFit(config, device, precision, contextTokens);
  const host = machine.hostMemoryBytes;
  const cpuAlternative = (): string => {
    const cpu = FIT_PRECISIONS.map((p) => estimateFit(config, 'cpu', p, contextTokens)).find(
      (e) => e.hostLoadBytes <= host && e.hostRunBytes - e.kvBytesPerToken * contextTokens <= host,
    );
    return cpu ? `the CPU (${cpu.precision}, ${gb(cpu.hostLoadBytes)} GB of memory to load)` : '';
  };
  if (device === 'gpu') {
    if (machine.gpuMemoryBytes === undefined)
      return {
        fits: false,
        estimate,
        reason: `no GPU was found to check against (it needs ${gb(estimate.gpuBytes)} GB of GPU memory in ${precision}); pass --gpu-memory-gb N, or use the CPU`,
      };
    if (estimate.gpuBytes > machine.gpuMemoryBytes) {
      const smaller = FIT_PRECISIONS.filter((p) => p !== precision)
        .map((p) => estimateFit(config, 'gpu', p, contextTokens))
        .find((e) => e.gpuBytes <= (machine.gpuMemoryBytes ?? 0) && e.hostLoadBytes <= host);
      const options = [smaller ? `${smaller.precision} (${gb(smaller.gpuBytes)} GB)` : '', cpuAlternative()].filter(Boolean);
      return {
        fits: false,
        estimate,
        reason: `needs ${gb(estimate.gpuBytes)} GB of GPU memory in ${precision}, this GPU has ${gb(machine.gpuMemoryBytes)}${options.length ? `: use ${options.join(' or ')}` : ": no precision fits this GPU or this machine's memory"}`,
      };
    }
  }
  // Past 40% of RAM (the default --host-kv-mb) the sparse layers' K/V spill to disk instead.
  const spilled = Math.max(0, estimate.kvBytesPerToken * contextTokens - HOST_KV_SHARE * host);
  const hostNeeded = Math.max(estimate.hostLoadBytes, estimate.hostRunBytes - spilled);
  if (hostNeeded > host) {
    const parts = `${gb(estimate.weightBytes)} GB of weights${device === 'cpu' ? '' : ' on the GPU'}; loading reads them as fp32 first: ${gb(estimate.hostLoadBytes)} GB`;
    const alternative = device === 'cpu' ? cpuAlternative() : '';
    return {
      fits: false,
      estimate,
      reason: `needs ${gb(hostNeeded)} GB of memory in ${precision} on the ${device === 'gpu' ? 'GPU' : 'CPU'} (${parts}), this machine has ${gb(host)}${alternative ? `: use ${alternative}` : ''}`,
    };
  }
  return { fits: true, estimate };
}
