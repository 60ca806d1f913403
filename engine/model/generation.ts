// Text generation over a SalaModel: prefill the prompt, then decode one token per
// forward call, streaming text deltas. Cancellation is checked before every
// token, so an abort takes effect within one decode step.
import { Sampler, validateSampling, type SamplingOptions } from './sampling.js';
import { StopMatcher, TextStream } from './text-stream.js';
import type { Tokenizer } from './tokenizer.js';
import type { SalaModel, Sequence, SelectionRecord } from './sala-model.js';
import { ResidentMemoryError, type KvPlacement, type ResidentDecoder, type ResidentOptions } from './resident-decoder.js';
import { DeviceMemoryError } from '../runtime/session.js';
import { keepsTensorsOnDevice, type DeviceKind } from '../runtime/device.js';
import { derivedSizes, type SalaConfig } from './config.js';
import { StartsWith } from './token-healing.js';
import type { FinishReason } from '../vocabulary.js';

/** Narrows what may come next: sets the logits of tokens that may not to −Infinity. */
export interface TokenConstraint {
  mask(logits: Float32Array, generated: readonly number[]): void;
}

export interface GenerateOptions extends Partial<SamplingOptions> {
  maxTokens?: number;
  stop?: readonly string[];
  signal?: AbortSignal;
  chunkSize?: number;
  /** Continue this sequence instead of starting a new one (its cache is extended). */
  sequence?: Sequence;
  /** Token ids that end generation besides the model's eos ids (e.g. a chat turn's end). */
  stopIds?: readonly number[];
  /** Holds each token to what it allows (e.g. a choice of workspace lines); see TokenConstraint. */
  constraint?: TokenConstraint;
  /**
   * Text the generation must start with and that is not yielded: a prompt token taken back
   * (token-healing.ts). Stop strings are matched after it.
   */
  healed?: string;
  /** Sees the blocks the sparse layers select for every prompt and generated token. */
  onSelection?: (record: SelectionRecord) => void;
  /** Blocks each query of the prompt and the answer selects beyond the local window (ForwardOptions.topk); runs on the host path. */
  topk?: number;
  /**
   * Prefill and decode with the device-resident decoder (its KV placed as residentPlacement
   * says; a pool size means offload). Default: on a GPU provider, unless onSelection needs the host path.
   */
  resident?: boolean | { poolBlocks?: number; poolBytes?: number };
}

/**
 * The most sparse-layer KV (K and V, every layer) a decoder puts all on a CUDA device by
 * itself: the 9B shape to 128K tokens, the default model past 1M. The whole KV goes up (from a
 * host copy) when the decoder is made, once per generation.
 */
export const ALL_ON_DEVICE_KV_BYTES = 2 * 2 ** 30;

/**
 * Where a generation's decoder keeps the sparse layers' KV for `tokens` tokens. On CUDA, all
 * on the device when it fits ALL_ON_DEVICE_KV_BYTES: its steps then replay every layer as a
 * CUDA graph (the 9B shape at 128K: 18.7 ms a token against 47.8 offloaded, one run,
 * docs/benchmarks/gpu.md). Otherwise offloaded to host memory through a device block pool, as
 * on WebGPU (measured that way there) and wherever the caller sized the pool.
 */
export function residentPlacement(kind: DeviceKind, config: SalaConfig, tokens: number, pool: { poolBlocks?: number; poolBytes?: number } = {}): KvPlacement {
  if (kind !== 'cuda' || pool.poolBlocks !== undefined || pool.poolBytes !== undefined) return 'offload';
  // The device pool holds whole blocks.
  const slots = Math.ceil(tokens / config.sparse.blockSize) * config.sparse.blockSize;
  return slots * derivedSizes(config).kvBytesPerToken <= ALL_ON_DEVICE_KV_BYTES ? 'device' : 'offload';
}

/** A resident decoder placed as residentPlacement says; all on the device, when that does not fit after all, offloaded. */
async function placedDecoder(model: SalaModel, sequence: Sequence, options: Omit<ResidentOptions, 'placement'>): Promise<ResidentDecoder> {
  const placement = residentPlacement(model.device.kind, model.config, options.maxTokens, options);
  try {
    return await model.residentDecoder(sequence, { ...options, placement });
  } catch (err) {
    if (placement === 'offload' || !(err instanceof ResidentMemoryError)) throw err;
    return model.residentDecoder(sequence, { ...options, placement: 'offload' });
  }
}

export interface GenerationResult {
  text: string;
  tokens: number[];
  finishReason: FinishReason;
  promptTokens: number;
  prefillMs: number;
  /** Decode time per generated token (first token excluded: it comes from the prefill). */
  decodeMsPerToken: number;
}

export const DEFAULT_MAX_TOKENS = 256;

export class GenerationError extends Error {}

/**
 * Streams the continuation of `prompt`. Yields text deltas; the return value
 * summarises the run. Stops at an end-of-text token, a stop string (not
 * included in the text), maxTokens, or the signal.
 */
export async function* generate(
  model: SalaModel,
  tokenizer: Tokenizer,
  prompt: string | readonly number[],
  options: GenerateOptions = {},
): AsyncGenerator<string, GenerationResult> {
  const sampler = new Sampler(validateSampling(options));
  const maxTokens = options.maxTokens ?? DEFAULT_MAX_TOKENS;
  if (!Number.isInteger(maxTokens) || maxTokens < 0) throw new GenerationError(`max tokens must be an integer ≥ 0, got ${maxTokens}`);
  const promptIds = typeof prompt === 'string' ? tokenizer.encode(prompt) : [...prompt];
  if (promptIds.length === 0) throw new GenerationError('the prompt is empty: give at least one token of text');

  const endIds = new Set([...model.config.eosTokenIds, ...(options.stopIds ?? [])]);
  const sequence = options.sequence ?? model.newSequence(promptIds.length + maxTokens);
  const stream = new TextStream(tokenizer, { skipSpecialTokens: true });
  const stops = new StopMatcher(options.stop ?? []);
  const healed = options.healed ?? '';
  const healing = healed ? new StartsWith(healed, tokenizer) : undefined;
  // Characters of the healed text still to drop from what the stream yields.
  let unseen = healed.length;
  const pastHealed = (piece: string): string => {
    const kept = piece.slice(unseen);
    unseen = Math.max(0, unseen - piece.length);
    return kept;
  };
  const tokens: number[] = [];
  let text = '';
  let finishReason: FinishReason = 'length';

  // On a GPU the prompt is prefilled and decoded by the device-resident decoder (every
  // layer on the device, the KV placed by residentPlacement): in bench:offload its prefill
  // beats the host path's at every context but 512K on the default model, where they tie
  // (docs/benchmarks/offload-webgpu.md). (WebGPU, and CUDA through the binding addon: see keepsTensorsOnDevice.)
  const wantResident = options.resident ?? (keepsTensorsOnDevice(model.device.kind) && !options.onSelection && options.topk === undefined);
  if (wantResident && options.topk !== undefined) throw new RangeError('a block budget of its own (topk) runs on the host path: leave resident unset');
  const decoder = wantResident
    ? await placedDecoder(model, sequence, {
        ...(typeof options.resident === 'object' ? options.resident : {}),
        maxTokens: sequence.length + promptIds.length + maxTokens,
      })
    : undefined;
  const started = performance.now();
  let logits: Float32Array;
  try {
    logits = decoder
      ? await decoder.prefill(promptIds, { chunkSize: options.chunkSize, signal: options.signal })
      : await model.forward(sequence, promptIds, { chunkSize: options.chunkSize, signal: options.signal, onSelection: options.onSelection, topk: options.topk });
  } catch (err) {
    await decoder?.close();
    throw withMemoryAdvice(err, 'the prefill', sequence.length);
  }
  const prefillMs = performance.now() - started;
  const decodeStarted = performance.now();

  try {
    for (let step = 0; step < maxTokens; step++) {
      if (options.signal?.aborted) {
        finishReason = 'cancelled';
        break;
      }
      if (options.constraint || healing) {
        logits = Float32Array.from(logits);
        healing?.mask(logits, tokens);
        options.constraint?.mask(logits, tokens);
      }
      const next = sampler.next(logits);
      if (endIds.has(next)) {
        finishReason = 'eos';
        break;
      }
      tokens.push(next);
      const { emit, stopped } = stops.push(pastHealed(stream.push(next)));
      if (emit) {
        text += emit;
        yield emit;
      }
      if (stopped) {
        finishReason = 'stop';
        break;
      }
      if (step + 1 < maxTokens) {
        logits = decoder ? await decoder.step(next) : await model.forward(sequence, [next], { signal: options.signal, onSelection: options.onSelection, topk: options.topk });
      }
    }
  } catch (err) {
    throw withMemoryAdvice(err, 'decoding', sequence.length);
  } finally {
    // Hands the Lightning states back to the sequence, so a caller can continue it on either path.
    await decoder?.close();
  }
  if (finishReason !== 'stop') {
    const rest = stops.push(pastHealed(stream.flush()));
    const tail = rest.stopped ? rest.emit : rest.emit + stops.flush();
    if (rest.stopped) finishReason = 'stop';
    if (tail) {
      text += tail;
      yield tail;
    }
  }
  const decodeSteps = Math.max(tokens.length - 1, 0);
  return {
    text,
    tokens,
    finishReason,
    promptTokens: promptIds.length,
    prefillMs,
    decodeMsPerToken: decodeSteps > 0 ? (performance.now() - decodeStarted) / decodeSteps : 0,
  };
}

/** An allocation failure during a run, said with what to change (the engine and the device stay usable). */
function withMemoryAdvice(err: unknown, phase: string, tokens: number): unknown {
  // A ResidentMemoryError already says what to change.
  if (!(err instanceof DeviceMemoryError) || err instanceof ResidentMemoryError) return err;
  return new DeviceMemoryError(
    `${phase} ran out of memory at ${tokens} tokens (${err.message.replace(/\.$/, '')}). Give the KV pools less device memory (--gpu-kv-mb), use smaller weights (--precision int4), or shorten the prompt.`,
    { cause: err },
  );
}
