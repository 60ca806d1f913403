// Convert once: the first int4 load of a checkpoint keeps the int4 blocks it made in
// `<model>/.panorama/int4.safetensors` (codes and zero points U8, scales F32, in
// MatMulNBits' layout), and later loads read them instead of quantizing every matrix again,
// which is most of an int4 load (a 9B model has 9.2B matrix weights to quantize). The file
// records the size and mtime of config.json and every weight file; any change makes it stale
// and the next load converts again. fp32 and fp16 loads need no converted form: bf16 → fp32
// is a shift, fp32 → fp16 a rounding, both cheap beside reading the bytes.
import { open, readdir, rename, rm, mkdir, stat } from 'node:fs/promises';
import { endianness } from 'node:os';
import path from 'node:path';
import { SalaModel, type ModelOptions } from '../model/sala-model.js';
import { INT4_BLOCK_SIZE, blocksPerRow, type Int4Matrix } from '../runtime/int4.js';

export const CONVERTED_DIR = '.panorama';
const INT4_FILE = 'int4.safetensors';
const FORMAT = 'panorama-int4-v1';

export interface ConvertEvent {
  phase: 'convert' | 'read' | 'written' | 'unwritable';
  done?: number;
  total?: number;
  file?: string;
  bytes?: number;
  reason?: string;
}

/** Size and mtime of config.json and every weight file: what the converted form was made from. */
async function sourceFingerprint(modelDir: string): Promise<string> {
  const names = (await readdir(modelDir)).filter((n) => n === 'config.json' || n.endsWith('.safetensors') || n === 'model.safetensors.index.json').sort();
  const parts = await Promise.all(
    names.map(async (name) => {
      const s = await stat(path.join(modelDir, name));
      return `${name}:${s.size}:${Math.round(s.mtimeMs)}`;
    }),
  );
  return parts.join('|');
}

interface HeaderEntry {
  shape: number[];
  offsets: [number, number];
}

function entryOf(header: Record<string, unknown>, key: string): HeaderEntry {
  const value = header[key];
  if (typeof value !== 'object' || value === null || !('shape' in value) || !('data_offsets' in value)) throw new Error(`no ${key}`);
  const { shape, data_offsets: offsets } = value;
  if (!Array.isArray(shape) || !Array.isArray(offsets) || offsets.length !== 2) throw new Error(`bad ${key}`);
  return { shape: shape.map(Number), offsets: [Number(offsets[0]), Number(offsets[1])] };
}

async function readInt4File(file: string, source: string, onProgress: (done: number, total: number) => void): Promise<Map<string, Int4Matrix> | undefined> {
  const handle = await open(file, 'r').catch(() => undefined);
  if (!handle) return undefined;
  try {
    const prefix = Buffer.alloc(8);
    await handle.read(prefix, 0, 8, 0);
    const headerLength = Number(prefix.readBigUInt64LE(0));
    if (headerLength <= 0 || headerLength > 64 * 2 ** 20) return undefined;
    const headerBytes = Buffer.alloc(headerLength);
    await handle.read(headerBytes, 0, headerLength, 8);
    const header: Record<string, unknown> = JSON.parse(headerBytes.toString('utf8'));
    const metadata = header.__metadata__;
    if (typeof metadata !== 'object' || metadata === null || !('format' in metadata) || metadata.format !== FORMAT || !('source' in metadata) || metadata.source !== source)
      return undefined;
    const cols: unknown = 'cols' in metadata && typeof metadata.cols === 'string' ? JSON.parse(metadata.cols) : {};
    if (typeof cols !== 'object' || cols === null) return undefined;
    const colsOf = new Map(Object.entries(cols).map(([name, n]) => [name, Number(n)]));
    const dataStart = 8 + headerLength;
    const read = async (entry: HeaderEntry): Promise<Buffer> => {
      const [begin, end] = entry.offsets;
      const bytes = Buffer.alloc(end - begin);
      const { bytesRead } = await handle.read(bytes, 0, bytes.length, dataStart + begin);
      if (bytesRead !== bytes.length) throw new Error('truncated');
      return bytes;
    };
    const names = Object.keys(header)
      .filter((k) => k.endsWith('.codes'))
      .map((k) => k.slice(0, -'.codes'.length));
    const blocks = new Map<string, Int4Matrix>();
    for (const [i, name] of names.entries()) {
      const codesEntry = entryOf(header, `${name}.codes`);
      const scalesBytes = await read(entryOf(header, `${name}.scales`));
      const [rows, , half] = codesEntry.shape;
      const columns = colsOf.get(name);
      if (columns === undefined || !Number.isInteger(columns)) return undefined;
      const scales = new Float32Array(scalesBytes.length / 4);
      new Uint8Array(scales.buffer).set(scalesBytes);
      blocks.set(name, {
        rows,
        cols: columns,
        blockSize: half * 2,
        codes: new Uint8Array(await read(codesEntry)),
        scales,
        zeros: new Uint8Array(await read(entryOf(header, `${name}.zeros`))),
      });
      onProgress(i + 1, names.length);
    }
    return blocks;
  } catch {
    return undefined; // unreadable: convert again and overwrite it
  } finally {
    await handle.close();
  }
}

async function writeInt4File(file: string, source: string, blocks: Map<string, Int4Matrix>): Promise<number> {
  const cols = Object.fromEntries([...blocks].map(([name, q]) => [name, q.cols]));
  const header: Record<string, unknown> = { __metadata__: { format: FORMAT, source, block_size: String(INT4_BLOCK_SIZE), cols: JSON.stringify(cols) } };
  const chunks: Uint8Array[] = [];
  let offset = 0;
  const add = (name: string, dtype: 'U8' | 'F32', shape: number[], data: Uint8Array) => {
    header[name] = { dtype, shape, data_offsets: [offset, offset + data.byteLength] };
    chunks.push(data);
    offset += data.byteLength;
  };
  for (const [name, q] of [...blocks].sort(([a], [b]) => a.localeCompare(b))) {
    add(`${name}.codes`, 'U8', [q.rows, blocksPerRow(q.cols, q.blockSize), q.blockSize / 2], q.codes);
    add(`${name}.scales`, 'F32', [q.scales.length], new Uint8Array(q.scales.buffer, q.scales.byteOffset, q.scales.byteLength));
    add(`${name}.zeros`, 'U8', [q.zeros.length], q.zeros);
  }
  let text = JSON.stringify(header);
  text += ' '.repeat((8 - (Buffer.byteLength(text) % 8)) % 8);
  const headerBytes = Buffer.from(text, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));
  await mkdir(path.dirname(file), { recursive: true });
  const partial = `${file}.partial-${process.pid}`;
  const handle = await open(partial, 'w');
  try {
    await handle.write(prefix);
    await handle.write(headerBytes);
    for (const chunk of chunks) await handle.write(chunk);
    await handle.sync();
  } catch (err) {
    await handle.close();
    await rm(partial, { force: true });
    throw err;
  }
  await handle.close();
  await rename(partial, file);
  return 8 + headerBytes.length + offset;
}

/**
 * Loads a model; for int4, through the converted form beside the checkpoint (made on the
 * first load, read on later ones). A folder that cannot be written to converts every time.
 */
export async function loadModel(modelDir: string, options: ModelOptions = {}, onEvent?: (event: ConvertEvent) => void): Promise<SalaModel> {
  if (options.precision !== 'int4' || endianness() !== 'LE') return SalaModel.load(modelDir, options);
  const file = path.join(modelDir, CONVERTED_DIR, INT4_FILE);
  const source = await sourceFingerprint(modelDir);
  const cached = await readInt4File(file, source, (done, total) => onEvent?.({ phase: 'read', done, total, file }));
  if (cached) {
    return SalaModel.load(modelDir, { ...options, int4Blocks: (name) => cached.get(name) });
  }
  const made = new Map<string, Int4Matrix>();
  const model = await SalaModel.load(modelDir, {
    ...options,
    onInt4: (name, q) => {
      made.set(name, q);
      onEvent?.({ phase: 'convert', done: made.size });
    },
  });
  try {
    const bytes = await writeInt4File(file, source, made);
    onEvent?.({ phase: 'written', file, bytes });
  } catch (err) {
    onEvent?.({ phase: 'unwritable', file, reason: err instanceof Error ? err.message : String(err) });
  }
  return model;
}
