// The sparse layers' KV as a resident decoder holds it on the execution device. The full
// K/V stays in host memory (the Sequence's SparseKvCache, the source of truth); the device
// holds, per sparse layer,
//   - 'offload' (NOSA; spec, "NOSA / NOSI offload algorithm"): a fixed pool of block slots per KV head, with LRU
//     reuse; the blocks a step selects that are not resident are uploaded in one
//     batched write per layer and step;
//   - 'device': every block, at slot = block id (the all-on-GPU comparison point);
// the block being written (the tail) in its own small tensor, moved into the pool when it
// completes; and the two levels of compressed keys block selection scores, with room for
// the whole run. Selection itself runs here too, as prefill and decode steps both need it.
import type * as ort from 'onnxruntime-node';
import { byteLength, release } from '../runtime/device-tensors.js';
import { DeviceMemoryError, GraphSession, bool, f32, i64, int64Data, type Feeds } from '../runtime/session.js';
import { BlockPool } from '../kv/block-pool.js';
import type { SparseKvCache } from '../kv/sparse-kv-cache.js';
import type { ChunkSelection as SelectionPlan } from './forward-plan.js';
import type { Sequence } from './sequence.js';
import type { ResidentParts, ResidentSessions } from './resident-sessions.js';

export type KvPlacement = 'offload' | 'device';

/**
 * The largest single KV tensor (one layer's K or V pool) the decoder puts on a device.
 * onnxruntime's WebGPU kernels bind a big buffer in segments, at most 16 storage
 * bindings per shader: 6.5 GiB pools ran on an H200 (--gpu-kv-mb 40000, default model),
 * a 48.8 GiB one was refused by the shader compiler ("Too many storage buffers in shader").
 */
export const MAX_KV_TENSOR_BYTES = 4 * 2 ** 30;

/** The decoder's state did not fit the device (or host) memory; the sequence is as it was. */
export class ResidentMemoryError extends DeviceMemoryError {}

/** One sparse layer's device state. */
export interface SparseLayerState {
  layer: number;
  cache: SparseKvCache;
  pool?: BlockPool;
  poolKeys: ort.Tensor;
  poolValues: ort.Tensor;
  poolSlots: number;
  tailKeys: ort.Tensor;
  tailValues: ort.Tensor;
  tailBlock: number;
  fine: ort.Tensor;
  coarse: ort.Tensor;
  fineRows: number;
  coarseRows: number;
  /** The host store's arrays the decoder asked to page-lock for copies straight to the pool (CUDA), and whether that worked: asked again at the first upload after the store regrows, released when the decoder closes. */
  pinned?: { keys: Float32Array; values: Float32Array; locked: boolean };
}

/** What the decoder counts as it runs (ResidentStats is made from these and the pools). */
export interface ResidentCounters {
  steps: number;
  prefilledTokens: number;
  prefillAttendCalls: number;
  blockBytes: number;
  otherBytes: number;
  selectionsOnDevice: number;
  sparseGraphRuns: number;
  denseStoreSteps: number;
}

/** What a decoder's sparse-layer runners share: the model's parts and sessions, the device KV, the sequence, the counters. */
export interface ResidentShared {
  parts: ResidentParts;
  sessions: ResidentSessions;
  kv: ResidentKv;
  sequence: Sequence;
  counters: ResidentCounters;
}

/** A runner of the decoder's sparse layers (resident-prefill.ts, resident-step.ts): the shared state, unpacked. */
export abstract class SparseLayerRunner {
  protected readonly parts: ResidentParts;
  protected readonly sessions: ResidentSessions;
  protected readonly kv: ResidentKv;
  protected readonly sequence: Sequence;
  protected readonly counters: ResidentCounters;
  protected readonly blockSize: number;

  constructor(shared: ResidentShared) {
    ({ parts: this.parts, sessions: this.sessions, kv: this.kv, sequence: this.sequence, counters: this.counters } = shared);
    this.blockSize = shared.kv.blockSize;
  }
}

export class ResidentKv {
  readonly layers: SparseLayerState[] = [];
  private masks?: { key: string; alive?: ort.Tensor; excluded?: ort.Tensor };

  /** `free` releases a device tensor unless a CUDA graph owns it (a tail adopted by the captured step). */
  constructor(
    private readonly parts: ResidentParts,
    private readonly sessions: ResidentSessions,
    private readonly sequence: Sequence,
    readonly placement: KvPlacement,
    private readonly maxTokens: number,
    private readonly counters: ResidentCounters,
    private readonly free: (tensor: ort.Tensor | undefined) => void,
  ) {}

  get blockSize(): number {
    return this.parts.config.sparse.blockSize;
  }

  /** The blocks the decoder's run may reach (the compressed-key stores' room). */
  get maxBlocks(): number {
    return Math.max(1, Math.ceil(this.maxTokens / this.blockSize));
  }

  /** Pool slots per KV head that a device-memory budget for all sparse layers' pools holds. */
  blocksForBudget(bytes: number): number {
    const { config, sizes } = this.parts;
    const perSlot = this.slotBytes * 2 * sizes.sparseLayers.length;
    const slots = Math.floor(bytes / perSlot);
    const needed = Math.max(sizes.topkTotal, Math.ceil(config.sparse.denseLen / this.blockSize));
    if (slots < needed) {
      throw new RangeError(
        `a KV pool of ${(bytes / 2 ** 20).toFixed(1)} MiB holds ${slots} blocks per head; this model needs at least ${needed} (${((needed * perSlot) / 2 ** 20).toFixed(1)} MiB)`,
      );
    }
    return slots;
  }

  /** Bytes one pool slot takes in one layer's K (or V) tensor: a block for each KV head. */
  private get slotBytes(): number {
    const { config, sizes } = this.parts;
    return config.numKeyValueHeads * this.blockSize * sizes.sparseHeadDim * 4;
  }

  /** The largest --gpu-kv-mb whose pools stay within MAX_KV_TENSOR_BYTES apiece (K and V of every sparse layer). */
  largestPoolBudgetMiB(): number {
    const slots = Math.floor(MAX_KV_TENSOR_BYTES / this.slotBytes);
    return Math.floor((slots * this.slotBytes * 2 * this.parts.sizes.sparseLayers.length) / 2 ** 20);
  }

  private checkPoolSize(slots: number): void {
    const bytes = slots * this.slotBytes;
    if (bytes > MAX_KV_TENSOR_BYTES) {
      throw new RangeError(
        `each sparse layer's K and V ${this.placement === 'device' ? 'stores' : 'pools'} would take ${(bytes / 2 ** 30).toFixed(1)} GiB apiece, over the ${MAX_KV_TENSOR_BYTES / 2 ** 30} GiB one device tensor may hold`,
      );
    }
  }

  /** Places every sparse layer's state on the device (pools of `poolBlocks` slots per head when offloading). */
  async attach(poolBlocks: number | undefined): Promise<void> {
    const { tensors, sizes, config } = this.parts;
    const Hk = config.numKeyValueHeads;
    const hs = sizes.sparseHeadDim;
    const B = this.blockSize;
    for (const [layer, cache] of this.sequence.sparse) {
      const { tailBlock, tailKeys, tailValues } = await this.deviceTail(cache);
      let pool: BlockPool | undefined;
      let poolKeys: ort.Tensor;
      let poolValues: ort.Tensor;
      let poolSlots: number;
      if (this.placement === 'device') {
        // Slot = block id: the host store's head-major layout is the pool's, with room to grow.
        poolSlots = this.maxBlocks;
        this.checkPoolSize(poolSlots);
        const keys = new Float32Array(Hk * poolSlots * B * hs);
        const values = new Float32Array(keys.length);
        const complete = Array.from({ length: tailBlock }, (_, block) => block);
        for (let h = 0; h < Hk; h++) cache.readBlocks(h, complete, keys, values, h * poolSlots);
        poolKeys = await tensors.upload(f32(keys, [Hk, poolSlots, B, hs]));
        poolValues = await tensors.upload(f32(values, [Hk, poolSlots, B, hs]));
      } else {
        // At least one step's selection, and every block below dense_len (those steps attend to all of them).
        const needed = Math.max(sizes.topkTotal, Math.ceil(config.sparse.denseLen / B));
        poolSlots = Math.max(poolBlocks ?? 4 * needed, needed);
        this.checkPoolSize(poolSlots);
        pool = new BlockPool(Hk, poolSlots);
        poolKeys = await tensors.zeros([Hk, poolSlots, B, hs]);
        poolValues = await tensors.zeros([Hk, poolSlots, B, hs]);
      }
      // Compressed-key stores with spare rows for the whole run: the host's keys so far go up with them
      // (one upload, not a scatter of every row on the first call), later ones as they appear.
      const compressed = cache.compressedKeys();
      const fineCapacity = Math.max(1, Math.floor(this.maxTokens / this.parts.fineLevel.stride));
      const coarseCapacity = Math.max(1, Math.floor(this.maxTokens / this.parts.coarseLevel.stride));
      const withRoom = (rows: Float32Array, capacity: number) => {
        const data = new Float32Array(capacity * Hk * hs);
        data.set(rows.subarray(0, data.length));
        return tensors.upload(f32(data, [capacity, Hk, hs]));
      };
      this.layers.push({
        layer,
        cache,
        pool,
        poolKeys,
        poolValues,
        poolSlots,
        tailKeys,
        tailValues,
        tailBlock,
        fine: await withRoom(compressed.fine, fineCapacity),
        coarse: await withRoom(compressed.coarse, coarseCapacity),
        fineRows: Math.min(fineCapacity, compressed.fine.length / (Hk * hs)),
        coarseRows: Math.min(coarseCapacity, compressed.coarse.length / (Hk * hs)),
      });
    }
  }

  /** The block being written, every head ([Hk, B, hs]), read from the host store and uploaded; zeros where it has no token yet. */
  private async deviceTail(cache: SparseKvCache): Promise<{ tailBlock: number; tailKeys: ort.Tensor; tailValues: ort.Tensor }> {
    const B = this.blockSize;
    const Hk = this.parts.config.numKeyValueHeads;
    const hs = this.parts.sizes.sparseHeadDim;
    const tailBlock = Math.floor(cache.length / B);
    const keys = new Float32Array(Hk * B * hs);
    const values = new Float32Array(keys.length);
    if (tailBlock < cache.blockCount) for (let h = 0; h < Hk; h++) cache.readBlocks(h, [tailBlock], keys, values, h);
    const { tensors } = this.parts;
    return { tailBlock, tailKeys: await tensors.upload(f32(keys, [Hk, B, hs])), tailValues: await tensors.upload(f32(values, [Hk, B, hs])) };
  }

  /** After a prefill: every layer's tail is the block now being written, re-read from the host store. */
  async refreshTails(): Promise<void> {
    for (const state of this.layers) {
      this.free(state.tailKeys);
      this.free(state.tailValues);
      Object.assign(state, await this.deviceTail(state.cache));
      this.counters.otherBytes += byteLength(state.tailKeys) * 2;
    }
  }

  /** Uploads blocks from the host store into pool slots: `index` holds (head, slot) pairs, `missed` the blocks. */
  async uploadBlocks(state: SparseLayerState, index: number[], missed: { head: number; block: number }[]): Promise<void> {
    const { tensors, sizes } = this.parts;
    const hs = sizes.sparseHeadDim;
    const B = this.blockSize;
    this.counters.blockBytes += 2 * missed.length * B * hs * 4;
    if (this.copyFromStore(state, index, missed)) return;
    const keys = new Float32Array(missed.length * B * hs);
    const values = new Float32Array(keys.length);
    // From host memory or, where the store spilled, from its file.
    missed.forEach(({ head, block }, i) => state.cache.readBlocks(head, [block], keys, values, i));
    const indices = i64(index, [missed.length, 2]);
    this.counters.otherBytes += byteLength(indices);
    state.poolKeys = await tensors.scatter(state.poolKeys, indices, f32(keys, [missed.length, B, hs]));
    state.poolValues = await tensors.scatter(state.poolValues, indices, f32(values, [missed.length, B, hs]));
  }

  /**
   * The missed blocks copied from the host store's own memory into their slots, with no
   * gather on the host (the binding addon, every block in memory rather than spilled):
   * on CUDA from the store page-locked, at the bus's rate. False where it cannot.
   */
  private copyFromStore(state: SparseLayerState, index: number[], missed: { head: number; block: number }[]): boolean {
    const { tensors } = this.parts;
    const store = state.cache.store();
    if (!store || !tensors.copiesRowsInto(state.poolKeys) || !tensors.copiesRowsInto(state.poolValues)) return false;
    // Page-locked or not, the copies work; pinned they skip the staging copy. Only offloading
    // pins: its steps copy misses all along, where with every block on the device only each
    // prefill chunk's new blocks go up, and locking the whole store (16 GiB at 1M tokens for
    // the 9B shape) would cost more than the staging it saves.
    if (this.placement === 'offload' && (state.pinned?.keys !== store.keys || state.pinned.values !== store.values)) {
      this.unpin(state);
      const started = performance.now();
      // A refusal is remembered for these arrays, so no step asks the driver again.
      const locked = tensors.pinHost(store.keys) && tensors.pinHost(store.values);
      if (!locked) tensors.unpinHost(store.keys);
      GraphSession.record('pin_host', performance.now() - started);
      state.pinned = { keys: store.keys, values: store.values, locked };
    }
    // Store rows are (head, block) blocks of [Hk, capacityBlocks]; pool rows (head, slot) of [Hk, poolSlots].
    const from = Int32Array.from(missed, ({ head, block }) => head * store.capacityBlocks + block);
    const at = new Int32Array(missed.length);
    for (let i = 0; i < missed.length; i++) at[i] = index[2 * i] * state.poolSlots + index[2 * i + 1];
    const rowElements = this.blockSize * this.parts.sizes.sparseHeadDim;
    tensors.copyRows(state.poolKeys, store.keys, rowElements, from, at);
    tensors.copyRows(state.poolValues, store.values, rowElements, from, at);
    return true;
  }

  private unpin(state: SparseLayerState): void {
    if (state.pinned?.locked) {
      this.parts.tensors.unpinHost(state.pinned.keys);
      this.parts.tensors.unpinHost(state.pinned.values);
    }
    state.pinned = undefined;
  }

  /** Writes the completed tail block into the pool (no host transfer). */
  async flushTail(state: SparseLayerState): Promise<void> {
    const { tensors, config } = this.parts;
    const Hk = config.numKeyValueHeads;
    const index = new BigInt64Array(Hk * 2);
    for (let h = 0; h < Hk; h++) {
      const slot = state.pool ? state.pool.insert(h, state.tailBlock) : state.tailBlock;
      if (slot >= state.poolSlots) throw new RangeError(`block ${state.tailBlock} does not fit the device pool of ${state.poolSlots} blocks`);
      index[2 * h] = BigInt(h);
      index[2 * h + 1] = BigInt(slot);
    }
    this.counters.otherBytes += index.byteLength;
    const indices = i64(index, [Hk, 2]);
    state.poolKeys = await tensors.scatter(state.poolKeys, indices, state.tailKeys);
    state.poolValues = await tensors.scatter(state.poolValues, indices, state.tailValues);
  }

  /** Uploads the layer's compressed keys that the host store has and the device store not yet (in place). */
  async appendCompressed(state: SparseLayerState, plan: SelectionPlan): Promise<void> {
    const { config, sizes, tensors } = this.parts;
    const Hk = config.numKeyValueHeads;
    const hs = sizes.sparseHeadDim;
    const rowSize = Hk * hs;
    const { fine, coarse } = state.cache.compressedKeys();
    const { fineCount, coarseCount } = plan;
    if (fine.length !== fineCount * rowSize || coarse.length !== coarseCount * rowSize) {
      throw new Error(`the KV cache holds ${fine.length / rowSize}/${coarse.length / rowSize} compressed keys; the plan expects ${fineCount}/${coarseCount}`);
    }
    // New compressed rows (a window completes every kernel_stride tokens) go up as they appear.
    const append = async (store: ort.Tensor, data: Float32Array, from: number, to: number): Promise<ort.Tensor> => {
      if (to > store.dims[0]) throw new RangeError(`compressed keys outgrew the device store (${store.dims[0]} rows)`);
      const rows = new Int32Array(to - from);
      for (let i = 0; i < rows.length; i++) rows[i] = from + i;
      const indices = i64(rows, [to - from, 1]);
      this.counters.otherBytes += (to - from) * rowSize * 4 + byteLength(indices);
      return tensors.scatter(store, indices, f32(data.slice(from * rowSize, to * rowSize), [to - from, Hk, hs]));
    };
    if (fineCount > state.fineRows) {
      state.fine = await append(state.fine, fine, state.fineRows, fineCount);
      state.fineRows = fineCount;
    }
    if (coarseCount > state.coarseRows) {
      state.coarse = await append(state.coarse, coarse, state.coarseRows, coarseCount);
      state.coarseRows = coarseCount;
    }
  }

  /**
   * On the device, for the blocks below `blocks`: the live keys of each ('alive', [blocks,
   * blockSize]) or which are wholly dead ('excluded', [blocks]). Uploaded when a block
   * completes or a tombstone appears, and shared by the sparse layers.
   */
  async blockMask(kind: 'alive' | 'excluded', blocks: number): Promise<ort.Tensor> {
    const key = `${blocks}:${this.sequence.tombstoneVersion}`;
    if (this.masks?.key !== key) {
      this.releaseMasks();
      this.masks = { key };
    }
    const masks = this.masks!;
    const held = masks[kind];
    if (held) return held;
    const data = kind === 'alive' ? this.sequence.aliveKeys(Array.from({ length: blocks }, (_, b) => b)) : this.sequence.excludedBlocks(blocks);
    this.counters.otherBytes += data.byteLength;
    const mask = await this.parts.tensors.upload(bool(data, kind === 'alive' ? [blocks, this.blockSize] : [blocks]));
    masks[kind] = mask;
    return mask;
  }

  private releaseMasks(): void {
    release(this.masks?.alive);
    release(this.masks?.excluded);
    this.masks = undefined;
  }

  /**
   * Stage 1 + pooling + top-k on the device for `rows` queries from `firstPosition`,
   * over the layer's compressed keys (new ones go up first), fed as the plan says: [Hk, rows, rawK], −1 = none.
   */
  async select(state: SparseLayerState, q: ort.Tensor, firstPosition: number, rows: number, plan: SelectionPlan, blocks: number): Promise<BigInt64Array> {
    const feeds = await this.selectFeeds(state, q, firstPosition, rows, plan);
    // One decode query reads the stores in place; PANORAMA_STAGE_ONE=transposed keeps the general graph (bench:gpu-step's comparison).
    const session = rows === 1 && process.env.PANORAMA_STAGE_ONE !== 'transposed' ? this.sessions.selectStep : this.sessions.select;
    const out = await session.run({ ...feeds, block_excluded: await this.blockMask('excluded', blocks) });
    return int64Data(out.selected);
  }

  /** The selection graph's feeds but block_excluded, the layer's new compressed keys uploaded first. */
  async selectFeeds(state: SparseLayerState, q: ort.Tensor, firstPosition: number, rows: number, plan: SelectionPlan): Promise<Feeds> {
    await this.appendCompressed(state, plan);
    const { fineCount, coarseCount } = plan;
    const positions = Array.from({ length: rows }, (_, i) => firstPosition + i);
    this.counters.otherBytes += 8 * (3 * rows + 10);
    return {
      q,
      c1_store: state.fine,
      c2_store: state.coarse,
      fine_count: i64([Math.max(1, fineCount)]),
      coarse_count: i64([Math.max(1, coarseCount)]),
      query_positions: i64(positions),
      fine_visible: i64(plan.fineVisible),
      coarse_visible: i64(plan.coarseVisible),
      pool_pads: i64(plan.poolPads),
      k: i64([plan.rawK]),
    };
  }

  /** Pool hits and misses (offload) and the device bytes held for KV: pools + tails + compressed keys, all sparse layers. */
  usage(): { hits: number; misses: number; deviceKvBytes: number } {
    let hits = 0;
    let misses = 0;
    let deviceKvBytes = 0;
    for (const state of this.layers) {
      hits += state.pool?.hits ?? 0;
      misses += state.pool?.misses ?? 0;
      deviceKvBytes += byteLength(state.poolKeys) * 2 + byteLength(state.tailKeys) * 2 + byteLength(state.fine) + byteLength(state.coarse);
    }
    return { hits, misses, deviceKvBytes };
  }

  /** Frees every device tensor held here. */
  release(): void {
    this.releaseMasks();
    for (const state of this.layers) {
      this.unpin(state);
      for (const tensor of [state.poolKeys, state.poolValues, state.tailKeys, state.tailValues, state.fine, state.coarse]) this.free(tensor);
    }
  }
}
