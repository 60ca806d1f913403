// Loads a checkpoint's weights as float32, checked against what the config says the model needs,
// and writes safetensors files (tests, the bench's random model, tools).
import { access, open as openFile, readFile, readdir, rename, rm } from 'node:fs/promises';
import { isAbsolute, join, normalize, sep } from 'node:path';
import { expectedWeights, type SalaConfig } from './config.js';
import {
  DTYPE_BYTES,
  HOST_LITTLE_ENDIAN,
  READ_CHUNK_BYTES,
  SafetensorsFile,
  elementCount,
  floatToBf16Bits,
  floatToF16Bits,
  swapBytes,
  type SafetensorsDtype,
  type TensorEntry,
} from './safetensors.js';

export type WeightMap = Map<string, Float32Array>;

export class WeightsError extends Error {
  override readonly name = 'WeightsError';
}

/** At most this many missing names are listed in an error; the rest are counted. */
const MAX_LISTED_MISSING = 10;
const SCALE_SUFFIX = '_scale';

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function showShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((dim, i) => dim === b[i]);
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** The safetensors files of a checkpoint: one file, the shards of an index, or every *.safetensors. */
async function checkpointFiles(modelDir: string): Promise<string[]> {
  const single = join(modelDir, 'model.safetensors');
  if (await exists(single)) return [single];

  const indexPath = join(modelDir, 'model.safetensors.index.json');
  if (await exists(indexPath)) {
    let index: unknown;
    try {
      index = JSON.parse(await readFile(indexPath, 'utf8'));
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new WeightsError(`${indexPath}: cannot read the shard index (${reason})`);
    }
    const weightMap = isRecord(index) ? index.weight_map : undefined;
    if (!isRecord(weightMap)) throw new WeightsError(`${indexPath}: has no "weight_map" object`);
    const shards = new Set<string>();
    for (const [name, shard] of Object.entries(weightMap)) {
      // Shards must live inside the model folder.
      if (typeof shard !== 'string' || isAbsolute(shard) || normalize(shard).split(sep).includes('..')) {
        throw new WeightsError(`${indexPath}: weight_map.${name} is not a shard file name inside the model folder: ${JSON.stringify(shard)}`);
      }
      shards.add(shard);
    }
    return [...shards].sort().map((shard) => join(modelDir, shard));
  }

  let names: string[];
  try {
    names = await readdir(modelDir);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new WeightsError(`cannot list the model folder ${modelDir} (${reason})`);
  }
  const files = names.filter((name) => name.endsWith('.safetensors')).sort();
  if (files.length === 0) {
    throw new WeightsError(`no weights in ${modelDir}: expected model.safetensors, model.safetensors.index.json or *.safetensors files`);
  }
  return files.map((name) => join(modelDir, name));
}

interface Located {
  file: SafetensorsFile;
  entry: TensorEntry;
}

/** What to read for one expected weight: the tensor, and for I8 its per-row scale. */
interface ReadPlan {
  name: string;
  tensor: Located;
  scale?: Located;
}

function planRead(name: string, shape: number[], byName: Map<string, Located>): ReadPlan {
  const tensor = byName.get(name);
  if (tensor === undefined) throw new WeightsError(`internal: ${name} not located`);
  const { entry } = tensor;
  if (!sameShape(entry.shape, shape)) {
    throw new WeightsError(
      `tensor ${name} in ${entry.file} has shape ${showShape(entry.shape)} but config.json implies ${showShape(shape)}: ` +
        'the config and the weights disagree (is config.json the one that belongs to this checkpoint?)',
    );
  }
  if (entry.dtype !== 'I8') return { name, tensor };

  // Int8 weights carry one float scale per output row in a companion tensor.
  const scaleName = name + SCALE_SUFFIX;
  const scale = byName.get(scaleName);
  if (scale === undefined) throw new WeightsError(`tensor ${name} is I8 but its per-row scale tensor ${scaleName} is missing`);
  const out = entry.shape[0];
  const scaleShape = scale.entry.shape;
  if (scale.entry.dtype === 'I8') throw new WeightsError(`scale tensor ${scaleName} must be F32, F16 or BF16, not I8`);
  if (entry.shape.length === 0 || !(sameShape(scaleShape, [out]) || sameShape(scaleShape, [out, 1]))) {
    throw new WeightsError(`scale tensor ${scaleName} has shape ${showShape(scaleShape)}; expected [${out}] or [${out}, 1] (one scale per row of ${name})`);
  }
  return { name, tensor, scale };
}

/** Reads one planned weight as float32; I8 is dequantized in place: W[o, i] = q[o, i] · scale[o]. */
async function readWeight(plan: ReadPlan): Promise<{ data: Float32Array; bytes: number }> {
  const { tensor, scale } = plan;
  const data = await tensor.file.readFloat32(plan.name);
  let bytes = tensor.entry.end - tensor.entry.begin;
  if (scale !== undefined) {
    const scales = await scale.file.readFloat32(scale.entry.name);
    bytes += scale.entry.end - scale.entry.begin;
    const rowLength = scales.length === 0 ? 0 : data.length / scales.length;
    for (let row = 0; row < scales.length; row++) {
      const s = scales[row];
      for (let i = row * rowLength, end = i + rowLength; i < end; i++) data[i] *= s;
    }
  }
  return { data, bytes };
}

/**
 * Loads every weight `expectedWeights(cfg)` names from `modelDir` as Float32Array.
 * Extra tensors are not loaded; their names come back in `unexpected` so the caller can warn.
 */
export async function loadWeights(modelDir: string, cfg: SalaConfig): Promise<{ weights: WeightMap; unexpected: string[]; bytesRead: number }> {
  const expected = expectedWeights(cfg);
  const paths = await checkpointFiles(modelDir);
  const files: SafetensorsFile[] = [];
  try {
    const byName = new Map<string, Located>();
    for (const path of paths) {
      const file = await SafetensorsFile.open(path);
      files.push(file);
      for (const entry of file.entries.values()) {
        const earlier = byName.get(entry.name);
        if (earlier !== undefined) {
          throw new WeightsError(`tensor ${entry.name} appears in both ${earlier.entry.file} and ${path}: remove the stray file from ${modelDir}`);
        }
        byName.set(entry.name, { file, entry });
      }
    }

    const missing = [...expected.keys()].filter((name) => !byName.has(name));
    if (missing.length > 0) {
      const listed = missing.slice(0, MAX_LISTED_MISSING).join(', ');
      const more = missing.length > MAX_LISTED_MISSING ? ` and ${missing.length - MAX_LISTED_MISSING} more` : '';
      throw new WeightsError(
        `the checkpoint in ${modelDir} lacks ${missing.length} of the ${expected.size} weights config.json requires: ${listed}${more} ` +
          '(is config.json the one that belongs to these weights?)',
      );
    }

    // Check every shape and dtype before reading any data, so a bad checkpoint fails fast.
    const plans = [...expected].map(([name, shape]) => planRead(name, shape, byName));
    const used = new Set(plans.flatMap((plan) => (plan.scale ? [plan.name, plan.scale.entry.name] : [plan.name])));
    const unexpected = [...byName.keys()].filter((name) => !used.has(name)).sort();

    const weights: WeightMap = new Map();
    let bytesRead = 0;
    for (const plan of plans) {
      const { data, bytes } = await readWeight(plan);
      weights.set(plan.name, data);
      bytesRead += bytes;
    }
    return { weights, unexpected, bytesRead };
  } finally {
    await Promise.all(files.map((file) => file.close()));
  }
}

// ---- writing ----

export interface TensorToWrite {
  name: string;
  data: Float32Array;
  shape: number[];
  dtype: 'F32' | 'F16' | 'BF16' | 'I8';
}

/** One tensor as laid out in the file; I8 tensors carry the row scales they are quantized with. */
interface StoredTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  data: Float32Array;
  rowScales?: Float32Array;
}

/** Symmetric per-row scales: absmax / 127 of each row (0 for an all-zero row). */
function rowScales(name: string, data: Float32Array, rows: number): Float32Array {
  const scales = new Float32Array(rows);
  const rowLength = rows === 0 ? 0 : data.length / rows;
  for (let row = 0; row < rows; row++) {
    let absMax = 0;
    for (let i = row * rowLength, end = i + rowLength; i < end; i++) {
      const v = Math.abs(data[i]);
      if (!Number.isFinite(v)) throw new WeightsError(`cannot quantize ${name} to I8: row ${row} holds ${data[i]}`);
      if (v > absMax) absMax = v;
    }
    scales[row] = absMax / 127;
  }
  return scales;
}

function quantize(value: number, scale: number): number {
  if (scale === 0) return 0;
  const q = Math.round(Math.abs(value) / scale);
  return Math.sign(value) * Math.min(127, q);
}

/** Encodes elements [first, first + count) of `tensor` into `target` (little-endian). */
function encodeChunk(tensor: StoredTensor, first: number, count: number, target: Uint8Array): void {
  const { data } = tensor;
  switch (tensor.dtype) {
    case 'F32':
      new Float32Array(target.buffer, target.byteOffset, count).set(data.subarray(first, first + count));
      break;
    case 'F16': {
      const dst = new Uint16Array(target.buffer, target.byteOffset, count);
      for (let i = 0; i < count; i++) dst[i] = floatToF16Bits(data[first + i]);
      break;
    }
    case 'BF16': {
      const dst = new Uint16Array(target.buffer, target.byteOffset, count);
      for (let i = 0; i < count; i++) dst[i] = floatToBf16Bits(data[first + i]);
      break;
    }
    case 'I8': {
      const scales = tensor.rowScales;
      if (scales === undefined) throw new WeightsError(`internal: ${tensor.name} has no row scales`);
      const rowLength = data.length / scales.length;
      const dst = new Int8Array(target.buffer, target.byteOffset, count);
      for (let i = 0; i < count; i++) dst[i] = quantize(data[first + i], scales[Math.floor((first + i) / rowLength)]);
      break;
    }
  }
  if (!HOST_LITTLE_ENDIAN) swapBytes(target.subarray(0, count * DTYPE_BYTES[tensor.dtype]), DTYPE_BYTES[tensor.dtype]);
}

function storedTensors(tensors: TensorToWrite[]): StoredTensor[] {
  const stored: StoredTensor[] = [];
  for (const { name, data, shape, dtype } of tensors) {
    if (name === '__metadata__') throw new WeightsError('"__metadata__" is reserved and cannot name a tensor');
    if (!shape.every((dim) => Number.isSafeInteger(dim) && dim >= 0)) throw new WeightsError(`tensor ${name}: bad shape ${showShape(shape)}`);
    if (elementCount(shape) !== data.length) {
      throw new WeightsError(`tensor ${name}: shape ${showShape(shape)} needs ${elementCount(shape)} values, got ${data.length}`);
    }
    if (dtype !== 'I8') {
      stored.push({ name, dtype, shape, data });
      continue;
    }
    if (shape.length === 0) throw new WeightsError(`tensor ${name}: a scalar cannot be quantized per row`);
    const scales = rowScales(name, data, shape[0]);
    stored.push({ name, dtype, shape, data, rowScales: scales });
    stored.push({ name: name + SCALE_SUFFIX, dtype: 'F32', shape: [shape[0]], data: scales });
  }
  const seen = new Set<string>();
  for (const { name } of stored) {
    if (seen.has(name)) throw new WeightsError(`tensor name ${name} is used twice`);
    seen.add(name);
  }
  return stored;
}

/**
 * Writes a safetensors file. Values are rounded to the target dtype (nearest even); I8 tensors
 * are quantized per row (absmax / 127) with the scales written as `<name>_scale` (F32, [rows]).
 * The file is written beside `path` and renamed into place, so readers never see half a file.
 */
export async function writeSafetensors(path: string, tensors: TensorToWrite[], metadata?: Record<string, string>): Promise<void> {
  const stored = storedTensors(tensors);
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) header.__metadata__ = metadata;
  let offset = 0;
  for (const tensor of stored) {
    const bytes = tensor.data.length * DTYPE_BYTES[tensor.dtype];
    header[tensor.name] = { dtype: tensor.dtype, shape: tensor.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
  let headerText = JSON.stringify(header);
  headerText += ' '.repeat((8 - (Buffer.byteLength(headerText) % 8)) % 8);
  const headerBytes = Buffer.from(headerText, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.byteLength));

  const partial = `${path}.partial`;
  const handle = await openFile(partial, 'w');
  try {
    await handle.write(prefix);
    await handle.write(headerBytes);
    const chunk = new Uint8Array(READ_CHUNK_BYTES);
    for (const tensor of stored) {
      const elemBytes = DTYPE_BYTES[tensor.dtype];
      const chunkElems = Math.floor(READ_CHUNK_BYTES / elemBytes);
      for (let first = 0; first < tensor.data.length; first += chunkElems) {
        const count = Math.min(chunkElems, tensor.data.length - first);
        encodeChunk(tensor, first, count, chunk);
        await handle.write(chunk, 0, count * elemBytes);
      }
    }
    await handle.close();
  } catch (err) {
    await handle.close().catch(() => undefined);
    await rm(partial, { force: true });
    throw err;
  }
  await rename(partial, path);
}
