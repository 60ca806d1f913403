// A sparse layer over one decode token of a resident decoder: project, append the K/V row
// to the host store, then select and attend. With every block on the device the selection
// feeds the attention without leaving it, replayed as a CUDA graph ('captured',
// captured-sparse.ts) or as one session run ('fused'); otherwise (offload, 'split', dense
// steps) the selected ids come back, the pool places them (misses uploaded) and an attend
// run reads the slots: offloaded and captured, the selection and the attention are two
// CUDA graphs with that placement between them. Per step only token ids, small index/mask tensors and the missed
// blocks go up; the new k/v rows (for the host store) and the selected ids come back.
import type * as ort from 'onnxruntime-node';
import { release } from '../runtime/device-tensors.js';
import { bool, floatData, i64, type Feeds } from '../runtime/session.js';
import type { GraphSession } from '../runtime/session.js';
import type { CapturedSparse } from './captured-sparse.js';
import type { ChunkPlan, ChunkSelection as SelectionPlan } from './forward-plan.js';
import { SparseLayerRunner, type ResidentShared, type SparseLayerState } from './resident-kv.js';
import { feedsFor } from './resident-sessions.js';

/**
 * Decode steps, KV on the device: a sparse layer's selection feeds its attention in the same
 * run, replayed as a CUDA graph where steps are captured ('captured', the default) or as a
 * session run ('fused'), or comes back to the host between two runs ('split'). The last two
 * are comparison points. Offload always splits (its pool is placed on the host): its two
 * halves replayed as CUDA graphs ('captured') or run as sessions ('fused', 'split').
 */
export type SparseStep = 'captured' | 'fused' | 'split';

export class ResidentStep extends SparseLayerRunner {
  /** Whether a decode step's selection feeds its attention in the same run. */
  private readonly selectsOnDevice: boolean;
  /** Whether an offloaded decode step's selection and attention are replayed as CUDA graphs where steps are captured. */
  private readonly capturesOffload: boolean;
  /** This decoder's CUDA graphs of its sparse layers (made on the first sparse step; null where they cannot be). */
  private capturedSparse?: CapturedSparse | null;
  /** The position whose values capturedSparse holds. */
  private capturedPosition = -1;
  private denseFeeds?: { key: string; slotTensor: ort.Tensor; aliveTensor: ort.Tensor };

  /** `free` releases a device tensor unless a CUDA graph owns it. */
  constructor(
    shared: ResidentShared,
    private readonly sparseStep: SparseStep,
    private readonly free: (tensor: ort.Tensor | undefined) => void,
  ) {
    super(shared);
    this.selectsOnDevice = shared.kv.placement === 'device' && sparseStep !== 'split';
    this.capturesOffload = shared.kv.placement === 'offload' && sparseStep === 'captured';
  }

  /** Whether `tensor` is one of the captured sparse step's fixed buffers. */
  owns(tensor: ort.Tensor | undefined): boolean {
    return this.capturedSparse?.owns(tensor) ?? false;
  }

  /** The sparse layer `state` over one decode token: dense over every past block, or the blocks selected, as the step's plan says. */
  async sparseLayer(state: SparseLayerState, x: ort.Tensor, plan: ChunkPlan): Promise<ort.Tensor> {
    const { config, layerTensors } = this.parts;
    const Hk = config.numKeyValueHeads;
    const B = this.blockSize;
    const tensorsOfLayer = layerTensors[state.layer];
    const position = plan.firstPosition;
    const captures = plan.selection && (this.selectsOnDevice || this.capturesOffload);
    const captured = captures ? await this.sparseCapture(position, plan.selection!, plan.blocks) : undefined;
    // Captured: the projection writes straight into the graph's fixed buffers.
    const project = captured ? this.sessions.projectCaptured! : this.sessions.project;
    const projected = await project.run({ ...feedsFor(tensorsOfLayer, project.inputNames), x }, captured && (await captured.projectInto(state.layer)));
    state.cache.append(floatData(projected.k_host), floatData(projected.v_host));
    const queryBlock = Math.floor(position / B);

    // The tail completed last step: it moves into the pool (device to device) and a new one starts.
    if (queryBlock !== state.tailBlock) {
      await this.kv.flushTail(state);
      state.tailBlock = queryBlock;
    }

    if (captured) {
      const out = captured.splits ? await this.capturedOffloadLayer(captured, state, plan.selection!, position) : await this.capturedSparseLayer(captured, state, plan.selection!);
      if (out) return out;
    }
    if (plan.selection && this.selectsOnDevice) return this.selectAndAttend(state, x, projected, plan.selection, plan.blocks, position);

    // Dense, every block resident, and at least a third of the store's slots holding past blocks: reading
    // the whole store in place moves less than a gather, which reads, writes and reads again what it copies.
    if (!plan.selection && !state.pool && 3 * queryBlock >= state.poolSlots) {
      this.counters.denseStoreSteps++;
      this.counters.otherBytes += 8;
      return this.attend(this.sessions.attendStore, state, x, projected, position, {
        block_alive: await this.kv.blockMask('alive', plan.blocks),
        past_blocks: i64([queryBlock]),
      });
    }

    let blocks: number[][];
    if (!plan.selection) {
      const past = Array.from({ length: queryBlock }, (_, b) => b);
      blocks = Array.from({ length: Hk }, () => past);
    } else {
      blocks = await this.selectBlocks(state, projected.q, position, plan.selection, plan.blocks);
    }

    const slots = await this.placeBlocks(state, blocks);
    const width = Math.max(1, ...blocks.map((b) => b.length));
    const { slotTensor, aliveTensor } = await this.blockFeeds(blocks, slots, width);
    return this.attend(this.sessions.attend, state, x, projected, position, { slots: slotTensor, key_alive: aliveTensor });
  }

  /** Each head's slots for `blocks` (offload: placed in the pool, misses uploaded in one write per layer). */
  private async placeBlocks(state: SparseLayerState, blocks: number[][]): Promise<number[][]> {
    if (!state.pool) return blocks;
    const slots: number[][] = [];
    const missIndex: number[] = [];
    const missed: { head: number; block: number }[] = [];
    for (let h = 0; h < blocks.length; h++) {
      const placed = state.pool.place(h, blocks[h]);
      slots.push(placed.slots);
      for (const miss of placed.misses) {
        missIndex.push(h, miss.slot);
        missed.push({ head: h, block: miss.block });
      }
    }
    if (missed.length > 0) await this.kv.uploadBlocks(state, missIndex, missed);
    return slots;
  }

  /**
   * The decoder's captured sparse step, its values for this step written (once per step):
   * undefined where capture does not apply or was turned off.
   */
  private async sparseCapture(position: number, selection: SelectionPlan, blocks: number): Promise<CapturedSparse | undefined> {
    if (this.capturedSparse === undefined) {
      const state = this.kv.layers[0];
      const capacity = { blocks: this.kv.maxBlocks, fineRows: state.fine.dims[0], coarseRows: state.coarse.dims[0] };
      const make = this.sparseStep === 'captured' ? this.sessions.captureSparse : undefined;
      this.capturedSparse = (await make?.(this.parts.tensors, capacity, state.pool ? state.poolSlots : undefined)) ?? null;
    }
    const captured = this.capturedSparse;
    if (!captured?.usable) return undefined;
    if (this.capturedPosition !== position) {
      try {
        this.counters.otherBytes += await captured.begin(position, selection, blocks, this.sequence);
      } catch (err) {
        captured.disable(err);
        return undefined;
      }
      this.capturedPosition = position;
    }
    return captured;
  }

  /** The layer's tail in the captured step's buffers, and its new compressed keys uploaded: what both captured forms do first. */
  private async prepareCaptured(captured: CapturedSparse, state: SparseLayerState, plan: SelectionPlan): Promise<void> {
    await this.kv.appendCompressed(state, plan);
    const tail = await captured.adoptTail(state.layer, state.tailKeys, state.tailValues);
    if (tail.keys !== state.tailKeys) {
      this.free(state.tailKeys);
      this.free(state.tailValues);
      state.tailKeys = tail.keys;
      state.tailValues = tail.values;
    }
  }

  /**
   * Offloaded: the layer's selection replayed, its ids placed in the pool (misses copied up),
   * then its attention replayed over their slots; undefined if a run failed (the caller runs
   * the layer uncaptured: blocks placed here are hits then).
   */
  private async capturedOffloadLayer(captured: CapturedSparse, state: SparseLayerState, plan: SelectionPlan, position: number): Promise<ort.Tensor | undefined> {
    try {
      await this.prepareCaptured(captured, state, plan);
      const blocks = this.pastBlocks(await captured.select(state.layer, state), captured.topK, position);
      const { slotIds, alive } = this.slotArrays(blocks, await this.placeBlocks(state, blocks), captured.topK);
      const x = await captured.attend(state.layer, feedsFor(this.parts.layerTensors[state.layer], captured.inputNames), state, slotIds, alive);
      this.counters.sparseGraphRuns++;
      return x;
    } catch (err) {
      captured.disable(err);
      return undefined;
    }
  }

  /** A sparse layer's selection and attention replayed (its projection already in the graph's buffers); undefined if the run failed. */
  private async capturedSparseLayer(captured: CapturedSparse, state: SparseLayerState, plan: SelectionPlan): Promise<ort.Tensor | undefined> {
    try {
      await this.prepareCaptured(captured, state, plan);
      const x = await captured.run(state.layer, feedsFor(this.parts.layerTensors[state.layer], captured.inputNames), state);
      this.counters.selectionsOnDevice++;
      this.counters.sparseGraphRuns++;
      return x;
    } catch (err) {
      // The layer's inputs are intact (a tail row written twice is written with the same key).
      captured.disable(err);
      return undefined;
    }
  }

  /** Selection and attention in one run (KV all on the device): the selected ids stay on the device. */
  private async selectAndAttend(
    state: SparseLayerState,
    x: ort.Tensor,
    projected: Record<string, ort.Tensor>,
    plan: SelectionPlan,
    blocks: number,
    position: number,
  ): Promise<ort.Tensor> {
    this.counters.selectionsOnDevice++;
    const { k: topK, ...selection } = await this.kv.selectFeeds(state, projected.q, position, 1, plan);
    return this.attend(this.sessions.selectAttend, state, x, projected, position, {
      ...selection,
      top_k: topK,
      block_excluded: await this.kv.blockMask('excluded', blocks),
      block_alive: await this.kv.blockMask('alive', blocks),
    });
  }

  /** Runs an attend graph of one decode token with the layer's pool and tail; the tail it writes becomes the layer's. */
  private async attend(
    session: GraphSession,
    state: SparseLayerState,
    x: ort.Tensor,
    projected: Record<string, ort.Tensor>,
    position: number,
    blockFeeds: Feeds,
  ): Promise<ort.Tensor> {
    const Hk = this.parts.config.numKeyValueHeads;
    const B = this.blockSize;
    const row = position % B;
    const tailAlive = new Uint8Array(Hk * B);
    const tailKeysAlive = this.sequence.aliveKeys([Math.floor(position / B)]);
    // The new token is not in sequence.dead yet (it was just appended), so rows ≤ row are live unless tombstoned.
    for (let h = 0; h < Hk; h++) for (let r = 0; r <= row; r++) tailAlive[h * B + r] = r === row ? 1 : tailKeysAlive[r];
    const tailRow = new BigInt64Array(Hk * 2);
    for (let h = 0; h < Hk; h++) {
      tailRow[2 * h] = BigInt(h);
      tailRow[2 * h + 1] = BigInt(row);
    }
    const feeds: Feeds = {
      ...feedsFor(this.parts.layerTensors[state.layer], session.inputNames),
      ...blockFeeds,
      x,
      q: projected.q,
      k: projected.k,
      v: projected.v,
      pool_keys: state.poolKeys,
      pool_values: state.poolValues,
      tail_keys: state.tailKeys,
      tail_values: state.tailValues,
      tail_row: i64(tailRow, [Hk, 2]),
      tail_alive: bool(tailAlive, [Hk, B]),
    };
    if (projected.gate) feeds.gate = projected.gate;
    this.counters.otherBytes += tailAlive.byteLength + tailRow.byteLength;
    const out = await session.run(feeds);
    this.free(state.tailKeys);
    this.free(state.tailValues);
    state.tailKeys = out.tail_keys_out;
    state.tailValues = out.tail_values_out;
    for (const name of ['q', 'k', 'v', 'gate', 'x_row']) this.free(projected[name]);
    return out.x_out;
  }

  /**
   * The slot ids [Hk, U] and live-key mask [Hk, U, blockSize] of a step. Dense steps
   * attend to every past block, the same for every layer and for 64 steps in a row:
   * those stay on the device until the block count changes (or a tombstone appears),
   * so the dense comparison point is not charged a per-step upload the sparse path
   * does not need.
   */
  private async blockFeeds(blocks: number[][], slots: number[][], width: number): Promise<{ slotTensor: ort.Tensor; aliveTensor: ort.Tensor }> {
    const { config, tensors } = this.parts;
    const Hk = config.numKeyValueHeads;
    const B = this.blockSize;
    const everyBlock = this.kv.placement === 'device' && blocks.every((list) => list.length === width && list.every((b, i) => b === i));
    const key = `${width}:${this.sequence.tombstoneVersion}`;
    if (everyBlock && this.denseFeeds?.key === key) return this.denseFeeds;
    const { slotIds, alive } = this.slotArrays(blocks, slots, width);
    const feeds = { slotTensor: i64(slotIds, [Hk, width]), aliveTensor: bool(alive, [Hk, width, B]) };
    if (!everyBlock || width < 64) return feeds;
    this.releaseDenseFeeds();
    this.denseFeeds = { key, slotTensor: await tensors.upload(feeds.slotTensor), aliveTensor: await tensors.upload(feeds.aliveTensor) };
    return this.denseFeeds;
  }

  /** Each head's slots [Hk, width] and their live keys [Hk, width, blockSize], counted as host bytes fed: unused slots read slot 0 with every key masked. */
  private slotArrays(blocks: number[][], slots: number[][], width: number): { slotIds: BigInt64Array; alive: Uint8Array } {
    const B = this.blockSize;
    const slotIds = new BigInt64Array(blocks.length * width);
    const alive = new Uint8Array(blocks.length * width * B);
    for (let h = 0; h < blocks.length; h++) {
      slots[h].forEach((slot, i) => (slotIds[h * width + i] = BigInt(slot)));
      alive.set(this.sequence.aliveKeys(blocks[h]), h * width * B);
    }
    this.counters.otherBytes += slotIds.byteLength + alive.byteLength;
    return { slotIds, alive };
  }

  private releaseDenseFeeds(): void {
    release(this.denseFeeds?.slotTensor);
    release(this.denseFeeds?.aliveTensor);
    this.denseFeeds = undefined;
  }

  /** InfLLM-V2 selection on the device for one decode query; returns each head's past blocks (the tail excluded). */
  private async selectBlocks(state: SparseLayerState, q: ort.Tensor, position: number, selection: SelectionPlan, blocks: number): Promise<number[][]> {
    return this.pastBlocks(await this.kv.select(state, q, position, 1, selection, blocks), selection.rawK, position);
  }

  /** Selected ids [Hk, k] (−1 = none) as each head's past blocks: the tail (the step's own block) excluded. */
  private pastBlocks(selected: BigInt64Array, k: number, position: number): number[][] {
    const tail = Math.floor(position / this.blockSize);
    const perHead: number[][] = [];
    for (let h = 0; h < this.parts.config.numKeyValueHeads; h++) {
      const mine: number[] = [];
      for (let j = 0; j < k; j++) {
        const block = Number(selected[h * k + j]);
        if (block >= 0 && block !== tail) mine.push(block);
      }
      perHead.push(mine);
    }
    return perHead;
  }

  /** Frees the dense feeds and the captured step's buffers (its graphs point at them). */
  async release(): Promise<void> {
    this.releaseDenseFeeds();
    await this.capturedSparse?.release();
  }
}
