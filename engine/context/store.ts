// Persistence of a workspace context under a store directory, so reopening costs
// no model compute. Layout:
//   manifest.json            what is valid: model fingerprint, format, segments,
//                            checkpoints, file spans, tombstones (atomically replaced)
//   seg-<first>-<count>-<generation>.bin  token ids + every sparse layer's K and V rows for a
//                            token range; append-only, never modified
//   cp-<length>-<generation>.bin  lightning states at a position (file boundaries + end)
// Every file is written under a temporary name, fsynced and renamed; the manifest
// names only complete files and carries their CRC-32, and is itself replaced last.
// A kill at any point leaves the previous manifest valid; files it does not name
// are removed on the next open. Compressed keys are not stored: they are means of
// stored keys, rebuilt on first use in O(tokens) without the model.
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import type { SalaModel } from '../model/sala-model.js';
import type { SequenceCheckpoint } from '../model/sequence.js';
import type { ContextState, ExcludedEntry, FileSpan, RestoredState } from './workspace-context.js';

export const STORE_FORMAT = 2;
const SEGMENT_MAGIC = Buffer.from('PANSEG01');
const CHECKPOINT_MAGIC = Buffer.from('PANCKP01');
/** Tokens per segment file (a bounded unit of rewrite and of loss on corruption). */
const SEGMENT_TOKENS = 32_768;

interface SegmentRecord {
  file: string;
  first: number;
  count: number;
  crc: number;
}

interface CheckpointRecord {
  file: string;
  length: number;
  crc: number;
}

interface Manifest {
  format: number;
  model: string;
  savedAt: string;
  length: number;
  segments: SegmentRecord[];
  checkpoints: CheckpointRecord[];
  end: CheckpointRecord;
  spans: FileSpan[];
  excluded: ExcludedEntry[];
  dead: [number, number][];
}

export class StoreError extends Error {}

export interface LoadReport {
  /** Why nothing (or less than everything) was restored, for the log. */
  notes: string[];
  restoredTokens: number;
  /** Files whose spans were lost to a damaged segment: the caller re-feeds them. */
  lostFiles: string[];
}

/** A fingerprint of what the model computes: config + tensor headers + sizes (not whole weights: 9B checkpoints are large). */
export async function modelFingerprint(modelDir: string): Promise<string> {
  const hash = createHash('sha256');
  hash.update(await fs.readFile(path.join(modelDir, 'config.json')));
  for (const name of (await fs.readdir(modelDir)).filter((n) => n.endsWith('.safetensors')).sort()) {
    const handle = await fs.open(path.join(modelDir, name), 'r');
    try {
      const { size } = await handle.stat();
      const head = Buffer.alloc(Math.min(size, 1 << 20));
      await handle.read(head, 0, head.length, 0);
      hash.update(`${name}:${size}:`).update(head);
    } finally {
      await handle.close();
    }
  }
  return hash.digest('hex');
}

async function writeDurably(file: string, data: Uint8Array): Promise<void> {
  const temporary = `${file}.tmp-${process.pid}`;
  const handle = await fs.open(temporary, 'w');
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (err) {
    await handle.close().catch(() => undefined);
    await fs.rm(temporary, { force: true });
    throw describeWriteError(err, file);
  }
  await handle.close();
  await fs.rename(temporary, file);
}

function describeWriteError(err: unknown, file: string): Error {
  const code = typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : '';
  if (code === 'ENOSPC') return new StoreError(`no space left on the device while writing ${file}; the index keeps its last saved state — free disk space and re-index`, { cause: err });
  if (code === 'EACCES' || code === 'EROFS') return new StoreError(`cannot write ${file} (${code}); check the store directory's permissions`, { cause: err });
  return err instanceof Error ? err : new StoreError(String(err));
}

function floatBytes(array: Float32Array): Buffer {
  return Buffer.from(array.buffer, array.byteOffset, array.byteLength);
}

export class ContextStore {
  private manifest?: Manifest;

  constructor(
    readonly dir: string,
    readonly modelId: string,
    private readonly segmentTokens = SEGMENT_TOKENS,
  ) {}

  private sparseLayers(model: SalaModel): number[] {
    return model.sizes.sparseLayers;
  }

  private lightningLayers(model: SalaModel): number[] {
    return model.sizes.lightningLayers;
  }

  /**
   * Reads the store. Returns undefined when there is nothing usable (no store, a
   * different model or format, an unreadable manifest), with the reason in notes.
   */
  async load(model: SalaModel, report: LoadReport = { notes: [], restoredTokens: 0, lostFiles: [] }): Promise<{ state?: RestoredState; report: LoadReport }> {
    let manifest: Manifest;
    try {
      manifest = JSON.parse(await fs.readFile(path.join(this.dir, 'manifest.json'), 'utf8'));
    } catch (err) {
      const missing = typeof err === 'object' && err !== null && 'code' in err && err.code === 'ENOENT';
      report.notes.push(missing ? 'no saved index: building one' : `the saved index manifest is unreadable (${err instanceof Error ? err.message : String(err)}): rebuilding`);
      await this.clear();
      return { report };
    }
    if (manifest.format !== STORE_FORMAT || manifest.model !== this.modelId) {
      report.notes.push(manifest.format !== STORE_FORMAT ? `index format ${manifest.format} is not ${STORE_FORMAT}: rebuilding` : 'the model changed since the index was built: rebuilding');
      await this.clear();
      return { report };
    }
    await this.removeUnlisted(manifest);

    const sparse = this.sparseLayers(model);
    const lightning = this.lightningLayers(model);
    const rowFloats = model.config.numKeyValueHeads * model.sizes.sparseHeadDim;
    const tokens: number[] = [];
    const keyParts = new Map(sparse.map((l) => [l, [] as Float32Array[]]));
    const valueParts = new Map(sparse.map((l) => [l, [] as Float32Array[]]));
    let validLength = 0;
    for (const segment of manifest.segments) {
      if (segment.first !== validLength) break;
      const bytes = await fs.readFile(path.join(this.dir, segment.file)).catch(() => undefined);
      const expectedSize = SEGMENT_MAGIC.length + segment.count * 4 + sparse.length * 2 * segment.count * rowFloats * 4;
      if (!bytes || bytes.length !== expectedSize || crc32(bytes) !== segment.crc || !bytes.subarray(0, SEGMENT_MAGIC.length).equals(SEGMENT_MAGIC)) {
        report.notes.push(`segment ${segment.file} is damaged or missing: rebuilding from token ${segment.first}`);
        break;
      }
      // Typed views straight on the read buffer when it is aligned (it is, for large reads); a copy otherwise.
      const bodyOffset = bytes.byteOffset + SEGMENT_MAGIC.length;
      const body = bodyOffset % 4 === 0 ? new Uint8Array(bytes.buffer, bodyOffset, bytes.length - SEGMENT_MAGIC.length) : new Uint8Array(bytes.subarray(SEGMENT_MAGIC.length));
      const ids = new Int32Array(body.buffer, body.byteOffset, segment.count);
      for (const id of ids) tokens.push(id);
      let offset = body.byteOffset + segment.count * 4;
      for (const layer of sparse) {
        keyParts.get(layer)?.push(new Float32Array(body.buffer, offset, segment.count * rowFloats));
        offset += segment.count * rowFloats * 4;
        valueParts.get(layer)?.push(new Float32Array(body.buffer, offset, segment.count * rowFloats));
        offset += segment.count * rowFloats * 4;
      }
      validLength += segment.count;
    }

    // The lightning state must match the restored length exactly: the end state if
    // everything is intact, else the last checkpoint within what was read.
    const readCheckpoint = async (record: CheckpointRecord): Promise<SequenceCheckpoint | undefined> => {
      const bytes = await fs.readFile(path.join(this.dir, record.file)).catch(() => undefined);
      if (!bytes || crc32(bytes) !== record.crc || !bytes.subarray(0, CHECKPOINT_MAGIC.length).equals(CHECKPOINT_MAGIC)) return undefined;
      const floats = new Float32Array(bytes.buffer.slice(bytes.byteOffset + CHECKPOINT_MAGIC.length, bytes.byteOffset + bytes.length));
      const stateSize = floats.length / Math.max(lightning.length, 1);
      return { length: record.length, lightning: new Map(lightning.map((layer, i) => [layer, floats.slice(i * stateSize, (i + 1) * stateSize)])) };
    };
    let end: SequenceCheckpoint | undefined;
    if (validLength >= manifest.length) end = await readCheckpoint(manifest.end);
    if (!end) {
      if (validLength >= manifest.length) report.notes.push('the saved end state is damaged: rebuilding from the last checkpoint');
      for (const record of [...manifest.checkpoints].reverse()) {
        if (record.length > validLength) continue;
        end = await readCheckpoint(record);
        if (end) break;
      }
    }
    const checkpoints: SequenceCheckpoint[] = [];
    for (const record of manifest.checkpoints) {
      if (!end || record.length > end.length) continue;
      const checkpoint = await readCheckpoint(record);
      if (checkpoint) checkpoints.push(checkpoint);
    }
    if (!end) {
      report.notes.push('no usable saved state: rebuilding');
      await this.clear();
      return { report };
    }
    const length = end.length;
    // Parts as read, trimmed to the restored length (no joined copy of the whole KV).
    const keep = (parts: Float32Array[]) => {
      const kept: Float32Array[] = [];
      let rows = 0;
      for (const part of parts) {
        const take = Math.min(part.length / rowFloats, length - rows);
        if (take <= 0) break;
        kept.push(part.subarray(0, take * rowFloats));
        rows += take;
      }
      return kept;
    };
    const kv = new Map(sparse.map((layer) => [layer, { keys: keep(keyParts.get(layer) ?? []), values: keep(valueParts.get(layer) ?? []) }]));
    const spans = manifest.spans.filter((span) => span.end <= length);
    report.lostFiles.push(...manifest.spans.filter((span) => span.end > length).map((span) => span.path));
    report.restoredTokens = length;
    this.manifest = { ...manifest, length, segments: manifest.segments.filter((s) => s.first + s.count <= length), checkpoints: manifest.checkpoints.filter((c) => c.length <= length) };
    return {
      report,
      state: {
        tokens: tokens.slice(0, length),
        kv,
        end,
        dead: manifest.dead.filter(([a]) => a < length).map(([a, b]) => [a, Math.min(b, length)]),
        spans,
        excluded: manifest.excluded,
        checkpoints,
      },
    };
  }

  /** Writes what changed since the last save: new segments, checkpoints, then the manifest. */
  async save(model: SalaModel, state: ContextState): Promise<{ bytesWritten: number }> {
    await fs.mkdir(this.dir, { recursive: true });
    const sparse = this.sparseLayers(model);
    const previous = this.manifest;
    const stableUpTo = Math.min(previous?.length ?? 0, state.dirtyFrom, state.length);
    const kept = (previous?.segments ?? []).filter((s) => s.first + s.count <= stableUpTo);
    let covered = kept.reduce((n, s) => Math.max(n, s.first + s.count), 0);
    const segments = [...kept];
    let bytesWritten = 0;
    // File names are never reused: a save killed before its manifest lands must not
    // have overwritten a file the previous manifest still names.
    const generation = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
    while (covered < state.length) {
      const count = Math.min(this.segmentTokens, state.length - covered);
      const parts: Buffer[] = [SEGMENT_MAGIC, Buffer.from(Int32Array.from(state.tokens.slice(covered, covered + count)).buffer)];
      for (const layer of sparse) {
        const cache = state.sequence.sparse.get(layer);
        if (!cache) throw new StoreError(`internal: layer ${layer} has no KV cache`);
        const { keys, values } = cache.rows(covered, covered + count);
        parts.push(floatBytes(keys), floatBytes(values));
      }
      const bytes = Buffer.concat(parts);
      const file = `seg-${covered}-${count}-${generation}.bin`;
      await writeDurably(path.join(this.dir, file), bytes);
      bytesWritten += bytes.length;
      segments.push({ file, first: covered, count, crc: crc32(bytes) });
      covered += count;
    }

    const previousCheckpoints = new Map((previous?.checkpoints ?? []).filter((c) => c.length <= stableUpTo).map((c) => [c.length, c]));
    const writeCheckpoint = async (checkpoint: SequenceCheckpoint, name: string): Promise<CheckpointRecord> => {
      const states = this.lightningLayers(model).map((layer) => {
        const state = checkpoint.lightning.get(layer);
        if (!state) throw new StoreError(`internal: checkpoint lacks lightning layer ${layer}`);
        return floatBytes(state);
      });
      const bytes = Buffer.concat([CHECKPOINT_MAGIC, ...states]);
      await writeDurably(path.join(this.dir, name), bytes);
      bytesWritten += bytes.length;
      return { file: name, length: checkpoint.length, crc: crc32(bytes) };
    };
    const checkpoints: CheckpointRecord[] = [];
    for (const checkpoint of state.checkpoints) {
      checkpoints.push(previousCheckpoints.get(checkpoint.length) ?? (await writeCheckpoint(checkpoint, `cp-${checkpoint.length}-${generation}.bin`)));
    }
    const end = previous && previous.end.length === state.length && stableUpTo >= state.length ? previous.end : await writeCheckpoint(state.end, `cp-end-${state.length}-${generation}.bin`);

    const manifest: Manifest = {
      format: STORE_FORMAT,
      model: this.modelId,
      savedAt: new Date().toISOString(),
      length: state.length,
      segments,
      checkpoints,
      end,
      spans: state.spans,
      excluded: state.excluded,
      dead: state.dead,
    };
    await writeDurably(path.join(this.dir, 'manifest.json'), Buffer.from(JSON.stringify(manifest)));
    this.manifest = manifest;
    await this.removeUnlisted(manifest);
    return { bytesWritten };
  }

  /** Removes files the manifest does not name (left by a kill or replaced by a save). */
  private async removeUnlisted(manifest: Manifest): Promise<void> {
    const listed = new Set(['manifest.json', ...manifest.segments.map((s) => s.file), ...manifest.checkpoints.map((c) => c.file), manifest.end.file]);
    const names = await fs.readdir(this.dir).catch(() => [] as string[]);
    await Promise.all(names.filter((name) => !listed.has(name) && /^(seg-|cp-|manifest\.json\.tmp)/.test(name)).map((name) => fs.rm(path.join(this.dir, name), { force: true })));
  }

  private async clear(): Promise<void> {
    const names = await fs.readdir(this.dir).catch(() => [] as string[]);
    await Promise.all(names.filter((name) => /^(seg-|cp-|manifest\.json)/.test(name)).map((name) => fs.rm(path.join(this.dir, name), { force: true })));
    this.manifest = undefined;
  }

  /** Bytes the store occupies on disk. */
  async diskBytes(): Promise<number> {
    const names = await fs.readdir(this.dir).catch(() => [] as string[]);
    let total = 0;
    for (const name of names) total += (await fs.stat(path.join(this.dir, name))).size;
    return total;
  }
}

