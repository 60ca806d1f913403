// Tensors that live on the execution device between session runs. onnxruntime-node
// has no API to allocate or write device memory directly, so each operation is a
// tiny graph whose outputs stay on the device ('gpu-buffer'): upload (Identity),
// zeros (Expand of a scalar), download (Identity to host), and in-place-style writes
// (ScatterND, which returns the updated copy). On the CPU provider the same graphs
// run on host tensors, so one code path serves both (CUDA too: see keepsTensorsOnDevice).
//
// Never read a device tensor's data from JavaScript: in onnxruntime-node 1.30,
// getData() on a gpu-buffer tensor aborts the process. Download it instead.
import * as ort from 'onnxruntime-node';
import { GraphBuilder, type Dim } from './graph-builder.js';
import type { ElemType } from './onnx-proto.js';
import { keepsTensorsOnDevice, type DeviceKind } from './device.js';
import { GraphSession } from './session.js';
import { copyRows, copyWhole, downloadNative, isNativeTensor, pinHost, unpinHost, type HostArray } from './native-session.js';

const ORT_TYPE: Record<string, ElemType> = { float32: 'float', int64: 'int64', bool: 'bool', float16: 'float16', uint8: 'uint8' };

function elemType(tensor: ort.Tensor): ElemType {
  const type = ORT_TYPE[tensor.type];
  if (!type) throw new Error(`device tensors: unsupported type ${tensor.type}`);
  return type;
}

function symbolic(rank: number, prefix: string): Dim[] {
  return Array.from({ length: rank }, (_, i) => `${prefix}${i}`);
}

export class DeviceTensors {
  private readonly sessions = new Map<string, Promise<GraphSession>>();
  /** Bytes that went from host to device through upload() and scatter() updates. */
  uploadedBytes = 0;

  constructor(readonly device: DeviceKind) {}

  get onDevice(): boolean {
    return keepsTensorsOnDevice(this.device);
  }

  private session(key: string, build: () => Uint8Array, outputs: Record<string, ort.Tensor.DataLocation>): Promise<GraphSession> {
    let session = this.sessions.get(key);
    if (!session) {
      session = GraphSession.create(key, build(), { device: this.device, threads: 1, outputs });
      this.sessions.set(key, session);
    }
    return session;
  }

  /** An Identity graph for tensors like `tensor` whose output lands at `to`: an upload ('gpu-buffer') or a download ('cpu'). */
  private identity(tensor: ort.Tensor, to: 'gpu-buffer' | 'cpu'): Promise<GraphSession> {
    const type = elemType(tensor);
    const rank = tensor.dims.length;
    const name = to === 'cpu' ? 'download' : 'upload';
    return this.session(
      `${name}_${type}_${rank}`,
      () => {
        const g = new GraphBuilder(name);
        g.output(g.op('Identity', [g.input('x', type, symbolic(rank, 'd'))]), 'y', type, symbolic(rank, 'd'));
        return g.toModel();
      },
      { y: to },
    );
  }

  /** A device copy of a host tensor (the host tensor itself on the CPU provider). */
  async upload(tensor: ort.Tensor): Promise<ort.Tensor> {
    if (!this.onDevice) return tensor;
    const session = await this.identity(tensor, 'gpu-buffer');
    this.uploadedBytes += byteLength(tensor);
    return (await session.run({ x: tensor })).y;
  }

  /** A host copy of a device tensor. */
  async download(tensor: ort.Tensor): Promise<ort.Tensor> {
    if (!this.onDevice || tensor.location === 'cpu') return tensor;
    if (isNativeTensor(tensor)) {
      // The addon copies it out itself: no Identity run (50–75 µs a call on CUDA). Ordered after the
      // run that wrote it: onnxruntime synchronizes its stream as a run ends, a CUDA graph replay too.
      const started = performance.now();
      const host = downloadNative(tensor);
      GraphSession.record('copy_out', performance.now() - started);
      return host;
    }
    const session = await this.identity(tensor, 'cpu');
    return (await session.run({ x: tensor })).y;
  }

  /**
   * Copies `source` (host or device) into the device tensor `target`, of the same type and
   * shape, keeping target's memory (CUDA graphs replay fixed addresses). Binding addon only.
   */
  async copyInto(source: ort.Tensor, target: ort.Tensor): Promise<void> {
    if (source.location === 'cpu' && isNativeTensor(target) && source.type === target.type && sameDims(source.dims, target.dims)) {
      // Host into addon memory: one copy by the addon, no Identity run.
      const started = performance.now();
      copyWhole(target, source.data as HostArray);
      GraphSession.record('copy_in', performance.now() - started);
      this.uploadedBytes += byteLength(source);
      return;
    }
    const session = await this.identity(source, 'gpu-buffer');
    if (source.location === 'cpu') this.uploadedBytes += byteLength(source);
    const out = (await session.run({ x: source }, { y: target })).y;
    if (out !== target) throw new Error('copyInto needs the binding addon (a session that writes into a given tensor)');
  }

  /** float32 zeros of the given shape, made on the device (nothing crosses the bus). */
  async zeros(dims: readonly number[]): Promise<ort.Tensor> {
    if (!this.onDevice) return new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
    const session = await this.session(
      `zeros_${dims.length}`,
      () => {
        const g = new GraphBuilder('zeros');
        const shape = g.input('shape', 'int64', [dims.length]);
        // Expand, not ConstantOfShape: the WebGPU provider has no ConstantOfShape kernel, so
        // onnxruntime ran it on the CPU and uploaded the zeros (measured on an H200: a
        // 16 GiB pool took 17 s and 16.7 GiB of host memory; a 64 GiB one killed the process).
        g.output(g.op('Expand', [g.float(0), shape]), 'y', 'float', symbolic(dims.length, 'd'));
        return g.toModel();
      },
      { y: 'gpu-buffer' },
    );
    return (await session.run({ shape: new ort.Tensor('int64', BigInt64Array.from(dims, BigInt), [dims.length]) })).y;
  }

  /**
   * data with data[indices[i]] = updates[i] (ONNX ScatterND). Through the binding addon
   * (CUDA) the rows are written into `data` itself, which is returned; elsewhere the
   * result is a new device tensor and `data` is disposed. indices [n, q] address the
   * leading q axes of data. Host float32 rows into a tensor the addon holds are copied
   * straight into it, with no session run (PANORAMA_BLOCK_UPLOAD=scatter: through
   * ScatterND all the same, the comparison point of bench:gpu-step).
   */
  async scatter(data: ort.Tensor, indices: ort.Tensor, updates: ort.Tensor): Promise<ort.Tensor> {
    if (this.copiesRowsInto(data) && updates.location === 'cpu' && updates.type === 'float32' && indices.location === 'cpu') {
      const q = indices.dims[1];
      this.copyRows(data, updates.data as Float32Array, rowElementsPast(data.dims, q), null, flatRows(indices.data as BigInt64Array, q, data.dims));
      return data;
    }
    const type = elemType(data);
    const rank = data.dims.length;
    const q = indices.dims[1];
    const session = await this.session(
      `scatter_${type}_${rank}_${q}`,
      () => {
        const g = new GraphBuilder('scatter');
        const x = g.input('data', type, symbolic(rank, 'd'));
        const at = g.input('indices', 'int64', ['n', q]);
        const rows = g.input('updates', type, ['n', ...symbolic(rank - q, 'u')]);
        g.output(g.op('ScatterND', [x, at, rows]), 'y', type, symbolic(rank, 'd'));
        return g.toModel();
      },
      { y: 'gpu-buffer' },
    );
    if (updates.location === 'cpu') this.uploadedBytes += byteLength(updates);
    const out = (await session.run({ data, indices, updates }, data.location === 'gpu-buffer' ? { y: data } : undefined)).y;
    if (out !== data) release(data);
    return out;
  }

  /** Whether copyRows() can write into `target`: a float32 tensor the binding addon holds (and PANORAMA_BLOCK_UPLOAD is not 'scatter'). */
  copiesRowsInto(target: ort.Tensor): boolean {
    return process.env.PANORAMA_BLOCK_UPLOAD !== 'scatter' && isNativeTensor(target) && target.type === 'float32';
  }

  /**
   * Copies row from[i] of host `source` (row i when `from` is null) over row at[i] of
   * `target`, rows of `rowElements` floats, in place and with no session run (see
   * native-session.ts copyRows). Only where copiesRowsInto(target).
   */
  copyRows(target: ort.Tensor, source: Float32Array, rowElements: number, from: Int32Array | null, at: Int32Array): void {
    const started = performance.now();
    copyRows(target, source, rowElements, from, at);
    GraphSession.record('write_rows', performance.now() - started);
    this.uploadedBytes += at.length * rowElements * 4;
  }

  /** Page-locks host memory that copyRows() will read often (a KV store); whether it worked. PANORAMA_PIN_HOST_KV=0 turns it off. */
  pinHost(array: Float32Array): boolean {
    return this.onDevice && this.device === 'cuda' && process.env.PANORAMA_PIN_HOST_KV !== '0' && pinHost(array);
  }

  unpinHost(array: Float32Array): void {
    if (this.onDevice && this.device === 'cuda') unpinHost(array);
  }

  async release(): Promise<void> {
    const sessions = await Promise.all(this.sessions.values());
    this.sessions.clear();
    await Promise.all(sessions.map((session) => session.release()));
  }
}

function sameDims(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Elements of one row of a tensor of `dims` viewed as rows of its axes past the first q. */
function rowElementsPast(dims: readonly number[], q: number): number {
  return dims.slice(q).reduce((a, b) => a * b, 1);
}

/** Row numbers, in data viewed as rows of its axes past the first q, of each q-tuple of `indices` (ScatterND's addressing; negative indices count from the end). */
function flatRows(indices: BigInt64Array, q: number, dims: readonly number[]): Int32Array {
  const rows = new Int32Array(indices.length / q);
  for (let i = 0; i < rows.length; i++) {
    let row = 0;
    for (let axis = 0; axis < q; axis++) {
      const index = Number(indices[i * q + axis]);
      const at = index < 0 ? index + dims[axis] : index;
      if (!(at >= 0 && at < dims[axis])) throw new RangeError(`scatter: index ${index} is outside axis ${axis} of [${dims.join(', ')}]`);
      row = row * dims[axis] + at;
    }
    rows[i] = row;
  }
  return rows;
}

export function byteLength(tensor: ort.Tensor): number {
  const per = tensor.type === 'float32' ? 4 : tensor.type === 'int64' ? 8 : tensor.type === 'float16' ? 2 : 1;
  return tensor.dims.reduce((a, b) => a * b, 1) * per;
}

/** Frees a device tensor's memory now rather than at garbage collection (no-op for host tensors). */
export function release(tensor: ort.Tensor | undefined): void {
  if (tensor && tensor.location !== 'cpu') tensor.dispose();
}
