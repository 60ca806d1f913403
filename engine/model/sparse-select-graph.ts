// InfLLM-V2 block selection as ONNX graphs ("Sparse layer, prefill" in
// docs/spec/minicpm-sala.md): compressed-key scores, pooling to blocks, the forced and
// tombstoned blocks, top-k; and the selection as pool slots for a decode step with every
// block on the device. Shapes as in graph-parts.ts.
import { GraphBuilder, type Value } from '../runtime/graph-builder.js';
import { derivedSizes, type SalaConfig } from './config.js';
import { sparseHeads } from './graph-parts.js';

/**
 * InfLLM-V2 block selection ("Sparse layer, prefill"): stage 1 over compressed keys with the coarse
 * log-sum-exp, summed over each GQA group, max-pooled to blocks, init + local
 * blocks forced, top-k (ties: lowest block id first), sorted, future blocks → −1.
 *
 * Inputs computed by the host: how many fine/coarse compressed keys each query
 * may see (the kernel's visibility rule), the pooled row length and pads, k.
 * `oneQuery` (a decode step, resident): stage 1 reads the whole stores as they lie (stageOneKeysMajor).
 */
export function buildSparseSelect(cfg: SalaConfig, resident = false, unionWidth = false, oneQuery = false): Uint8Array {
  const { hs, H, Hk } = sparseHeads(cfg);
  const g = new GraphBuilder(unionWidth ? 'sparse_select_union' : oneQuery ? 'sparse_select_step' : resident ? 'sparse_select_resident' : 'sparse_select');
  const { selected, excluded } = blockSelection(g, cfg, g.input('q', 'float', [oneQuery ? 1 : 'T', H, hs]), resident, 'k', oneQuery);
  g.output(selected, 'selected', 'int64', [Hk, 'T', 'K']);
  if (unionWidth) {
    // How many distinct blocks the widest head's rows selected: the prefill's row groups size their union calls by it.
    const blocks = g.dim(excluded, 0);
    const inUnion = g.reduceMax(selectionMask(g, Hk, selected, blocks), [1], false); // [Hk, NB]
    g.output(g.cast(g.reduceMax(g.reduceSum(inUnion, [1], false), [0]), 'int64'), 'union_width', 'int64', [1]);
  }
  return g.toModel();
}

/** Selected ids [Hk, R, K] (−1 = none) as a float mask [Hk, R, NB] (1 = selected), by one scatter; none lands in a spare column NB, sliced off. */
export function selectionMask(g: GraphBuilder, Hk: number, selected: Value, blocks: Value): Value {
  const columns = g.where(g.less(selected, g.int64(0)), blocks, selected);
  const empty = g.expand(g.float(0), g.shapeOf([Hk, g.dim(selected, 1), g.add(blocks, g.int64s([1]))]));
  const marked = g.op('ScatterElements', [empty, columns, g.expand(g.float(1), g.shape(selected))], { axis: 2 });
  return g.op('Slice', [marked, g.int64s([0]), blocks, g.int64s([2])]);
}

/**
 * Stage 1 of one query q [1, H, hs] over whole compressed-key stores [C, Hk, hs], as block
 * scores before pooling [Hk, C1]: each group's heads summed, 0 where not visible (rows past
 * fineVisible / coarseVisible [1] are masked, so rows never written may hold anything).
 * The stores stay in their rows: one product against the query laid out block-diagonally
 * ([Hk·hs, Hk·G], zero outside each KV head's own block) reads each store once, where
 * transposing a store to [Hk, hs, C] first moved it twice more (64 MB a layer and step at
 * 1M tokens for the 9B).
 */
export function stageOneKeysMajor(g: GraphBuilder, cfg: SalaConfig, q: Value, fineKeys: Value, coarseKeys: Value, fineVisible: Value, coarseVisible: Value): Value {
  const { hs, Hk, G } = sparseHeads(cfg);
  // [Hk, hs, G] per KV head, times the identity over heads: [Hk·hs, Hk·G].
  const perHead = g.transpose(g.reshape(q, [Hk, G, hs]), [0, 2, 1]);
  const identity = Array.from({ length: Hk * Hk }, (_, i) => (Math.floor(i / Hk) === i % Hk ? 1 : 0));
  const eye = g.floats(identity, [Hk, 1, Hk, 1]);
  const blockDiagonal = g.reshape(g.mul(g.unsqueeze(perHead, [2]), eye), [Hk * hs, Hk * G]);
  const scale = g.float(1 / Math.sqrt(hs));
  // [C, Hk·hs] · [Hk·hs, Hk·G] → [C, Hk, G]
  const dot = (keys: Value): Value => g.reshape(g.mul(g.matmul(g.reshape(keys, [-1, Hk * hs]), blockDiagonal), scale), [-1, Hk, G]);
  const visible = (keys: Value, count: Value): Value => g.unsqueeze(g.less(g.range(g.int64(0), g.gather(g.shape(keys), g.int64(0)), g.int64(1)), count), [1]); // [C, 1]
  // A finite floor, not −inf: a chunk of rows all masked must not turn the two-stage log-sum-exp into NaN.
  const coarseBias = g.unsqueeze(g.where(visible(coarseKeys, coarseVisible), g.float(0), g.float(MASKED)), [2]); // [C2, 1, 1]
  const lse = chunkedLogSumExp(g, g.add(dot(coarseKeys), coarseBias), 0, 3); // [1, Hk, G]
  // A query that sees no coarse key gets probability 0 everywhere (the reference's NaN → 0).
  const safeLse = g.where(g.greater(coarseVisible, g.int64(0)), lse, g.float(Infinity));
  const summed = g.reduceSum(g.exp(g.sub(dot(fineKeys), safeLse)), [2], false); // [C1, Hk]
  return g.transpose(g.where(visible(fineKeys, fineVisible), g.mul(summed, g.float(16 / G)), g.float(0)), [1, 0]);
}

/** A score no live key reaches: exp(MASKED − any live score) is 0 in float32. */
const MASKED = -1e30;

/** Values a log-sum-exp first reduces in groups of (see chunkedLogSumExp). */
const LSE_CHUNK = 128;

/**
 * log Σ exp over `axis` of x (of `rank` dimensions), kept as a dimension of 1, in two stages:
 * over chunks of LSE_CHUNK values, then over the chunks. CUDA reduced a long axis to few
 * values on one thread per value: 16K coarse rows to the 32 of a decode query took 1.7 ms a
 * layer at 1M tokens (bench:selection on an H100); two stages give it thousands of threads.
 * Values padded in to fill the last chunk are MASKED, as x's masked values must be.
 */
export function chunkedLogSumExp(g: GraphBuilder, x: Value, axis: number, rank: number): Value {
  const shape = g.shape(x);
  const length = g.gather(shape, g.int64s([axis])); // [1]
  const chunk = g.int64(LSE_CHUNK);
  const pad = g.sub(g.mul(g.div(g.add(length, g.int64(LSE_CHUNK - 1)), chunk), chunk), length); // [1]
  // ONNX Pad's [begins…, ends…]: only the end of `axis` grows.
  const pads = g.concat([g.int64s(new Array(rank + axis).fill(0)), pad, ...(axis < rank - 1 ? [g.int64s(new Array(rank - axis - 1).fill(0))] : [])], 0);
  const padded = g.op('Pad', [x, pads, g.float(MASKED)], { mode: 'constant' });
  const before = axis > 0 ? [g.slice(shape, [0], [axis], [0])] : [];
  const after = axis < rank - 1 ? [g.slice(shape, [axis + 1], [rank], [0])] : [];
  const chunks = g.reshape(padded, g.concat([...before, g.int64s([-1, LSE_CHUNK]), ...after], 0));
  return g.reduceLogSumExp(g.reduceLogSumExp(chunks, [axis + 1], false), [axis]);
}

/**
 * The selection of buildSparseSelect for queries q, its other inputs declared here: [Hk, T, K]
 * block ids, ascending, −1 = none; each query's own block [T, 1]; the block_excluded input [NB]. k (how many blocks) is the input `topKName`.
 */
export function blockSelection(
  g: GraphBuilder,
  cfg: SalaConfig,
  q: Value,
  resident: boolean,
  topKName = 'k',
  oneQuery = false,
): { selected: Value; queryBlock: Value; excluded: Value } {
  const { hs, Hk } = sparseHeads(cfg);
  const { blockSize, kernelStride } = cfg.sparse;
  const poolStride = blockSize / kernelStride;
  // Resident: the compressed keys live on the device in stores with spare rows, appended
  // to in place as windows complete; the graph reads their first fine/coarse_count rows.
  const liveRows = (store: Value, count: Value, axis = 0): Value => g.op('Slice', [store, g.int64s([0]), count, g.int64s([axis])]);
  const fineStore = resident ? g.input('c1_store', 'float', ['C1', Hk, hs]) : g.input('c1', 'float', ['N1', Hk, hs]);
  const coarseStore = resident ? g.input('c2_store', 'float', ['C2', Hk, hs]) : g.input('c2', 'float', ['N2', Hk, hs]);
  const fineCount = resident ? g.input('fine_count', 'int64', [1]) : undefined;
  const coarseCount = resident ? g.input('coarse_count', 'int64', [1]) : undefined;
  const queryPositions = g.input('query_positions', 'int64', ['T']);
  const fineVisible = g.input('fine_visible', 'int64', ['T']);
  const coarseVisible = g.input('coarse_visible', 'int64', ['T']);
  const poolPads = g.input('pool_pads', 'int64', [6]);
  const k = g.input(topKName, 'int64', [1]);
  const excluded = g.input('block_excluded', 'bool', ['NB']);

  if (oneQuery && !resident) throw new Error('a one-query selection reads the resident stores');
  const groupScores = oneQuery
    ? // One decode query over the whole stores (no copy of their live rows), its scores cut to the live ones: [Hk, 1, N1].
      g.unsqueeze(liveRows(stageOneKeysMajor(g, cfg, q, fineStore, coarseStore, fineVisible, coarseVisible), fineCount!, 1), [1])
    : stageOneRows(
        g,
        cfg,
        q,
        resident ? liveRows(fineStore, fineCount!) : fineStore,
        resident ? liveRows(coarseStore, coarseCount!) : coarseStore,
        fineVisible,
        coarseVisible,
        resident ? 'chunked' : 'one-pass',
      );

  // Pool to blocks: block b takes max over fine keys 4b−1 … 4b+3 (kernel 5, stride 4, pad 1);
  // −inf padding makes windows past the end −inf, as the kernel does.
  const padded = g.op('Pad', [groupScores, poolPads, g.float(-Infinity)], { mode: 'constant' }); // [Hk, T, 4·nb + 4]
  const rows = g.reshape(padded, g.shapeOf([-1, 1, g.dim(padded, 2)]));
  const pooled = g.op('MaxPool', [rows], { kernel_shape: [poolStride + 1], strides: [poolStride] });
  const blockScores = g.reshape(pooled, g.shapeOf([Hk, g.dim(q, 0), -1])); // [Hk, T, nb]

  const blocks = g.range(g.int64(0), g.gather(g.shape(blockScores), g.int64(2)), g.int64(1)); // [nb]
  const queryBlock = g.unsqueeze(g.div(queryPositions, g.int64(blockSize)), [1]); // [T, 1]
  return { selected: topBlocks(g, cfg, blockScores, g.unsqueeze(blocks, [0]), queryBlock, excluded, k), queryBlock, excluded };
}

/**
 * Stage 1 of T queries q [T, H, hs] over compressed keys [N, Hk, hs] (the live rows), as
 * block scores before pooling [Hk, T, N1]: the coarse log-sum-exp, fine probabilities summed
 * over each GQA group, 0 where a query may not see the key. The device graphs take the
 * log-sum-exp 'chunked' (chunkedLogSumExp): a long reduction is the shape CUDA ran serially in
 * the decode step (its effect here is not yet measured on a GPU). The host keeps the one pass.
 */
export function stageOneRows(
  g: GraphBuilder,
  cfg: SalaConfig,
  q: Value,
  fineKeys: Value,
  coarseKeys: Value,
  fineVisible: Value,
  coarseVisible: Value,
  lseForm: 'one-pass' | 'chunked',
  /** The form before 2026-12-08 (ReduceLogSumExp, the log-sum-exp subtracted from the scores), for bench:selection. */
  previous = false,
): Value {
  const { hs, Hk, G } = sparseHeads(cfg);
  // [Hk, G·T, hs] · [Hk, hs, N] → [Hk, G, T, N]; the scale on the queries, not on the T × N scores.
  const groupedQ = g.reshape(g.transpose(g.reshape(g.mul(q, g.float(1 / Math.sqrt(hs))), [0, Hk, G, hs]), [1, 2, 0, 3]), [Hk, -1, hs]);
  const dot = (keys: Value): Value => g.reshape(g.matmul(groupedQ, g.transpose(keys, [1, 2, 0])), g.shapeOf([Hk, G, -1, g.dim(keys, 0)]));
  const visibleMask = (count: Value, keys: Value): Value => {
    const columns = g.range(g.int64(0), g.gather(g.shape(keys), g.int64(0)), g.int64(1)); // [N]
    return g.less(g.unsqueeze(columns, [0]), g.unsqueeze(count, [1])); // [T, N]
  };
  const negInf = g.float(-Infinity);

  // Masks become additive biases on small [T, N] tensors: a Where over the full
  // [Hk, G, T, N] scores costs more than the scores themselves on the CPU.
  const zero = g.float(0);
  // 1. Approximate log-sum-exp over the visible coarse keys: [Hk, G, T, 1].
  // Chunked: a finite floor, so that a chunk with every key masked is not NaN.
  const coarseBias = g.where(visibleMask(coarseVisible, coarseKeys), zero, lseForm === 'chunked' ? g.float(MASKED) : negInf); // [T, N2]
  const coarseScores = g.add(dot(coarseKeys), coarseBias);
  // One pass as max, exp, sum and log: the CPU provider ran its ReduceLogSumExp slower (stage 1 whole: bench:selection).
  const lse = lseForm === 'chunked' ? chunkedLogSumExp(g, coarseScores, 3, 4) : previous ? g.reduceLogSumExp(coarseScores, [-1]) : logSumExp(g, coarseScores);
  // A query that sees no coarse key gets probability 0 everywhere (the reference's NaN → 0).
  const hasCoarse = g.unsqueeze(g.greater(coarseVisible, g.int64(0)), [1]); // [T, 1]
  const safeLse = g.where(hasCoarse, lse, g.float(Infinity));
  // 2. Fine probabilities, 3. summed over the query heads of each group (the reference
  // kernels see 16 rows per KV head), 0 where not visible: the 0/1 mask is the same for
  // every head of a group, so it applies after the sum, on a G-times smaller tensor (exact).
  const fineMask = g.mul(g.cast(visibleMask(fineVisible, fineKeys), 'float'), g.float(16 / G)); // [T, N1]
  // The log-sum-exp subtracted inside the product: queries get −lse as one more column, keys a
  // column of ones, so no pass over the [Hk, G, T, N1] scores subtracts it (−∞ for a query that sees nothing).
  const shifted = (): Value => {
    const shiftedQ = g.concat([groupedQ, g.reshape(g.neg(safeLse), [Hk, -1, 1])], 2); // [Hk, G·T, hs + 1]
    const withOnes = g.concat([fineKeys, g.expand(g.float(1), g.shapeOf([g.dim(fineKeys, 0), Hk, 1]))], 2); // [N1, Hk, hs + 1]
    return g.reshape(g.matmul(shiftedQ, g.transpose(withOnes, [1, 2, 0])), g.shapeOf([Hk, G, -1, g.dim(fineKeys, 0)]));
  };
  const probabilities = g.exp(previous ? g.sub(dot(fineKeys), safeLse) : shifted()); // [Hk, G, T, N1]
  return g.mul(g.reduceSum(probabilities, [1], false), fineMask); // [Hk, T, N1]
}

/** log Σ exp over the last axis, kept as a dimension of 1; a row of −∞ gives NaN (callers replace those rows). */
function logSumExp(g: GraphBuilder, x: Value): Value {
  const max = g.reduceMax(x, [-1]);
  return g.add(g.op('Log', [g.reduceSum(g.exp(g.sub(x, max)), [-1])]), max);
}

/**
 * The selection rule on pooled block scores [Hk, T, nb] (blockRow [1, nb] their ids,
 * queryBlock [T, 1] each query's block, excluded [nb] the tombstoned ones, k [1]): init
 * blocks and the local window forced, tombstoned blocks never picked otherwise, top-k (ties:
 * lowest id first), then ascending with blocks past the query's own and unusable slots as −1.
 */
export function topBlocks(g: GraphBuilder, cfg: SalaConfig, blockScores: Value, blockRow: Value, queryBlock: Value, excluded: Value, k: Value): Value {
  // Force the init blocks and the local window (qb − local … qb) to +inf.
  const isInit = g.less(blockRow, g.int64(cfg.sparse.initBlocks));
  const isLocal = g.and(g.not(g.less(blockRow, g.sub(queryBlock, g.int64(derivedSizes(cfg).localBlocks)))), g.not(g.greater(blockRow, queryBlock)));
  // Tombstoned blocks (every token dead) are never picked, except where forced.
  const live = g.where(excluded, g.float(-Infinity), blockScores);
  const forced = g.where(g.or(isInit, isLocal), g.float(Infinity), live);

  // Top-k, then ascending block order with blocks past the query's own as −1.
  const [topScores, topIndices] = g.node('TopK', [forced, k], { axis: -1, largest: 1, sorted: 1 }, 2);
  // A slot filled with a −inf block (nothing selectable left) becomes −1 like a future block.
  const unusable = g.op('IsInf', [topScores], { detect_positive: 0 });
  const usable = g.where(unusable, g.int64(Number.MAX_SAFE_INTEGER), topIndices);
  const [ascending] = g.node('TopK', [usable, k], { axis: -1, largest: 0, sorted: 1 }, 2);
  return g.where(g.greater(ascending, g.unsqueeze(queryBlock, [0])), g.int64(-1), ascending);
}

/**
 * One decode query's selected ids [Hk, K] (queryBlock [1, 1]) as pool slots, every block at
 * slot = block id: no block (−1) or the tail reads slot 0 with every key masked. Returns the
 * slots and their live keys [Hk, K, blockSize] from block_alive [NB, blockSize].
 */
export function residentSlots(g: GraphBuilder, selected: Value, queryBlock: Value, blockAlive: Value): { slots: Value; keyAlive: Value } {
  const attended = g.and(g.not(g.less(selected, g.int64(0))), g.not(g.op('Equal', [selected, queryBlock])));
  const slots = g.where(attended, selected, g.int64(0));
  return { slots, keyAlive: g.and(g.gather(blockAlive, slots), g.unsqueeze(attended, [2])) };
}
