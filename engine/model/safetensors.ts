// A safetensors reader: 8-byte little-endian header length N, N bytes of JSON header
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}), then the tensor bytes.
// `open` validates the whole header against the file, so a truncated or inconsistent file fails
// there with a clear message instead of producing garbage weights later. Tensor data is read
// at offsets in bounded chunks: a checkpoint is never loaded whole.
import { open as openFile, type FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { endianness } from 'node:os';
import { halfBits } from '../runtime/half.js';

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16' | 'I8';

export interface TensorEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** absolute file offsets of the tensor's bytes */
  begin: number;
  end: number;
  file: string;
}

export class SafetensorsError extends Error {
  override readonly name = 'SafetensorsError';
}

export const DTYPE_BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2, I8: 1 };

function isDtype(value: string): value is SafetensorsDtype {
  return Object.hasOwn(DTYPE_BYTES, value);
}

/** A header larger than this is not a real checkpoint's (the 9B model's is ~50 KB). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** Largest single read; tensors bigger than this are converted chunk by chunk. */
export const READ_CHUNK_BYTES = 8 * 1024 * 1024;
export const HOST_LITTLE_ENDIAN = endianness() === 'LE';

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isNonNegativeInt(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((n, dim) => n * dim, 1);
}

/** f16 bit pattern → float32 value, exactly (subnormals, ±inf, NaN). */
export function f16BitsToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (1024 + mantissa) * 2 ** (exponent - 25);
}

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** float → f16 bits, round to nearest even; overflow → ±inf, NaN stays NaN (quiet). */
export function floatToF16Bits(value: number): number {
  scratchF32[0] = value;
  return halfBits(scratchU32[0]);
}

/** float → bf16 bits, round to nearest even; NaN stays NaN (quiet). */
export function floatToBf16Bits(value: number): number {
  scratchF32[0] = value;
  const bits = scratchU32[0];
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) return (bits >>> 16) | 0x40;
  return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

let f16Table: Float32Array | undefined;
/** All 65536 f16 values as float32 (256 KiB), built on first use: a lookup beats bit fiddling per element. */
function f16Lookup(): Float32Array {
  if (f16Table === undefined) {
    f16Table = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) f16Table[bits] = f16BitsToFloat(bits);
  }
  return f16Table;
}

/** Reads exactly `length` bytes at `position` into `target` (FileHandle.read may return fewer). */
async function readFully(fh: FileHandle, target: Uint8Array, position: number, what: string): Promise<void> {
  let done = 0;
  while (done < target.byteLength) {
    const { bytesRead } = await fh.read(target, done, target.byteLength - done, position + done);
    if (bytesRead === 0) {
      throw new SafetensorsError(`${what}: unexpected end of file at byte ${position + done} (the file changed or is truncated)`);
    }
    done += bytesRead;
  }
}

/** Reverses the byte order of each `width`-byte element in place (safetensors is little-endian). */
export function swapBytes(bytes: Uint8Array, width: number): void {
  if (width === 1) return;
  for (let at = 0; at + width <= bytes.byteLength; at += width) bytes.subarray(at, at + width).reverse();
}

/** Decodes `count` little-endian elements of `dtype` from `bytes` (a scratch buffer) into `out` at `outOffset`. */
function decodeInto(dtype: SafetensorsDtype, bytes: Uint8Array, count: number, out: Float32Array, outOffset: number): void {
  // Typed-array views read host order; big-endian hosts are rare, so swap the scratch buffer for them.
  if (!HOST_LITTLE_ENDIAN) swapBytes(bytes, DTYPE_BYTES[dtype]);
  switch (dtype) {
    case 'F32':
      out.set(new Float32Array(bytes.buffer, bytes.byteOffset, count), outOffset);
      return;
    case 'BF16': {
      // bf16 is the top half of a float32: widen the bits, exact by construction.
      const src = new Uint16Array(bytes.buffer, bytes.byteOffset, count);
      const dst = new Uint32Array(out.buffer, out.byteOffset + 4 * outOffset, count);
      for (let i = 0; i < count; i++) dst[i] = src[i] << 16;
      return;
    }
    case 'F16': {
      const src = new Uint16Array(bytes.buffer, bytes.byteOffset, count);
      const table = f16Lookup();
      for (let i = 0; i < count; i++) out[outOffset + i] = table[src[i]];
      return;
    }
    case 'I8': {
      const src = new Int8Array(bytes.buffer, bytes.byteOffset, count);
      out.set(src, outOffset);
      return;
    }
  }
}

export class SafetensorsFile {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly entries: Map<string, TensorEntry>,
    readonly metadata: Record<string, string>,
  ) {}

  /** Opens `path` and validates its header against the file size; reads no tensor data. */
  static async open(path: string): Promise<SafetensorsFile> {
    let handle: FileHandle;
    try {
      handle = await openFile(path, 'r');
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new SafetensorsError(`cannot open ${path}: ${reason}`);
    }
    try {
      const { entries, metadata } = await readHeader(handle, path);
      return new SafetensorsFile(path, handle, entries, metadata);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  private entry(name: string): TensorEntry {
    const entry = this.entries.get(name);
    if (entry === undefined) throw new SafetensorsError(`${basename(this.path)} has no tensor named ${name}`);
    return entry;
  }

  /**
   * Reads one tensor into a fresh Float32Array. F16/BF16 are converted exactly; I8 yields its
   * integer values (dequantizing needs the scale, see weights.ts). Streams in chunks of at most
   * READ_CHUNK_BYTES so a large tensor is never held twice in its stored dtype.
   */
  async readFloat32(name: string): Promise<Float32Array> {
    const entry = this.entry(name);
    const elemBytes = DTYPE_BYTES[entry.dtype];
    const total = elementCount(entry.shape);
    const out = new Float32Array(total);
    const chunkElems = Math.max(1, Math.floor(READ_CHUNK_BYTES / elemBytes));
    const chunk = new Uint8Array(Math.min(total, chunkElems) * elemBytes);
    for (let first = 0; first < total; first += chunkElems) {
      const count = Math.min(chunkElems, total - first);
      const bytes = chunk.subarray(0, count * elemBytes);
      await readFully(this.handle, bytes, entry.begin + first * elemBytes, `${basename(this.path)}: ${name}`);
      decodeInto(entry.dtype, bytes, count, out, first);
    }
    return out;
  }

  /** Raw little-endian bytes of a tensor as stored. */
  async readRaw(name: string): Promise<Uint8Array> {
    const entry = this.entry(name);
    const bytes = new Uint8Array(entry.end - entry.begin);
    for (let first = 0; first < bytes.byteLength; first += READ_CHUNK_BYTES) {
      const part = bytes.subarray(first, Math.min(bytes.byteLength, first + READ_CHUNK_BYTES));
      await readFully(this.handle, part, entry.begin + first, `${basename(this.path)}: ${name}`);
    }
    return bytes;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

async function readHeader(handle: FileHandle, path: string): Promise<{ entries: Map<string, TensorEntry>; metadata: Record<string, string> }> {
  const file = basename(path);
  const fail = (problem: string): never => {
    throw new SafetensorsError(`${file}: ${problem}`);
  };
  const fileSize = (await handle.stat()).size;
  if (fileSize < 8) fail(`only ${fileSize} bytes, too small for a safetensors file (re-download or re-export the checkpoint)`);

  const lengthBytes = new Uint8Array(8);
  await readFully(handle, lengthBytes, 0, file);
  const headerLength = new DataView(lengthBytes.buffer).getBigUint64(0, true);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    fail(`header length ${headerLength} is over the ${MAX_HEADER_BYTES}-byte limit: not a safetensors file, or corrupt`);
  }
  const headerBytes = Number(headerLength);
  if (8 + headerBytes > fileSize) {
    fail(`header length ${headerBytes} runs past the end of the ${fileSize}-byte file: not a safetensors file, or truncated`);
  }
  const dataStart = 8 + headerBytes;

  const raw = new Uint8Array(headerBytes);
  await readFully(handle, raw, 8, file);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw));
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    return fail(`header is not valid JSON (${reason}): not a safetensors file, or corrupt`);
  }
  if (!isRecord(header)) return fail('header is not a JSON object');

  const metadata: Record<string, string> = {};
  const entries = new Map<string, TensorEntry>();
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isRecord(value)) return fail('__metadata__ is not an object of strings');
      for (const [key, text] of Object.entries(value)) {
        if (typeof text !== 'string') return fail(`__metadata__.${key} is not a string`);
        metadata[key] = text;
      }
      continue;
    }
    entries.set(name, parseEntry(name, value, path, dataStart, fileSize, fail));
  }

  // The data section must be covered exactly once, in offset order: no overlaps, no holes.
  const ordered = [...entries.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expectedBegin = dataStart;
  let previous: TensorEntry | undefined;
  for (const entry of ordered) {
    if (entry.begin < expectedBegin) {
      fail(`tensors ${previous?.name} and ${entry.name} overlap (byte ${entry.begin - dataStart} of the data section): the header is corrupt`);
    }
    if (entry.begin > expectedBegin) {
      fail(`gap before tensor ${entry.name} (bytes ${expectedBegin - dataStart}..${entry.begin - dataStart} of the data section are unused): the header is corrupt`);
    }
    expectedBegin = entry.end;
    previous = entry;
  }
  return { entries, metadata };
}

function parseEntry(name: string, value: unknown, path: string, dataStart: number, fileSize: number, fail: (problem: string) => never): TensorEntry {
  if (!isRecord(value)) return fail(`tensor ${name}: header entry is not an object`);
  const { dtype, shape, data_offsets: offsets } = value;
  if (typeof dtype !== 'string') return fail(`tensor ${name}: dtype is missing`);
  if (!isDtype(dtype)) return fail(`tensor ${name} has dtype ${dtype}, which is not supported (supported: F32, F16, BF16, I8)`);
  if (!Array.isArray(shape) || !shape.every(isNonNegativeInt)) {
    return fail(`tensor ${name}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInt) || offsets[0] > offsets[1]) {
    return fail(`tensor ${name}: data_offsets ${JSON.stringify(offsets)} is not a pair [begin, end] with begin ≤ end`);
  }
  const [begin, end] = offsets;
  const expectedBytes = elementCount(shape) * DTYPE_BYTES[dtype];
  if (end - begin !== expectedBytes) {
    fail(`tensor ${name}: shape [${shape.join(', ')}] in ${dtype} needs ${expectedBytes} bytes but data_offsets span ${end - begin}: the header is corrupt`);
  }
  if (dataStart + end > fileSize) {
    throw new SafetensorsError(
      `${basename(path)} is truncated: tensor ${name} ends at byte ${dataStart + end} but the file has ${fileSize} bytes (re-download or re-export the checkpoint)`,
    );
  }
  return { name, dtype, shape: [...shape], begin: dataStart + begin, end: dataStart + end, file: path };
}
