// onnxruntime sessions built from graph bytes, with typed tensor helpers.
import * as ort from 'onnxruntime-node';
import { keepsTensorsOnDevice, runsThroughAddon, type DeviceKind } from './device.js';
import { toHalfBits } from './half.js';
import { NativeSession } from './native-session.js';

export type Feeds = Record<string, ort.Tensor>;

export interface SessionOptions {
  device: DeviceKind;
  /** Intra-op threads (0 = onnxruntime's default: one per core). */
  threads?: number;
  /**
   * Where each output lands on a GPU provider ('gpu-buffer' keeps it on the device
   * for the next session; unnamed outputs come back to host memory). WebGPU, and CUDA
   * through the binding addon (keepsTensorsOnDevice).
   */
  outputs?: Record<string, ort.Tensor.DataLocation>;
  /** CUDA through the binding addon: runs given a graph id are captured as CUDA graphs (GraphSession.run). */
  cudaGraph?: boolean;
}

/**
 * A run could not allocate memory: on a GPU provider, device memory (WebGPU reports
 * a buffer it could not create as invalid in the command that uses it, and Dawn logs
 * the cause, e.g. VK_ERROR_OUT_OF_DEVICE_MEMORY); on the CPU provider, host memory.
 * The session and the device stay usable: the caller can free something and retry.
 */
export class DeviceMemoryError extends Error {}

const ALLOCATION_FAILURE = /Failed to allocate memory|out of (device )?memory|OUT_OF_DEVICE_MEMORY|\[Invalid Buffer[^\]]*\] is invalid due to a previous error|bad_alloc/i;

/** Longest stretch of synchronous (binding addon) runs between two turns of the event loop. */
const EVENT_LOOP_TURN_MS = 4;

/** What GraphSession needs of a session: onnxruntime-node's, or the binding addon's (CUDA). */
interface RunnableSession {
  readonly inputNames: readonly string[];
  run(feeds: Feeds): Promise<Record<string, ort.Tensor>> | Record<string, ort.Tensor>;
  release(): Promise<void> | void;
}

/** One compiled graph. Built once per (layer type, phase) and reused for every layer call. */
export class GraphSession {
  private constructor(
    readonly name: string,
    private readonly session: RunnableSession,
    private readonly device: DeviceKind,
  ) {}

  static async create(name: string, model: Uint8Array, options: SessionOptions): Promise<GraphSession> {
    const creating = performance.now();
    const onDevice = keepsTensorsOnDevice(options.device) && options.outputs !== undefined;
    const native = runsThroughAddon(options.device);
    const session = await GraphSession.start(name, model, options, native, {
      ...(onDevice ? { preferredOutputLocation: options.outputs } : {}),
      executionProviders: [options.device],
      intraOpNumThreads: options.threads ?? 0,
      graphOptimizationLevel: 'all',
      // PANORAMA_ORT_LOG=1 shows onnxruntime's node placement (which ops fell back to the CPU provider).
      logSeverityLevel: process.env.PANORAMA_ORT_LOG ? (Number(process.env.PANORAMA_ORT_LOG) as 0 | 1 | 2 | 3 | 4) : 3,
      // Idle worker threads sleep instead of spinning: the engine shares the machine with the editor.
      extra: { 'session.intra_op.allow_spinning': '0' },
    });
    if (GraphSession.profile) process.stderr.write(`session ${name}: ${(model.length / 2 ** 20).toFixed(0)} MiB created in ${(performance.now() - creating).toFixed(0)} ms\n`);
    return new GraphSession(name, session, options.device);
  }

  /** Creates the session, with a failed allocation (weights baked into a graph that do not fit) as a DeviceMemoryError. */
  private static async start(
    name: string,
    model: Uint8Array,
    options: SessionOptions,
    native: boolean,
    sessionOptions: ort.InferenceSession.SessionOptions,
  ): Promise<RunnableSession> {
    try {
      if (!native) return await ort.InferenceSession.create(model, sessionOptions);
      return NativeSession.create(model, {
        cuda: options.device === 'cuda',
        threads: sessionOptions.intraOpNumThreads ?? 0,
        logLevel: sessionOptions.logSeverityLevel ?? 3,
        config: sessionOptions.extra as Record<string, string>,
        outputs: options.outputs,
        cudaGraph: options.cudaGraph,
      });
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (!ALLOCATION_FAILURE.test(message)) throw err;
      const where = options.device === 'cpu' ? 'host' : options.device;
      throw new DeviceMemoryError(`graph ${name} (${(model.length / 2 ** 20).toFixed(0)} MiB) could not allocate ${where} memory: ${message.split('\n')[0].slice(0, 300)}`, {
        cause: err,
      });
    }
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  /**
   * Wall time spent in run() per graph name, when PANORAMA_PROFILE_RUNS is set. On a
   * GPU a run with only device outputs returns once its work is queued; the wait shows
   * up in the next run that brings an output back to host memory.
   */
  static readonly profile = process.env.PANORAMA_PROFILE_RUNS ? new Map<string, { runs: number; ms: number }>() : undefined;

  /** Adds work done outside a session run (the addon's direct copies) to the profile under `name`. */
  static record(name: string, ms: number): void {
    if (!GraphSession.profile) return;
    const entry = GraphSession.profile.get(name) ?? { runs: 0, ms: 0 };
    entry.runs++;
    entry.ms += ms;
    GraphSession.profile.set(name, entry);
  }

  /** The profile with per-layer graphs (a name ending in _N) added up under one name; empty when not profiling. */
  static foldedProfile(): Map<string, { runs: number; ms: number }> {
    const out = new Map<string, { runs: number; ms: number }>();
    for (const [name, entry] of GraphSession.profile ?? []) {
      const key = name.replace(/_\d+$/, '');
      const folded = out.get(key) ?? { runs: 0, ms: 0 };
      folded.runs += entry.runs;
      folded.ms += entry.ms;
      out.set(key, folded);
    }
    return out;
  }

  /**
   * Runs the graph. Outputs named in `into` are written into those device tensors where
   * the session can (the binding addon's: the result is then that tensor, and an operator
   * that may run in place, like ScatterND, skips copying its input); elsewhere they are
   * new tensors, and the caller releases what it replaced. `graph` (a cudaGraph session):
   * the CUDA graph this run is captured as, then replayed from.
   */
  async run(feeds: Feeds, into?: Feeds, graph?: number): Promise<Record<string, ort.Tensor>> {
    const run = () => (this.session instanceof NativeSession ? this.session.run(feeds, into, graph) : this.session.run(feeds));
    if (this.session instanceof NativeSession) await GraphSession.turn();
    try {
      if (!GraphSession.profile) return await run();
      const started = performance.now();
      const out = await run();
      GraphSession.record(this.name, performance.now() - started);
      return out;
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (ALLOCATION_FAILURE.test(message)) {
        const where = this.device === 'cpu' ? 'host' : this.device;
        throw new DeviceMemoryError(`graph ${this.name} could not allocate ${where} memory: ${message.split('\n')[0].slice(0, 300)}`, { cause: err });
      }
      throw new Error(`graph ${this.name} failed: ${message}`, { cause: err });
    }
  }

  private static lastTurn = performance.now();

  /**
   * The binding addon's runs are synchronous (onnxruntime-node's go to a worker thread):
   * every few milliseconds of them the event loop gets a turn, so a message that arrives
   * during a long feed or generation (a Stop, a completion) is handled between runs.
   */
  private static async turn(): Promise<void> {
    if (performance.now() - GraphSession.lastTurn < EVENT_LOOP_TURN_MS) return;
    await new Promise((resolve) => setImmediate(resolve));
    GraphSession.lastTurn = performance.now();
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

export function f32(data: Float32Array, dims: readonly number[]): ort.Tensor {
  return new ort.Tensor('float32', data, dims);
}

/** A float16 tensor of float32 values (rounded to nearest even). */
export function f16(data: Float32Array, dims: readonly number[]): ort.Tensor {
  return new ort.Tensor('float16', toHalfBits(data), dims);
}

export function i64(data: BigInt64Array | Int32Array | readonly number[], dims?: readonly number[]): ort.Tensor {
  const values = data instanceof BigInt64Array ? data : data instanceof Int32Array ? widen(data) : BigInt64Array.from(data, (x) => BigInt(x));
  return new ort.Tensor('int64', values, dims ?? [values.length]);
}

/** int32 → int64 through the words of the result (little-endian: low word, then the sign), no BigInt per value. */
function widen(data: Int32Array): BigInt64Array {
  const out = new BigInt64Array(data.length);
  const words = new Int32Array(out.buffer);
  for (let i = 0; i < data.length; i++) {
    words[2 * i] = data[i];
    words[2 * i + 1] = data[i] >> 31;
  }
  return out;
}

export function bool(data: Uint8Array, dims: readonly number[]): ort.Tensor {
  return new ort.Tensor('bool', data, dims);
}

/** The float32 contents of a CPU output tensor. */
export function floatData(tensor: ort.Tensor): Float32Array {
  const data = tensor.data;
  if (!(data instanceof Float32Array)) throw new Error(`expected a float32 tensor, got ${tensor.type}`);
  return data;
}

export function int64Data(tensor: ort.Tensor): BigInt64Array {
  const data = tensor.data;
  if (!(data instanceof BigInt64Array)) throw new Error(`expected an int64 tensor, got ${tensor.type}`);
  return data;
}
