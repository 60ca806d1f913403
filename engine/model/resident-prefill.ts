// A sparse layer over a chunk of a resident decoder's prefill: project the chunk, append
// its K/V to the host store, select (as the plan says), then attend in row groups
// (row-groups.ts: each group fits the pool or the score budget). With every block
// resident a block's slot is its id, and the selection stays on the device for the
// attention to read (no id crosses the bus or passes through JavaScript); with offload,
// the ids come to the host and each group's union of blocks is placed in the pool first
// (misses uploaded, the chunk's own blocks refreshed the first time they are placed).
import type * as ort from 'onnxruntime-node';
import { release } from '../runtime/device-tensors.js';
import { bool, floatData, i64, type Feeds } from '../runtime/session.js';
import type { ChunkPlan } from './forward-plan.js';
import { perQueryFeeds, rowGroups, selectedIds, selectedRowGroups, unionFeeds, type ChunkSelection, type RowAttention, type RowGroup, type RowGroupLimits } from './row-groups.js';
import { SparseLayerRunner, type ResidentShared, type SparseLayerState } from './resident-kv.js';
import { feedsFor } from './resident-sessions.js';

export class ResidentPrefill extends SparseLayerRunner {
  constructor(
    shared: ResidentShared,
    /** Device memory for one attention call's scores (ResidentOptions.attentionBytes). */
    private readonly attentionBytes: number,
    private readonly rowAttention: RowAttention,
    /** With every block resident: whether a chunk's selection stays on the device ('device') or comes to the host as with offload ('host', the comparison point). */
    private readonly selectionRoute: 'device' | 'host',
  ) {
    super(shared);
  }

  /** The sparse layer `state` over the chunk's rows x; returns its output rows. */
  async sparseLayer(state: SparseLayerState, x: ort.Tensor, plan: ChunkPlan): Promise<ort.Tensor> {
    const { config, layerTensors } = this.parts;
    const projected = await this.sessions.project.run({ ...feedsFor(layerTensors[state.layer], this.sessions.project.inputNames), x });
    state.cache.append(floatData(projected.k_host), floatData(projected.v_host));
    const limits: RowGroupLimits = {
      kvHeads: config.numKeyValueHeads,
      heads: config.numAttentionHeads,
      blockSize: this.blockSize,
      headDim: this.parts.sizes.sparseHeadDim,
      capacity: state.pool ? state.poolSlots : Infinity,
      attentionBytes: this.attentionBytes,
      rowAttention: this.rowAttention,
    };
    let o: ort.Tensor | undefined;
    try {
      // The chunk's attention [rows, H·hs], written by its row groups' calls; then the rest of the layer in one run.
      o = await this.parts.tensors.zeros([plan.ids.length, config.numAttentionHeads * this.parts.sizes.sparseHeadDim]);
      const onDevice = !state.pool && plan.selection && this.selectionRoute === 'device';
      o = await (onDevice ? this.attendSelected(state, projected, plan, limits, o) : this.attendFed(state, projected, plan, limits, o));
      const finish = this.sessions.finish;
      const out = await finish.run({ ...feedsFor(layerTensors[state.layer], finish.inputNames), x, o, ...(projected.gate ? { gate: projected.gate } : {}) });
      return out.x_out;
    } finally {
      release(o);
      for (const name of ['q', 'k', 'v', 'gate']) release(projected[name]);
    }
  }

  /** The chunk's rows over blocks fed from the host: the selection comes back, the rows split into groups (row-groups.ts), each group's blocks placed first. */
  private async attendFed(state: SparseLayerState, projected: Record<string, ort.Tensor>, plan: ChunkPlan, limits: RowGroupLimits, o: ort.Tensor): Promise<ort.Tensor> {
    const { firstPosition: first, blocks } = plan;
    const rows = plan.ids.length;
    const firstTouched = Math.floor(first / this.blockSize);
    // [Hk, rows, rawK] selected block ids (−1: none); none on the dense path, where a row attends to every block up to its own (k unused).
    const selected = plan.selection ? selectedIds(await this.kv.select(state, projected.q, first, rows, plan.selection, blocks)) : undefined;
    const chunk: ChunkSelection = { first, rows, k: plan.selection?.rawK ?? 0, selected };
    const groups = rowGroups(chunk, limits);
    // The chunk's blocks hold new rows: with every block resident they go up now; in a pool, when first placed.
    const refreshed = Array.from({ length: limits.kvHeads }, () => new Set<number>());
    if (!state.pool) await this.uploadChunkBlocks(state, firstTouched, blocks);
    let acc = o;
    for (const group of groups) {
      const slots = await this.placeGroup(state, group, firstTouched, refreshed);
      const session = this.sessions.attendRows[group.perQuery ? 'per-row' : 'union'];
      const out = await session.run({
        ...(group.perQuery ? await this.perQueryFeeds(chunk, group, slots, blocks) : this.unionFeeds(chunk, group, slots)),
        q: projected.q,
        o_acc: acc,
        row_range: i64([group.from, group.to]),
        key_store: state.poolKeys,
        value_store: state.poolValues,
        query_positions: i64(Array.from({ length: group.to - group.from }, (_, t) => first + group.from + t)),
      });
      this.counters.prefillAttendCalls++;
      release(acc);
      acc = out.o_acc_out;
    }
    return acc;
  }

  /** With every block resident (slot = id): the blocks this chunk wrote, from firstTouched, uploaded for every head. */
  private async uploadChunkBlocks(state: SparseLayerState, firstTouched: number, blocks: number): Promise<void> {
    const index: number[] = [];
    const upload: { head: number; block: number }[] = [];
    for (let h = 0; h < this.parts.config.numKeyValueHeads; h++) {
      for (let b = firstTouched; b < blocks; b++) {
        index.push(h, b);
        upload.push({ head: h, block: b });
      }
    }
    await this.kv.uploadBlocks(state, index, upload);
  }

  /** The chunk's rows over the blocks they selected, the selection left on the device where the selection graph wrote it. */
  private async attendSelected(state: SparseLayerState, projected: Record<string, ort.Tensor>, plan: ChunkPlan, limits: RowGroupLimits, o: ort.Tensor): Promise<ort.Tensor> {
    const { firstPosition: first, blocks } = plan;
    const rows = plan.ids.length;
    const selection = plan.selection!;
    await this.uploadChunkBlocks(state, Math.floor(first / this.blockSize), blocks);
    const feeds = await this.kv.selectFeeds(state, projected.q, first, rows, selection);
    const { selected, union_width } = await this.sessions.selectOnDevice.run({ ...feeds, block_excluded: await this.kv.blockMask('excluded', blocks) });
    const unionWidth = Number((union_width.data as BigInt64Array)[0]);
    const blockAlive = await this.kv.blockMask('alive', blocks);
    let acc = o;
    try {
      for (const group of selectedRowGroups(rows, blocks, selection.rawK, limits, unionWidth)) {
        const out = await this.sessions.attendRows[group.perQuery ? 'selected-per-row' : 'selected-union'].run({
          q: projected.q,
          o_acc: acc,
          row_range: i64([group.from, group.to]),
          first_position: i64([first]),
          selected,
          key_store: state.poolKeys,
          value_store: state.poolValues,
          block_alive: blockAlive,
        });
        this.counters.prefillAttendCalls++;
        this.counters.otherBytes += 24;
        release(acc);
        acc = out.o_acc_out;
      }
    } finally {
      release(selected);
    }
    return acc;
  }

  /**
   * Slots of a group's blocks, per head: block ids with every block resident; else placed
   * in the pool, with misses — and the chunk's own blocks the first time — uploaded.
   */
  private async placeGroup(state: SparseLayerState, group: RowGroup, firstTouched: number, refreshed: Set<number>[]): Promise<Int32Array[]> {
    const index: number[] = [];
    const upload: { head: number; block: number }[] = [];
    const slots = group.blocks.map((list, h) => {
      if (!state.pool) return Int32Array.from(list);
      const placed = state.pool.place(h, list);
      const missed = new Set(placed.misses.map((miss) => miss.block));
      list.forEach((block, i) => {
        if (missed.has(block) || (block >= firstTouched && !refreshed[h].has(block))) {
          index.push(h, placed.slots[i]);
          upload.push({ head: h, block });
          if (block >= firstTouched) refreshed[h].add(block);
        }
      });
      return Int32Array.from(placed.slots);
    });
    if (upload.length > 0) await this.kv.uploadBlocks(state, index, upload);
    return slots;
  }

  /** Feeds of the union form: the group's blocks per head [Hk, U], which of them each row selected [Hk, R, U], their live keys [Hk, U, B]. */
  private unionFeeds(chunk: ChunkSelection, group: RowGroup, slots: Int32Array[]): Feeds {
    const Hk = this.parts.config.numKeyValueHeads;
    const B = this.blockSize;
    const R = group.to - group.from;
    const { width, blockIds, slotIds, mask } = unionFeeds(chunk, group, slots);
    const alive = new Uint8Array(Hk * width * B);
    for (let h = 0; h < Hk; h++) alive.set(this.sequence.aliveKeys(group.blocks[h]), h * width * B);
    this.counters.otherBytes += blockIds.length * 16 + mask.byteLength + alive.byteLength + R * 8;
    return {
      block_ids: i64(blockIds, [Hk, width]),
      store_slots: i64(slotIds, [Hk, width]),
      block_mask: bool(mask, [Hk, R, width]),
      key_alive: bool(alive, [Hk, width, B]),
    };
  }

  /** Feeds of the per-row form: each row's own k blocks, ids and slots [Hk, R, k]; the live keys come from the device's per-block mask. */
  private async perQueryFeeds(chunk: ChunkSelection, group: RowGroup, slots: Int32Array[], blocks: number): Promise<Feeds> {
    const Hk = this.parts.config.numKeyValueHeads;
    const { k } = chunk;
    const R = group.to - group.from;
    const { blockIds, slotIds } = perQueryFeeds(chunk, group, slots);
    this.counters.otherBytes += blockIds.length * 16 + R * 8;
    return {
      query_blocks: i64(blockIds, [Hk, R, k]),
      query_slots: i64(slotIds, [Hk, R, k]),
      block_alive: await this.kv.blockMask('alive', blocks),
    };
  }
}
