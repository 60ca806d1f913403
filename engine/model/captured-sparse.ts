// The decode step's sparse layers as CUDA graphs. Run as a session, a sparse layer's
// selection and attention is many small kernels launched one by one and took 1.17 ms of
// the 9B shape's 19.1 ms step on an H200, against ~0.05 ms of weights
// (docs/benchmarks/gpu-step-fused-cuda.json). The graphs replayed are
// captured-sparse-graph.ts: fixed shapes sized by the decoder's capacity.
//   - Every block on the device: one graph a layer (selection, slots, attention).
//   - KV offloaded: two graphs a layer, the selection and the attention. Between them the
//     host reads the selected ids, places them in the pool (misses copied from the host
//     store) and writes their slots and live keys into fixed buffers.
//
// A replay reads and writes fixed addresses. The decoder's pools and compressed-key
// stores already stay put (writes into them are in place), so they are read where they
// are; what a session run would hand over as new tensors lives in buffers kept here, one
// set per layer: the input row, q/k/v (and the gate), the output row, the tail block (the
// graph writes the new key into it in place). The step's position and counts, the
// live-key and dead-block masks, and (offload) the selected ids and slots, are shared by the layers.
//
// The graphs point at this decoder's memory, so the sessions are the decoder's: made on its
// first sparse step, released with it. Graph id: 1 + layer.
import type * as ort from 'onnxruntime-node';
import type { Precision } from '../runtime/device.js';
import { release, type DeviceTensors } from '../runtime/device-tensors.js';
import { GraphSession, bool, i64, int64Data, type Feeds } from '../runtime/session.js';
import type { SalaConfig } from './config.js';
import { buildSparseAttendCaptured, buildSparseSelectCaptured, buildSparseStepCaptured, capturedTopK, STEP_FIELDS, type StepCapacity } from './captured-sparse-graph.js';
import { sparseHeads } from './graph-parts.js';
import type { ChunkSelection } from './forward-plan.js';
import type { Sequence } from './sequence.js';

/** What the graph reads of the decoder's layer state (all at fixed addresses). */
export interface SparseLayerStores {
  poolKeys: ort.Tensor;
  poolValues: ort.Tensor;
  fine: ort.Tensor;
  coarse: ort.Tensor;
}

interface LayerBuffers {
  x: ort.Tensor;
  q: ort.Tensor;
  k: ort.Tensor;
  v: ort.Tensor;
  gate?: ort.Tensor;
  xOut: ort.Tensor;
  tailKeys: ort.Tensor;
  tailValues: ort.Tensor;
}

export class CapturedSparse {
  private readonly owned = new Set<ort.Tensor>();
  private readonly layers = new Map<number, LayerBuffers>();
  private step?: ort.Tensor;
  private alive?: ort.Tensor;
  private excluded?: ort.Tensor;
  private aliveVersion = -1;
  private excludedKey = '';
  /** Why capture was turned off for this decoder (a failed run), if it was. */
  failure?: string;

  /** Offload: the selected ids [Hk, K], their slots and their live keys [Hk, K, blockSize]. */
  private picks?: { selected: ort.Tensor; slots: ort.Tensor; keyAlive: ort.Tensor };

  /** `graphs`: the step graph (every block on the device), or the selection and attention graphs (offload). */
  private constructor(
    private readonly graphs: GraphSession[],
    private readonly tensors: DeviceTensors,
    private readonly config: SalaConfig,
    private readonly capacity: StepCapacity,
  ) {}

  /** The step of a decoder with every block on the device, or (with `poolSlots`, offload) its two halves over a pool of that many slots a head. */
  static async create(config: SalaConfig, precision: Precision, tensors: DeviceTensors, capacity: StepCapacity, poolSlots?: number): Promise<CapturedSparse> {
    const make = (name: string, model: Uint8Array, outputs: Record<string, ort.Tensor.DataLocation>) =>
      GraphSession.create(name, model, { device: tensors.device, threads: 1, outputs, cudaGraph: true });
    const attended = { x_out: 'gpu-buffer', tail_keys_out: 'gpu-buffer', tail_values_out: 'gpu-buffer' } as const;
    const graphs =
      poolSlots === undefined
        ? [await make('sparse_step_captured', buildSparseStepCaptured(config, precision, capacity), attended)]
        : [
            await make('sparse_select_captured', buildSparseSelectCaptured(config, capacity), { selected: 'gpu-buffer' }),
            await make('sparse_attend_captured', buildSparseAttendCaptured(config, precision, capacity, poolSlots), attended),
          ];
    return new CapturedSparse(graphs, tensors, config, capacity);
  }

  /** Whether this is the offloaded form (select, then attend). */
  get splits(): boolean {
    return this.graphs.length === 2;
  }

  /** How many ids a head's selection holds (−1 = none). */
  get topK(): number {
    return capturedTopK(this.config, this.capacity);
  }

  get usable(): boolean {
    return this.failure === undefined;
  }

  /** Turns capture off after a failed run (its inputs are intact: the caller runs the layer uncaptured). */
  disable(err: unknown): void {
    if (this.failure !== undefined) return;
    this.failure = (err instanceof Error ? err.message : String(err)).split('\n')[0];
    process.stderr.write(`panorama: CUDA graphs of the sparse layers turned off (${this.failure}); decoding without them (PANORAMA_CUDA_GRAPH=0 skips them from the start)\n`);
  }

  /** Whether `tensor` is one of the buffers kept here (never released by the decoder). */
  owns(tensor: ort.Tensor | undefined): boolean {
    return tensor !== undefined && this.owned.has(tensor);
  }

  private async keep(tensor: ort.Tensor | Promise<ort.Tensor>): Promise<ort.Tensor> {
    const kept = await tensor;
    this.owned.add(kept);
    return kept;
  }

  private async buffers(layer: number): Promise<LayerBuffers> {
    const held = this.layers.get(layer);
    if (held) return held;
    const { hs, H, Hk, blockSize: B } = sparseHeads(this.config);
    const d = this.config.hiddenSize;
    const zeros = (dims: number[]) => this.keep(this.tensors.zeros(dims));
    const made: LayerBuffers = {
      x: await zeros([1, d]),
      q: await zeros([1, H, hs]),
      k: await zeros([1, Hk, hs]),
      v: await zeros([1, Hk, hs]),
      gate: this.config.attnUseOutputGate ? await zeros([1, H * hs]) : undefined,
      xOut: await zeros([1, d]),
      tailKeys: await zeros([Hk, B, hs]),
      tailValues: await zeros([Hk, B, hs]),
    };
    this.layers.set(layer, made);
    return made;
  }

  /** Where the layer's projection run writes its device outputs (x passed through, q, k, v, gate). */
  async projectInto(layer: number): Promise<Feeds> {
    const held = await this.buffers(layer);
    const into: Feeds = { x_row: held.x, q: held.q, k: held.k, v: held.v };
    if (held.gate) into.gate = held.gate;
    return into;
  }

  /**
   * Writes a step's values before its first sparse layer: the position and counts, and the
   * masks where they changed (dead blocks at a block boundary or a tombstone, live keys at a
   * tombstone). Returns the host bytes it moved.
   */
  async begin(position: number, selection: ChunkSelection, blocks: number, sequence: Sequence): Promise<number> {
    const values: Record<(typeof STEP_FIELDS)[number], number> = {
      position,
      fineVisible: selection.fineVisible[0],
      coarseVisible: selection.coarseVisible[0],
    };
    this.step = await this.write(this.step, i64(STEP_FIELDS.map((name) => values[name])));
    let bytes = STEP_FIELDS.length * 8;
    const NB = this.capacity.blocks;
    const B = this.config.sparse.blockSize;
    if (this.aliveVersion !== sequence.tombstoneVersion) {
      // Positions not yet written count as live: the graph limits the tail to rows ≤ the step's own.
      this.alive = await this.write(this.alive, bool(sequence.aliveKeys(Array.from({ length: NB }, (_, b) => b)), [NB, B]));
      this.aliveVersion = sequence.tombstoneVersion;
      bytes += NB * B;
    }
    const excludedKey = `${blocks}:${sequence.tombstoneVersion}`;
    if (this.excludedKey !== excludedKey) {
      this.excluded = await this.write(this.excluded, bool(sequence.excludedBlocks(NB), [NB]));
      this.excludedKey = excludedKey;
      bytes += NB;
    }
    return bytes;
  }

  /** `host` into the fixed buffer (made from it on the first write). */
  private async write(buffer: ort.Tensor | undefined, host: ort.Tensor): Promise<ort.Tensor> {
    if (!buffer) return this.keep(this.tensors.upload(host));
    await this.tensors.copyInto(host, buffer);
    return buffer;
  }

  /**
   * The tail block of `layer` in the buffers kept here: copies the decoder's tail in when it
   * is elsewhere (after a prefill or an uncaptured step). The caller frees what it held.
   */
  async adoptTail(layer: number, keys: ort.Tensor, values: ort.Tensor): Promise<{ keys: ort.Tensor; values: ort.Tensor }> {
    const held = await this.buffers(layer);
    if (keys !== held.tailKeys) await this.tensors.copyInto(keys, held.tailKeys);
    if (values !== held.tailValues) await this.tensors.copyInto(values, held.tailValues);
    return { keys: held.tailKeys, values: held.tailValues };
  }

  /** One layer's step through its graph, after projectInto's buffers, begin() and adoptTail(); returns the output row (kept here). */
  async run(layer: number, weights: Feeds, stores: SparseLayerStores): Promise<ort.Tensor> {
    const held = await this.buffers(layer);
    const feeds = { ...this.attentionFeeds(held, weights, stores), c1_store: stores.fine, c2_store: stores.coarse, block_excluded: this.excluded! };
    return this.attendRun(this.graphs[0], layer, held, feeds);
  }

  /** What both forms' attention reads: the weights, the layer's buffers and pool, the step's values. */
  private attentionFeeds(held: LayerBuffers, weights: Feeds, stores: SparseLayerStores): Feeds {
    const feeds: Feeds = {
      ...weights,
      x: held.x,
      q: held.q,
      k: held.k,
      v: held.v,
      pool_keys: stores.poolKeys,
      pool_values: stores.poolValues,
      tail_keys: held.tailKeys,
      tail_values: held.tailValues,
      step: this.step!,
      block_alive: this.alive!,
    };
    if (held.gate) feeds.gate = held.gate;
    return feeds;
  }

  /** Replays `graph` for `layer`, its row and tail written into the layer's buffers. */
  private async attendRun(graph: GraphSession, layer: number, held: LayerBuffers, feeds: Feeds): Promise<ort.Tensor> {
    const out = await graph.run(feeds, { x_out: held.xOut, tail_keys_out: held.tailKeys, tail_values_out: held.tailValues }, 1 + layer);
    return out.x_out;
  }

  /** Offload, first half: the layer's selection (after projectInto's buffers and begin()), [Hk, K] ids read back. */
  async select(layer: number, stores: SparseLayerStores): Promise<BigInt64Array> {
    const held = await this.buffers(layer);
    const picks = await this.pickBuffers();
    const feeds: Feeds = { q: held.q, c1_store: stores.fine, c2_store: stores.coarse, step: this.step!, block_excluded: this.excluded! };
    await this.graphs[0].run(feeds, { selected: picks.selected }, 1 + layer);
    return int64Data(await this.tensors.download(picks.selected));
  }

  /**
   * Offload, second half: the layer's attention over `slots` [Hk, K] of its pool, `keyAlive`
   * [Hk, K, blockSize] their live keys (0 for unused slots), after select() and adoptTail().
   */
  async attend(layer: number, weights: Feeds, stores: SparseLayerStores, slots: BigInt64Array, keyAlive: Uint8Array): Promise<ort.Tensor> {
    const held = await this.buffers(layer);
    const picks = await this.pickBuffers();
    const { Hk, blockSize: B } = sparseHeads(this.config);
    await this.tensors.copyInto(i64(slots, [Hk, this.topK]), picks.slots);
    await this.tensors.copyInto(bool(keyAlive, [Hk, this.topK, B]), picks.keyAlive);
    const feeds = { ...this.attentionFeeds(held, weights, stores), slots: picks.slots, key_alive: picks.keyAlive };
    return this.attendRun(this.graphs[1], layer, held, feeds);
  }

  private async pickBuffers(): Promise<{ selected: ort.Tensor; slots: ort.Tensor; keyAlive: ort.Tensor }> {
    if (this.picks) return this.picks;
    const { Hk, blockSize: B } = sparseHeads(this.config);
    const K = this.topK;
    this.picks = {
      selected: await this.keep(this.tensors.upload(i64(new BigInt64Array(Hk * K), [Hk, K]))),
      slots: await this.keep(this.tensors.upload(i64(new BigInt64Array(Hk * K), [Hk, K]))),
      keyAlive: await this.keep(this.tensors.upload(bool(new Uint8Array(Hk * K * B), [Hk, K, B]))),
    };
    return this.picks;
  }

  /** The weights a layer's graph takes (the step graph's or the attention's). */
  get inputNames(): readonly string[] {
    return this.graphs[this.graphs.length - 1].inputNames;
  }

  /** Frees the buffers and the sessions (their graphs point at the decoder's memory). */
  async release(): Promise<void> {
    for (const tensor of this.owned) release(tensor);
    this.owned.clear();
    this.layers.clear();
    this.picks = undefined;
    for (const graph of this.graphs) await graph.release();
  }
}
