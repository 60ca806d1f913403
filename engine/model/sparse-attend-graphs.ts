// The sparse (InfLLM-V2) layer's graphs around selection ("Sparse layer, prefill" and
// "single-token decode" in docs/spec/minicpm-sala.md): the projection, and softmax attention
// over selected 64-token blocks — from the host store, a chunk's rows on the device (over the
// union of their blocks or each over its own), and one decode token over a device pool.
// Shapes as in graph-parts.ts.
import { GraphBuilder, type Value } from '../runtime/graph-builder.js';
import type { Precision } from '../runtime/device.js';
import { derivedSizes, type SalaConfig } from './config.js';
import { attentionOutput, blockStores, linear, matrixInput, rmsNorm, sparseHeads } from './graph-parts.js';
import { blockSelection, residentSlots } from './sparse-select-graph.js';

/**
 * Sparse layer, first part ("Sparse layer, prefill", steps 1 and 4): q, k, v (NoPE) and the output gate from the
 * normed input. `resident`: k and v once more for the host store; `passThrough`: x once more too (into a CUDA graph's input row).
 */
export function buildSparseProject(cfg: SalaConfig, precision: Precision, resident = false, passThrough = false): Uint8Array {
  const { sparseHeadDim: hs } = derivedSizes(cfg);
  const d = cfg.hiddenSize;
  const H = cfg.numAttentionHeads;
  const Hk = cfg.numKeyValueHeads;
  const g = new GraphBuilder(passThrough ? 'sparse_project_captured' : resident ? 'sparse_project_resident' : 'sparse_project');
  const x = g.input('x', 'float', ['T', d]);
  if (passThrough) g.output(g.op('Identity', [x]), 'x_row', 'float', ['T', d]);
  const xn = rmsNorm(g, x, g.input('w_in_norm', 'float', [d]), cfg.rmsNormEps);
  const project = (name: string, rows: number): Value => linear(g, xn, matrixInput(g, name, [rows, d], precision), precision);
  g.output(g.reshape(project('w_q', H * hs), [0, H, hs]), 'q', 'float', ['T', H, hs]);
  const k = g.reshape(project('w_k', Hk * hs), [0, Hk, hs]);
  const v = g.reshape(project('w_v', Hk * hs), [0, Hk, hs]);
  g.output(k, 'k', 'float', ['T', Hk, hs]);
  g.output(v, 'v', 'float', ['T', Hk, hs]);
  if (resident) {
    // The same rows once more, for the host store (an output has one location: these come back to host memory).
    g.output(g.op('Identity', [k]), 'k_host', 'float', ['T', Hk, hs]);
    g.output(g.op('Identity', [v]), 'v_host', 'float', ['T', Hk, hs]);
  }
  if (cfg.attnUseOutputGate) {
    g.output(g.sigmoid(project('w_o_gate', H * hs)), 'gate', 'float', ['T', H * hs]);
  }
  return g.toModel();
}

/**
 * Sparse layer, second part: softmax attention of the queries over 64-token key
 * blocks gathered per KV head (every block on the dense path), restricted per
 * query by a block mask, causally by position and to live (untombstoned) keys;
 * then the output gate, o_proj, the scaled residual and the MLP block.
 */
export function buildSparseAttend(cfg: SalaConfig, precision: Precision): Uint8Array {
  const sizes = derivedSizes(cfg);
  const g = new GraphBuilder('sparse_attend');
  const x = g.input('x', 'float', ['T', cfg.hiddenSize]);
  const q = g.input('q', 'float', ['T', cfg.numAttentionHeads, sizes.sparseHeadDim]);
  const gate = cfg.attnUseOutputGate ? g.input('gate', 'float', ['T', cfg.numAttentionHeads * sizes.sparseHeadDim]) : undefined;
  g.output(attentionOutput(g, cfg, precision, x, attendBlocks(g, cfg, q), gate), 'x_out', 'float', ['T', cfg.hiddenSize]);
  return g.toModel();
}

/** What perRowAttention reads: the block store, each row's slots and block ids [Hk, R, K] (−1 = none), every block's live keys, the rows' positions. */
export interface PerRowInputs {
  keyStore: Value;
  valueStore: Value;
  slots: Value;
  blockIds: Value;
  blockAlive: Value;
  queryPositions: Value;
}

/**
 * Each of R query rows over its own K blocks, gathered per row (R·K blocks per head; no
 * masked-out scores): o [R, H·hs]. The gather is a Gather of whole blocks over the store
 * seen as [Hk·C, blockSize, hs] (row h·C + slot), not a GatherND, whose CUDA kernel works
 * out its index arithmetic per element.
 */
export function perRowAttention(g: GraphBuilder, cfg: SalaConfig, q: Value, inputs: PerRowInputs): Value {
  const { hs, H, Hk, G, blockSize } = sparseHeads(cfg);
  const { keyStore, valueStore, slots, blockIds, blockAlive, queryPositions } = inputs;
  const present = g.not(g.less(blockIds, g.int64(0))); // [Hk, R, K]: not padding
  const keyAlive = g.and(g.gather(blockAlive, g.where(present, blockIds, g.int64(0))), g.unsqueeze(present, [3])); // [Hk, R, K, B]

  const capacity = g.dim(keyStore, 1); // [1]
  const headBase = g.mul(g.reshape(g.range(g.int64(0), g.int64(Hk), g.int64(1)), [Hk, 1, 1]), capacity); // [Hk, 1, 1]
  const flat = g.add(g.where(present, slots, g.int64(0)), headBase); // [Hk, R, K]
  const rowsShape = g.shapeOf([Hk, g.dim(q, 0), -1, hs]);
  const flatStore = (store: Value) => g.reshape(store, [-1, blockSize, hs]); // [Hk·C, B, hs]
  const keys = g.reshape(g.gather(flatStore(keyStore), flat), rowsShape); // [Hk, R, K·B, hs]
  const values = g.reshape(g.gather(flatStore(valueStore), flat), rowsShape);
  const groupedQ = g.transpose(g.reshape(q, [0, Hk, G, hs]), [1, 0, 2, 3]); // [Hk, R, G, hs]
  const scores = g.mul(g.matmul(groupedQ, g.transpose(keys, [0, 1, 3, 2])), g.float(1 / Math.sqrt(hs))); // [Hk, R, G, K·B]

  const offsets = g.range(g.int64(0), g.int64(blockSize), g.int64(1));
  const keyPositions = g.reshape(g.add(g.mul(g.unsqueeze(blockIds, [3]), g.int64(blockSize)), offsets), g.shapeOf([Hk, g.dim(q, 0), -1])); // [Hk, R, K·B]
  const causal = g.not(g.greater(keyPositions, g.unsqueeze(queryPositions, [0, 2])));
  const allowed = g.unsqueeze(g.and(causal, g.reshape(keyAlive, g.shapeOf([Hk, g.dim(q, 0), -1]))), [2]); // [Hk, R, 1, K·B]
  const probabilities = g.softmax(g.add(scores, g.where(allowed, g.float(0), g.float(-Infinity))), -1);
  const attended = g.matmul(probabilities, values); // [Hk, R, G, hs]
  return g.reshape(g.transpose(attended, [1, 0, 2, 3]), [0, H * hs]); // [R, H·hs], head = kv·G + g as in attendBlocks
}

/** Block attention of queries q over the fed blocks ([T, H·hs], before the output gate; the shared core of the attend graphs). */
export function attendBlocks(g: GraphBuilder, cfg: SalaConfig, q: Value): Value {
  const { hs, Hk, blockSize } = sparseHeads(cfg);
  // A store of blocks (head-major) and, per KV head, the blocks to attend to: their ids
  // (padded to U with −1, masked; for positions) and their slots in the store. The store
  // is the host KV store itself (slot = id: no copy), where it spilled to disk just these
  // blocks gathered on the host (slot = i), or a device pool.
  const { keyStore, valueStore } = blockStores(g, cfg);
  const blockIds = g.input('block_ids', 'int64', [Hk, 'U']);
  const storeSlots = g.input('store_slots', 'int64', [Hk, 'U']);
  const blockMask = g.input('block_mask', 'bool', [Hk, 'R', 'U']);
  const keyAlive = g.input('key_alive', 'bool', [Hk, 'U', blockSize]);
  const queryPositions = g.input('query_positions', 'int64', ['R']);

  const heads = g.unsqueeze(g.expand(g.unsqueeze(g.range(g.int64(0), g.int64(Hk), g.int64(1)), [1]), g.shape(storeSlots)), [2]); // [Hk, U, 1]
  const gatherIndex = g.concat([heads, g.unsqueeze(storeSlots, [2])], 2); // [Hk, U, 2]
  const keysByHead = g.reshape(g.op('GatherND', [keyStore, gatherIndex]), [Hk, -1, hs]); // [Hk, S, hs]
  const valuesByHead = g.reshape(g.op('GatherND', [valueStore, gatherIndex]), [Hk, -1, hs]);

  const offsets = g.range(g.int64(0), g.int64(blockSize), g.int64(1));
  const keyPositions = g.reshape(g.add(g.mul(g.unsqueeze(blockIds, [2]), g.int64(blockSize)), offsets), [Hk, 1, -1]); // [Hk, 1, S]
  const causal = g.not(g.greater(keyPositions, g.unsqueeze(queryPositions, [0, 2]))); // [Hk, T, S]
  const alive = g.reshape(keyAlive, [Hk, 1, -1]); // [Hk, 1, S]: not tombstoned
  const selected = g.reshape(g.expand(g.unsqueeze(blockMask, [3]), g.int64s([1, 1, 1, blockSize])), g.shapeOf([Hk, g.dim(q, 0), -1])); // [Hk, T, S]
  return maskedAttention(g, cfg, q, keysByHead, valuesByHead, g.and(g.and(selected, causal), alive));
}

/** Every row over the same keys [Hk, S, hs] (and values), each key allowed or not per row ([Hk, T, S]): o [T, H·hs]. */
export function maskedAttention(g: GraphBuilder, cfg: SalaConfig, q: Value, keysByHead: Value, valuesByHead: Value, allowedKeys: Value): Value {
  const { hs, H, Hk, G } = sparseHeads(cfg);
  const groupedQ = g.reshape(g.transpose(g.reshape(q, [0, Hk, G, hs]), [1, 2, 0, 3]), [Hk, -1, hs]); // [Hk, G·T, hs]
  const scoreShape = g.shapeOf([Hk, G, g.dim(q, 0), -1]);
  const scores = g.reshape(g.mul(g.matmul(groupedQ, g.transpose(keysByHead, [0, 2, 1])), g.float(1 / Math.sqrt(hs))), scoreShape); // [Hk, G, T, S]
  // An additive −inf bias built on the G-times smaller mask (cheaper than a Where over the scores).
  const bias = g.where(g.unsqueeze(allowedKeys, [1]), g.float(0), g.float(-Infinity)); // [Hk, 1, T, S]
  const probabilities = g.softmax(g.add(scores, bias), -1);
  const attended = g.matmul(g.reshape(probabilities, g.shapeOf([Hk, -1, g.dim(keysByHead, 1)])), valuesByHead); // [Hk, G·T, hs]
  return g.reshape(g.transpose(g.reshape(attended, [H, -1, hs]), [1, 0, 2]), [0, H * hs]); // [T, H·hs]
}

/**
 * Sparse layer, second part, for one decode token with the KV cache resident on the
 * device (NOSA's layout): past blocks come from a fixed pool of block slots per KV
 * head, [Hk, P, blockSize, hs], gathered by slot; the block being written lives in a
 * separate tail, [Hk, blockSize, hs], into which this token's k/v row is scattered
 * here (the updated tail is an output, so it never leaves the device). Every pooled
 * block is wholly in the past, so one mask of live keys replaces the causal and block
 * masks: key_alive [Hk, U, blockSize] for the gathered blocks (false for padding and
 * tombstones), tail_alive [Hk, blockSize] for the tail rows written so far.
 */
export function buildSparseAttendResident(cfg: SalaConfig, precision: Precision): Uint8Array {
  const { hs, H, Hk, blockSize } = sparseHeads(cfg);
  const g = new GraphBuilder('sparse_attend_resident');
  const x = g.input('x', 'float', [1, cfg.hiddenSize]);
  const q = g.input('q', 'float', [1, H, hs]);
  residentAttention(g, cfg, precision, x, q, g.input('slots', 'int64', [Hk, 'U']), g.input('key_alive', 'bool', [Hk, 'U', blockSize]));
  return g.toModel();
}

/**
 * Selection and attention of one decode token in one graph, every block resident at slot =
 * block id (placement "device"): the selected ids never leave the device. A slot of no
 * block (−1) or of the tail block reads slot 0 with every key masked, so the attention
 * sees exactly the blocks the split graphs would gather. block_alive [NB, blockSize] holds
 * the live keys of every block (one upload per block boundary or tombstone, shared by the layers).
 */
export function buildSparseSelectAttendResident(cfg: SalaConfig, precision: Precision): Uint8Array {
  const { hs, H, Hk, blockSize } = sparseHeads(cfg);
  const g = new GraphBuilder('sparse_select_attend_resident');
  const x = g.input('x', 'float', [1, cfg.hiddenSize]);
  const q = g.input('q', 'float', [1, H, hs]);
  const blockAlive = g.input('block_alive', 'bool', ['NB', blockSize]);
  const selection = blockSelection(g, cfg, q, true, 'top_k', true); // k is the new token's key here
  const selected = g.reshape(selection.selected, [Hk, -1]); // [Hk, K]
  const { slots, keyAlive } = residentSlots(g, selected, g.reshape(selection.queryBlock, [1, 1]), blockAlive);
  residentAttention(g, cfg, precision, x, q, slots, keyAlive);
  return g.toModel();
}

/**
 * A dense decode step over every past block in place (every block resident at slot = block
 * id): the store is read as it lies, [Hk, P·blockSize, hs], by one product per KV head, with
 * no gather; slots from past_blocks on (the tail's and any not yet written) and tombstoned
 * keys (block_alive [NB, blockSize]) are masked. The tail takes this token's row as in
 * buildSparseAttendResident, and its softmax is joined to the store's by their maxima.
 * It reads all P slots, so the decoder uses it only where a third of them hold past blocks (resident-step.ts).
 */
export function buildSparseAttendStore(cfg: SalaConfig, precision: Precision): Uint8Array {
  const { hs, H, Hk, G, blockSize } = sparseHeads(cfg);
  const g = new GraphBuilder('sparse_attend_store');
  const x = g.input('x', 'float', [1, cfg.hiddenSize]);
  const q = g.input('q', 'float', [1, H, hs]);
  const kv = stepKv(g, cfg);
  const blockAlive = g.input('block_alive', 'bool', ['NB', blockSize]);
  const pastBlocks = g.input('past_blocks', 'int64', [1]);

  const groupedQ = g.mul(g.reshape(q, [Hk, G, hs]), g.float(1 / Math.sqrt(hs))); // [Hk, G, hs], scaled
  // Keys × queries, not queries × transposed keys: the product reads the store once and only the [Hk, P·B, G] scores are transposed.
  const storeScores = g.transpose(g.matmul(g.reshape(kv.poolKeys, [Hk, -1, hs]), g.transpose(groupedQ, [0, 2, 1])), [0, 2, 1]); // [Hk, G, P·B]
  const pastAlive = g.reshape(g.op('Slice', [blockAlive, g.int64s([0]), pastBlocks, g.int64s([0])]), [-1]); // [past·B]
  const unwritten = g.mul(g.sub(g.dim(kv.poolKeys, 1), pastBlocks), g.int64(blockSize)); // [1]
  const storeBias = g.op('Pad', [g.where(pastAlive, g.float(0), g.float(-Infinity)), g.concat([g.int64s([0]), unwritten], 0), g.float(-Infinity)]); // [P·B]
  const store = g.add(storeScores, storeBias);
  const tail = g.add(g.matmul(groupedQ, g.transpose(kv.newTailKeys, [0, 2, 1])), g.unsqueeze(g.where(kv.tailAlive, g.float(0), g.float(-Infinity)), [1])); // [Hk, G, B]
  // softmax over [store, tail] without joining them: the token's own key is live, so the maximum is finite.
  const max = g.op('Max', [g.reduceMax(store, [-1]), g.reduceMax(tail, [-1])]); // [Hk, G, 1]
  const storeWeights = g.exp(g.sub(store, max));
  const tailWeights = g.exp(g.sub(tail, max));
  const total = g.add(g.reduceSum(storeWeights, [-1]), g.reduceSum(tailWeights, [-1]));
  const attended = g.add(g.matmul(storeWeights, g.reshape(kv.poolValues, [Hk, -1, hs])), g.matmul(tailWeights, kv.newTailValues)); // [Hk, G, hs]
  stepOutputs(g, cfg, precision, x, g.reshape(g.div(attended, total), [1, H * hs]), kv);
  return g.toModel();
}

/**
 * Fixed shapes for residentAttention (a CUDA graph replays fixed launches): pool slots P,
 * the slots' width U, and the token's row in the tail [1] and the tail's live keys [Hk,
 * blockSize], computed in the graph instead of fed. Written with Gather and Where instead
 * of GatherND and ScatterND: with those two the first replay on an H200 stopped with an
 * illegal memory access (GatherND's CUDA kernel copies index arithmetic from host memory on
 * each run, which a replay reads after it is freed; ScatterND was not tried alone).
 */
export interface StaticAttention {
  poolSlots: number;
  width: number;
  tailRow: Value;
  tailAlive: Value;
}

/** A decode step's pool and tail: the pool inputs, and the tail with this token's row written in (tail_keys_out / tail_values_out). */
interface StepKv {
  poolKeys: Value;
  poolValues: Value;
  newTailKeys: Value;
  newTailValues: Value;
  tailAlive: Value;
}

/**
 * Declares a decode step's k, v, pool and tail inputs (tail_row and tail_alive too, unless
 * `fixed` gives them) and writes the token's row into the tail: by ScatterND at tail_row, or
 * with `fixed` by an elementwise Where (safe with the output written over the input).
 */
function stepKv(g: GraphBuilder, cfg: SalaConfig, fixed?: StaticAttention): StepKv {
  const { hs, Hk, blockSize } = sparseHeads(cfg);
  const kNew = g.input('k', 'float', [1, Hk, hs]);
  const vNew = g.input('v', 'float', [1, Hk, hs]);
  const poolKeys = g.input('pool_keys', 'float', [Hk, fixed?.poolSlots ?? 'P', blockSize, hs]);
  const poolValues = g.input('pool_values', 'float', [Hk, fixed?.poolSlots ?? 'P', blockSize, hs]);
  const tailKeys = g.input('tail_keys', 'float', [Hk, blockSize, hs]);
  const tailValues = g.input('tail_values', 'float', [Hk, blockSize, hs]);
  const tailAlive = fixed?.tailAlive ?? g.input('tail_alive', 'bool', [Hk, blockSize]);
  if (fixed) {
    const isRow = g.reshape(g.op('Equal', [g.int64s(Array.from({ length: blockSize }, (_, r) => r)), fixed.tailRow]), [1, blockSize, 1]);
    return {
      poolKeys,
      poolValues,
      tailAlive,
      newTailKeys: g.where(isRow, g.reshape(kNew, [Hk, 1, hs]), tailKeys),
      newTailValues: g.where(isRow, g.reshape(vNew, [Hk, 1, hs]), tailValues),
    };
  }
  const tailRow = g.input('tail_row', 'int64', [Hk, 2]); // (head, row) of this token in the tail
  return {
    poolKeys,
    poolValues,
    tailAlive,
    newTailKeys: g.op('ScatterND', [tailKeys, tailRow, g.reshape(kNew, [Hk, hs])]),
    newTailValues: g.op('ScatterND', [tailValues, tailRow, g.reshape(vNew, [Hk, hs])]),
  };
}

/** A decode step's outputs from its attention o [1, H·hs]: the rest of the layer (gate, o_proj, residual, MLP) and the new tail. */
function stepOutputs(g: GraphBuilder, cfg: SalaConfig, precision: Precision, x: Value, o: Value, kv: StepKv): void {
  const { hs, H, Hk, blockSize } = sparseHeads(cfg);
  const gate = cfg.attnUseOutputGate ? g.input('gate', 'float', [1, H * hs]) : undefined;
  g.output(attentionOutput(g, cfg, precision, x, o, gate), 'x_out', 'float', [1, cfg.hiddenSize]);
  g.output(kv.newTailKeys, 'tail_keys_out', 'float', [Hk, blockSize, hs]);
  g.output(kv.newTailValues, 'tail_values_out', 'float', [Hk, blockSize, hs]);
}

/**
 * The attention of buildSparseAttendResident over pool slots with their live keys; declares the
 * pool and tail inputs (stepKv) and every output.
 */
export function residentAttention(g: GraphBuilder, cfg: SalaConfig, precision: Precision, x: Value, q: Value, slots: Value, keyAlive: Value, fixed?: StaticAttention): void {
  const { hs, H, Hk, G, blockSize } = sparseHeads(cfg);
  const kv = stepKv(g, cfg, fixed);
  const { poolKeys, poolValues, newTailKeys, newTailValues, tailAlive } = kv;
  let gathered: (pool: Value) => Value; // [Hk, U·blockSize, hs]
  if (fixed) {
    // Slot s of head h is row h·P + s of the pool seen as [Hk·P, blockSize, hs].
    const P = fixed.poolSlots;
    const flat = g.add(
      slots,
      g.constant(
        BigInt64Array.from({ length: Hk }, (_, h) => BigInt(h * P)),
        [Hk, 1],
        'int64',
      ),
    );
    gathered = (pool) => g.reshape(g.gather(g.reshape(pool, [Hk * P, blockSize, hs]), flat), [Hk, fixed.width * blockSize, hs]);
  } else {
    const heads = g.unsqueeze(g.expand(g.unsqueeze(g.range(g.int64(0), g.int64(Hk), g.int64(1)), [1]), g.shape(slots)), [2]); // [Hk, U, 1]
    const gatherIndex = g.concat([heads, g.unsqueeze(slots, [2])], 2); // [Hk, U, 2]
    gathered = (pool) => g.reshape(g.op('GatherND', [pool, gatherIndex]), [Hk, -1, hs]);
  }
  const keys = g.concat([gathered(poolKeys), newTailKeys], 1); // [Hk, S, hs]
  const values = g.concat([gathered(poolValues), newTailValues], 1);
  const alive = g.unsqueeze(g.concat([g.reshape(keyAlive, [Hk, -1]), tailAlive], 1), [1]); // [Hk, 1, S]
  const groupedQ = g.reshape(q, [Hk, G, hs]);
  const scores = g.mul(g.matmul(groupedQ, g.transpose(keys, [0, 2, 1])), g.float(1 / Math.sqrt(hs))); // [Hk, G, S]
  const probabilities = g.softmax(g.add(scores, g.where(alive, g.float(0), g.float(-Infinity))), -1);
  const o = g.reshape(g.matmul(probabilities, values), [1, H * hs]); // [Hk, G, hs] → [1, H·hs]
  stepOutputs(g, cfg, precision, x, o, kv);
}
