// A sparse layer's attention for a range of a prefill chunk's rows, in the resident
// decoder (resident-prefill.ts): the chunk's queries stay on the device; a call slices its
// rows and writes their attention (before the output gate) into o_acc, the chunk's so far,
// so a chunk attends in several calls without its tensors coming back to the host; then one
// run (buildSparseFinish) applies the gate, o_proj, the residual and the MLP to the whole
// chunk, reading the layer's weights once a chunk rather than once a call.
// Four forms: the blocks fed from the host (over the union of the rows' blocks with a
// per-row mask, or each row over its own k blocks), or — every block on the device at
// slot = block id — the chunk's selection read where the selection graph left it, so no
// block id crosses the bus (over the union of the rows' blocks, compacted on the device,
// with a per-row mask, or each row over its own).
// Shapes as in graph-parts.ts.
import { GraphBuilder, type Value } from '../runtime/graph-builder.js';
import type { Precision } from '../runtime/device.js';
import { derivedSizes, type SalaConfig } from './config.js';
import { attentionOutput, blockStores, sparseHeads } from './graph-parts.js';
import { attendBlocks, maskedAttention, perRowAttention } from './sparse-attend-graphs.js';
import { selectionMask } from './sparse-select-graph.js';

/** How a call's rows attend: blocks fed from the host, or the selection read on the device; over their union with a mask, or per row. */
export type RowAttendForm = 'union' | 'per-row' | 'selected-union' | 'selected-per-row';

const NAMES: Record<RowAttendForm, string> = {
  union: 'sparse_attend_rows',
  'per-row': 'sparse_attend_queries',
  'selected-union': 'sparse_attend_selected_rows',
  'selected-per-row': 'sparse_attend_selected_queries',
};

/** Rows [start, end) of row_range attending in the given form; their attention written into o_acc (o_acc_out). */
export function buildSparseAttendRows(cfg: SalaConfig, form: RowAttendForm): Uint8Array {
  const sizes = derivedSizes(cfg);
  const width = cfg.numAttentionHeads * sizes.sparseHeadDim;
  const g = new GraphBuilder(NAMES[form]);
  const range = g.input('row_range', 'int64', [2]);
  const start = g.slice(range, [0], [1], [0]);
  const end = g.slice(range, [1], [2], [0]);
  const rows = (value: Value, axis = 0): Value => g.op('Slice', [value, start, end, g.int64s([axis])]);
  const q = rows(g.input('q', 'float', ['T', cfg.numAttentionHeads, sizes.sparseHeadDim]));
  let out: Value; // [end − start, H·hs]
  if (form === 'union') out = attendBlocks(g, cfg, q);
  else if (form === 'per-row') out = attendFedRows(g, cfg, q);
  else {
    const { Hk } = sparseHeads(cfg);
    const selected = rows(g.input('selected', 'int64', [Hk, 'T', 'K']), 1); // [Hk, R, K]: the selection graph's output, −1 = none
    const positions = g.add(g.range(g.squeeze(start, [0]), g.squeeze(end, [0]), g.int64(1)), g.input('first_position', 'int64', [1])); // [R]
    out = (form === 'selected-union' ? attendSelectedUnion : attendOwnSelected)(g, cfg, q, selected, positions);
  }
  const at = g.unsqueeze(g.range(g.squeeze(start, [0]), g.squeeze(end, [0]), g.int64(1)), [1]); // [R, 1]
  g.output(g.op('ScatterND', [g.input('o_acc', 'float', ['T', width]), at, out]), 'o_acc_out', 'float', ['T', width]);
  return g.toModel();
}

/** The rest of the sparse layer over a whole chunk, from its attention o: the output gate, o_proj, the scaled residual and the MLP block. */
export function buildSparseFinish(cfg: SalaConfig, precision: Precision): Uint8Array {
  const width = cfg.numAttentionHeads * derivedSizes(cfg).sparseHeadDim;
  const g = new GraphBuilder('sparse_finish');
  const x = g.input('x', 'float', ['T', cfg.hiddenSize]);
  const o = g.input('o', 'float', ['T', width]);
  const gate = cfg.attnUseOutputGate ? g.input('gate', 'float', ['T', width]) : undefined;
  g.output(attentionOutput(g, cfg, precision, x, o, gate), 'x_out', 'float', ['T', cfg.hiddenSize]);
  return g.toModel();
}

/**
 * Each row over its own blocks as fed: query_slots / query_blocks [Hk, R, K] (slot in the
 * store and block id, −1 = padding); the live keys from block_alive [NB, blockSize], the
 * device copy resident-kv.ts keeps for the decode steps too (a per-row mask built on the
 * host was R·K·blockSize bytes per head and layer: 16 MiB for 2,048 rows of the 9B shape).
 */
function attendFedRows(g: GraphBuilder, cfg: SalaConfig, q: Value): Value {
  const { Hk, blockSize } = sparseHeads(cfg);
  const { keyStore, valueStore } = blockStores(g, cfg);
  const slots = g.input('query_slots', 'int64', [Hk, 'R', 'K']);
  const blockIds = g.input('query_blocks', 'int64', [Hk, 'R', 'K']);
  const blockAlive = g.input('block_alive', 'bool', ['NB', blockSize]);
  const queryPositions = g.input('query_positions', 'int64', ['R']);
  return perRowAttention(g, cfg, q, { keyStore, valueStore, slots, blockIds, blockAlive, queryPositions });
}

/** Each row over the blocks it selected, read from the store at slot = block id. */
function attendOwnSelected(g: GraphBuilder, cfg: SalaConfig, q: Value, selected: Value, queryPositions: Value): Value {
  const { keyStore, valueStore } = blockStores(g, cfg);
  const blockAlive = g.input('block_alive', 'bool', ['NB', cfg.sparse.blockSize]);
  return perRowAttention(g, cfg, q, { keyStore, valueStore, slots: selected, blockIds: selected, blockAlive, queryPositions });
}

/**
 * The rows over the union of their selections, compacted on the device: the [Hk, R, K] ids
 * become a [Hk, R, NB] mask (selectionMask), TopK sorts each head's union to the front of its
 * NB, and the first W (the widest head's union) are gathered from the store; a key is allowed
 * where its block is among the row's selected, causal and alive. Scores: W·blockSize a row
 * (W ≤ NB, far less when neighbouring rows select alike); gathers: W blocks a head, not k a row.
 */
function attendSelectedUnion(g: GraphBuilder, cfg: SalaConfig, q: Value, selected: Value, queryPositions: Value): Value {
  const { hs, Hk, blockSize } = sparseHeads(cfg);
  const { keyStore, valueStore } = blockStores(g, cfg);
  const blockAlive = g.input('block_alive', 'bool', ['NB', blockSize]);
  const blocks = g.dim(blockAlive, 0); // [1]
  const R = g.dim(q, 0);
  const chosen = selectionMask(g, Hk, selected, blocks); // [Hk, R, NB], 1 = selected
  const inUnion = g.reduceMax(chosen, [1], false); // [Hk, NB]
  const width = g.cast(g.reduceMax(g.reduceSum(inUnion, [1], false), [0]), 'int64'); // [1]: the widest head's union
  const [, order] = g.node('TopK', [inUnion, blocks], { axis: 1, largest: 1, sorted: 1 }, 2); // [Hk, NB]: the union's ids first
  const ids = g.op('Slice', [order, g.int64s([0]), width, g.int64s([1])]); // [Hk, W]; a narrower head's extras are masked below
  const headBase = g.mul(g.reshape(g.range(g.int64(0), g.int64(Hk), g.int64(1)), [Hk, 1]), g.dim(keyStore, 1)); // [Hk, 1]
  const gathered = (store: Value) => g.reshape(g.gather(g.reshape(store, [-1, blockSize, hs]), g.add(ids, headBase)), [Hk, -1, hs]); // [Hk, W·B, hs]
  const rowChosen = g.op('GatherElements', [chosen, g.expand(g.unsqueeze(ids, [1]), g.shapeOf([Hk, R, width]))], { axis: 2 }); // [Hk, R, W]
  const byKey = g.reshape(g.expand(g.unsqueeze(g.cast(rowChosen, 'bool'), [3]), g.int64s([1, 1, 1, blockSize])), g.shapeOf([Hk, R, -1])); // [Hk, R, W·B]
  const offsets = g.range(g.int64(0), g.int64(blockSize), g.int64(1));
  const keyPositions = g.reshape(g.add(g.mul(g.unsqueeze(ids, [2]), g.int64(blockSize)), offsets), [Hk, 1, -1]); // [Hk, 1, W·B]
  const causal = g.not(g.greater(keyPositions, g.reshape(queryPositions, [1, -1, 1]))); // [Hk, R, W·B]
  const alive = g.reshape(g.gather(blockAlive, ids), [Hk, 1, -1]); // [Hk, 1, W·B]
  return maskedAttention(g, cfg, q, gathered(keyStore), gathered(valueStore), g.and(g.and(byKey, causal), alive));
}
