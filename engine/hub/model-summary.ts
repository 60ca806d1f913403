// What a model folder holds, read from its config and its safetensors headers only (no weight
// bytes): parameters, stored precision, files and bytes on disk.
import { open, readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { expectedWeights, loadConfig, type SalaConfig } from '../model/config.js';

export interface ModelSummary {
  dir: string;
  config: SalaConfig;
  /** Counted from the safetensors headers; from config.json when the folder has no weights yet. */
  parameters: number;
  /** Stored dtypes of the weights, by element count, largest first: "BF16", "F32 + BF16". */
  precision: string;
  files: { name: string; bytes: number }[];
  diskBytes: number;
}

const DTYPE_BYTES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I8: 1, U8: 1, I32: 4, I64: 8 };

/** The header of a safetensors file: the JSON after its 8-byte little-endian length. */
async function readHeader(file: string): Promise<Record<string, { dtype?: string; shape?: number[] }>> {
  const handle = await open(file, 'r');
  try {
    const prefix = Buffer.alloc(8);
    await handle.read(prefix, 0, 8, 0);
    const length = Number(prefix.readBigUInt64LE(0));
    const { size } = await handle.stat();
    if (length <= 0 || 8 + length > size) throw new Error(`${path.basename(file)} is not a safetensors file (its header length ${length} does not fit its ${size} bytes)`);
    const header = Buffer.alloc(length);
    await handle.read(header, 0, length, 8);
    const parsed: unknown = JSON.parse(header.toString('utf8'));
    if (typeof parsed !== 'object' || parsed === null) throw new Error(`${path.basename(file)}: the header is not a JSON object`);
    return Object.fromEntries(Object.entries(parsed).filter(([name]) => name !== '__metadata__'));
  } finally {
    await handle.close();
  }
}

async function weightFiles(dir: string, names: string[]): Promise<string[]> {
  if (names.includes('model.safetensors')) return ['model.safetensors'];
  if (names.includes('model.safetensors.index.json')) {
    const index: unknown = JSON.parse(await readFile(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    const map = typeof index === 'object' && index !== null && 'weight_map' in index && typeof index.weight_map === 'object' && index.weight_map !== null ? index.weight_map : {};
    return [...new Set(Object.values(map).filter((v): v is string => typeof v === 'string'))].sort();
  }
  return names.filter((n) => n.endsWith('.safetensors')).sort();
}

export async function summarizeModel(dir: string): Promise<ModelSummary> {
  const config = await loadConfig(dir);
  const entries = await readdir(dir, { withFileTypes: true });
  const files = await Promise.all(
    entries.filter((e) => e.isFile() && !e.name.startsWith('.')).map(async (e) => ({ name: e.name, bytes: (await stat(path.join(dir, e.name))).size })),
  );
  files.sort((a, b) => a.name.localeCompare(b.name));
  const byDtype = new Map<string, number>();
  let parameters = 0;
  for (const name of await weightFiles(
    dir,
    files.map((f) => f.name),
  )) {
    for (const [tensor, entry] of Object.entries(await readHeader(path.join(dir, name)))) {
      const count = (entry.shape ?? []).reduce((a, b) => a * b, 1);
      // An I8 weight's per-row scale is part of the weight, not a parameter of its own.
      if (!tensor.endsWith('_scale')) parameters += count;
      const dtype = entry.dtype ?? '?';
      byDtype.set(dtype, (byDtype.get(dtype) ?? 0) + count * (DTYPE_BYTES[dtype] ?? 1));
    }
  }
  if (parameters === 0) for (const shape of expectedWeights(config).values()) parameters += shape.reduce((a, b) => a * b, 1);
  const precision =
    [...byDtype]
      .sort((a, b) => b[1] - a[1])
      .map(([dtype]) => dtype)
      .join(' + ') || 'no weights';
  return { dir, config, parameters, precision, files, diskBytes: files.reduce((n, f) => n + f.bytes, 0) };
}
