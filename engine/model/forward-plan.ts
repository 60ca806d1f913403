// What one forward call does, decided once for every executor: the host path
// (SalaModel.forward), the device path (ResidentDecoder.prefill/step) and any other.
// An executor runs the plan's chunks and feeds its numbers to the graphs; it decides
// none of them itself, so no executor can drift from the reference's rules
// (docs/spec/minicpm-sala.md, "Sparse layer, prefill" and "single-token decode"):
//   - a call is one logical prefill (a decode step when it carries one token): dense or
//     sparse attention is chosen for the whole call by its kv length, whatever the chunks;
//   - only an all-new prefill follows the kernel's bottom-right visibility rule;
//   - selection keeps k = min(topk + local, blocks of the whole call) per query (topk the
//     config's unless the call names its own).
// Pure and synchronous: sizes and ids in, a description out.
import { compressedCount, poolPads, visibleCount, type Level } from '../kv/selection.js';
import type { DerivedSizes, SalaConfig } from './config.js';

/** The input cannot be run by this model (bad token ids, missing or misshapen weights). */
export class ModelInputError extends Error {}

/** Tokens per prefill chunk when the caller does not say. */
export const DEFAULT_CHUNK_SIZE = 512;

export interface PlanOptions {
  /** Which positions get logits: every new one, the last, or the last N. Default 'last'. */
  logits?: 'all' | 'last' | number;
  /** Tokens per chunk (the sparse/dense decision and selection do not depend on it). */
  chunkSize?: number;
  /**
   * Bytes a sparse chunk's stage-1 scores may take ([heads, rows, fine compressed keys] fp32,
   * materialized by the device's selection graph): chunks get fewer rows where the whole
   * call's keys would overflow it. Default: no cap.
   */
  selectionBytes?: number;
  /** 'dense' attends to every block whatever the length (a comparison point); default 'auto' follows dense_len. */
  attention?: 'auto' | 'dense';
  /**
   * Blocks a query selects beyond the local window, for this call only (default the config's
   * topk). A question's few rows can read more of a long context than the prefill did at
   * little cost; the prefill's own rows keep the trained budget.
   */
  topk?: number;
}

/** What the select graph is fed for one chunk's queries (sparse calls only). */
export interface ChunkSelection {
  /** Blocks kept per query in the call's result (the reference's k; slots past rawK are −1). */
  k: number;
  /** Blocks the graph's top-k returns: min(k, blocks), as blocks past this chunk do not exist yet. */
  rawK: number;
  /** Compressed keys of each level once the chunk's K/V is appended. */
  fineCount: number;
  coarseCount: number;
  /** Per query: how many of those keys it may see. */
  fineVisible: number[];
  coarseVisible: number[];
  /** ONNX Pad's [begins…, ends…] that turn the fine scores into one row per block. */
  poolPads: number[];
}

export interface ChunkPlan {
  /** Offset of the chunk in the call's ids, and its first absolute position. */
  start: number;
  firstPosition: number;
  ids: number[];
  /** KV blocks once the chunk's K/V is appended. */
  blocks: number;
  /** How the sparse layers select blocks; absent on a dense call (every block up to the query's own). */
  selection?: ChunkSelection;
  /** The chunk's rows [logitsFrom, ids.length) go to the head; absent when none do. */
  logitsFrom?: number;
}

export interface ForwardPlan {
  /** The validated ids of the call. */
  ids: readonly number[];
  /** Tokens before the call, and kv length after it. */
  past: number;
  callLength: number;
  sparse: boolean;
  /** Set for an all-new prefill of more than one token: the bottom-right visibility rule. */
  promptLength?: number;
  /** Blocks selection keeps per query, for the whole call. */
  k: number;
  chunks: ChunkPlan[];
  /** Rows of logits the call returns: the last logitRows positions. */
  logitRows: number;
}

/** The two compression levels of the sparse layers' keys (fine kernel_size/kernel_stride, coarse 4× both). */
export function compressionLevels(config: Pick<SalaConfig, 'sparse'>): { fine: Level; coarse: Level } {
  const { kernelSize, kernelStride } = config.sparse;
  return { fine: { window: kernelSize, stride: kernelStride }, coarse: { window: 4 * kernelSize, stride: 4 * kernelStride } };
}

/** Throws ModelInputError unless ids is a non-empty list of integers in [0, vocabSize). */
export function validateIds(ids: readonly number[], vocabSize: number): void {
  if (ids.length === 0) throw new ModelInputError('no tokens to run: the prompt is empty');
  const bad = ids.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
  if (bad >= 0) throw new ModelInputError(`token id ${ids[bad]} at index ${bad} is outside the vocabulary [0, ${vocabSize})`);
}

/** Rows whose stage-1 scores over the fine compressed keys of `length` tokens fit `bytes` (at least one). */
export function selectionRows(config: Pick<SalaConfig, 'sparse' | 'numAttentionHeads'>, length: number, bytes: number): number {
  const perRow = config.numAttentionHeads * Math.max(1, compressedCount(length, compressionLevels(config).fine)) * 4;
  return Math.max(1, Math.floor(bytes / perRow));
}

/** The plan of feeding `ids` after `past` tokens. */
export function forwardPlan(
  config: Pick<SalaConfig, 'vocabSize' | 'sparse' | 'numAttentionHeads'>,
  sizes: Pick<DerivedSizes, 'localBlocks' | 'topkTotal'>,
  past: number,
  ids: readonly number[],
  options: PlanOptions = {},
): ForwardPlan {
  validateIds(ids, config.vocabSize);
  const { blockSize, denseLen, kernelStride } = config.sparse;
  const callLength = past + ids.length;
  const sparse = options.attention !== 'dense' && callLength >= denseLen;
  // Only an all-new prefill is aligned bottom-right by the kernel; continuations and decode use absolute positions.
  const promptLength = past === 0 && ids.length > 1 ? callLength : undefined;
  if (options.topk !== undefined && !(Number.isInteger(options.topk) && options.topk >= 1)) throw new ModelInputError(`topk must be a whole number ≥ 1, got ${options.topk}`);
  const perQuery = options.topk === undefined ? sizes.topkTotal : options.topk + sizes.localBlocks;
  const k = Math.min(perQuery, Math.ceil(callLength / blockSize));
  const levels = compressionLevels(config);
  const requested = Math.max(1, Math.floor(options.chunkSize ?? DEFAULT_CHUNK_SIZE));
  if (Number.isNaN(requested)) throw new ModelInputError(`chunk size must be a number ≥ 1, got ${options.chunkSize}`);
  const chunkSize = sparse && options.selectionBytes !== undefined ? Math.min(requested, selectionRows(config, callLength, options.selectionBytes)) : requested;
  const wanted = options.logits ?? 'last';
  const logitRows = wanted === 'all' ? ids.length : wanted === 'last' ? 1 : Math.min(Math.max(1, wanted), ids.length);
  const firstLogitRow = ids.length - logitRows;

  const chunks: ChunkPlan[] = [];
  for (let start = 0; start < ids.length; start += chunkSize) {
    const chunkIds = ids.slice(start, start + chunkSize);
    const firstPosition = past + start;
    const length = firstPosition + chunkIds.length;
    const blocks = Math.ceil(length / blockSize);
    const keepFrom = Math.max(firstLogitRow - start, 0);
    const chunk: ChunkPlan = { start, firstPosition, ids: chunkIds, blocks, logitsFrom: keepFrom < chunkIds.length ? keepFrom : undefined };
    if (sparse) {
      const fineCount = compressedCount(length, levels.fine);
      const coarseCount = compressedCount(length, levels.coarse);
      const positions = chunkIds.map((_, i) => firstPosition + i);
      chunk.selection = {
        k,
        // The blocks past this chunk can only fill slots that become −1, so fewer suffice here.
        rawK: Math.min(k, blocks),
        fineCount,
        coarseCount,
        fineVisible: positions.map((p) => visibleCount(p, levels.fine, fineCount, promptLength)),
        coarseVisible: positions.map((p) => visibleCount(p, levels.coarse, coarseCount, promptLength)),
        // A level with no complete window yet is fed one masked row.
        poolPads: poolPads(Math.max(1, fineCount), blocks, blockSize / kernelStride),
      };
    }
    chunks.push(chunk);
  }
  return { ids, past, callLength, sparse, promptLength, k, chunks, logitRows };
}
