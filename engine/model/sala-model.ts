// A MiniCPM-SALA model on onnxruntime: the shared layer graphs, each layer's
// weights as tensors, and the forward pass over a Sequence (docs/spec/minicpm-sala.md,
// "Model wrapper"):
//   x = embed·scale_emb → per layer: lightning or sparse mixer + MLP → head.
// Long inputs run in chunks; a call is one logical prefill (or a decode step when
// it carries one token), so chunking never changes the result. What a call does is
// its plan (forward-plan.ts), shared with the resident decoder: this is its host executor.
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import {
  keepsTensorsOnDevice,
  resolveDevice,
  resolvePrecision,
  type DeviceRequest,
  type PrecisionRequest,
  type ResolvedDevice,
  type ResolvedPrecision,
} from '../runtime/device.js';
import type { Int4Matrix } from '../runtime/int4.js';
import { DeviceMemoryError, GraphSession, bool, f32, floatData, i64, int64Data, type Feeds } from '../runtime/session.js';
import { SparseKvCache, type SpillOptions } from '../kv/sparse-kv-cache.js';
import { Sequence } from './sequence.js';
import { blocksPerHead, type Level } from '../kv/selection.js';
import { derivedSizes, loadConfig, type DerivedSizes, type SalaConfig } from './config.js';
import { buildGraphs } from './graphs.js';
import { loadWeights, type WeightMap } from './weights.js';
import { DeviceTensors } from '../runtime/device-tensors.js';
import { bakeSessions, type BakedSessions } from './baked-sessions.js';
import { placeWeights, type LayerTensors, type PlacedWeights } from './device-weights.js';
import { ResidentDecoder, ResidentMemoryError, type ResidentOptions } from './resident-decoder.js';
import { feedsFor, residentSessions, type ResidentSessions } from './resident-sessions.js';
import { DEFAULT_CHUNK_SIZE, ModelInputError, compressionLevels, forwardPlan, type ChunkPlan, type ChunkSelection, type PlanOptions } from './forward-plan.js';

export interface ModelOptions {
  device?: DeviceRequest;
  /** onnxruntime intra-op threads for prefill (0 = one per core). */
  threads?: number;
  /** Threads for single-token decode steps (default 1). */
  decodeThreads?: number;
  /**
   * Storage and product precision of the large matrices ('auto': fp16 on a GPU that
   * runs fp16 products, fp32 on the CPU). Norms, attention, states and logits stay fp32.
   */
  precision?: PrecisionRequest;
  /**
   * Host memory for a sequence's sparse-layer K/V (all layers together). Past it, each
   * layer's oldest blocks spill to a file under `spillDir` (default the OS temp dir) and
   * are read back on demand. Default: 40% of physical memory; 0 or Infinity: never spill.
   */
  hostKvBytes?: number;
  spillDir?: string;
  /**
   * A weight's int4 blocks made by an earlier load (a converted-form cache), instead of
   * quantizing it again; `onInt4` sees each weight quantized here, so a caller can keep it.
   */
  int4Blocks?: (name: string) => Int4Matrix | undefined;
  onInt4?: (name: string, blocks: Int4Matrix) => void;
  /**
   * One session per layer with that layer's weights baked in as initializers, instead of
   * one session per layer type fed the weights on every run. Default: on CUDA when its
   * sessions take every input from host memory (no binding addon: see keepsTensorsOnDevice).
   */
  bakeWeights?: boolean;
}

export interface FeedOptions {
  chunkSize?: number;
  signal?: AbortSignal;
}

/** Feeds ids after a sequence (SalaModel.feeder): on a GPU through a resident decoder, which the sequence waits for until close(). */
export interface Feeder {
  /** Whether the ids go through a resident decoder (a piece then costs far less than on the host). */
  readonly onDevice: boolean;
  feed(ids: readonly number[], options?: FeedOptions): Promise<void>;
  /** Brings the state into the sequence, the feeder staying open (before sequence.checkpoint()). */
  sync(): Promise<void>;
  /** Brings the state into the sequence and frees the device's copy. */
  close(): Promise<void>;
}

/** The fewest ids SalaModel.feeder sends through a resident decoder (see there). */
export const FEED_ON_DEVICE_MIN_TOKENS = 256;

/**
 * Device memory a feeder's KV block pools may take (all sparse layers, K and V): enough to
 * hold every block of a context up to it, so a feed uploads each block it selects once
 * instead of evicting and re-uploading from a step-sized pool (measured on an H200, default
 * model, 100K tokens: 12.8 s of a 38.8 s index went to those uploads).
 */
const FEED_POOL_BYTES = 2 ** 30;

/** Share of physical memory one sequence's host K/V may take before it spills to disk. */
const DEFAULT_HOST_KV_SHARE = 0.4;

/** Blocks selected by one sparse layer for a run of queries: [Hk, T, k], ascending, −1 = none. */
export interface SelectionRecord {
  layer: number;
  firstPosition: number;
  queries: number;
  k: number;
  selected: Int32Array;
}

/** Which positions get logits and the chunk size (see PlanOptions); the host path always follows dense_len. */
export interface ForwardOptions extends Pick<PlanOptions, 'logits' | 'chunkSize' | 'topk'> {
  /** Called with the blocks each sparse layer selected (sparse path only). */
  onSelection?: (record: SelectionRecord) => void;
  signal?: AbortSignal;
}

// Kept here for existing importers; they live in forward-plan.ts, which the resident decoder imports too.
export { DEFAULT_CHUNK_SIZE, ModelInputError, Sequence };

/**
 * Below this size '--device auto' keeps the CPU: on one H200 the 13M default model decodes at
 * 8–11 ms/token through CUDA and 38–58 through WebGPU against 5 on the CPU, while the 9B shape
 * decodes at 87–109 ms/token through CUDA against ~2.4 s on the CPU (docs/benchmarks/gpu.md).
 */
export const AUTO_GPU_MIN_PARAMETERS = 1e9;

const GRAPH_FILES = {
  embed: 'embed',
  lightning: 'lightning',
  sparseProject: 'sparse_project',
  sparseSelect: 'sparse_select',
  sparseAttend: 'sparse_attend',
  head: 'head',
} as const;
type GraphName = keyof typeof GRAPH_FILES;

/** One shared session per graph, the weights fed as inputs; with baked weights only selection's (it has none). */
type Sessions = Partial<Record<GraphName, GraphSession>>;

export class SalaModel {
  readonly sizes: DerivedSizes;
  private residentSessions?: Promise<ResidentSessions>;
  private readonly fineLevel: Level;
  private readonly coarseLevel: Level;
  /** Each sparse layer's K/V spill budget, if any (see ModelOptions.hostKvBytes). */
  private spill?: SpillOptions;
  /**
   * Gather buffers for attention over host-gathered blocks (on a GPU, or once blocks
   * spilled), reused: fresh zero-filled ones per call cost page faults and GC (the 9B
   * shape gathers ~2 GB per 256-token chunk). A free list, as forwards may interleave.
   */
  private readonly gatherBuffers: { keys: Float32Array; values: Float32Array }[] = [];

  private constructor(
    readonly config: SalaConfig,
    readonly device: ResolvedDevice,
    readonly precision: ResolvedPrecision,
    private readonly prefillSessions: Sessions,
    private readonly decodeSessions: Sessions,
    private readonly layerTensors: LayerTensors[],
    private readonly globalTensors: LayerTensors,
    private readonly deviceTensors: DeviceTensors,
    private readonly baked?: BakedSessions,
  ) {
    this.sizes = derivedSizes(config);
    const levels = compressionLevels(config);
    this.fineLevel = levels.fine;
    this.coarseLevel = levels.coarse;
  }

  /** Loads config.json and the safetensors weights of a model directory. */
  static async load(modelDir: string, options: ModelOptions = {}): Promise<SalaModel> {
    const config = await loadConfig(modelDir);
    const { weights } = await loadWeights(modelDir, config);
    return SalaModel.create(config, weights, options);
  }

  /** Builds the graphs and sessions for in-memory weights (HF names). */
  static async create(config: SalaConfig, weights: WeightMap, options: ModelOptions = {}): Promise<SalaModel> {
    const parameters = [...new Set(weights.values())].reduce((n, w) => n + w.length, 0);
    const device =
      options.device === 'auto' && parameters < AUTO_GPU_MIN_PARAMETERS
        ? {
            kind: 'cpu' as const,
            reason: `auto: a ${(parameters / 1e6).toFixed(0)}M-parameter model decodes faster on the CPU than through a GPU provider, whose per-run cost dominates small models (docs/benchmarks/gpu.md)`,
          }
        : await resolveDevice(options.device ?? 'cpu');
    const precision = await resolvePrecision(options.precision ?? 'auto', device.kind);
    const graphs = buildGraphs(config, precision.kind);
    const bake = options.bakeWeights ?? (device.kind === 'cuda' && !keepsTensorsOnDevice('cuda'));
    // Baked weights run in per-layer sessions (bakeSessions): only selection, which has no weights, is shared.
    const shared: readonly GraphName[] = bake ? ['sparseSelect'] : (Object.keys(GRAPH_FILES) as GraphName[]);
    const createSessions = async (threads: number | undefined): Promise<Sessions> => {
      const sessions: Sessions = {};
      for (const name of shared) sessions[name] = await GraphSession.create(GRAPH_FILES[name], graphs[name], { device: device.kind, threads });
      return sessions;
    };
    // Weights are graph inputs, so a second set of sessions costs no weight memory:
    // single-token steps are too small to gain from threads and lose to their wake-ups.
    const prefillSessions = await createSessions(options.threads);
    const decodeSessions = await createSessions(options.decodeThreads ?? 1);
    // On a GPU every weight is uploaded once and stays there; each run then feeds the device copy.
    const deviceTensors = new DeviceTensors(device.kind);
    let placed: PlacedWeights;
    try {
      placed = await placeWeights(config, weights, precision, deviceTensors, options);
    } catch (err) {
      await deviceTensors.release();
      await Promise.all([...Object.values(prefillSessions), ...Object.values(decodeSessions)].map((session) => session.release()));
      throw err;
    }
    const { layerTensors, globalTensors } = placed;
    let baked: BakedSessions | undefined;
    if (bake) {
      try {
        baked = await bakeSessions(config, graphs, layerTensors, globalTensors, { device: device.kind, threads: options.threads });
      } catch (err) {
        await deviceTensors.release();
        await Promise.all([...Object.values(prefillSessions), ...Object.values(decodeSessions)].map((session) => session.release()));
        if (!(err instanceof DeviceMemoryError)) throw err;
        // Baked weights go to the device as their sessions are created: the same advice as a failed upload.
        throw new DeviceMemoryError(
          `the model's weights do not fit in ${device.kind} memory (${precision.kind}; ${err.message.split('\n')[0]}). ` +
            (precision.kind === 'int4'
              ? 'Run it on the CPU (--device cpu).'
              : 'Use 4-bit weights (--precision int4, about a quarter of fp16), or run it on the CPU (--device cpu).'),
          { cause: err },
        );
      }
    }
    const model = new SalaModel(config, device, precision, prefillSessions, decodeSessions, layerTensors, globalTensors, deviceTensors, baked);
    model.setHostKvBudget(options.hostKvBytes ?? os.totalmem() * DEFAULT_HOST_KV_SHARE, options.spillDir);
    return model;
  }

  /** Sets the host-memory budget of sequences made from now on (0 or Infinity: never spill). */
  setHostKvBudget(bytes: number, dir = os.tmpdir()): void {
    const layers = Math.max(1, this.sizes.sparseLayers.length);
    this.spill = bytes > 0 && Number.isFinite(bytes) ? { memoryBytes: Math.floor(bytes / layers), dir } : undefined;
  }

  private sessionsFor(tokens: number): Sessions {
    return tokens <= 1 ? this.decodeSessions : this.prefillSessions;
  }

  /** The session that runs `name` for a call of `tokens` rows (at `layer`, for the layer graphs). */
  private graph(name: GraphName, tokens: number, layer = -1): GraphSession {
    if (this.baked && name !== 'sparseSelect') {
      const session = name === 'embed' || name === 'head' ? this.baked[name] : this.baked.layers[layer]?.[name];
      if (!session) throw new Error(`layer ${layer} has no ${name} graph`);
      return session;
    }
    const session = this.sessionsFor(tokens)[name];
    if (!session) throw new Error(`no shared ${name} session (the weights are baked into per-layer sessions)`);
    return session;
  }

  /** Frees the onnxruntime sessions; the model cannot run afterwards. */
  async release(): Promise<void> {
    const all = [...Object.values(this.prefillSessions), ...Object.values(this.decodeSessions)];
    if (this.baked) {
      all.push(this.baked.embed, this.baked.head, ...this.baked.layers.flatMap((layer) => Object.values(layer)));
      all.push(...[...this.baked.lightningGroups.values()].map((group) => group.session));
    }
    if (this.residentSessions) {
      const sessions = await this.residentSessions;
      sessions.captured?.release();
      all.push(...Object.values(sessions).filter((session): session is GraphSession => session instanceof GraphSession));
    }
    await Promise.all(all.map((session) => session.release()));
    await this.deviceTensors.release();
  }

  /**
   * A decoder that continues `sequence` one token at a time with its state kept on
   * the device (KV blocks offloaded to host memory with a device block pool, or all
   * on the device), in the model's precision (its weights are uploaded once, in that
   * precision, for prefill and decode alike). The sequence must not be used by
   * forward() until it is closed.
   */
  async residentDecoder(sequence: Sequence, options: ResidentOptions): Promise<ResidentDecoder> {
    if (this.baked) throw new Error('a model with its weights baked into per-layer sessions has no resident decoder (its weights are not device tensors)');
    this.residentSessions ??= residentSessions(this.config, this.device, this.precision.kind);
    return ResidentDecoder.create(
      {
        config: this.config,
        sizes: this.sizes,
        device: this.device,
        layerTensors: this.layerTensors,
        globalTensors: this.globalTensors,
        fineLevel: this.fineLevel,
        coarseLevel: this.coarseLevel,
        tensors: this.deviceTensors,
      },
      await this.residentSessions,
      sequence,
      options,
    );
  }

  newSequence(expectedTokens = 0): Sequence {
    const { kernelSize, kernelStride, blockSize } = this.config.sparse;
    const sparse = new Map<number, SparseKvCache>();
    for (const layer of this.sizes.sparseLayers) {
      sparse.set(
        layer,
        new SparseKvCache({ kvHeads: this.config.numKeyValueHeads, headDim: this.sizes.sparseHeadDim, blockSize, kernelSize, kernelStride }, expectedTokens, this.spill),
      );
    }
    const stateSize = this.sizes.lightningHeads * this.sizes.lightningHeadDim * this.sizes.lightningHeadDim;
    const lightning = new Map<number, Float32Array>();
    for (const layer of this.sizes.lightningLayers) lightning.set(layer, new Float32Array(stateSize));
    return new Sequence(sparse, lightning, blockSize);
  }

  /** Why feeding through a resident decoder was turned off (it failed once), if it was. */
  private deviceFeedFailure?: string;

  /** Whether feed() runs long feeds through a resident decoder (a GPU that keeps tensors between runs). */
  get feedsOnDevice(): boolean {
    return keepsTensorsOnDevice(this.device.kind) && !this.baked && this.deviceFeedFailure === undefined;
  }

  /** After a resident feed failed (not aborted, not out of memory): feeds run on the host executor from now on. */
  private deviceFeedFailed(err: unknown, signal?: AbortSignal): void {
    if (signal?.aborted || this.deviceFeedFailure !== undefined) return;
    this.deviceFeedFailure = (err instanceof Error ? err.message : String(err)).split('\n')[0];
    process.stderr.write(`panorama: feeding through the ${this.device.kind} decoder failed (${this.deviceFeedFailure}); feeding through the host executor from now on\n`);
  }

  /**
   * A feeder for ids after the sequence where only the state matters (indexing a
   * workspace, re-feeding a file). With feedsOnDevice, and at least FEED_ON_DEVICE_MIN_TOKENS
   * to feed, it holds a resident decoder, so every layer of the prefill runs on the
   * device; otherwise (or when the decoder's state does not fit the device) it calls
   * forward(). Opening a decoder uploads the sequence's compressed keys and Lightning
   * states, a cost that grows with the context: short feeds (an edit's few tokens) skip it.
   * The threshold is a choice, not a measured crossover. close() hands the state back.
   */
  async feeder(sequence: Sequence, tokens: number): Promise<Feeder> {
    if (this.feedsOnDevice && tokens >= FEED_ON_DEVICE_MIN_TOKENS) {
      try {
        const maxTokens = sequence.length + tokens;
        const { blockSize } = this.config.sparse;
        const slotBytes = blockSize * this.sizes.kvBytesPerToken;
        const poolBlocks = Math.min(Math.ceil(maxTokens / blockSize), Math.floor(FEED_POOL_BYTES / slotBytes));
        const decoder = await this.residentDecoder(sequence, { placement: 'offload', maxTokens, poolBlocks });
        const feed = async (ids: readonly number[], options: FeedOptions = {}) => {
          try {
            if (ids.length > 0) await decoder.prefill(ids, options);
          } catch (err) {
            // The caller rolls the sequence back (feedTokens); later feeds take the host executor.
            this.deviceFeedFailed(err, options.signal);
            throw err;
          }
        };
        return {
          onDevice: true,
          feed,
          sync: () => decoder.syncStates(),
          close: () => decoder.close(),
        };
      } catch (err) {
        // Nothing is fed yet: the host executor takes this feed (and, unless memory was short, all later ones).
        if (!(err instanceof ResidentMemoryError)) this.deviceFeedFailed(err);
      }
    }
    return {
      onDevice: false,
      feed: async (ids, options) => void (ids.length > 0 && (await this.forward(sequence, ids, { logits: 'last', ...options }))),
      sync: async () => {},
      close: async () => {},
    };
  }

  /** Feeds ids after the sequence through a feeder (see there) opened and closed for this call. */
  async feed(sequence: Sequence, ids: readonly number[], options: FeedOptions = {}): Promise<void> {
    const feeder = await this.feeder(sequence, ids.length);
    try {
      await feeder.feed(ids, options);
    } finally {
      await feeder.close();
    }
  }

  /**
   * Feeds `ids` after what `sequence` holds and returns logits [rows, vocab]
   * for the positions options.logits names. One call is one logical forward: its
   * plan (forward-plan.ts) decides the chunks, dense or sparse attention and the
   * selection feeds for the whole call; this runs it on the host.
   */
  async forward(sequence: Sequence, ids: readonly number[], options: ForwardOptions = {}): Promise<Float32Array> {
    const plan = forwardPlan(this.config, this.sizes, sequence.length, ids, { logits: options.logits, chunkSize: options.chunkSize, topk: options.topk });
    const hidden: Float32Array[] = [];
    const d = this.config.hiddenSize;

    for (const chunk of plan.chunks) {
      if (options.signal?.aborted) throw options.signal.reason ?? new Error('aborted');
      const tokens = chunk.ids.length;
      const embed = this.graph('embed', tokens);
      const embedded = await embed.run({ ...feedsFor(this.globalTensors, embed.inputNames), ids: i64(chunk.ids) });
      let x = floatData(embedded.x);
      for (let layer = 0; layer < this.config.numHiddenLayers;) {
        const group = this.baked?.lightningGroups.get(layer);
        if (group) {
          x = await this.lightningGroup(sequence, group, x, chunk.firstPosition, tokens);
          layer += group.layers.length;
          continue;
        }
        x =
          this.config.mixerTypes[layer] === 'lightning-attn'
            ? await this.lightningLayer(sequence, layer, x, chunk.firstPosition, tokens)
            : await this.sparseLayer(sequence, layer, x, chunk, options.onSelection);
        layer++;
      }
      for (const id of chunk.ids) sequence.tokens.push(id);
      if (chunk.logitsFrom !== undefined) hidden.push(x.subarray(chunk.logitsFrom * d, tokens * d));
    }

    const rows = new Float32Array(plan.logitRows * d);
    let offset = 0;
    for (const part of hidden) {
      rows.set(part, offset);
      offset += part.length;
    }
    const head = this.graph('head', plan.logitRows);
    const out = await head.run({ ...feedsFor(this.globalTensors, head.inputNames), x: f32(rows, [plan.logitRows, d]) });
    return floatData(out.logits);
  }

  /** Lightning decoder layer (spec, "Lightning layer"): one graph call carrying the fp32 state. */
  private async lightningLayer(sequence: Sequence, layer: number, x: Float32Array, firstPosition: number, tokens: number): Promise<Float32Array> {
    const state = sequence.lightning.get(layer);
    if (!state) throw new Error(`layer ${layer} has no lightning state`);
    const positions = Float32Array.from({ length: tokens }, (_, i) => firstPosition + i);
    const { lightningHeads: H, lightningHeadDim: D } = this.sizes;
    const session = this.graph('lightning', tokens, layer);
    const out = await session.run({
      ...feedsFor(this.layerTensors[layer], session.inputNames),
      x: f32(x, [tokens, this.config.hiddenSize]),
      state: f32(state, [H, D, D]),
      positions: f32(positions, [tokens]),
    });
    state.set(floatData(out.state_out));
    return floatData(out.x_out);
  }

  /** Consecutive Lightning layers in one run of their chained session (baked weights only): x stays on the device between them. */
  private async lightningGroup(
    sequence: Sequence,
    group: { session: GraphSession; layers: number[] },
    x: Float32Array,
    firstPosition: number,
    tokens: number,
  ): Promise<Float32Array> {
    const { lightningHeads: H, lightningHeadDim: D } = this.sizes;
    const feeds: Feeds = {
      x: f32(x, [tokens, this.config.hiddenSize]),
      positions: f32(
        Float32Array.from({ length: tokens }, (_, i) => firstPosition + i),
        [tokens],
      ),
    };
    const states = group.layers.map((layer) => {
      const state = sequence.lightning.get(layer);
      if (!state) throw new Error(`layer ${layer} has no lightning state`);
      feeds[`l${layer}_state`] = f32(state, [H, D, D]);
      return state;
    });
    const out = await group.session.run(feeds);
    group.layers.forEach((layer, i) => states[i].set(floatData(out[`l${layer}_state_out`])));
    return floatData(out.x_out);
  }

  /** Sparse decoder layer (spec, "Sparse layer, prefill" / "single-token decode"): project, append K/V, select blocks (as the plan says), attend. */
  private async sparseLayer(sequence: Sequence, layer: number, x: Float32Array, chunk: ChunkPlan, onSelection?: (record: SelectionRecord) => void): Promise<Float32Array> {
    const { firstPosition, selection: plan } = chunk;
    const tokens = chunk.ids.length;
    const cache = sequence.sparse.get(layer);
    if (!cache) throw new Error(`layer ${layer} has no KV cache`);
    const tensors = this.layerTensors[layer];
    const d = this.config.hiddenSize;
    const Hk = this.config.numKeyValueHeads;
    const project = this.graph('sparseProject', tokens, layer);
    const projected = await project.run({ ...feedsFor(tensors, project.inputNames), x: f32(x, [tokens, d]) });
    cache.append(floatData(projected.k), floatData(projected.v));
    if (cache.blockCount !== chunk.blocks) throw new Error(`layer ${layer} holds ${cache.blockCount} blocks; the plan expects ${chunk.blocks}`);

    if (!plan) {
      const everyBlock = Array.from({ length: chunk.blocks }, (_, b) => b);
      const perHead = Array.from({ length: Hk }, () => everyBlock);
      const mask = new Uint8Array(Hk * tokens * everyBlock.length).fill(1);
      return this.attend(sequence, cache, layer, x, projected, firstPosition, 0, tokens, { blockIds: perHead, width: everyBlock.length, mask });
    }
    const selection = await this.selectBlocks(sequence, cache, projected.q, chunk, plan);
    if (onSelection) onSelection({ layer, firstPosition, queries: tokens, k: selection.k, selected: selection.padded });
    // Attend one query block at a time: queries of one block select nearly the same
    // blocks, so each group gathers little more than its own selection.
    const { blockSize } = this.config.sparse;
    const out = new Float32Array(tokens * d);
    for (let start = 0; start < tokens;) {
      const end = Math.min(tokens, (Math.floor((firstPosition + start) / blockSize) + 1) * blockSize - firstPosition);
      const rows = end - start;
      const groupSelection = new BigInt64Array(Hk * rows * selection.rawK);
      for (let h = 0; h < Hk; h++) {
        groupSelection.set(selection.raw.subarray((h * tokens + start) * selection.rawK, (h * tokens + end) * selection.rawK), h * rows * selection.rawK);
      }
      out.set(await this.attend(sequence, cache, layer, x, projected, firstPosition, start, end, blocksPerHead(groupSelection, Hk, rows, selection.rawK)), start * d);
      start = end;
    }
    return out;
  }

  /**
   * Block-sparse attention + gate + o_proj + MLP for queries [start, end) of this
   * call, each KV head over its own blocks (mask [Hk, end − start, width]).
   */
  private async attend(
    sequence: Sequence,
    cache: SparseKvCache,
    layer: number,
    x: Float32Array,
    projected: Record<string, ort.Tensor>,
    firstPosition: number,
    start: number,
    end: number,
    blocks: { blockIds: number[][]; width: number; mask: Uint8Array },
  ): Promise<Float32Array> {
    const d = this.config.hiddenSize;
    const Hk = this.config.numKeyValueHeads;
    const H = this.config.numAttentionHeads;
    const hs = this.sizes.sparseHeadDim;
    const { blockSize } = this.config.sparse;
    const rows = end - start;
    const { blockIds, width, mask } = blocks;
    const ids = new BigInt64Array(Hk * width).fill(-1n);
    const slots = new BigInt64Array(Hk * width); // padding reads slot 0, masked
    const alive = new Uint8Array(Hk * width * blockSize);
    // On the CPU, the whole store while it is all in memory (the graph gathers: no copy); else
    // just these blocks, gathered here from memory and the spill file. On a GPU the whole store
    // would be uploaded on every call (a prefill chunk's cost grew with the context: 1.8 s of
    // 2.0 at 8K, 3.4 of 3.8 at 128K for the default model on the H100): the blocks only.
    const inMemory = this.device.kind === 'cpu' ? cache.store() : undefined;
    const floats = Hk * width * blockSize * hs;
    const gathered = inMemory ? undefined : this.takeGatherBuffer(floats);
    // (Padding slots keep an earlier call's values: they are masked out like any padding.)
    const store = inMemory ?? {
      keys: gathered?.keys.subarray(0, floats) ?? new Float32Array(0),
      values: gathered?.values.subarray(0, floats) ?? new Float32Array(0),
      capacityBlocks: width,
    };
    for (let h = 0; h < Hk; h++) {
      blockIds[h].forEach((block, i) => {
        ids[h * width + i] = BigInt(block);
        slots[h * width + i] = BigInt(inMemory ? Math.max(block, 0) : i);
      });
      alive.set(sequence.aliveKeys(blockIds[h]), h * width * blockSize);
      if (!inMemory) cache.readBlocks(h, blockIds[h], store.keys, store.values, h * width);
    }
    const allRows = start === 0 && end * d === x.length;
    const sliceRows = (tensor: ort.Tensor, rowWidth: number): ort.Tensor =>
      allRows ? tensor : f32(floatData(tensor).subarray(start * rowWidth, end * rowWidth), [rows, ...tensor.dims.slice(1)]);
    const session = this.graph('sparseAttend', rows, layer);
    const feeds: Feeds = {
      ...feedsFor(this.layerTensors[layer], session.inputNames),
      x: f32(allRows ? x : x.subarray(start * d, end * d), [rows, d]),
      q: sliceRows(projected.q, H * hs),
      key_store: f32(store.keys, [Hk, store.capacityBlocks, blockSize, hs]),
      value_store: f32(store.values, [Hk, store.capacityBlocks, blockSize, hs]),
      block_ids: i64(ids, [Hk, width]),
      store_slots: i64(slots, [Hk, width]),
      block_mask: bool(mask, [Hk, rows, width]),
      key_alive: bool(alive, [Hk, width, blockSize]),
      query_positions: i64(Array.from({ length: rows }, (_, i) => firstPosition + start + i)),
    };
    if (projected.gate) feeds.gate = sliceRows(projected.gate, H * hs);
    try {
      const out = await session.run(feeds);
      return floatData(out.x_out);
    } finally {
      if (gathered) this.gatherBuffers.push(gathered);
    }
  }

  /** A gather buffer of at least `floats` floats, reused when one is free and big enough (given back with gatherBuffers.push). */
  private takeGatherBuffer(floats: number): { keys: Float32Array; values: Float32Array } {
    const reused = this.gatherBuffers.pop();
    return reused && reused.keys.length >= floats ? reused : { keys: new Float32Array(floats), values: new Float32Array(floats) };
  }

  /** InfLLM-V2 stage 1 + pooling + top-k for the queries of a chunk (graph sparse_select), fed as the plan says. */
  private async selectBlocks(sequence: Sequence, cache: SparseKvCache, q: ort.Tensor, chunk: ChunkPlan, plan: ChunkSelection) {
    const { fine, coarse } = cache.compressedKeys();
    const Hk = this.config.numKeyValueHeads;
    const hs = this.sizes.sparseHeadDim;
    const rowSize = Hk * hs;
    const { k, rawK, fineCount, coarseCount } = plan;
    if (fine.length !== fineCount * rowSize || coarse.length !== coarseCount * rowSize) {
      throw new Error(`the KV cache holds ${fine.length / rowSize}/${coarse.length / rowSize} compressed keys; the plan expects ${fineCount}/${coarseCount}`);
    }
    const tokens = chunk.ids.length;
    // A level with no complete window yet still needs one (masked) row for the graph.
    const nonEmpty = (data: Float32Array) => (data.length > 0 ? data : new Float32Array(rowSize));
    const out = await this.graph('sparseSelect', tokens).run({
      q,
      c1: f32(nonEmpty(fine), [Math.max(1, fineCount), Hk, hs]),
      c2: f32(nonEmpty(coarse), [Math.max(1, coarseCount), Hk, hs]),
      query_positions: i64(Array.from({ length: tokens }, (_, i) => chunk.firstPosition + i)),
      fine_visible: i64(plan.fineVisible),
      coarse_visible: i64(plan.coarseVisible),
      pool_pads: i64(plan.poolPads),
      k: i64([rawK]),
      block_excluded: bool(sequence.excludedBlocks(chunk.blocks), [chunk.blocks]),
    });
    const raw = int64Data(out.selected);
    const padded = new Int32Array(Hk * tokens * k).fill(-1);
    for (let row = 0; row < Hk * tokens; row++) {
      for (let j = 0; j < rawK; j++) padded[row * k + j] = Number(raw[row * rawK + j]);
    }
    return { raw, rawK, k, padded };
  }
}
