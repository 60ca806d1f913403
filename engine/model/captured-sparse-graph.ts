// A sparse layer's decode step — selection, attention, o_proj and the MLP — at fixed
// shapes, so that a CUDA graph can replay it (a replay repeats the captured launches, so
// no tensor may change shape from one step to the next). It computes what
// buildSparseSelectAttendResident computes (docs/spec/minicpm-sala.md, "Sparse layer,
// single-token decode"), with every length the decoder's capacity instead of the context's:
//   - stage 1 reads every row of the compressed-key stores; rows past what the query may
//     see are masked as the split graph masks them (so rows not yet written are never read);
//   - pooling runs over the blocks the decoder can hold. Blocks past the step's own do not
//     exist in the reference; here they pool masked scores (0), below every live block's
//     and after it in id order (top-k breaks ties toward the lowest id), so they only take
//     slots the reference fills with nothing or a dead block, and become −1 as those do;
//   - top-k keeps topk + local slots; where the reference keeps fewer (fewer blocks
//     exist), the extra slots hold such blocks;
//   - the tail row and its live keys come from the step's position in the graph.
// What changes per step arrives as values in fixed buffers: `step` = [position, fine keys
// visible, coarse keys visible], the live keys of every block, the dead blocks. With the KV
// offloaded the step is two graphs: the selection (ids out to the host, which places them in
// the pool) and the attention over the slots the host writes back.
import { GraphBuilder, type Value } from '../runtime/graph-builder.js';
import type { Precision } from '../runtime/device.js';
import { derivedSizes, type SalaConfig } from './config.js';
import { sparseHeads } from './graph-parts.js';
import { residentAttention } from './sparse-attend-graphs.js';
import { residentSlots, stageOneKeysMajor, topBlocks } from './sparse-select-graph.js';

/** The sizes a captured step is built for: block slots, fine and coarse compressed-key rows. */
export interface StepCapacity {
  blocks: number;
  fineRows: number;
  coarseRows: number;
}

/** Index of each value in the step buffer. */
export const STEP_FIELDS = ['position', 'fineVisible', 'coarseVisible'] as const;

/** stageOneKeysMajor as it was first written, each store transposed to [Hk, hs, N] (PANORAMA_STAGE_ONE=transposed: bench:gpu-step's comparison point). */
function stageOneTransposed(g: GraphBuilder, cfg: SalaConfig, q: Value, capacity: StepCapacity, fineVisible: Value, coarseVisible: Value): Value {
  const { hs, Hk, G } = sparseHeads(cfg);
  const { fineRows: N1, coarseRows: N2 } = capacity;
  const fineKeys = g.input('c1_store', 'float', [N1, Hk, hs]);
  const coarseKeys = g.input('c2_store', 'float', [N2, Hk, hs]);
  const iota = (n: number): Value => g.int64s(Array.from({ length: n }, (_, i) => i));
  const groupedQ = g.reshape(q, [Hk, G, hs]); // one query: head h·G + j is row j of KV head h
  const scale = g.float(1 / Math.sqrt(hs));
  const dot = (keys: Value): Value => g.mul(g.matmul(groupedQ, g.transpose(keys, [1, 2, 0])), scale);
  const negInf = g.float(-Infinity);
  const coarseBias = g.where(g.less(iota(N2), coarseVisible), g.float(0), negInf); // [N2]
  const lse = g.reduceLogSumExp(g.add(dot(coarseKeys), coarseBias), [-1]); // [Hk, G, 1]
  const safeLse = g.where(g.greater(coarseVisible, g.int64(0)), lse, g.float(Infinity));
  const summed = g.reduceSum(g.exp(g.sub(dot(fineKeys), safeLse)), [1], false); // [Hk, N1]
  return g.where(g.less(iota(N1), fineVisible), g.mul(summed, g.float(16 / G)), g.float(0));
}

/** A captured graph's step fields (see STEP_FIELDS), each [1]. */
function stepFields(g: GraphBuilder): Record<(typeof STEP_FIELDS)[number], Value> {
  const step = g.input('step', 'int64', [STEP_FIELDS.length]);
  const field = (name: (typeof STEP_FIELDS)[number]): Value => g.gather(step, g.int64s([STEP_FIELDS.indexOf(name)])); // [1]
  return { position: field('position'), fineVisible: field('fineVisible'), coarseVisible: field('coarseVisible') };
}

/** How many blocks a captured selection keeps per head. */
export function capturedTopK(cfg: SalaConfig, capacity: StepCapacity): number {
  return Math.min(derivedSizes(cfg).topkTotal, capacity.blocks);
}

/** The step's selection at capacity: [Hk, K] block ids, ascending, −1 = none (as buildSparseSelect's). */
function capturedSelection(g: GraphBuilder, cfg: SalaConfig, capacity: StepCapacity, q: Value, fields: Record<(typeof STEP_FIELDS)[number], Value>): Value {
  const { hs, Hk } = sparseHeads(cfg);
  const { blocks: NB, fineRows: N1, coarseRows: N2 } = capacity;
  const groupScores =
    process.env.PANORAMA_STAGE_ONE === 'transposed'
      ? stageOneTransposed(g, cfg, q, capacity, fields.fineVisible, fields.coarseVisible)
      : stageOneKeysMajor(g, cfg, q, g.input('c1_store', 'float', [N1, Hk, hs]), g.input('c2_store', 'float', [N2, Hk, hs]), fields.fineVisible, fields.coarseVisible);
  return pooledTopBlocks(g, cfg, capacity, groupScores, fields.position, g.input('block_excluded', 'bool', [NB]));
}

/** Stage-1 scores [Hk, fine rows] pooled to the capacity's blocks and the top ones kept: [Hk, K] ids, ascending, −1 = none (position [1], excluded [blocks]). */
export function pooledTopBlocks(g: GraphBuilder, cfg: SalaConfig, capacity: StepCapacity, groupScores: Value, position: Value, excluded: Value): Value {
  const { Hk, blockSize: B } = sparseHeads(cfg);
  const poolStride = B / cfg.sparse.kernelStride;
  const { blocks: NB, fineRows: N1 } = capacity;
  if (poolStride * NB < N1) throw new RangeError(`${N1} fine compressed keys do not pool into ${NB} blocks`);
  const K = capturedTopK(cfg, capacity);
  // Pool to blocks (kernel p+1, stride p, one −inf in front): block b takes fine keys pb−1 … pb+p−1.
  const padded = g.op('Pad', [g.reshape(groupScores, [Hk, 1, N1]), g.int64s([0, 0, 1, 0, 0, poolStride * NB - N1]), g.float(-Infinity)], { mode: 'constant' });
  const pooled = g.op('MaxPool', [padded], { kernel_shape: [poolStride + 1], strides: [poolStride] }); // [Hk, 1, NB]
  // The rule of the uncaptured graphs (one query: T = 1).
  const blockRow = g.reshape(g.int64s(Array.from({ length: NB }, (_, i) => i)), [1, NB]);
  return g.reshape(topBlocks(g, cfg, pooled, blockRow, queryBlockOf(g, cfg, position), excluded, g.int64s([K])), [Hk, K]);
}

/** The step's own block [1, 1]. */
function queryBlockOf(g: GraphBuilder, cfg: SalaConfig, position: Value): Value {
  return g.reshape(g.div(position, g.int64(cfg.sparse.blockSize)), [1, 1]);
}

/** The attention over `slots` [Hk, K] of a pool of `poolSlots` and the tail, the tail's row and live keys from the step's position and block_alive. */
function capturedAttention(
  g: GraphBuilder,
  cfg: SalaConfig,
  precision: Precision,
  poolSlots: number,
  width: number,
  x: Value,
  q: Value,
  slots: Value,
  keyAlive: Value,
  position: Value,
  blockAlive: Value,
): void {
  const { Hk, blockSize: B } = sparseHeads(cfg);
  const iota = g.int64s(Array.from({ length: B }, (_, i) => i));
  const tailBlock = g.div(position, g.int64(B)); // [1]
  const row = g.sub(position, g.mul(tailBlock, g.int64(B))); // [1]
  const tailKeysAlive = g.and(g.not(g.greater(iota, row)), g.gather(blockAlive, tailBlock)); // [1, B]
  const tailAlive = g.expand(tailKeysAlive, g.int64s([Hk, B]));
  residentAttention(g, cfg, precision, x, q, slots, keyAlive, { poolSlots, width, tailRow: row, tailAlive });
}

/** Every block on the device: selection, slots and attention in one graph. */
export function buildSparseStepCaptured(cfg: SalaConfig, precision: Precision, capacity: StepCapacity): Uint8Array {
  const { hs, H, blockSize: B } = sparseHeads(cfg);
  const NB = capacity.blocks;
  const g = new GraphBuilder('sparse_step_captured');
  const x = g.input('x', 'float', [1, cfg.hiddenSize]);
  const q = g.input('q', 'float', [1, H, hs]);
  const fields = stepFields(g);
  const blockAlive = g.input('block_alive', 'bool', [NB, B]);
  const selected = capturedSelection(g, cfg, capacity, q, fields);
  const { slots, keyAlive } = residentSlots(g, selected, queryBlockOf(g, cfg, fields.position), blockAlive);
  capturedAttention(g, cfg, precision, NB, capturedTopK(cfg, capacity), x, q, slots, keyAlive, fields.position, blockAlive);
  return g.toModel();
}

/** Offloaded KV, first half: the selection alone, [Hk, K] ids into a fixed buffer the host reads (to place the blocks). */
export function buildSparseSelectCaptured(cfg: SalaConfig, capacity: StepCapacity): Uint8Array {
  const { hs, H, Hk } = sparseHeads(cfg);
  const g = new GraphBuilder('sparse_select_captured');
  const selected = capturedSelection(g, cfg, capacity, g.input('q', 'float', [1, H, hs]), stepFields(g));
  g.output(selected, 'selected', 'int64', [Hk, capturedTopK(cfg, capacity)]);
  return g.toModel();
}

/** Offloaded KV, second half: the attention over the pool slots the host placed the selection in ([Hk, K], their live keys [Hk, K, blockSize]). */
export function buildSparseAttendCaptured(cfg: SalaConfig, precision: Precision, capacity: StepCapacity, poolSlots: number): Uint8Array {
  const { hs, H, Hk, blockSize: B } = sparseHeads(cfg);
  const K = capturedTopK(cfg, capacity);
  const g = new GraphBuilder('sparse_attend_captured');
  const x = g.input('x', 'float', [1, cfg.hiddenSize]);
  const q = g.input('q', 'float', [1, H, hs]);
  const fields = stepFields(g);
  const blockAlive = g.input('block_alive', 'bool', [capacity.blocks, B]);
  const slots = g.input('slots', 'int64', [Hk, K]);
  const keyAlive = g.input('key_alive', 'bool', [Hk, K, B]);
  capturedAttention(g, cfg, precision, poolSlots, K, x, q, slots, keyAlive, fields.position, blockAlive);
  return g.toModel();
}
