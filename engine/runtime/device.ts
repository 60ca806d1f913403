// Execution providers: which one a session runs on, and the probe that tells
// whether a requested one can actually start on this machine.
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from './graph-builder.js';
import { toHalfBits } from './half.js';
import { checkCuda, cudaEnvironment, loadLibraries } from './cuda-libraries.js';
import { nativeAddon, nativeProblem } from './native-session.js';

export type DeviceKind = 'cpu' | 'webgpu' | 'cuda';
export type DeviceRequest = DeviceKind | 'auto';
export const DEVICE_REQUESTS: readonly DeviceRequest[] = ['cpu', 'webgpu', 'cuda', 'auto'];

export interface ResolvedDevice {
  kind: DeviceKind;
  /** Why this device: shown to the user (CLI stderr, status bar). */
  reason: string;
}

export class DeviceError extends Error {}

/**
 * Whether tensors can stay on this provider's device between session runs. In
 * onnxruntime-node only WebGPU outputs can ('gpu-buffer'); CUDA outputs can through
 * the binding addon (native-session.ts). Without it a CUDA session takes its inputs
 * from host memory and returns its outputs there, so what must stay on the device
 * (the weights) is baked into the graphs instead.
 */
export function keepsTensorsOnDevice(kind: DeviceKind): boolean {
  return kind === 'webgpu' || runsThroughAddon(kind);
}

/**
 * Whether this provider's sessions run through the binding addon (native-session.ts):
 * CUDA where the addon loads, and the CPU provider when PANORAMA_NATIVE_CPU=1 — the CUDA
 * path's code with host memory as its "device", which is how the tests run it without a GPU.
 */
export function runsThroughAddon(kind: DeviceKind): boolean {
  const wanted = kind === 'cuda' || (kind === 'cpu' && process.env.PANORAMA_NATIVE_CPU === '1');
  return wanted && nativeAddon() !== undefined;
}

export function isDeviceRequest(value: string): value is DeviceRequest {
  return (DEVICE_REQUESTS as readonly string[]).includes(value);
}

export interface DeviceProbe {
  /** Why the provider cannot run here; undefined when a session started and ran. */
  failure?: string;
  /** Where its libraries came from, when that is worth saying. */
  notes: string[];
}

const probes = new Map<DeviceKind, Promise<DeviceProbe>>();

/**
 * Starts a one-op session on `kind`. For CUDA on Linux the provider and the
 * libraries it needs are checked first (engine/runtime/cuda-libraries.ts), so a
 * missing one is named with how to get it rather than as onnxruntime's dlopen error.
 */
export function probeDevice(kind: DeviceKind): Promise<DeviceProbe> {
  let probe = probes.get(kind);
  if (!probe) {
    probe = (async () => {
      if (kind === 'cpu') return { notes: [] };
      const notes: string[] = [];
      if (kind === 'cuda' && process.platform === 'linux') {
        const check = checkCuda(cudaEnvironment());
        if (!check.ok) return { failure: check.problem, notes };
        const failed = loadLibraries(check.preload);
        if (failed) return { failure: failed, notes };
        notes.push(...check.notes);
        const problem = nativeProblem();
        notes.push(problem === undefined ? 'tensors stay on the device between runs' : `every run fed from host memory: the binding addon is ${problem}`);
      }
      const g = new GraphBuilder('probe');
      const x = g.input('x', 'float', [1]);
      g.output(g.add(x, x), 'y', 'float', [1]);
      try {
        const session = await ort.InferenceSession.create(g.toModel(), { executionProviders: [kind], logSeverityLevel: 4 });
        await session.run({ x: new ort.Tensor('float32', Float32Array.of(1), [1]) });
        await session.release();
        return { notes };
      } catch (err) {
        return { failure: providerMessage(err), notes };
      }
    })();
    probes.set(kind, probe);
  }
  return probe;
}

/** onnxruntime's first error line without its source location ("/onnxruntime_src/….cc:136 … was false."). */
export function providerMessage(err: unknown): string {
  const line = (err instanceof Error ? err.message : String(err)).split('\n')[0].trim();
  return line.replace(/^\/onnxruntime_src\/\S+:\d+ .*? was false\. /, '').replace(/^\/onnxruntime_src\/\S+:\d+ /, '');
}

/**
 * Turns a user's --device into a provider. 'auto' takes a GPU when an adapter
 * exists and says which; an explicit GPU request that cannot start falls back to
 * the CPU with the provider's reason, so a session never dies on a missing driver.
 */
export async function resolveDevice(request: DeviceRequest): Promise<ResolvedDevice> {
  if (request === 'cpu') return { kind: 'cpu', reason: 'requested' };
  const candidates: DeviceKind[] = request === 'auto' ? ['cuda', 'webgpu'] : [request];
  const failures: string[] = [];
  for (const kind of candidates) {
    const { failure, notes } = await probeDevice(kind);
    if (failure === undefined) {
      const why = [...(request === 'auto' ? failures.map((f) => `not ${f}`) : []), ...notes];
      return { kind, reason: `${request === 'auto' ? `auto: ${kind} started` : 'requested'}${why.length > 0 ? ` (${why.join('; ')})` : ''}` };
    }
    failures.push(`${kind}: ${failure}`);
  }
  return { kind: 'cpu', reason: `${request === 'auto' ? 'auto: no GPU provider started' : `${request} unavailable`} (${failures.join('; ')}); using cpu` };
}

/**
 * How a model's large matrices are stored and multiplied on the device: fp32, fp16, or
 * int4 (4-bit blocks of 32 with a scale and zero point each, multiplied by
 * onnxruntime's MatMulNBits; the embedding table stays fp16, it is gathered, not multiplied).
 */
export type Precision = 'fp32' | 'fp16' | 'int4';
export type PrecisionRequest = Precision | 'auto';
export const PRECISION_REQUESTS: readonly PrecisionRequest[] = ['fp32', 'fp16', 'int4', 'auto'];

export interface ResolvedPrecision {
  kind: Precision;
  /** Why this precision: shown to the user with the device's reason. */
  reason: string;
}

export function isPrecisionRequest(value: string): value is PrecisionRequest {
  return (PRECISION_REQUESTS as readonly string[]).includes(value);
}

const halfProbes = new Map<DeviceKind, Promise<string | undefined>>();

/**
 * Runs an fp16 product (Cast → MatMul → Cast, as the graphs use it) on `kind` and
 * checks its value; resolves to undefined when it works, else why not (a WebGPU
 * adapter without shader-f16, say).
 */
export function probeHalf(kind: DeviceKind): Promise<string | undefined> {
  let probe = halfProbes.get(kind);
  if (!probe) {
    probe = (async () => {
      const g = new GraphBuilder('probe_half');
      const x = g.cast(g.input('x', 'float', [1, 4]), 'float16');
      g.output(g.cast(g.matmul(x, g.input('w', 'float16', [4, 2])), 'float'), 'y', 'float', [1, 2]);
      try {
        const session = await ort.InferenceSession.create(g.toModel(), { executionProviders: [kind], logSeverityLevel: 4 });
        const w = new ort.Tensor('float16', toHalfBits(Float32Array.of(1, 2, 3, 4, 5, 6, 7, 8)), [4, 2]);
        const { y } = await session.run({ x: new ort.Tensor('float32', Float32Array.of(1, 1, 1, 0.5), [1, 4]), w });
        await session.release();
        const data = y.data;
        return data instanceof Float32Array && data[0] === 12.5 && data[1] === 16 ? undefined : `an fp16 product gave ${String(data)}, not 12.5,16`;
      } catch (err) {
        return providerMessage(err);
      }
    })();
    halfProbes.set(kind, probe);
  }
  return probe;
}

/**
 * Turns a user's --precision into the one a model runs in. 'auto' is fp16 on a GPU
 * provider that runs fp16 products (half the bytes of weights to stream per token)
 * and fp32 on the CPU; fp16 that cannot run on the GPU falls back to fp32 with the
 * reason. On the CPU, fp16 is honoured: onnxruntime computes its products in fp32
 * from the fp16 weights (half the memory, not faster).
 */
export async function resolvePrecision(request: PrecisionRequest, device: DeviceKind): Promise<ResolvedPrecision> {
  if (request === 'fp32') return { kind: 'fp32', reason: 'requested' };
  // Never chosen by 'auto': 4-bit weights change the model's outputs (see docs/benchmarks/offload-webgpu.md).
  if (request === 'int4') {
    // Measured: a 8192 × 2048 MatMulNBits takes 178 ms with its weight as an input and 5 ms as an initializer
    // (fp32 Gemm: 6.5 ms). The graphs take weights as inputs (one graph serves every layer), so the CPU
    // provider unpacks every int4 weight on every call.
    return {
      kind: 'int4',
      reason: device === 'cpu' ? 'requested; on the CPU provider int4 saves memory, not time (it unpacks every weight per call: ~30× slower than fp32)' : 'requested',
    };
  }
  if (device === 'cpu') return request === 'fp16' ? { kind: 'fp16', reason: 'requested' } : { kind: 'fp32', reason: 'auto: fp32 on the CPU' };
  const failure = await probeHalf(device);
  if (failure === undefined) return { kind: 'fp16', reason: request === 'auto' ? `auto: ${device} runs fp16 products` : 'requested' };
  return { kind: 'fp32', reason: `${request === 'auto' ? 'auto' : 'fp16 requested'}: ${device} cannot run fp16 products (${failure}); using fp32` };
}
