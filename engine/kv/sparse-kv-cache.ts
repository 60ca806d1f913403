// Host-memory KV store of one sparse (InfLLM-V2) layer: the full K/V history in
// 64-token blocks, plus the two levels of compressed keys that block selection
// scores against. Compressed keys are derived from K, so they are built lazily,
// on the first call that needs them (the reference builds them when a sequence
// first reaches dense_len) and extended incrementally after that. The
// reference's "uncompressed tails" are implicit: they are the keys past the last
// complete window, still in the block store.

import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';

export interface SparseGeometry {
  kvHeads: number;
  headDim: number;
  blockSize: number;
  /** Fine level window/stride (kernel_size / kernel_stride). */
  kernelSize: number;
  kernelStride: number;
}

/** Mean-pooled keys of one compression level: entry j = mean(k[stride·j … stride·j + window − 1]). */
class CompressedKeys {
  count = 0;
  private data: Float32Array;

  constructor(
    readonly window: number,
    readonly stride: number,
    private readonly rowSize: number,
  ) {
    this.data = new Float32Array(0);
  }

  /** Number of complete windows in a sequence of `length` keys. */
  countFor(length: number): number {
    return length < this.window ? 0 : Math.floor((length - this.window) / this.stride) + 1;
  }

  /** [count, Hk, hs] view of the entries. */
  view(): Float32Array {
    return this.data.subarray(0, this.count * this.rowSize);
  }

  /** Room for `entries` entries without regrowing (a cache reserved for its tokens). */
  reserve(entries: number): void {
    if (entries * this.rowSize <= this.data.length) return;
    const grown = new Float32Array(entries * this.rowSize);
    grown.set(this.view());
    this.data = grown;
  }

  extendTo(target: number, readKey: (position: number, out: Float64Array) => void): void {
    if (target <= this.count) return;
    if (target * this.rowSize > this.data.length) this.reserve(Math.max(target, this.count * 2, 64));
    const sum = new Float64Array(this.rowSize);
    const key = new Float64Array(this.rowSize);
    for (let j = this.count; j < target; j++) {
      sum.fill(0);
      for (let p = j * this.stride; p < j * this.stride + this.window; p++) {
        readKey(p, key);
        for (let i = 0; i < this.rowSize; i++) sum[i] += key[i];
      }
      const row = this.data.subarray(j * this.rowSize, (j + 1) * this.rowSize);
      for (let i = 0; i < this.rowSize; i++) row[i] = sum[i] / this.window;
    }
    this.count = target;
  }

  truncate(count: number): void {
    this.count = Math.min(this.count, count);
  }

  /** Appends saved entries ([n, Hk, hs]) after the current ones (a restore: no recompute). */
  appendRows(rows: Float32Array): void {
    const target = this.count + rows.length / this.rowSize;
    if (target * this.rowSize > this.data.length) this.reserve(Math.max(target, this.count * 2, 64));
    this.data.set(rows, this.count * this.rowSize);
    this.count = target;
  }

  clone(): CompressedKeys {
    const copy = new CompressedKeys(this.window, this.stride, this.rowSize);
    copy.data = this.view().slice();
    copy.count = this.count;
    return copy;
  }
}

/** Where a cache's K/V may go when host memory runs short. */
export interface SpillOptions {
  /** K/V bytes this cache keeps in host memory; its oldest complete blocks go to a file beyond that. */
  memoryBytes: number;
  /** Directory of the spill file (the file is unlinked at once: the OS frees it when the cache goes). */
  dir: string;
}

/** Closes a collected cache's spill file. */
const spillFiles = new FinalizationRegistry<number>((fd) => {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
});

/**
 * Keys and values are stored head-major, [Hk, capacityBlocks, blockSize, hs], so a
 * head's blocks are contiguous for gathers and uploads. With spill options, memory
 * holds blocks [base, base + capacityBlocks) only, within the budget; the blocks
 * before `base` live in an unlinked file (block b at b · blockBytes: its K for every
 * head, then its V) and are read back on demand. The block being written is always
 * in memory.
 */
export class SparseKvCache {
  /** Tokens held. */
  length = 0;
  private keys: Float32Array;
  private values: Float32Array;
  private capacityBlocks: number;
  /** First block held in memory (blocks below it are in the spill file). */
  private base = 0;
  /** Floats of one head's block: blockSize · hs. */
  private readonly headBlockFloats: number;
  private fine: CompressedKeys;
  private coarse: CompressedKeys;
  private readonly spill?: { fd: number; memoryBlocks: number; options: SpillOptions };
  /** The last spilled block read for pooling (spilled blocks never change until a truncate). */
  private spilledKeyBlock?: { block: number; keys: Float32Array };

  constructor(
    readonly geometry: SparseGeometry,
    initialTokens = 0,
    spill?: SpillOptions,
  ) {
    const { kvHeads, headDim, blockSize, kernelSize, kernelStride } = geometry;
    this.headBlockFloats = blockSize * headDim;
    if (spill) {
      const memoryBlocks = Math.max(2, Math.floor(spill.memoryBytes / (2 * kvHeads * this.headBlockFloats * 4)));
      const file = path.join(spill.dir, `panorama-kv-${process.pid}-${randomBytes(6).toString('hex')}.bin`);
      const fd = openSync(file, 'w+');
      unlinkSync(file);
      spillFiles.register(this, fd);
      this.spill = { fd, memoryBlocks, options: spill };
    }
    this.capacityBlocks = Math.max(1, Math.min(Math.ceil(initialTokens / blockSize), this.spill?.memoryBlocks ?? Infinity));
    this.keys = new Float32Array(kvHeads * this.capacityBlocks * this.headBlockFloats);
    this.values = new Float32Array(this.keys.length);
    const rowSize = kvHeads * headDim;
    this.fine = new CompressedKeys(kernelSize, kernelStride, rowSize);
    // The coarse level (only used for the log-sum-exp estimate) is 4× the fine one.
    this.coarse = new CompressedKeys(4 * kernelSize, 4 * kernelStride, rowSize);
    this.fine.reserve(this.fine.countFor(initialTokens));
    this.coarse.reserve(this.coarse.countFor(initialTokens));
  }

  get blockCount(): number {
    return Math.ceil(this.length / this.geometry.blockSize);
  }

  /** Bytes of K/V held in host memory. */
  get memoryBytes(): number {
    return this.keys.byteLength + this.values.byteLength;
  }

  /** Blocks in the spill file (0 without spilling). */
  get spilledBlocks(): number {
    return this.base;
  }

  /** Bytes of one block in the spill file: K then V, every head. */
  private get blockBytes(): number {
    return 2 * this.geometry.kvHeads * this.headBlockFloats * 4;
  }

  private ensureCapacity(tokens: number): void {
    const { blockSize } = this.geometry;
    const needed = Math.ceil(tokens / blockSize);
    if (needed - this.base <= this.capacityBlocks) return;
    if (this.spill && needed - this.base > this.spill.memoryBlocks) {
      // Over budget: write the oldest complete blocks out (half the budget at once, to amortize), keep the rest.
      const keepFrom = Math.min(Math.floor(this.length / blockSize), Math.max(this.base, needed - Math.ceil(this.spill.memoryBlocks / 2)));
      if (keepFrom > this.base) this.spillBlocks(keepFrom);
      if (needed - this.base <= this.capacityBlocks) return;
    }
    const capacity = Math.min(Math.max(needed - this.base, this.capacityBlocks * 2), Math.max(needed - this.base, this.spill?.memoryBlocks ?? Infinity));
    const { kvHeads } = this.geometry;
    const regrow = (old: Float32Array): Float32Array => {
      const grown = new Float32Array(kvHeads * capacity * this.headBlockFloats);
      for (let h = 0; h < kvHeads; h++) {
        const from = h * this.capacityBlocks * this.headBlockFloats;
        grown.set(old.subarray(from, from + this.capacityBlocks * this.headBlockFloats), h * capacity * this.headBlockFloats);
      }
      return grown;
    };
    this.keys = regrow(this.keys);
    this.values = regrow(this.values);
    this.capacityBlocks = capacity;
  }

  /** Moves blocks [base, keepFrom) to the spill file and shifts the rest down in memory. */
  private spillBlocks(keepFrom: number): void {
    const spill = this.spill;
    if (!spill) throw new Error('internal: spilling without a spill file');
    const { kvHeads } = this.geometry;
    const headBlockBytes = this.headBlockFloats * 4;
    for (let block = this.base; block < keepFrom; block++) {
      const at = block * this.blockBytes;
      for (let h = 0; h < kvHeads; h++) {
        const from = (h * this.capacityBlocks + block - this.base) * this.headBlockFloats;
        writeFully(spill.fd, this.keys.subarray(from, from + this.headBlockFloats), at + h * headBlockBytes);
        writeFully(spill.fd, this.values.subarray(from, from + this.headBlockFloats), at + (kvHeads + h) * headBlockBytes);
      }
    }
    const shift = keepFrom - this.base;
    for (let h = 0; h < kvHeads; h++) {
      const start = h * this.capacityBlocks * this.headBlockFloats;
      this.keys.copyWithin(start, start + shift * this.headBlockFloats, start + this.capacityBlocks * this.headBlockFloats);
      this.values.copyWithin(start, start + shift * this.headBlockFloats, start + this.capacityBlocks * this.headBlockFloats);
    }
    this.base = keepFrom;
  }

  private offset(position: number, head: number): number {
    const { blockSize, headDim } = this.geometry;
    const block = Math.floor(position / blockSize);
    return (head * this.capacityBlocks + block - this.base) * this.headBlockFloats + (position % blockSize) * headDim;
  }

  /** Appends T new keys/values given as [T, Hk, hs]. */
  append(k: Float32Array, v: Float32Array): void {
    const { kvHeads, headDim, blockSize } = this.geometry;
    const rowFloats = kvHeads * headDim;
    const tokens = k.length / rowFloats;
    if (this.spill && tokens > (this.spill.memoryBlocks >> 1) * blockSize) {
      // More than half the budget at once (a restore): in pieces, so memory stays within it.
      const piece = Math.max(1, this.spill.memoryBlocks >> 1) * blockSize;
      for (let t = 0; t < tokens; t += piece) this.append(k.subarray(t * rowFloats, (t + piece) * rowFloats), v.subarray(t * rowFloats, (t + piece) * rowFloats));
      return;
    }
    this.ensureCapacity(this.length + tokens);
    if (kvHeads === 1) {
      // One head: source rows are contiguous, so copy a block's run at a time (restoring 1M tokens).
      for (let t = 0; t < tokens;) {
        const position = this.length + t;
        const run = Math.min(tokens - t, blockSize - (position % blockSize));
        const dst = this.offset(position, 0);
        this.keys.set(k.subarray(t * headDim, (t + run) * headDim), dst);
        this.values.set(v.subarray(t * headDim, (t + run) * headDim), dst);
        t += run;
      }
      this.length += tokens;
      return;
    }
    for (let t = 0; t < tokens; t++) {
      for (let h = 0; h < kvHeads; h++) {
        const src = (t * kvHeads + h) * headDim;
        const dst = this.offset(this.length + t, h);
        this.keys.set(k.subarray(src, src + headDim), dst);
        this.values.set(v.subarray(src, src + headDim), dst);
      }
    }
    this.length += tokens;
  }

  /**
   * Writable views of the key and value rows of positions [start, start + tokens), for a
   * restore to read straight into (then commitRows): only where a token's row follows
   * the previous one in the store (one KV head, nothing spilled) and the room is reserved
   * (the views must not be moved by a regrowth). Undefined otherwise: append rows instead.
   */
  rowsAt(start: number, tokens: number): { keys: Float32Array; values: Float32Array } | undefined {
    const { kvHeads, headDim, blockSize } = this.geometry;
    if (kvHeads !== 1 || this.base !== 0 || start + tokens > this.capacityBlocks * blockSize) return undefined;
    return { keys: this.keys.subarray(start * headDim, (start + tokens) * headDim), values: this.values.subarray(start * headDim, (start + tokens) * headDim) };
  }

  /** Takes the rows written through rowsAt up to `length` as held. */
  commitRows(length: number): void {
    if (length < this.length || length > this.capacityBlocks * this.geometry.blockSize) throw new RangeError(`cannot commit rows up to ${length}: ${this.length} held`);
    this.length = length;
  }

  /**
   * Makes room for `tokens` tokens at once (a restore knows its size; with spilling, within the
   * budget), compressed keys included: a cache filled up to its reserve never regrows, which at
   * 1M tokens of the 9B shape would copy 80 MiB of them per layer on the call that crosses.
   */
  reserve(tokens: number): void {
    this.ensureCapacity(this.spill ? Math.min(tokens, (this.base + this.spill.memoryBlocks) * this.geometry.blockSize) : tokens);
    this.fine.reserve(this.fine.countFor(tokens));
    this.coarse.reserve(this.coarse.countFor(tokens));
  }

  /** The whole store, [Hk, capacityBlocks, blockSize, hs] each, without copying — undefined once blocks spilled to disk. Blocks ≥ blockCount are stale. */
  store(): { keys: Float32Array; values: Float32Array; capacityBlocks: number } | undefined {
    return this.base === 0 ? { keys: this.keys, values: this.values, capacityBlocks: this.capacityBlocks } : undefined;
  }

  /**
   * Copies head `head`'s K and V of each block into `keys` / `values` ([n, blockSize, hs]
   * from row `at`), from memory or the spill file. A block id of −1 is skipped.
   */
  readBlocks(head: number, blocks: readonly number[], keys: Float32Array, values: Float32Array, at = 0): void {
    const floats = this.headBlockFloats;
    blocks.forEach((block, i) => {
      if (block < 0) return;
      const to = (at + i) * floats;
      if (block >= this.base) {
        const from = (head * this.capacityBlocks + block - this.base) * floats;
        keys.set(this.keys.subarray(from, from + floats), to);
        values.set(this.values.subarray(from, from + floats), to);
        return;
      }
      const spill = this.spill;
      if (!spill) throw new Error('internal: a block below base without a spill file');
      const headBlockBytes = floats * 4;
      readFully(spill.fd, keys.subarray(to, to + floats), block * this.blockBytes + head * headBlockBytes);
      readFully(spill.fd, values.subarray(to, to + floats), block * this.blockBytes + (this.geometry.kvHeads + head) * headBlockBytes);
    });
  }

  /** Keys and values of positions [start, end) as [end − start, Hk, hs] (the layout append takes). */
  rows(start: number, end: number): { keys: Float32Array; values: Float32Array } {
    const { kvHeads, headDim, blockSize } = this.geometry;
    const keys = new Float32Array((end - start) * kvHeads * headDim);
    const values = new Float32Array(keys.length);
    const blockKeys = new Float32Array(this.headBlockFloats);
    const blockValues = new Float32Array(this.headBlockFloats);
    for (let block = Math.floor(start / blockSize); block * blockSize < end; block++) {
      const first = Math.max(start, block * blockSize);
      const last = Math.min(end, (block + 1) * blockSize);
      for (let h = 0; h < kvHeads; h++) {
        let source = this.keys;
        let sourceValues = this.values;
        let blockStart = (h * this.capacityBlocks + block - this.base) * this.headBlockFloats;
        if (block < this.base) {
          this.readBlocks(h, [block], blockKeys, blockValues);
          [source, sourceValues, blockStart] = [blockKeys, blockValues, 0];
        }
        for (let t = first; t < last; t++) {
          const src = blockStart + (t % blockSize) * headDim;
          const dst = ((t - start) * kvHeads + h) * headDim;
          keys.set(source.subarray(src, src + headDim), dst);
          values.set(sourceValues.subarray(src, src + headDim), dst);
        }
      }
    }
    return { keys, values };
  }

  /** Forgets everything after `length` tokens (used to roll a sequence back). */
  truncate(length: number): void {
    if (length >= this.length) return;
    const { blockSize } = this.geometry;
    const tailBlock = Math.floor(length / blockSize);
    if (tailBlock < this.base) {
      // The new tail block was spilled: it comes back to memory as the first block held.
      const blockKeys = new Float32Array(this.headBlockFloats);
      const blockValues = new Float32Array(this.headBlockFloats);
      for (let h = 0; h < this.geometry.kvHeads; h++) {
        this.readBlocks(h, [tailBlock], blockKeys, blockValues);
        this.keys.set(blockKeys, h * this.capacityBlocks * this.headBlockFloats);
        this.values.set(blockValues, h * this.capacityBlocks * this.headBlockFloats);
      }
      this.base = tailBlock;
    }
    this.spilledKeyBlock = undefined;
    this.length = length;
    this.fine.truncate(this.fine.countFor(length));
    this.coarse.truncate(this.coarse.countFor(length));
  }

  private readonly readKey = (position: number, out: Float64Array): void => {
    const { kvHeads, headDim, blockSize } = this.geometry;
    const block = Math.floor(position / blockSize);
    if (block < this.base) {
      // A spilled key (pooling fell behind the spill): its block is read once for the window's run of positions.
      const cached = this.spilledKeyBlock;
      if (!cached || cached.block !== block) {
        const keys = new Float32Array(kvHeads * this.headBlockFloats);
        const scratch = new Float32Array(this.headBlockFloats);
        for (let h = 0; h < kvHeads; h++) this.readBlocks(h, [block], keys.subarray(h * this.headBlockFloats), scratch);
        this.spilledKeyBlock = { block, keys };
      }
      const { keys } = this.spilledKeyBlock as { keys: Float32Array };
      for (let h = 0; h < kvHeads; h++) {
        for (let i = 0; i < headDim; i++) out[h * headDim + i] = keys[h * this.headBlockFloats + (position % blockSize) * headDim + i];
      }
      return;
    }
    for (let h = 0; h < kvHeads; h++) {
      const src = this.offset(position, h);
      for (let i = 0; i < headDim; i++) out[h * headDim + i] = this.keys[src + i];
    }
  };

  /** Entries of each level that are complete over the first `length` tokens. */
  compressedCounts(length: number): { fine: number; coarse: number } {
    return { fine: this.fine.countFor(length), coarse: this.coarse.countFor(length) };
  }

  /**
   * Appends saved compressed entries after those held (a restore, in step with the
   * K/V appended): the levels then cover the held tokens with no recompute.
   */
  appendCompressed(fine: Float32Array, coarse: Float32Array): void {
    this.fine.appendRows(fine);
    this.coarse.appendRows(coarse);
    if (this.fine.count > this.fine.countFor(this.length) || this.coarse.count > this.coarse.countFor(this.length)) {
      throw new RangeError(`compressed keys past the ${this.length} tokens held`);
    }
  }

  /** Fine and coarse compressed keys over the first `length` tokens, [n, Hk, hs] each. */
  compressedKeys(length = this.length): { fine: Float32Array; coarse: Float32Array } {
    this.fine.extendTo(this.fine.countFor(length), this.readKey);
    this.coarse.extendTo(this.coarse.countFor(length), this.readKey);
    return { fine: this.fine.view(), coarse: this.coarse.view() };
  }

  /** A copy of the first `length` tokens (K/V and compressed keys), with the same spill budget. */
  prefix(length = this.length): SparseKvCache {
    const copy = new SparseKvCache(this.geometry, length, this.spill?.options);
    const step = Math.max(1, this.spill ? this.spill.memoryBlocks >> 1 : 1024) * this.geometry.blockSize;
    for (let at = 0; at < length; at += step) {
      const { keys, values } = this.rows(at, Math.min(length, at + step));
      copy.append(keys, values);
    }
    const { fine, coarse } = this.compressedKeys();
    const counts = this.compressedCounts(length);
    const rowSize = this.geometry.kvHeads * this.geometry.headDim;
    copy.appendCompressed(fine.subarray(0, Math.min(counts.fine, this.fine.count) * rowSize), coarse.subarray(0, Math.min(counts.coarse, this.coarse.count) * rowSize));
    return copy;
  }

  clone(): SparseKvCache {
    if (this.spill) return this.prefix();
    const copy = new SparseKvCache(this.geometry);
    copy.keys = this.keys.slice();
    copy.values = this.values.slice();
    copy.capacityBlocks = this.capacityBlocks;
    copy.length = this.length;
    copy.fine = this.fine.clone();
    copy.coarse = this.coarse.clone();
    return copy;
  }
}

function writeFully(fd: number, data: Float32Array, position: number): void {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  for (let done = 0; done < bytes.length;) done += writeSync(fd, bytes, done, bytes.length - done, position + done);
}

function readFully(fd: number, into: Float32Array, position: number): void {
  const bytes = new Uint8Array(into.buffer, into.byteOffset, into.byteLength);
  for (let done = 0; done < bytes.length;) {
    const got = readSync(fd, bytes, done, bytes.length - done, position + done);
    if (got === 0) throw new Error(`spill file ended at byte ${position + done}`);
    done += got;
  }
}
