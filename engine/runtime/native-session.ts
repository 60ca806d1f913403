// Sessions run through an IoBinding (native/panorama_ort.cc), so that a CUDA
// session's outputs can stay in device memory and feed the next run as they are.
// onnxruntime-node binds device memory only for WebGPU: without this, every run of
// a CUDA decode step copied its Lightning states and KV blocks over the bus both
// ways. Outputs left on the device come back as onnxruntime-node tensors with
// location 'gpu-buffer' (their buffer is the addon's handle), so the code that keeps
// tensors on a WebGPU device serves CUDA unchanged.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import * as ort from 'onnxruntime-node';

export type HostArray = Float32Array | Uint16Array | Uint8Array | Int8Array | Int32Array | Uint32Array | BigInt64Array;

interface NativeResult {
  type: number;
  dims: number[];
  data?: ArrayBuffer;
  value?: object;
  /** Written into the tensor run() was given for it. */
  written?: boolean;
}

interface Addon {
  init(libraryPath: string): void;
  createSession(
    model: Uint8Array,
    options: { cuda: boolean; cudaGraph: boolean; deviceId: number; threads: number; logLevel: number; config: [string, string][] },
  ): {
    handle: object;
    inputNames: string[];
    outputNames: string[];
  };
  run(
    session: object,
    inputNames: string[],
    inputs: (object | { type: number; dims: readonly number[]; data: HostArray })[],
    outputNames: readonly string[],
    onDevice: boolean[],
    into: (object | null)[],
    runConfig: [string, string][],
  ): NativeResult[];
  download(value: object): NativeResult;
  copyRows(value: object, source: HostArray, rowBytes: number, from: Int32Array | null, at: Int32Array): void;
  pinHost(array: HostArray): boolean;
  unpinHost(array: HostArray): void;
  release(handle: object, isSession?: boolean): void;
}

/** onnxruntime's element type numbers (ONNXTensorElementDataType) of the types the engine uses. */
const ELEMENT: Record<string, number> = { float32: 1, uint8: 2, int8: 3, int32: 6, int64: 7, bool: 9, float16: 10, uint32: 12 };
const TYPE_OF = new Map(Object.entries(ELEMENT).map(([name, code]) => [code, name as ort.Tensor.Type]));

/** The typed array each element type is read into (float16 as its raw bits). */
const ARRAY_OF: Partial<Record<ort.Tensor.Type, { new (buffer: ArrayBuffer): HostArray; readonly BYTES_PER_ELEMENT: number }>> = {
  float32: Float32Array,
  float16: Uint16Array,
  int64: BigInt64Array,
  int32: Int32Array,
  uint32: Uint32Array,
  int8: Int8Array,
  uint8: Uint8Array,
  bool: Uint8Array,
};

function hostArray(type: ort.Tensor.Type, buffer: ArrayBuffer): HostArray {
  return new ARRAY_OF[type]!(buffer);
}

let loaded: { addon?: Addon; problem?: string } | undefined;

/** Where the addon is: beside the bundle (dist/) or two folders up from this file (engine/runtime/). */
function addonPath(): string | undefined {
  const override = process.env.PANORAMA_ORT_ADDON;
  if (override && override !== 'off') return override;
  return [path.resolve(__dirname, '..', 'native', 'build', 'panorama_ort.node'), path.resolve(__dirname, '..', '..', 'native', 'build', 'panorama_ort.node')].find((file) =>
    existsSync(file),
  );
}

/** The libonnxruntime that onnxruntime-node loads (one runtime per process, shared by both). */
function runtimeLibrary(): string {
  const require = createRequire(__filename);
  const root = path.dirname(require.resolve('onnxruntime-node/package.json'));
  return path.join(root, 'bin', 'napi-v6', process.platform, process.arch, 'libonnxruntime.so.1');
}

/**
 * The addon, loaded once; undefined with the reason (nativeProblem) when it is not
 * built or does not load. PANORAMA_ORT_ADDON=off turns it off (every run then goes
 * through onnxruntime-node, the comparison point of the benchmarks).
 */
export function nativeAddon(): Addon | undefined {
  // Read on every call, so one process can measure with and without it (bench:gpu-step).
  if (process.env.PANORAMA_ORT_ADDON === 'off') return undefined;
  if (!loaded) {
    loaded = {};
    const file = addonPath();
    if (process.platform !== 'linux') loaded.problem = 'built for Linux only';
    else if (!file) loaded.problem = 'native/build/panorama_ort.node is not built (npm run build compiles it; it needs a C++ compiler)';
    else {
      try {
        const addon = createRequire(__filename)(file) as Addon;
        addon.init(runtimeLibrary());
        loaded.addon = addon;
      } catch (err) {
        loaded.problem = `${file} did not load (${err instanceof Error ? err.message : String(err)}); npm run build compiles it again`;
      }
    }
  }
  return loaded.addon;
}

/** Why nativeAddon() is undefined. */
export function nativeProblem(): string | undefined {
  if (process.env.PANORAMA_ORT_ADDON === 'off') return 'turned off (PANORAMA_ORT_ADDON=off)';
  nativeAddon();
  return loaded?.problem;
}

/** The handle of a tensor the addon holds, in the place onnxruntime-node keeps a GPU buffer. */
class NativeBuffer {
  readonly mapState = 'unmapped' as const;
  constructor(
    readonly value: object,
    /** Bytes, as a GPU buffer's size is. */
    readonly size: number,
  ) {}
}

/** The addon's handle of a tensor in provider memory. */
function nativeValue(name: string, tensor: ort.Tensor): object {
  if (tensor.location === 'none') throw new TypeError(`${name}: the tensor was disposed`);
  const buffer = tensor.location === 'gpu-buffer' ? (tensor.gpuBuffer as unknown) : undefined;
  if (!(buffer instanceof NativeBuffer)) throw new TypeError(`${name}: a ${tensor.location} tensor not made by this binding`);
  return buffer.value;
}

/** Whether `tensor` lives in provider memory the addon holds (an output some NativeSession left there). */
export function isNativeTensor(tensor: ort.Tensor): boolean {
  return tensor.location === 'gpu-buffer' && (tensor.gpuBuffer as unknown) instanceof NativeBuffer;
}

/**
 * Writes row from[i] of `source` (row i when `from` is null) over row at[i] of `target` (a
 * tensor the addon holds, both viewed as rows of `rowElements` floats), in place: one
 * host-to-device copy per run of consecutive rows, straight from `source` where pinHost
 * page-locked it, else gathered into page-locked staging first. A ScatterND run would
 * instead stage the rows through onnxruntime's pageable copy. Every index is checked
 * first; on a bad one nothing is written.
 */
export function copyRows(target: ort.Tensor, source: Float32Array, rowElements: number, from: Int32Array | null, at: Int32Array): void {
  if (target.type !== 'float32') throw new TypeError(`copyRows: a ${target.type} tensor (float32 only)`);
  loadedAddon().copyRows(nativeValue('target', target), source, rowElements * Float32Array.BYTES_PER_ELEMENT, from, at);
}

/** Overwrites all of `target` (a tensor the addon holds) with host `source` of the same byte length, in place and with no session run. */
export function copyWhole(target: ort.Tensor, source: HostArray): void {
  loadedAddon().copyRows(nativeValue('target', target), source, source.byteLength, null, Int32Array.of(0));
}

/** A host copy of a tensor the addon holds, with no session run. */
export function downloadNative(tensor: ort.Tensor): ort.Tensor {
  const data = loadedAddon().download(nativeValue('tensor', tensor)).data!;
  return new ort.Tensor(tensor.type, hostArray(tensor.type, data) as ort.Tensor.DataTypeMap[ort.Tensor.Type], tensor.dims);
}

/**
 * Page-locks `array`'s memory for direct copies to the GPU, and keeps it alive until
 * unpinHost: whether it worked (never without a CUDA runtime in the process).
 */
export function pinHost(array: Float32Array): boolean {
  return loadedAddon().pinHost(array);
}

export function unpinHost(array: Float32Array): void {
  loadedAddon().unpinHost(array);
}

function loadedAddon(): Addon {
  const addon = nativeAddon();
  if (!addon) throw new Error(`the onnxruntime binding addon is unavailable: ${nativeProblem()}`);
  return addon;
}

export interface NativeSessionOptions {
  /** The CUDA provider (device id 0); otherwise the CPU provider, where "device" memory is host memory. */
  cuda: boolean;
  threads: number;
  logLevel: number;
  config: Record<string, string>;
  /** Outputs left in provider memory ('gpu-buffer'); the others come back as host tensors. */
  outputs?: Record<string, ort.Tensor.DataLocation>;
  /** CUDA: runs given a graph id are captured as CUDA graphs and replayed (see run()). */
  cudaGraph?: boolean;
}

export class NativeSession {
  private constructor(
    private readonly addon: Addon,
    private readonly handle: object,
    readonly inputNames: readonly string[],
    readonly outputNames: readonly string[],
    private readonly onDevice: boolean[],
  ) {}

  static create(model: Uint8Array, options: NativeSessionOptions): NativeSession {
    const addon = nativeAddon();
    if (!addon) throw new Error(`the onnxruntime binding addon is unavailable: ${nativeProblem()}`);
    const { handle, inputNames, outputNames } = addon.createSession(model, {
      cuda: options.cuda,
      cudaGraph: options.cuda && options.cudaGraph === true,
      deviceId: 0,
      threads: options.threads,
      logLevel: options.logLevel,
      config: Object.entries(options.config),
    });
    const onDevice = outputNames.map((name) => options.outputs?.[name] === 'gpu-buffer');
    return new NativeSession(addon, handle, inputNames, outputNames, onDevice);
  }

  /**
   * Runs every output; a feed is a host tensor or a tensor an earlier run left in
   * provider memory. An output named in `into` is written into that tensor (of its
   * shape and type, left in provider memory), which comes back as the result.
   * `graph` (a session made with cudaGraph): the run's CUDA graph, captured on its first
   * runs and replayed after; every input and output must be the same tensors each time.
   */
  run(feeds: Record<string, ort.Tensor>, into: Record<string, ort.Tensor> = {}, graph?: number): Record<string, ort.Tensor> {
    const missing = this.inputNames.filter((name) => !(name in feeds));
    if (missing.length > 0) throw new TypeError(`missing input${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`);
    const names = Object.keys(feeds);
    const inputs = names.map((name) => {
      const tensor = feeds[name];
      if (tensor.location === 'gpu-buffer' || tensor.location === 'none') return nativeValue(name, tensor);
      const type = ELEMENT[tensor.type];
      if (type === undefined || tensor.location !== 'cpu') throw new TypeError(`input ${name}: unsupported ${tensor.location} tensor of type ${tensor.type}`);
      return { type, dims: tensor.dims, data: tensor.data as HostArray };
    });
    const targets = this.outputNames.map((name) => (into[name] ? nativeValue(name, into[name]) : null));
    const runConfig: [string, string][] = graph === undefined ? [] : [['gpu_graph_id', String(graph)]];
    const results = this.addon.run(this.handle, names, inputs, this.outputNames, this.onDevice, targets, runConfig);
    const out: Record<string, ort.Tensor> = {};
    results.forEach((result, i) => (out[this.outputNames[i]] = result.written ? into[this.outputNames[i]] : this.tensor(result)));
    return out;
  }

  private tensor(result: NativeResult): ort.Tensor {
    const type = TYPE_OF.get(result.type);
    if (!type) throw new TypeError(`output of unsupported element type ${result.type}`);
    if (result.data) return new ort.Tensor(type, hostArray(type, result.data), result.dims);
    const value = result.value!;
    const addon = this.addon;
    const bytes = result.dims.reduce((a, b) => a * b, 1) * ARRAY_OF[type]!.BYTES_PER_ELEMENT;
    return ort.Tensor.fromGpuBuffer(new NativeBuffer(value, bytes) as unknown as ort.Tensor.GpuBufferType, {
      dataType: type as ort.Tensor.GpuBufferDataTypes,
      dims: result.dims,
      download: async () => hostArray(type, addon.download(value).data!) as ort.Tensor.DataTypeMap[ort.Tensor.GpuBufferDataTypes],
      dispose: () => addon.release(value),
    });
  }

  release(): void {
    this.addon.release(this.handle, true);
  }
}
