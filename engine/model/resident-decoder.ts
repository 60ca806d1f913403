// Decode steps and prefill chunks with everything that changes per token kept on the
// execution device: weights, activations between layers, Lightning states, and the sparse
// layers' compressed keys and KV blocks (resident-kv.ts: the full K/V stays in host memory,
// the source of truth). This file runs the layers in order and owns the Lightning states;
// a sparse layer runs as resident-prefill.ts (a chunk) or resident-step.ts (one token)
// says. Both follow the call's plan (forward-plan.ts), as the host executor does.
import type * as ort from 'onnxruntime-node';
import { release } from '../runtime/device-tensors.js';
import { DeviceMemoryError, f32, floatData, i64 } from '../runtime/session.js';
import { CapturedLightning } from './captured-lightning.js';
import { forwardPlan, type ForwardPlan } from './forward-plan.js';
import type { Sequence } from './sequence.js';
import type { RowAttention } from './row-groups.js';
import { ResidentKv, ResidentMemoryError, type KvPlacement, type ResidentCounters, type SparseLayerState } from './resident-kv.js';
import { ResidentPrefill } from './resident-prefill.js';
import { feedsFor, type ResidentParts, type ResidentSessions } from './resident-sessions.js';
import { ResidentStep, type SparseStep } from './resident-step.js';

export { MAX_KV_TENSOR_BYTES, ResidentMemoryError, type KvPlacement } from './resident-kv.js';
export type { ResidentSessions } from './resident-sessions.js';
export type { SparseStep } from './resident-step.js';

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
  /** prefill(), sparse: device memory for a chunk's stage-1 selection scores; longer contexts get shorter chunks (default SELECTION_SCORE_BYTES, 2.25 GiB). */
  selectionBytes?: number;
  /** prefill(), sparse: a row group attends over the union of its blocks, each row over its own, or whichever is cheaper (default 'auto'). */
  rowAttention?: RowAttention;
  /** prefill(), every block on the device: the selection stays there for the attention ('device', the default) or comes to the host first ('host', as offloading does). */
  prefillSelection?: 'device' | 'host';
  /** Decode steps, KV on the device: how a sparse layer's selection reaches its attention (resident-step.ts; default 'captured'). */
  sparseStep?: SparseStep;
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
  /** Sparse-layer steps of dense attention that read the device store in place (no gather; see resident-step.ts). */
  denseStoreSteps: number;
}

/**
 * Device memory for one attention call's scores ([H, rows, keys] fp32, and as much again
 * for their softmax): a chunk whose rows attend to more keys than this allows splits its
 * rows over several calls, so dense attention at long contexts runs in bounded memory.
 */
const ATTENTION_SCORE_BYTES = 512 * 2 ** 20;

/**
 * On CUDA a prefill's chunks are 2,048 tokens: fewer, larger runs (the 9B shape after 128K
 * on an H100, one process, scores ≤ 2 GiB: 1,487 tok/s at 512-token chunks, 1,756 at 2,048;
 * docs/benchmarks/gpu.md). The score budget stays ATTENTION_SCORE_BYTES, which fits small
 * GPUs too. WebGPU keeps the forward plan's 512: its buffers have per-binding limits.
 */
const CUDA_PREFILL_CHUNK = 2048;

/**
 * Device memory for a prefill chunk's stage-1 selection scores ([heads, rows, fine compressed
 * keys] fp32; the graph holds a few tensors of that size at once): the 9B shape keeps 2,048-row
 * chunks a little past 128K tokens (2,048 rows after 128K, as measured in docs/benchmarks/gpu.md,
 * take 2.03 GiB) and takes about 290 at 1M, where 2,048 rows would need 16 GiB per tensor.
 */
export const SELECTION_SCORE_BYTES = 2.25 * 2 ** 30;

export class ResidentDecoder {
  private readonly counters: ResidentCounters = {
    steps: 0,
    prefilledTokens: 0,
    prefillAttendCalls: 0,
    blockBytes: 0,
    otherBytes: 0,
    selectionsOnDevice: 0,
    sparseGraphRuns: 0,
    denseStoreSteps: 0,
  };
  private readonly lightningStates = new Map<number, ort.Tensor>();
  private readonly kv: ResidentKv;
  private readonly chunks: ResidentPrefill;
  /** prefill()'s chunk when the caller names none (CUDA_PREFILL_CHUNK on CUDA; else the forward plan's default). */
  private readonly prefillChunk: number | undefined;
  private readonly selectionBytes: number;
  private readonly steps: ResidentStep;
  private closed = false;
  /** The model's CUDA graphs of the Lightning layers, while this decoder holds them (resident-sessions.ts, capturesSteps). */
  private captured?: CapturedLightning;

  private constructor(
    private readonly parts: ResidentParts,
    private readonly sessions: ResidentSessions,
    readonly sequence: Sequence,
    placement: KvPlacement,
    private readonly dense: boolean,
    private readonly maxTokens: number,
    options: ResidentOptions,
  ) {
    const free = (tensor: ort.Tensor | undefined): void => this.free(tensor);
    this.kv = new ResidentKv(parts, sessions, sequence, placement, maxTokens, this.counters, free);
    const shared = { parts, sessions, kv: this.kv, sequence, counters: this.counters };
    this.prefillChunk = parts.device.kind === 'cuda' ? CUDA_PREFILL_CHUNK : undefined;
    this.selectionBytes = options.selectionBytes ?? SELECTION_SCORE_BYTES;
    this.chunks = new ResidentPrefill(shared, options.attentionBytes ?? ATTENTION_SCORE_BYTES, options.rowAttention ?? 'auto', options.prefillSelection ?? 'device');
    this.steps = new ResidentStep(shared, options.sparseStep ?? 'captured', free);
  }

  /** Moves the sequence's state onto the device. */
  static async create(parts: ResidentParts, sessions: ResidentSessions, sequence: Sequence, options: ResidentOptions): Promise<ResidentDecoder> {
    const placement = options.placement ?? 'offload';
    const dense = options.attention === 'dense';
    if (dense && placement === 'offload') throw new RangeError('dense attention reads every block each step: use placement "device"');
    const maxTokens = Math.max(options.maxTokens, sequence.length + 1);
    const decoder = new ResidentDecoder(parts, sessions, sequence, placement, dense, maxTokens, options);
    const poolBlocks = options.poolBytes !== undefined ? decoder.kv.blocksForBudget(options.poolBytes) : options.poolBlocks;
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
            : `Give the KV pools less memory (--gpu-kv-mb, at most ${decoder.kv.largestPoolBudgetMiB()} here), or shorten the context.`),
        { cause: err },
      );
    }
    return decoder;
  }

  private async attach(poolBlocks: number | undefined): Promise<void> {
    const { tensors, sizes } = this.parts;
    const { lightningHeads: H, lightningHeadDim: D } = sizes;
    for (const [layer, state] of this.sequence.lightning) {
      this.lightningStates.set(layer, await tensors.upload(f32(state.slice(), [H, D, D])));
    }
    await this.kv.attach(poolBlocks);
  }

  /**
   * Feeds `ids` after the sequence in chunks with every layer on the device and returns
   * the last position's logits [vocab]: the chunked counterpart of step(). A sparse
   * layer's new K/V rows go to the host store (the source of truth) and the blocks they
   * touch go up into the device store (resident-prefill.ts). One call is one logical
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
        this.counters.otherBytes += count * (8 + 4);
        const embedded = (await this.sessions.embed.run({ ids: i64(chunk.ids), w_embed: globalTensors.w_embed })).x;
        x = await this.runLayers(embedded, chunk.firstPosition, count, (state, input) => this.chunks.sparseLayer(state, input, chunk));
        for (const id of chunk.ids) this.sequence.tokens.push(id);
        this.counters.prefilledTokens += count;
      }
      const logits = (await this.sessions.headLast.run({ ...feedsFor(globalTensors, this.sessions.headLast.inputNames), x: x! })).logits;
      return floatData(logits);
    } finally {
      release(x);
      // Decoding goes on with the block now being written as its tail, re-read from the host store.
      await this.kv.refreshTails();
    }
  }

  /** Feeds one token after the sequence and returns its logits [vocab]. */
  async step(id: number): Promise<Float32Array> {
    if (this.closed) throw new Error('the resident decoder was closed');
    const { globalTensors } = this.parts;
    const [chunk] = this.plan([id]).chunks;
    const position = chunk.firstPosition;
    this.counters.otherBytes += 8 + 4;
    const embedded = (await this.sessions.embed.run({ ids: i64([id]), w_embed: globalTensors.w_embed })).x;
    this.holdCaptured();
    await this.captured?.begin(f32(Float32Array.of(position), [1]));
    const x = await this.runLayers(embedded, position, 1, (state, input) => this.steps.sparseLayer(state, input, chunk), true);
    this.captured?.end();
    this.sequence.tokens.push(id);
    this.counters.steps++;
    const logits = (await this.sessions.head.run({ ...feedsFor(globalTensors, this.sessions.head.inputNames), x })).logits;
    this.free(x);
    return floatData(logits);
  }

  /**
   * The plan of feeding `ids` after the sequence (the decoder's 'dense' mode included), refused
   * before anything runs when it does not fit the sizes the device state was made for.
   */
  private plan(ids: readonly number[], chunkSize?: number): ForwardPlan {
    const plan = forwardPlan(this.parts.config, this.parts.sizes, this.sequence.length, ids, {
      chunkSize: chunkSize ?? this.prefillChunk,
      selectionBytes: this.selectionBytes,
      attention: this.dense ? 'dense' : 'auto',
      logits: 'last',
    });
    if (plan.callLength > this.maxTokens) throw new RangeError(`the resident decoder was sized for ${this.maxTokens} tokens; ${plan.callLength} do not fit`);
    return plan;
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
      if (config.mixerTypes[layer] !== 'lightning-attn') next = await sparseLayer(this.kv.layers[sparseIndex++], x);
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

  /** A Lightning layer of a decode step through its CUDA graph; undefined (capture now off) when that run failed. */
  private async capturedLayer(captured: CapturedLightning, layer: number, x: ort.Tensor): Promise<ort.Tensor | undefined> {
    const state = this.lightningStates.get(layer)!;
    try {
      const out = await captured.run(layer, feedsFor(this.parts.layerTensors[layer], this.sessions.lightningCaptured!.inputNames), x, state);
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
      ...feedsFor(this.parts.layerTensors[layer], session.inputNames),
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

  /** Frees a device tensor unless it is one of the CUDA graphs' fixed buffers (those stay with the model, or with the captured sparse step). */
  private free(tensor: ort.Tensor | undefined): void {
    if (!this.captured?.owns(tensor) && !this.steps.owns(tensor)) release(tensor);
  }

  snapshot(): ResidentStats {
    const { steps, prefilledTokens, prefillAttendCalls, blockBytes, otherBytes, selectionsOnDevice, sparseGraphRuns, denseStoreSteps } = this.counters;
    return { steps, prefilledTokens, prefillAttendCalls, ...this.kv.usage(), blockBytes, otherBytes, selectionsOnDevice, sparseGraphRuns, denseStoreSteps };
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
    // The KV first: its tails may be the captured step's buffers, which the step frees with its graphs.
    this.kv.release();
    await this.steps.release();
  }
}
