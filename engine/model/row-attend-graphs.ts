// A sparse layer's attention for a range of a prefill chunk's rows, in the resident
// decoder (resident-prefill.ts): the chunk's queries stay on the device; a call slices its
// rows and writes their attention (before the output gate) into o_acc, the chunk's so far,
// so a chunk attends in several calls without its tensors coming back to the host; then one
// run (buildSparseFinish) applies the gate, o_proj, the residual and the MLP to the whole
// chunk, reading the layer's weights once a chunk rather than once a call.
// Four forms: the blocks fed from the host (over the union of the rows' blocks with a
// per-row mask, or each row over its own k blocks), or — every block on the device at
// slot = block id — the chunk's selection read where the selection graph left it, so no
// block id crosses the bus (over every block with a per-row mask, or each row over its own).
// Shapes as in graph-parts.ts.
import { GraphBuilder, type Value } from '../runtime/graph-builder.js';
import type { Precision } from '../runtime/device.js';
import { derivedSizes, type SalaConfig } from './config.js';
import { attentionOutput, blockStores, sparseHeads } from './graph-parts.js';
import { attendBlocks, maskedAttention, perRowAttention } from './sparse-attend-graphs.js';

/** How a call's rows attend: blocks fed from the host, or the selection read on the device; over a union (every block) with a mask, or per row. */
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
    out = (form === 'selected-union' ? attendEverySelected : attendOwnSelected)(g, cfg, q, selected, positions);
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
 * Every row over all NB blocks of block_alive (the store's first NB slots, no gather),
 * each key allowed where its block is among the row's selected, causal and alive: the
 * selection becomes a mask on the device (one scatter of the [Hk, R, K] ids into [Hk, R, NB]).
 * Computes NB·blockSize scores a row against the per-row form's K·blockSize, and gathers nothing.
 */
function attendEverySelected(g: GraphBuilder, cfg: SalaConfig, q: Value, selected: Value, queryPositions: Value): Value {
  const { hs, Hk, blockSize } = sparseHeads(cfg);
  const { keyStore, valueStore } = blockStores(g, cfg);
  const blockAlive = g.input('block_alive', 'bool', ['NB', blockSize]);
  const blocks = g.dim(blockAlive, 0); // [1]
  const first = (store: Value) => g.reshape(g.op('Slice', [store, g.int64s([0]), blocks, g.int64s([1])]), [Hk, -1, hs]); // [Hk, S, hs]
  // The ids as a [Hk, R, NB] mask: none (−1) lands in a spare column NB, sliced off.
  const none = g.less(selected, g.int64(0));
  const columns = g.where(none, blocks, selected);
  const empty = g.expand(g.float(0), g.shapeOf([Hk, g.dim(q, 0), g.add(blocks, g.int64s([1]))]));
  const marked = g.op('ScatterElements', [empty, columns, g.expand(g.float(1), g.shape(selected))], { axis: 2 });
  const chosen = g.cast(g.op('Slice', [marked, g.int64s([0]), blocks, g.int64s([2])]), 'bool'); // [Hk, R, NB]
  const byKey = g.reshape(g.expand(g.unsqueeze(chosen, [3]), g.int64s([1, 1, 1, blockSize])), g.shapeOf([Hk, g.dim(q, 0), -1])); // [Hk, R, S]
  const keyPositions = g.range(g.int64(0), g.mul(g.squeeze(blocks, [0]), g.int64(blockSize)), g.int64(1)); // [S]
  const causal = g.unsqueeze(g.not(g.greater(g.unsqueeze(keyPositions, [0]), g.unsqueeze(queryPositions, [1]))), [0]); // [1, R, S]
  const alive = g.reshape(blockAlive, [1, 1, -1]); // [1, 1, S]
  return maskedAttention(g, cfg, q, first(keyStore), first(valueStore), g.and(g.and(byKey, causal), alive));
}
