// Byte-level helpers for building (possibly malformed) safetensors files and temp folders.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fresh folder under the OS temp dir; `cleanup` removes it. */
export async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'panorama-loading-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * Writes `8-byte length | header | data` exactly as given. `header` may be a string (for
 * garbage JSON); `declaredLength` overrides the length prefix (for lying headers).
 */
export async function writeRawSafetensors(path: string, header: unknown, data: Uint8Array, declaredLength?: bigint): Promise<void> {
  const headerBytes = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(declaredLength ?? BigInt(headerBytes.byteLength));
  await writeFile(path, Buffer.concat([prefix, headerBytes, data]));
}

/** Little-endian u16 bit patterns as bytes. */
export function u16Bytes(values: ArrayLike<number>): Uint8Array {
  const bytes = Buffer.alloc(values.length * 2);
  for (let i = 0; i < values.length; i++) bytes.writeUInt16LE(values[i], 2 * i);
  return bytes;
}

/** Little-endian f32 values as bytes. */
export function f32Bytes(values: ArrayLike<number>): Uint8Array {
  const bytes = Buffer.alloc(values.length * 4);
  for (let i = 0; i < values.length; i++) bytes.writeFloatLE(values[i], 4 * i);
  return bytes;
}

/** Reads the u16 values back from little-endian bytes. */
export function readU16(bytes: Uint8Array): number[] {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Array.from({ length: bytes.byteLength / 2 }, (_, i) => buf.readUInt16LE(2 * i));
}

/** Independent references for the float formats (arithmetic, not bit tricks). */
export function refF16ToFloat(bits: number): number {
  const sign = bits >> 15 ? -1 : 1;
  const e = (bits >> 10) & 31;
  const m = bits & 1023;
  if (e === 0) return sign * Math.pow(2, -14) * (m / 1024);
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * Math.pow(2, e - 15) * (1 + m / 1024);
}

export function refBf16ToFloat(bits: number): number {
  const buf = Buffer.alloc(4);
  buf.writeUInt16BE(bits, 0);
  return buf.readFloatBE(0);
}
