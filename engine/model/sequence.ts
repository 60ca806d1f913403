// The model state of one token stream: every sparse layer's KV cache, every
// lightning layer's recurrent state, the tokens, and the spans of it that are
// dead (tombstoned: kept in the cache, but never attended to again).
import type { SparseKvCache } from '../kv/sparse-kv-cache.js';

/** The state needed to return a sequence to an earlier length (see Sequence.rollback). */
export interface SequenceCheckpoint {
  readonly length: number;
  readonly lightning: ReadonlyMap<number, Float32Array>;
}

export class Sequence {
  readonly tokens: number[] = [];
  /** Sorted, disjoint [start, end) token ranges masked out of attention and block selection. */
  private dead: [number, number][] = [];
  private deadVersion = 0;
  private excludedCache?: { version: number; length: number; blocks: Uint8Array };

  constructor(
    readonly sparse: Map<number, SparseKvCache>,
    readonly lightning: Map<number, Float32Array>,
    readonly blockSize: number,
  ) {}

  get length(): number {
    return this.tokens.length;
  }

  /** Changes whenever a range is tombstoned or the dead ranges are cut back. */
  get tombstoneVersion(): number {
    return this.deadVersion;
  }

  get deadRanges(): readonly (readonly [number, number])[] {
    return this.dead;
  }

  get deadTokens(): number {
    return this.dead.reduce((n, [a, b]) => n + b - a, 0);
  }

  /** An independent copy (for branching from a shared prefix). */
  clone(): Sequence {
    const copy = new Sequence(
      new Map([...this.sparse].map(([layer, cache]) => [layer, cache.clone()])),
      new Map([...this.lightning].map(([layer, state]) => [layer, state.slice()])),
      this.blockSize,
    );
    for (const id of this.tokens) copy.tokens.push(id); // (a spread would overflow the stack at 1M tokens)
    copy.dead = this.dead.map(([a, b]) => [a, b]);
    return copy;
  }

  /**
   * A new sequence holding this one's first `to.length` tokens (KV and compressed keys copied, lightning
   * states from the checkpoint): the base a background compaction builds on while
   * this sequence keeps serving.
   */
  prefix(to: SequenceCheckpoint): Sequence {
    const sparse = new Map<number, SparseKvCache>();
    for (const [layer, cache] of this.sparse) sparse.set(layer, cache.prefix(to.length));
    const lightning = new Map([...to.lightning].map(([layer, state]) => [layer, state.slice()]));
    const copy = new Sequence(sparse, lightning, this.blockSize);
    for (let i = 0; i < to.length; i++) copy.tokens.push(this.tokens[i]);
    copy.dead = this.dead.filter(([a]) => a < to.length).map(([a, b]) => [a, Math.min(b, to.length)]);
    return copy;
  }

  /** Lightning states at the current length; cheap (no KV copy). */
  checkpoint(): SequenceCheckpoint {
    return { length: this.length, lightning: new Map([...this.lightning].map(([layer, state]) => [layer, state.slice()])) };
  }

  /**
   * Returns to a checkpoint taken earlier on this sequence, dropping every token
   * after it. Valid while the tokens before the checkpoint are unchanged, which
   * holds because a sequence only grows at the tail or rolls back.
   */
  rollback(to: SequenceCheckpoint): void {
    if (to.length > this.length) throw new Error(`cannot roll back to length ${to.length}: the sequence has ${this.length} tokens`);
    this.tokens.length = to.length;
    for (const cache of this.sparse.values()) cache.truncate(to.length);
    for (const [layer, state] of to.lightning) this.lightning.get(layer)?.set(state);
    this.dead = this.dead.filter(([a]) => a < to.length).map(([a, b]) => [a, Math.min(b, to.length)]);
    this.deadVersion++;
  }

  /** Tombstones [start, end): those tokens stay cached but are never attended to again. */
  markDead(start: number, end: number): void {
    if (!(start >= 0 && end <= this.length && start <= end)) throw new RangeError(`dead range [${start}, ${end}) is outside the sequence of ${this.length} tokens`);
    if (start === end) return;
    const merged: [number, number][] = [];
    for (const range of [...this.dead, [start, end] as [number, number]].sort((x, y) => x[0] - y[0])) {
      const last = merged[merged.length - 1];
      if (last && range[0] <= last[1]) last[1] = Math.max(last[1], range[1]);
      else merged.push([range[0], range[1]]);
    }
    this.dead = merged;
    this.deadVersion++;
  }

  isDead(position: number): boolean {
    let lo = 0;
    let hi = this.dead.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const [a, b] = this.dead[mid];
      if (position < a) hi = mid - 1;
      else if (position >= b) lo = mid + 1;
      else return true;
    }
    return false;
  }

  /** 1 for each of the first `blocks` blocks whose every held token is dead: block selection skips them. */
  excludedBlocks(blocks: number): Uint8Array {
    const cached = this.excludedCache;
    if (cached && cached.version === this.deadVersion && cached.length === this.length && cached.blocks.length === blocks) return cached.blocks;
    const excluded = new Uint8Array(blocks);
    for (const [a, b] of this.dead) {
      const first = Math.ceil(a / this.blockSize);
      for (let block = first; block < blocks; block++) {
        const blockEnd = Math.min((block + 1) * this.blockSize, this.length);
        if (blockEnd > b || block * this.blockSize >= blockEnd) break;
        excluded[block] = 1;
      }
    }
    this.excludedCache = { version: this.deadVersion, length: this.length, blocks: excluded };
    return excluded;
  }

  /** 1 for every key position of the given blocks that may be attended to ([ids.length, blockSize]). */
  aliveKeys(blockIds: readonly number[]): Uint8Array {
    const alive = new Uint8Array(blockIds.length * this.blockSize).fill(1);
    if (this.dead.length === 0) return alive;
    blockIds.forEach((block, i) => {
      for (let offset = 0; offset < this.blockSize; offset++) {
        if (this.isDead(block * this.blockSize + offset)) alive[i * this.blockSize + offset] = 0;
      }
    });
    return alive;
  }
}
