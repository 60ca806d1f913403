// Bookkeeping of a fixed pool of KV-block slots on the device, one LRU per KV head
// (NOSA's slot reuse, docs/spec/minicpm-sala.md, "NOSA / NOSI offload algorithm"): a
// block selected again stays in its slot, a miss takes a free slot or the least recently
// used one. The pool's contents are the caller's; this class only says which slot holds
// which block and what must move.
import { LRUCache } from 'lru-cache';

export interface Placement {
  /** Slot of each requested block, in request order. */
  slots: number[];
  /** Requested blocks that were not resident: the caller uploads them into these slots. */
  misses: { block: number; slot: number }[];
}

export class BlockPool {
  hits = 0;
  misses = 0;
  private readonly heads: LRUCache<number, number>[] = [];
  private readonly used: number[];

  constructor(
    readonly kvHeads: number,
    readonly slotsPerHead: number,
  ) {
    if (!(slotsPerHead >= 1)) throw new RangeError(`a block pool needs at least one slot per head, got ${slotsPerHead}`);
    for (let h = 0; h < kvHeads; h++) this.heads.push(new LRUCache<number, number>({ max: slotsPerHead }));
    this.used = new Array<number>(kvHeads).fill(0);
  }

  /** Resident blocks of a head (for tests and stats). */
  resident(head: number): number[] {
    return [...this.heads[head].keys()];
  }

  /**
   * Slots for one step's blocks of a head. Hits are touched first, so the slots a
   * miss evicts never hold a block of this step (given no more blocks than slots).
   */
  place(head: number, blocks: readonly number[]): Placement {
    if (blocks.length > this.slotsPerHead) throw new RangeError(`${blocks.length} blocks requested at once, but the pool holds ${this.slotsPerHead} per head`);
    const lru = this.heads[head];
    const slots = new Array<number>(blocks.length);
    const missing: number[] = [];
    blocks.forEach((block, i) => {
      const slot = lru.get(block);
      if (slot === undefined) missing.push(i);
      else slots[i] = slot;
    });
    const misses: Placement['misses'] = [];
    for (const i of missing) {
      const slot = this.claim(head, blocks[i]);
      slots[i] = slot;
      misses.push({ block: blocks[i], slot });
    }
    this.hits += blocks.length - missing.length;
    this.misses += missing.length;
    return { slots, misses };
  }

  /** A slot for a block the device produced itself (a completed tail): no upload, not a miss. */
  insert(head: number, block: number): number {
    return this.heads[head].get(block) ?? this.claim(head, block);
  }

  private claim(head: number, block: number): number {
    const lru = this.heads[head];
    const slot = this.used[head] < this.slotsPerHead ? this.used[head]++ : lru.pop();
    if (slot === undefined) throw new Error('block pool: no slot to evict');
    lru.set(block, slot);
    return slot;
  }

  get hitRate(): number {
    const total = this.hits + this.misses;
    return total === 0 ? 1 : this.hits / total;
  }
}
