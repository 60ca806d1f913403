// Decode steps with everything that changes per token kept on the execution device:
// weights, activations between layers, Lightning states, the compressed keys of the
// sparse layers, and their KV blocks. The sparse layers' full K/V stays in host
// memory (the Sequence's SparseKvCache, the source of truth); the device holds
//   - 'offload' (NOSA; spec, "NOSA / NOSI offload algorithm"): a fixed pool of block slots per KV head, with LRU
//     reuse; the blocks a step selects that are not resident are uploaded in one
//     batched write per layer and step;
//   - 'device': every block (the all-on-GPU comparison point).
// The block being written (the tail) lives in its own small device tensor and goes
// into the pool when it completes. Per step, only token ids, small index/mask tensors
// and the missed blocks go up; logits, the new k/v rows (for the host store) and
// the selected block ids come back.
import * as ort from 'onnxruntime-node';
import { DeviceTensors, byteLength, release } from '../runtime/device-tensors.js';
import { runsThroughAddon, type DeviceKind, type Precision, type ResolvedDevice } from '../runtime/device.js';
import { CapturedLightning } from './captured-lightning.js';
import { CapturedSparse } from './captured-sparse.js';
import type { StepCapacity } from './captured-sparse-graph.js';
import { DeviceMemoryError, GraphSession, bool, f32, floatData, i64, int64Data, type Feeds } from '../runtime/session.js';
import { BlockPool } from '../kv/block-pool.js';
import type { SparseKvCache } from '../kv/sparse-kv-cache.js';
import type { Level } from '../kv/selection.js';
import type { DerivedSizes, SalaConfig } from './config.js';
import { forwardPlan, type ChunkPlan, type ChunkSelection as SelectionPlan, type ForwardPlan } from './forward-plan.js';
import { buildGraphs, buildResidentGraphs } from './graphs.js';
import type { Sequence } from './sequence.js';
import { perQueryFeeds, rowGroups, selectedIds, unionFeeds, type ChunkSelection, type RowAttention, type RowGroup } from './row-groups.js';

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

export interface ResidentOptions {
  /** Where the sparse layers' past KV blocks live during decoding (default 'offload'). */
  placement?: KvPlacement;
  /** Offload: slots per KV head and layer (default 4 × the blocks one step selects). */
  poolBlocks?: number;
  /** Offload: device memory for the block pools of all sparse layers, in bytes (instead of poolBlocks). */
  poolBytes?: number;
  /** 'dense' attends to every block at every step (the comparison point); default 'auto' follows dense_len. */
  attention?: 'auto' | 'dense';
  /** Tokens the device stores are sized for (compressed keys; every block for 'device'). */
  maxTokens: number;
  /** prefill(): device memory for one attention call's scores; more rows split into several calls (default 512 MiB). */
  attentionBytes?: number;
  /** prefill(), sparse: a row group attends over the union of its blocks, each row over its own, or whichever is cheaper (default 'auto'). */
  rowAttention?: RowAttention;
  /**
   * Decode steps, KV on the device: a sparse layer's selection feeds its attention in the same
   * run, replayed as a CUDA graph where steps are captured ('captured', the default; see
   * capturesSteps) or as a session run ('fused'), or comes back to the host between two runs
   * ('split'). The last two are comparison points; offload always splits (its pool is placed on the host).
   */
  sparseStep?: SparseStep;
}

export type SparseStep = 'captured' | 'fused' | 'split';

/** What the model hands its decoder. */
export interface ResidentParts {
  config: SalaConfig;
  sizes: DerivedSizes;
  device: ResolvedDevice;
  layerTensors: Record<string, ort.Tensor>[];
  globalTensors: Record<string, ort.Tensor>;
  fineLevel: Level;
  coarseLevel: Level;
  tensors: DeviceTensors;
}

export interface ResidentStats {
  steps: number;
  /** Tokens fed through prefill() (their block placements count in hits/misses and blockBytes too). */
  prefilledTokens: number;
  /** Attention calls of those prefills (a chunk's rows split into groups to fit the pool or the score budget). */
  prefillAttendCalls: number;
  /** Block requests served from the pool / uploaded (offload), summed over layers and heads. */
  hits: number;
  misses: number;
  /** Host → device bytes of missed blocks, and of everything else fed per step (ids, masks, indices, new compressed keys). */
  blockBytes: number;
  otherBytes: number;
  /** Device bytes held for KV: pools + tails + compressed keys, all sparse layers. */
  deviceKvBytes: number;
  /** Sparse-layer decode steps whose selection fed the attention in the same run, never leaving the device. */
  selectionsOnDevice: number;
  /** Of those, the runs replayed as CUDA graphs (captured-sparse.ts; on the CPU provider, the same buffers uncaptured). */
  sparseGraphRuns: number;
}

export interface ResidentSessions {
  embed: GraphSession;
  lightning: GraphSession;
  /** Lightning for one token: decode steps. */
  lightningStep: GraphSession;
  /** The same, captured as CUDA graphs (CUDA through the binding addon; see capturesSteps). */
  lightningCaptured?: GraphSession;
  /** Its buffers, made on the first decode step and kept with the model. */
  captured?: CapturedLightning;
  head: GraphSession;
  project: GraphSession;
  /** With capture (capturesSteps): the projection with x passed through, and the captured sparse step of a decoder of the given capacity. */
  projectCaptured?: GraphSession;
  captureSparse?: (tensors: DeviceTensors, capacity: StepCapacity) => Promise<CapturedSparse>;
  select: GraphSession;
  attend: GraphSession;
  /** select + attend in one run, for KV all on the device (selectsOnDevice). */
  selectAttend: GraphSession;
  /** Chunked prefill: a range of a chunk's rows over their blocks; the head on the chunk's last row. */
  attendRows: GraphSession;
  attendQueries: GraphSession;
  headLast: GraphSession;
}

interface SparseLayerState {
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
}

function pick(tensors: Record<string, ort.Tensor>, names: readonly string[]): Feeds {
  const feeds: Feeds = {};
  for (const name of names) if (name in tensors) feeds[name] = tensors[name];
  return feeds;
}

const onDevice = 'gpu-buffer' as const;

/**
 * Whether decode steps replay their layers as CUDA graphs (captured-lightning.ts, and
 * captured-sparse.ts with every block on the device): on CUDA through the binding addon
 * unless PANORAMA_CUDA_GRAPH=0; on the CPU provider through the addon with
 * PANORAMA_CUDA_GRAPH=1, the same buffers without the capture (tests).
 */
function capturesSteps(kind: DeviceKind): boolean {
  if (!runsThroughAddon(kind)) return false;
  return kind === 'cuda' ? process.env.PANORAMA_CUDA_GRAPH !== '0' : process.env.PANORAMA_CUDA_GRAPH === '1';
}

/**
 * Device memory for one attention call's scores ([H, rows, keys] fp32, and as much again
 * for their softmax): a chunk whose rows attend to more keys than this allows splits its
 * rows over several calls, so dense attention at long contexts runs in bounded memory.
 */
const ATTENTION_SCORE_BYTES = 512 * 2 ** 20;

export class ResidentDecoder {
  private readonly stats = { steps: 0, prefilledTokens: 0, prefillAttendCalls: 0, blockBytes: 0, otherBytes: 0, selectionsOnDevice: 0, sparseGraphRuns: 0 };
  private readonly lightningStates = new Map<number, ort.Tensor>();
  private readonly sparse: SparseLayerState[] = [];
  private denseFeeds?: { key: string; slotTensor: ort.Tensor; aliveTensor: ort.Tensor };
  private deviceMasks?: { key: string; alive?: ort.Tensor; excluded?: ort.Tensor };
  private closed = false;
  /** Whether a decode step's selection feeds its attention in the same run (ResidentOptions.sparseStep). */
  private readonly selectsOnDevice: boolean;
  /** The model's CUDA graphs of the Lightning layers, while this decoder holds them (capturesSteps). */
  private captured?: CapturedLightning;
  /** This decoder's CUDA graphs of its sparse layers (made on the first sparse step; null where they cannot be). */
  private capturedSparse?: CapturedSparse | null;
  /** The position whose values capturedSparse holds. */
  private capturedPosition = -1;

  private constructor(
    private readonly parts: ResidentParts,
    private readonly sessions: ResidentSessions,
    readonly sequence: Sequence,
    private readonly placement: KvPlacement,
    private readonly dense: boolean,
    private readonly maxTokens: number,
    private readonly attentionBytes: number,
    private readonly rowAttention: RowAttention,
    private readonly sparseStep: SparseStep,
  ) {
    this.selectsOnDevice = placement === 'device' && sparseStep !== 'split';
  }

  /** The decode-step sessions (built once per model: see SalaModel.residentDecoder). */
  static async sessions(config: SalaConfig, device: ResolvedDevice, precision: Precision = 'fp32'): Promise<ResidentSessions> {
    const graphs = buildGraphs(config, precision);
    const resident = buildResidentGraphs(config, precision);
    const captures = capturesSteps(device.kind);
    const make = (name: string, bytes: Uint8Array, outputs: Record<string, ort.Tensor.DataLocation>, cudaGraph = false) =>
      GraphSession.create(name, bytes, { device: device.kind, threads: 1, outputs, cudaGraph });
    return {
      embed: await make('embed', graphs.embed, { x: onDevice }),
      lightning: await make('lightning', graphs.lightning, { x_out: onDevice, state_out: onDevice }),
      lightningStep: await make('lightning_step', resident.lightningStep, { x_out: onDevice, state_out: onDevice }),
      lightningCaptured: captures ? await make('lightning_captured', resident.lightningStep, { x_out: onDevice, state_out: onDevice }, true) : undefined,
      head: await make('head', graphs.head, { logits: 'cpu' }),
      project: await make('sparse_project_resident', resident.sparseProject, { q: onDevice, k: onDevice, v: onDevice, gate: onDevice, k_host: 'cpu', v_host: 'cpu' }),
      projectCaptured: captures
        ? await make('sparse_project_captured', resident.sparseProjectCaptured, {
            x_row: onDevice,
            q: onDevice,
            k: onDevice,
            v: onDevice,
            gate: onDevice,
            k_host: 'cpu',
            v_host: 'cpu',
          })
        : undefined,
      captureSparse: captures ? (tensors, capacity) => CapturedSparse.create(config, precision, tensors, capacity) : undefined,
      select: await make('sparse_select_resident', resident.sparseSelect, { selected: 'cpu' }),
      attend: await make('sparse_attend_resident', resident.sparseAttend, { x_out: onDevice, tail_keys_out: onDevice, tail_values_out: onDevice }),
      selectAttend: await make('sparse_select_attend_resident', resident.sparseSelectAttend, { x_out: onDevice, tail_keys_out: onDevice, tail_values_out: onDevice }),
      attendRows: await make('sparse_attend_rows', resident.sparseAttendRows, { x_acc_out: onDevice }),
      attendQueries: await make('sparse_attend_queries', resident.sparseAttendQueries, { x_acc_out: onDevice }),
      headLast: await make('head_last', resident.headLast, { logits: 'cpu' }),
    };
  }

  /** Moves the sequence's state onto the device. */
  static async create(parts: ResidentParts, sessions: ResidentSessions, sequence: Sequence, options: ResidentOptions): Promise<ResidentDecoder> {
    const placement = options.placement ?? 'offload';
    const dense = options.attention === 'dense';
    if (dense && placement === 'offload') throw new RangeError('dense attention reads every block each step: use placement "device"');
    const maxTokens = Math.max(options.maxTokens, sequence.length + 1);
    const decoder = new ResidentDecoder(
      parts,
      sessions,
      sequence,
      placement,
      dense,
      maxTokens,
      options.attentionBytes ?? ATTENTION_SCORE_BYTES,
      options.rowAttention ?? 'auto',
      options.sparseStep ?? 'captured',
    );
    const poolBlocks = options.poolBytes !== undefined ? decoder.blocksForBudget(options.poolBytes) : options.poolBlocks;
    try {
      await decoder.attach(poolBlocks);
    } catch (err) {
      // Out of device (or host) memory while placing the state: free what was placed, hand the
      // sequence back untouched, and say what to change. (A typed array too large is a RangeError.)
      await decoder.close().catch(() => {});
      if (!(err instanceof DeviceMemoryError || err instanceof RangeError)) throw err;
      const cause = (err instanceof Error ? err.message.split('\n')[0] : String(err)).replace(/\.$/, '');
      throw new ResidentMemoryError(
        `could not hold the decoder's state on ${parts.device.kind} (KV ${placement === 'device' ? 'all on the device' : 'offloaded'}, room for ${maxTokens} tokens): ${cause}. ` +
          (placement === 'device'
            ? 'Offload the KV to host memory, or shorten the context.'
            : `Give the KV pools less memory (--gpu-kv-mb, at most ${decoder.largestPoolBudgetMiB()} here), or shorten the context.`),
        { cause: err },
      );
    }
    return decoder;
  }

  /** Pool slots per KV head that a device-memory budget for all sparse layers' pools holds. */
  private blocksForBudget(bytes: number): number {
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
  private largestPoolBudgetMiB(): number {
    const slots = Math.floor(MAX_KV_TENSOR_BYTES / this.slotBytes);
    return Math.floor((slots * this.slotBytes * 2 * this.parts.sizes.sparseLayers.length) / 2 ** 20);
  }

  private get blockSize(): number {
    return this.parts.config.sparse.blockSize;
  }

  private checkPoolSize(slots: number): void {
    const bytes = slots * this.slotBytes;
    if (bytes > MAX_KV_TENSOR_BYTES) {
      throw new RangeError(
        `each sparse layer's K and V ${this.placement === 'device' ? 'stores' : 'pools'} would take ${(bytes / 2 ** 30).toFixed(1)} GiB apiece, over the ${MAX_KV_TENSOR_BYTES / 2 ** 30} GiB one device tensor may hold`,
      );
    }
  }

  private async attach(poolBlocks: number | undefined): Promise<void> {
    const { tensors, sizes, config } = this.parts;
    const Hk = config.numKeyValueHeads;
    const hs = sizes.sparseHeadDim;
    const B = this.blockSize;
    const { lightningHeads: H, lightningHeadDim: D } = sizes;
    for (const [layer, state] of this.sequence.lightning) {
      this.lightningStates.set(layer, await tensors.upload(f32(state.slice(), [H, D, D])));
    }
    const maxBlocks = Math.ceil(this.maxTokens / B);
    for (const [layer, cache] of this.sequence.sparse) {
      const { tailBlock, tailKeys, tailValues } = await this.deviceTail(cache);
      let pool: BlockPool | undefined;
      let poolKeys: ort.Tensor;
      let poolValues: ort.Tensor;
      let poolSlots: number;
      if (this.placement === 'device') {
        // Slot = block id: the host store's head-major layout is the pool's, with room to grow.
        poolSlots = Math.max(1, maxBlocks);
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
      // Compressed-key stores with spare rows for the whole run; filled from the host's incremental ones.
      const fineCapacity = Math.max(1, Math.floor(this.maxTokens / this.parts.fineLevel.stride));
      const coarseCapacity = Math.max(1, Math.floor(this.maxTokens / this.parts.coarseLevel.stride));
      const state: SparseLayerState = {
        layer,
        cache,
        pool,
        poolKeys,
        poolValues,
        poolSlots,
        tailKeys,
        tailValues,
        tailBlock,
        fine: await tensors.zeros([fineCapacity, Hk, hs]),
        coarse: await tensors.zeros([coarseCapacity, Hk, hs]),
        fineRows: 0,
        coarseRows: 0,
      };
      this.sparse.push(state);
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

  /**
   * Feeds `ids` after the sequence in chunks with every layer on the device and returns
   * the last position's logits [vocab]: the chunked counterpart of step(). A sparse
   * layer's new K/V rows go to the host store (the source of truth) and the blocks they
   * touch go up into the device store: at slot = block id when every block is resident;
   * with offload, each group of query rows places the union of the blocks it selected in
   * the pool (misses uploaded, the chunk's own blocks refreshed). One call is one logical
   * prefill, as in SalaModel.forward: both run the call's plan (forward-plan.ts), so
   * chunking does not change the result and neither path decides on its own.
   */
  async prefill(ids: readonly number[], options: { chunkSize?: number; signal?: AbortSignal } = {}): Promise<Float32Array> {
    if (this.closed) throw new Error('the resident decoder was closed');
    const { globalTensors } = this.parts;
    const plan = this.plan(ids, options.chunkSize);
    let x: ort.Tensor | undefined;
    try {
      for (const chunk of plan.chunks) {
        if (options.signal?.aborted) throw options.signal.reason ?? new Error('aborted');
        // The last chunk's output is needed only for the head: earlier ones go now.
        release(x);
        x = undefined;
        const count = chunk.ids.length;
        this.stats.otherBytes += count * (8 + 4);
        const embedded = (await this.sessions.embed.run({ ids: i64(chunk.ids), w_embed: globalTensors.w_embed })).x;
        x = await this.runLayers(embedded, chunk.firstPosition, count, (state, input) => this.sparseChunk(state, input, chunk));
        for (const id of chunk.ids) this.sequence.tokens.push(id);
        this.stats.prefilledTokens += count;
      }
      const logits = (await this.sessions.headLast.run({ ...pick(globalTensors, this.sessions.headLast.inputNames), x: x! })).logits;
      return floatData(logits);
    } finally {
      release(x);
      // Decoding goes on with the block now being written as its tail, re-read from the host store.
      for (const state of this.sparse) {
        this.free(state.tailKeys);
        this.free(state.tailValues);
        Object.assign(state, await this.deviceTail(state.cache));
        this.stats.otherBytes += byteLength(state.tailKeys) * 2;
      }
    }
  }

  /**
   * The plan of feeding `ids` after the sequence (the decoder's 'dense' mode included), refused
   * before anything runs when it does not fit the sizes the device state was made for.
   */
  private plan(ids: readonly number[], chunkSize?: number): ForwardPlan {
    const plan = forwardPlan(this.parts.config, this.parts.sizes, this.sequence.length, ids, { chunkSize, attention: this.dense ? 'dense' : 'auto', logits: 'last' });
    if (plan.callLength > this.maxTokens) throw new RangeError(`the resident decoder was sized for ${this.maxTokens} tokens; ${plan.callLength} do not fit`);
    return plan;
  }

  /** A sparse layer over a prefill chunk: project, store, select (as the plan says), attend in row groups. */
  private async sparseChunk(state: SparseLayerState, x: ort.Tensor, plan: ChunkPlan): Promise<ort.Tensor> {
    const { config, layerTensors } = this.parts;
    const Hk = config.numKeyValueHeads;
    const projected = await this.sessions.project.run({ ...pick(layerTensors[state.layer], this.sessions.project.inputNames), x });
    state.cache.append(floatData(projected.k_host), floatData(projected.v_host));
    const { firstPosition: first, blocks } = plan;
    const rows = plan.ids.length;
    const firstTouched = Math.floor(first / this.blockSize);
    // [Hk, rows, rawK] selected block ids (−1: none); none on the dense path, where a row attends to every block up to its own (k unused).
    const selected = plan.selection ? selectedIds(await this.select(state, projected.q, first, rows, plan.selection, blocks)) : undefined;
    const chunk: ChunkSelection = { first, rows, k: plan.selection?.rawK ?? 0, selected };
    const groups = rowGroups(chunk, {
      kvHeads: Hk,
      heads: config.numAttentionHeads,
      blockSize: this.blockSize,
      headDim: this.parts.sizes.sparseHeadDim,
      capacity: state.pool ? state.poolSlots : Infinity,
      attentionBytes: this.attentionBytes,
      rowAttention: this.rowAttention,
    });

    // The chunk's blocks hold new rows: with every block resident they go up now; in a pool, when first placed.
    const refreshed = Array.from({ length: Hk }, () => new Set<number>());
    if (!state.pool) {
      const index: number[] = [];
      const upload: { head: number; block: number }[] = [];
      for (let h = 0; h < Hk; h++) {
        for (let b = firstTouched; b < blocks; b++) {
          index.push(h, b);
          upload.push({ head: h, block: b });
        }
      }
      await this.uploadBlocks(state, index, upload);
    }
    let acc = x;
    try {
      for (const group of groups) {
        const slots = await this.placeGroup(state, group, firstTouched, refreshed);
        const session = group.perQuery ? this.sessions.attendQueries : this.sessions.attendRows;
        const feeds: Feeds = {
          ...pick(layerTensors[state.layer], session.inputNames),
          ...(group.perQuery ? this.perQueryFeeds(chunk, group, slots) : this.unionFeeds(chunk, group, slots)),
          x,
          q: projected.q,
          x_acc: acc,
          row_range: i64([group.from, group.to]),
          key_store: state.poolKeys,
          value_store: state.poolValues,
          query_positions: i64(Array.from({ length: group.to - group.from }, (_, t) => first + group.from + t)),
        };
        if (projected.gate) feeds.gate = projected.gate;
        const out = await session.run(feeds);
        this.stats.prefillAttendCalls++;
        if (acc !== x) release(acc);
        acc = out.x_acc_out;
      }
    } finally {
      for (const name of ['q', 'k', 'v', 'gate']) release(projected[name]);
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
    if (upload.length > 0) await this.uploadBlocks(state, index, upload);
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
    this.stats.otherBytes += blockIds.length * 16 + mask.byteLength + alive.byteLength + R * 8;
    return {
      block_ids: i64(blockIds, [Hk, width]),
      store_slots: i64(slotIds, [Hk, width]),
      block_mask: bool(mask, [Hk, R, width]),
      key_alive: bool(alive, [Hk, width, B]),
    };
  }

  /** Feeds of the per-row form: each row's own k blocks, ids and slots [Hk, R, k], live keys [Hk, R, k, B]. */
  private perQueryFeeds(chunk: ChunkSelection, group: RowGroup, slots: Int32Array[]): Feeds {
    const Hk = this.parts.config.numKeyValueHeads;
    const B = this.blockSize;
    const { k } = chunk;
    const R = group.to - group.from;
    const { blockIds, slotIds, columns } = perQueryFeeds(chunk, group, slots);
    const alive = new Uint8Array(Hk * R * k * B);
    const tombstones = this.sequence.deadRanges.length > 0;
    for (let h = 0; h < Hk; h++) {
      const aliveOf = tombstones ? this.sequence.aliveKeys(group.blocks[h]) : undefined;
      for (let at = h * R * k; at < (h + 1) * R * k; at++) {
        const column = columns[at];
        if (column < 0) continue; // padding: no live key
        if (aliveOf) alive.set(aliveOf.subarray(column * B, (column + 1) * B), at * B);
        else alive.fill(1, at * B, (at + 1) * B);
      }
    }
    this.stats.otherBytes += blockIds.length * 16 + alive.byteLength + R * 8;
    return {
      query_blocks: i64(blockIds, [Hk, R, k]),
      query_slots: i64(slotIds, [Hk, R, k]),
      key_alive: bool(alive, [Hk, R, k, B]),
    };
  }

  /** Frees a device tensor unless it is one of the CUDA graphs' fixed buffers (those stay with the model, or with capturedSparse). */
  private free(tensor: ort.Tensor | undefined): void {
    if (!this.captured?.owns(tensor) && !this.capturedSparse?.owns(tensor)) release(tensor);
  }

  /** A Lightning layer of a decode step through its CUDA graph; undefined (capture now off) when that run failed. */
  private async capturedLayer(captured: CapturedLightning, layer: number, x: ort.Tensor): Promise<ort.Tensor | undefined> {
    const state = this.lightningStates.get(layer)!;
    try {
      const out = await captured.run(layer, pick(this.parts.layerTensors[layer], this.sessions.lightningCaptured!.inputNames), x, state);
      this.free(state);
      this.lightningStates.set(layer, out.state);
      return out.x;
    } catch (err) {
      captured.disable(err);
      return undefined;
    }
  }

  /** A Lightning layer as a session run, over `count` rows from position `first`. */
  private async lightningLayer(layer: number, x: ort.Tensor, first: number, count: number): Promise<ort.Tensor> {
    const session = count === 1 ? this.sessions.lightningStep : this.sessions.lightning;
    const out = await session.run({
      ...pick(this.parts.layerTensors[layer], session.inputNames),
      x,
      state: this.lightningStates.get(layer)!,
      positions: f32(
        Float32Array.from({ length: count }, (_, i) => first + i),
        [count],
      ),
    });
    this.free(this.lightningStates.get(layer));
    this.lightningStates.set(layer, out.state_out);
    return out.x_out;
  }

  /**
   * Every layer over x, the hidden rows of `count` tokens from position `first`: Lightning
   * layers here (their states stay on the device; replayed as CUDA graphs when `capture`
   * and this decoder holds them), sparse layers through `sparseLayer`. Releases x and
   * every intermediate; returns the last layer's output.
   */
  private async runLayers(
    x: ort.Tensor,
    first: number,
    count: number,
    sparseLayer: (state: SparseLayerState, x: ort.Tensor) => Promise<ort.Tensor>,
    capture = false,
  ): Promise<ort.Tensor> {
    const { config } = this.parts;
    let sparseIndex = 0;
    for (let layer = 0; layer < config.numHiddenLayers; layer++) {
      let next: ort.Tensor | undefined;
      if (config.mixerTypes[layer] !== 'lightning-attn') next = await sparseLayer(this.sparse[sparseIndex++], x);
      else {
        // A captured run that fails turns capture off; the layer then runs as a session.
        if (capture && this.captured?.usable) next = await this.capturedLayer(this.captured, layer, x);
        next ??= await this.lightningLayer(layer, x, first, count);
      }
      this.free(x);
      x = next;
    }
    return x;
  }

  /** Takes the model's CUDA-graph buffers for this decoder's steps where it has them and no other decoder holds them. */
  private holdCaptured(): void {
    if (this.captured || !this.sessions.lightningCaptured) return;
    const { sizes, config, tensors } = this.parts;
    this.sessions.captured ??= new CapturedLightning(this.sessions.lightningCaptured, tensors, config.hiddenSize, [
      sizes.lightningHeads,
      sizes.lightningHeadDim,
      sizes.lightningHeadDim,
    ]);
    if (this.sessions.captured.acquire(this)) this.captured = this.sessions.captured;
  }

  /** Feeds one token after the sequence and returns its logits [vocab]. */
  async step(id: number): Promise<Float32Array> {
    if (this.closed) throw new Error('the resident decoder was closed');
    const { globalTensors } = this.parts;
    const [chunk] = this.plan([id]).chunks;
    const position = chunk.firstPosition;
    this.stats.otherBytes += 8 + 4;
    const embedded = (await this.sessions.embed.run({ ids: i64([id]), w_embed: globalTensors.w_embed })).x;
    this.holdCaptured();
    await this.captured?.begin(f32(Float32Array.of(position), [1]));
    const x = await this.runLayers(embedded, position, 1, (state, input) => this.sparseLayer(state, input, chunk), true);
    this.captured?.end();
    this.sequence.tokens.push(id);
    this.stats.steps++;
    const logits = (await this.sessions.head.run({ ...pick(globalTensors, this.sessions.head.inputNames), x })).logits;
    this.free(x);
    return floatData(logits);
  }

  /** A sparse layer over one decode token: dense over every past block, or the blocks selected, as the step's plan says. */
  private async sparseLayer(state: SparseLayerState, x: ort.Tensor, plan: ChunkPlan): Promise<ort.Tensor> {
    const { config, layerTensors } = this.parts;
    const Hk = config.numKeyValueHeads;
    const B = this.blockSize;
    const tensorsOfLayer = layerTensors[state.layer];
    const position = plan.firstPosition;
    const captured = plan.selection && this.selectsOnDevice ? await this.sparseCapture(position, plan.selection, plan.blocks) : undefined;
    // Captured: the projection writes straight into the graph's fixed buffers.
    const project = captured ? this.sessions.projectCaptured! : this.sessions.project;
    const projected = await project.run({ ...pick(tensorsOfLayer, project.inputNames), x }, captured && (await captured.projectInto(state.layer)));
    state.cache.append(floatData(projected.k_host), floatData(projected.v_host));
    const queryBlock = Math.floor(position / B);

    // The tail completed last step: it moves into the pool (device to device) and a new one starts.
    if (queryBlock !== state.tailBlock) {
      await this.flushTail(state);
      state.tailBlock = queryBlock;
    }

    if (captured) {
      const out = await this.capturedSparseLayer(captured, state, plan.selection!);
      if (out) return out;
    }
    if (plan.selection && this.selectsOnDevice) return this.selectAndAttend(state, x, projected, plan.selection, plan.blocks, position);

    let blocks: number[][];
    if (!plan.selection) {
      const past = Array.from({ length: queryBlock }, (_, b) => b);
      blocks = Array.from({ length: Hk }, () => past);
    } else {
      blocks = await this.selectBlocks(state, projected.q, position, plan.selection, plan.blocks);
    }

    // Slots of each head's blocks; misses go up in one write per layer.
    const slots: number[][] = [];
    const missIndex: number[] = [];
    const missed: { head: number; block: number }[] = [];
    for (let h = 0; h < Hk; h++) {
      if (!state.pool) {
        slots.push(blocks[h]);
        continue;
      }
      const placed = state.pool.place(h, blocks[h]);
      slots.push(placed.slots);
      for (const miss of placed.misses) {
        missIndex.push(h, miss.slot);
        missed.push({ head: h, block: miss.block });
      }
    }
    if (missed.length > 0) await this.uploadBlocks(state, missIndex, missed);

    const width = Math.max(1, ...blocks.map((b) => b.length));
    const { slotTensor, aliveTensor } = await this.blockFeeds(blocks, slots, width);
    return this.attend(this.sessions.attend, state, x, projected, position, { slots: slotTensor, key_alive: aliveTensor });
  }

  /**
   * The decoder's captured sparse step, its values for this step written (once per step):
   * undefined where capture does not apply or was turned off.
   */
  private async sparseCapture(position: number, selection: SelectionPlan, blocks: number): Promise<CapturedSparse | undefined> {
    if (this.capturedSparse === undefined) {
      const state = this.sparse[0];
      const capacity = { blocks: state.poolSlots, fineRows: state.fine.dims[0], coarseRows: state.coarse.dims[0] };
      const make = this.sparseStep === 'captured' ? this.sessions.captureSparse : undefined;
      this.capturedSparse = (await make?.(this.parts.tensors, capacity)) ?? null;
    }
    const captured = this.capturedSparse;
    if (!captured?.usable) return undefined;
    if (this.capturedPosition !== position) {
      try {
        this.stats.otherBytes += await captured.begin(position, selection, blocks, this.sequence);
      } catch (err) {
        captured.disable(err);
        return undefined;
      }
      this.capturedPosition = position;
    }
    return captured;
  }

  /** A sparse layer's selection and attention replayed (its projection already in the graph's buffers); undefined if the run failed. */
  private async capturedSparseLayer(captured: CapturedSparse, state: SparseLayerState, plan: SelectionPlan): Promise<ort.Tensor | undefined> {
    try {
      await this.appendCompressed(state, plan);
      const tail = await captured.adoptTail(state.layer, state.tailKeys, state.tailValues);
      if (tail.keys !== state.tailKeys) {
        this.free(state.tailKeys);
        this.free(state.tailValues);
        state.tailKeys = tail.keys;
        state.tailValues = tail.values;
      }
      const x = await captured.run(state.layer, pick(this.parts.layerTensors[state.layer], captured.inputNames), state);
      this.stats.selectionsOnDevice++;
      this.stats.sparseGraphRuns++;
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
    this.stats.selectionsOnDevice++;
    const { k: topK, ...selection } = await this.selectFeeds(state, projected.q, position, 1, plan);
    return this.attend(this.sessions.selectAttend, state, x, projected, position, {
      ...selection,
      top_k: topK,
      block_excluded: await this.blockMask('excluded', blocks),
      block_alive: await this.blockMask('alive', blocks),
    });
  }

  /**
   * On the device, for the blocks below `blocks`: the live keys of each ('alive', [blocks,
   * blockSize]) or which are wholly dead ('excluded', [blocks]). Uploaded when a block
   * completes or a tombstone appears, and shared by the sparse layers.
   */
  private async blockMask(kind: 'alive' | 'excluded', blocks: number): Promise<ort.Tensor> {
    const key = `${blocks}:${this.sequence.tombstoneVersion}`;
    if (this.deviceMasks?.key !== key) {
      this.releaseMasks();
      this.deviceMasks = { key };
    }
    const masks = this.deviceMasks!;
    const held = masks[kind];
    if (held) return held;
    const data = kind === 'alive' ? this.sequence.aliveKeys(Array.from({ length: blocks }, (_, b) => b)) : this.sequence.excludedBlocks(blocks);
    this.stats.otherBytes += data.byteLength;
    const mask = await this.parts.tensors.upload(bool(data, kind === 'alive' ? [blocks, this.blockSize] : [blocks]));
    masks[kind] = mask;
    return mask;
  }

  private releaseMasks(): void {
    release(this.deviceMasks?.alive);
    release(this.deviceMasks?.excluded);
    this.deviceMasks = undefined;
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
      ...pick(this.parts.layerTensors[state.layer], session.inputNames),
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
    this.stats.otherBytes += tailAlive.byteLength + tailRow.byteLength;
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
    const everyBlock = this.placement === 'device' && blocks.every((list) => list.length === width && list.every((b, i) => b === i));
    const key = `${width}:${this.sequence.tombstoneVersion}`;
    if (everyBlock && this.denseFeeds?.key === key) return this.denseFeeds;
    const slotIds = new BigInt64Array(Hk * width);
    const alive = new Uint8Array(Hk * width * B);
    for (let h = 0; h < Hk; h++) {
      slots[h].forEach((slot, i) => (slotIds[h * width + i] = BigInt(slot)));
      alive.set(this.sequence.aliveKeys(blocks[h]), h * width * B);
    }
    this.stats.otherBytes += slotIds.byteLength + alive.byteLength;
    const feeds = { slotTensor: i64(slotIds, [Hk, width]), aliveTensor: bool(alive, [Hk, width, B]) };
    if (!everyBlock || width < 64) return feeds;
    if (this.denseFeeds) {
      release(this.denseFeeds.slotTensor);
      release(this.denseFeeds.aliveTensor);
    }
    this.denseFeeds = { key, slotTensor: await tensors.upload(feeds.slotTensor), aliveTensor: await tensors.upload(feeds.aliveTensor) };
    return this.denseFeeds;
  }

  /** Writes the completed tail block into the pool (no host transfer). */
  private async flushTail(state: SparseLayerState): Promise<void> {
    const { tensors, config } = this.parts;
    const Hk = config.numKeyValueHeads;
    const index = new BigInt64Array(Hk * 2);
    for (let h = 0; h < Hk; h++) {
      const slot = state.pool ? state.pool.insert(h, state.tailBlock) : state.tailBlock;
      if (slot >= state.poolSlots) throw new RangeError(`block ${state.tailBlock} does not fit the device pool of ${state.poolSlots} blocks`);
      index[2 * h] = BigInt(h);
      index[2 * h + 1] = BigInt(slot);
    }
    this.stats.otherBytes += index.byteLength;
    const indices = i64(index, [Hk, 2]);
    state.poolKeys = await tensors.scatter(state.poolKeys, indices, state.tailKeys);
    state.poolValues = await tensors.scatter(state.poolValues, indices, state.tailValues);
  }

  private async uploadBlocks(state: SparseLayerState, index: number[], missed: { head: number; block: number }[]): Promise<void> {
    const { tensors, sizes } = this.parts;
    const hs = sizes.sparseHeadDim;
    const B = this.blockSize;
    const keys = new Float32Array(missed.length * B * hs);
    const values = new Float32Array(keys.length);
    // From host memory or, where the store spilled, from its file.
    missed.forEach(({ head, block }, i) => state.cache.readBlocks(head, [block], keys, values, i));
    const indices = i64(index, [missed.length, 2]);
    this.stats.blockBytes += keys.byteLength + values.byteLength;
    this.stats.otherBytes += byteLength(indices);
    state.poolKeys = await tensors.scatter(state.poolKeys, indices, f32(keys, [missed.length, B, hs]));
    state.poolValues = await tensors.scatter(state.poolValues, indices, f32(values, [missed.length, B, hs]));
  }

  /** InfLLM-V2 selection on the device for one decode query; returns each head's past blocks (the tail excluded). */
  private async selectBlocks(state: SparseLayerState, q: ort.Tensor, position: number, selection: SelectionPlan, blocks: number): Promise<number[][]> {
    const Hk = this.parts.config.numKeyValueHeads;
    const k = selection.rawK;
    const selected = await this.select(state, q, position, 1, selection, blocks);
    const tail = Math.floor(position / this.blockSize);
    const perHead: number[][] = [];
    for (let h = 0; h < Hk; h++) {
      const mine: number[] = [];
      for (let j = 0; j < k; j++) {
        const block = Number(selected[h * k + j]);
        if (block >= 0 && block !== tail) mine.push(block);
      }
      perHead.push(mine);
    }
    return perHead;
  }

  /**
   * Stage 1 + pooling + top-k on the device for `rows` queries from `firstPosition`,
   * over the layer's compressed keys (new ones go up first), fed as the plan says: [Hk, rows, rawK], −1 = none.
   */
  private async select(state: SparseLayerState, q: ort.Tensor, firstPosition: number, rows: number, plan: SelectionPlan, blocks: number): Promise<BigInt64Array> {
    const feeds = await this.selectFeeds(state, q, firstPosition, rows, plan);
    const out = await this.sessions.select.run({ ...feeds, block_excluded: await this.blockMask('excluded', blocks) });
    return int64Data(out.selected);
  }

  /** The selection graph's feeds but block_excluded, the layer's new compressed keys uploaded first. */
  private async selectFeeds(state: SparseLayerState, q: ort.Tensor, firstPosition: number, rows: number, plan: SelectionPlan): Promise<Feeds> {
    await this.appendCompressed(state, plan);
    const { fineCount, coarseCount } = plan;
    const positions = Array.from({ length: rows }, (_, i) => firstPosition + i);
    this.stats.otherBytes += 8 * (3 * rows + 10);
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

  /** Uploads the layer's compressed keys that the host store has and the device store not yet (in place). */
  private async appendCompressed(state: SparseLayerState, plan: SelectionPlan): Promise<void> {
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
      const indices = i64(
        Array.from({ length: to - from }, (_, i) => from + i),
        [to - from, 1],
      );
      this.stats.otherBytes += (to - from) * rowSize * 4 + byteLength(indices);
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

  snapshot(): ResidentStats {
    let hits = 0;
    let misses = 0;
    let deviceKvBytes = 0;
    for (const state of this.sparse) {
      hits += state.pool?.hits ?? 0;
      misses += state.pool?.misses ?? 0;
      deviceKvBytes += byteLength(state.poolKeys) * 2 + byteLength(state.tailKeys) * 2 + byteLength(state.fine) + byteLength(state.coarse);
    }
    return {
      steps: this.stats.steps,
      prefilledTokens: this.stats.prefilledTokens,
      prefillAttendCalls: this.stats.prefillAttendCalls,
      hits,
      misses,
      blockBytes: this.stats.blockBytes,
      otherBytes: this.stats.otherBytes,
      deviceKvBytes,
      selectionsOnDevice: this.stats.selectionsOnDevice,
      sparseGraphRuns: this.stats.sparseGraphRuns,
    };
  }

  /**
   * Copies the Lightning states into the sequence, the decoder staying open: afterwards
   * sequence.checkpoint() is valid (the K/V and tokens are always there already).
   */
  async syncStates(): Promise<void> {
    if (this.closed) throw new Error('the resident decoder was closed');
    await this.copyStatesOut();
  }

  private async copyStatesOut(): Promise<void> {
    for (const [layer, tensor] of this.lightningStates) this.sequence.lightning.get(layer)!.set(floatData(await this.parts.tensors.download(tensor)));
  }

  /** Brings the Lightning states back into the sequence and frees the device state (the sessions stay with the model). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.copyStatesOut();
    for (const tensor of this.lightningStates.values()) this.free(tensor);
    this.captured?.yield(this);
    release(this.denseFeeds?.slotTensor);
    release(this.denseFeeds?.aliveTensor);
    this.releaseMasks();
    for (const state of this.sparse) {
      for (const tensor of [state.poolKeys, state.poolValues, state.tailKeys, state.tailValues, state.fine, state.coarse]) this.free(tensor);
    }
    await this.capturedSparse?.release();
  }
}
