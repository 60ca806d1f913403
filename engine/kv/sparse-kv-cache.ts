// Host-memory KV store of one sparse (InfLLM-V2) layer: the full K/V history in
// 64-token blocks, plus the two levels of compressed keys that block selection
// scores against. Compressed keys are derived from K, so they are built lazily,
// on the first call that needs them (the reference builds them when a sequence
// first reaches dense_len) and extended incrementally after that. The
// reference's "uncompressed tails" are implicit: they are the keys past the last
// complete window, still in the block store.

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

  extendTo(target: number, readKey: (position: number, out: Float64Array) => void): void {
    if (target <= this.count) return;
    if (target * this.rowSize > this.data.length) {
      const grown = new Float32Array(Math.max(target, this.count * 2, 64) * this.rowSize);
      grown.set(this.view());
      this.data = grown;
    }
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
    if (target * this.rowSize > this.data.length) {
      const grown = new Float32Array(Math.max(target, this.count * 2, 64) * this.rowSize);
      grown.set(this.view());
      this.data = grown;
    }
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

/**
 * Keys and values are stored head-major, [Hk, capacityBlocks, blockSize, hs], so
 * the attention graph can gather any head's blocks straight from the store (no
 * copy on the host) and a head's blocks are contiguous for upload.
 */
export class SparseKvCache {
  /** Tokens held. */
  length = 0;
  private keys: Float32Array;
  private values: Float32Array;
  private capacityBlocks: number;
  /** Floats of one head's block: blockSize · hs. */
  private readonly headBlockFloats: number;
  private fine: CompressedKeys;
  private coarse: CompressedKeys;

  constructor(
    readonly geometry: SparseGeometry,
    initialTokens = 0,
  ) {
    const { kvHeads, headDim, blockSize, kernelSize, kernelStride } = geometry;
    this.headBlockFloats = blockSize * headDim;
    this.capacityBlocks = Math.max(1, Math.ceil(initialTokens / blockSize));
    this.keys = new Float32Array(kvHeads * this.capacityBlocks * this.headBlockFloats);
    this.values = new Float32Array(this.keys.length);
    const rowSize = kvHeads * headDim;
    this.fine = new CompressedKeys(kernelSize, kernelStride, rowSize);
    // The coarse level (only used for the log-sum-exp estimate) is 4× the fine one.
    this.coarse = new CompressedKeys(4 * kernelSize, 4 * kernelStride, rowSize);
  }

  get blockCount(): number {
    return Math.ceil(this.length / this.geometry.blockSize);
  }

  private ensureCapacity(tokens: number): void {
    const needed = Math.ceil(tokens / this.geometry.blockSize);
    if (needed <= this.capacityBlocks) return;
    const capacity = Math.max(needed, this.capacityBlocks * 2);
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

  private offset(position: number, head: number): number {
    const { blockSize, headDim } = this.geometry;
    const block = Math.floor(position / blockSize);
    return (head * this.capacityBlocks + block) * this.headBlockFloats + (position % blockSize) * headDim;
  }

  /** Appends T new keys/values given as [T, Hk, hs]. */
  append(k: Float32Array, v: Float32Array): void {
    const { kvHeads, headDim, blockSize } = this.geometry;
    const tokens = k.length / (kvHeads * headDim);
    this.ensureCapacity(this.length + tokens);
    if (kvHeads === 1) {
      // One head: source rows are contiguous, so copy a block's run at a time (restoring 1M tokens).
      for (let t = 0; t < tokens; ) {
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
   * the previous one in the store (one KV head) and the room is reserved (the views must
   * not be moved by a regrowth). Undefined otherwise: append rows instead.
   */
  rowsAt(start: number, tokens: number): { keys: Float32Array; values: Float32Array } | undefined {
    const { kvHeads, headDim, blockSize } = this.geometry;
    if (kvHeads !== 1 || start + tokens > this.capacityBlocks * blockSize) return undefined;
    return { keys: this.keys.subarray(start * headDim, (start + tokens) * headDim), values: this.values.subarray(start * headDim, (start + tokens) * headDim) };
  }

  /** Takes the rows written through rowsAt up to `length` as held. */
  commitRows(length: number): void {
    if (length < this.length || length > this.capacityBlocks * this.geometry.blockSize) throw new RangeError(`cannot commit rows up to ${length}: ${this.length} held`);
    this.length = length;
  }

  /** Makes room for `tokens` tokens at once (a restore knows its size). */
  reserve(tokens: number): void {
    this.ensureCapacity(tokens);
  }

  /** Keys and values of positions [start, end) as [end − start, Hk, hs] (the layout append takes). */
  rows(start: number, end: number): { keys: Float32Array; values: Float32Array } {
    const { kvHeads, headDim } = this.geometry;
    const keys = new Float32Array((end - start) * kvHeads * headDim);
    const values = new Float32Array(keys.length);
    for (let t = start; t < end; t++) {
      for (let h = 0; h < kvHeads; h++) {
        const src = this.offset(t, h);
        const dst = ((t - start) * kvHeads + h) * headDim;
        keys.set(this.keys.subarray(src, src + headDim), dst);
        values.set(this.values.subarray(src, src + headDim), dst);
      }
    }
    return { keys, values };
  }

  /** Forgets everything after `length` tokens (used to roll a sequence back). */
  truncate(length: number): void {
    if (length >= this.length) return;
    this.length = length;
    this.fine.truncate(this.fine.countFor(length));
    this.coarse.truncate(this.coarse.countFor(length));
  }

  /** The whole store, [Hk, capacityBlocks, blockSize, hs] each, without copying. Blocks ≥ blockCount are stale. */
  store(): { keys: Float32Array; values: Float32Array; capacityBlocks: number } {
    return { keys: this.keys, values: this.values, capacityBlocks: this.capacityBlocks };
  }

  private readonly readKey = (position: number, out: Float64Array): void => {
    const { kvHeads, headDim } = this.geometry;
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

  clone(): SparseKvCache {
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
