// Persistence of a workspace context under a store directory, so reopening costs
// no model compute. Layout:
//   manifest.json            what is valid: model fingerprint, format, segments,
//                            checkpoints, file spans, tombstones (atomically replaced)
//   seg-<first>-<count>-<generation>.bin  token ids + every sparse layer's K and V rows for a
//                            token range and the compressed keys (both levels) whose
//                            windows complete in it; append-only, never modified
//   cp-<length>-<generation>.bin  lightning states at a position (file boundaries + end)
// Every file is written under a temporary name, fsynced and renamed; the manifest
// names only complete files and carries their CRC-32, and is itself replaced last.
// A kill at any point leaves the previous manifest valid; files it does not name
// are removed on the next open. Loading reads segments straight into the sequence's
// caches (the next while one is checked): no second copy of the KV, no compressed keys
// to rebuild.
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import type { SalaModel } from '../model/sala-model.js';
import type { SequenceCheckpoint } from '../model/sequence.js';
import type { ContextState, ExcludedEntry, FileSpan, RestoredState } from './context-types.js';
import { rangesOf } from './file-span.js';

export const STORE_FORMAT = 4;
/** Formats this code reads as they are (3 lacks patched files' pieces, which it cannot hold). */
const READABLE_FORMATS = new Set([3, STORE_FORMAT]);
const SEGMENT_MAGIC = Buffer.from('PANSEG02');
const CHECKPOINT_MAGIC = Buffer.from('PANCKP01');
/** Segments read ahead of the one being checked while loading. */
const READ_AHEAD = 2;
/** Tokens of room reserved past a restored context, at least (an eighth of it if more). */
const RESTORE_HEADROOM_TOKENS = 65_536;
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
  if (code === 'ENOSPC')
    return new StoreError(`no space left on the device while writing ${file}; the index keeps its last saved state — free disk space and re-index`, { cause: err });
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
    if (!READABLE_FORMATS.has(manifest.format) || manifest.model !== this.modelId) {
      report.notes.push(
        !READABLE_FORMATS.has(manifest.format) ? `index format ${manifest.format} is not ${STORE_FORMAT}: rebuilding` : 'the model changed since the index was built: rebuilding',
      );
      await this.clear();
      return { report };
    }
    await this.removeUnlisted(manifest);

    const sparse = this.sparseLayers(model);
    const lightning = this.lightningLayers(model);
    const rowBytes = model.config.numKeyValueHeads * model.sizes.sparseHeadDim * 4;
    // Room past the restored length too: the first edit after a restart would otherwise grow
    // every store past its capacity and copy all of it (1.5 GB at 1M tokens of the default
    // model). Pages never written cost no memory.
    const capacity = manifest.length + Math.max(RESTORE_HEADROOM_TOKENS, manifest.length >> 3);
    const sequence = model.newSequence(capacity);
    const caches = sparse.map((layer) => {
      const cache = sequence.sparse.get(layer);
      if (!cache) throw new StoreError(`internal: layer ${layer} has no KV cache`);
      return cache;
    });
    // Segments are contiguous from token 0; the first missing, short or damaged one ends what is restored.
    const segments: SegmentRecord[] = [];
    for (let next = 0, i = 0; i < manifest.segments.length && manifest.segments[i].first === next; next += manifest.segments[i++].count) {
      segments.push(manifest.segments[i]);
    }
    const layout = (segment: SegmentRecord) => {
      const from = caches[0]?.compressedCounts(segment.first) ?? { fine: 0, coarse: 0 };
      const to = caches[0]?.compressedCounts(segment.first + segment.count) ?? { fine: 0, coarse: 0 };
      const kvBytes = segment.count * rowBytes;
      const fineBytes = (to.fine - from.fine) * rowBytes;
      const coarseBytes = (to.coarse - from.coarse) * rowBytes;
      return { kvBytes, fineBytes, coarseBytes, size: SEGMENT_MAGIC.length + segment.count * 4 + sparse.length * (2 * kvBytes + fineBytes + coarseBytes) };
    };
    for (const cache of caches) cache.reserve(capacity);
    const floats = (bytes: Uint8Array, offset: number, length: number) => new Float32Array(bytes.buffer, bytes.byteOffset + offset, length / 4);
    const bytesOf = (view: Float32Array) => new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
    /**
     * Reads one segment part by part: with one KV head the K/V rows go straight into the
     * caches' memory (no second copy of 1.5 GB per 1M tokens), else into scratch rows.
     * Nothing counts as restored until its checksum matches (commit below).
     */
    const read = async (segment: SegmentRecord) => {
      const { kvBytes, fineBytes, coarseBytes, size } = layout(segment);
      const head = Buffer.alloc(SEGMENT_MAGIC.length + segment.count * 4);
      const parts = caches.map((cache) => {
        const direct = cache.rowsAt(segment.first, segment.count);
        return {
          keys: direct ? bytesOf(direct.keys) : new Uint8Array(kvBytes),
          values: direct ? bytesOf(direct.values) : new Uint8Array(kvBytes),
          direct: direct !== undefined,
          fine: new Uint8Array(fineBytes),
          coarse: new Uint8Array(coarseBytes),
        };
      });
      const order = [head, ...parts.flatMap((p) => [p.keys, p.values, p.fine, p.coarse])];
      const handle = await fs.open(path.join(this.dir, segment.file), 'r').catch(() => undefined);
      if (!handle) return undefined;
      try {
        if ((await handle.stat()).size !== size) return undefined;
        // Parts are read concurrently (libuv's pool): filling fresh memory is page-fault bound, so two cores do it faster than one.
        let position = 0;
        const reads = order.map(async (target) => {
          const at = position;
          position += target.length;
          for (let got = 0; got < target.length;) {
            const { bytesRead } = await handle.read(target, got, target.length - got, at + got);
            if (bytesRead === 0) return false;
            got += bytesRead;
          }
          return true;
        });
        if (!(await Promise.all(reads)).every(Boolean)) return undefined;
      } catch {
        return undefined;
      } finally {
        await handle.close();
      }
      return { head, parts, crc: order.reduce((crc, bytes) => crc32(bytes, crc), 0) };
    };
    let validLength = 0;
    // Segments ahead are read while one is checked and taken in.
    const ahead = segments.slice(0, READ_AHEAD).map(read);
    for (let index = 0; index < segments.length; index++) {
      const segment = segments[index];
      const got = await ahead[index];
      if (index + READ_AHEAD < segments.length) ahead.push(read(segments[index + READ_AHEAD]));
      if (!got || got.crc !== segment.crc || !got.head.subarray(0, SEGMENT_MAGIC.length).equals(SEGMENT_MAGIC)) {
        report.notes.push(`segment ${segment.file} is damaged or missing: rebuilding from token ${segment.first}`);
        await Promise.all(ahead.slice(index + 1));
        break;
      }
      const ids = new Int32Array(got.head.buffer, got.head.byteOffset + SEGMENT_MAGIC.length, segment.count);
      for (const id of ids) sequence.tokens.push(id);
      caches.forEach((cache, i) => {
        const part = got.parts[i];
        if (part.direct) cache.commitRows(segment.first + segment.count);
        else cache.append(floats(part.keys, 0, part.keys.length), floats(part.values, 0, part.values.length));
        cache.appendCompressed(floats(part.fine, 0, part.fine.length), floats(part.coarse, 0, part.coarse.length));
      });
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
    sequence.rollback(end);
    const spans = manifest.spans.filter((span) => span.end <= length);
    const lost = manifest.spans.filter((span) => span.end > length);
    report.lostFiles.push(...lost.map((span) => span.path));
    // What survived of a lost file is masked out (the caller feeds the file again).
    const lostRanges = lost.flatMap(rangesOf);
    report.restoredTokens = length;
    this.manifest = {
      ...manifest,
      length,
      segments: manifest.segments.filter((s) => s.first + s.count <= length),
      checkpoints: manifest.checkpoints.filter((c) => c.length <= length),
    };
    return {
      report,
      state: {
        sequence,
        end,
        dead: [...manifest.dead, ...lostRanges].filter(([a, b]) => a < Math.min(b, length)).map(([a, b]) => [a, Math.min(b, length)]),
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
    const rowFloats = model.config.numKeyValueHeads * model.sizes.sparseHeadDim;
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
        const from = cache.compressedCounts(covered);
        const to = cache.compressedCounts(covered + count);
        const { fine, coarse } = cache.compressedKeys(covered + count);
        parts.push(
          floatBytes(keys),
          floatBytes(values),
          floatBytes(fine.subarray(from.fine * rowFloats, to.fine * rowFloats)),
          floatBytes(coarse.subarray(from.coarse * rowFloats, to.coarse * rowFloats)),
        );
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
    const end =
      previous && previous.end.length === state.length && stableUpTo >= state.length ? previous.end : await writeCheckpoint(state.end, `cp-end-${state.length}-${generation}.bin`);

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
