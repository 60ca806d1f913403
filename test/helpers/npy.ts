// Reads NumPy .npy files (format 1.0/2.0, little-endian <f4 / <i4 / <i8) for fixture comparisons.
import { readFileSync } from 'node:fs';

export interface NpyArray {
  shape: number[];
  data: Float32Array | Int32Array;
}

export function readNpy(path: string): NpyArray {
  const bytes = readFileSync(path);
  if (bytes.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(`${path}: not a .npy file`);
  const major = bytes[6];
  const headerLength = major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const headerStart = major === 1 ? 10 : 12;
  const header = bytes.toString('latin1', headerStart, headerStart + headerLength);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? '';
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${path}: fortran order unsupported`);
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  const body = bytes.subarray(headerStart + headerLength);
  const copy = body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength);
  if (descr === '<f4') return { shape, data: new Float32Array(copy) };
  if (descr === '<i4') return { shape, data: new Int32Array(copy) };
  if (descr === '<i8') return { shape, data: Int32Array.from(new BigInt64Array(copy), (x) => Number(x)) };
  throw new Error(`${path}: unsupported dtype ${descr}`);
}
