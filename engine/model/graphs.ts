// The MiniCPM-SALA forward pass as ONNX graphs, one graph per layer type and
// step, built once per model from its config and shared by every layer of that
// type (weights are graph inputs, so no layer has graphs or weights of its own).
// Section names refer to docs/spec/minicpm-sala.md, "Forward pass per layer type".
//
// The layers' graphs are in lightning-graph.ts, sparse-select-graph.ts and
// sparse-attend-graphs.ts, over the shared parts of graph-parts.ts; this file builds the
// embedding and head and hands out the sets.
import { GraphBuilder } from '../runtime/graph-builder.js';
import type { Precision } from '../runtime/device.js';
import { derivedSizes, type SalaConfig } from './config.js';
import { linear, matrixInput, rmsNorm } from './graph-parts.js';
import { buildLightning } from './lightning-graph.js';
import { buildSparseSelect } from './sparse-select-graph.js';
import { buildSparseAttend, buildSparseAttendResident, buildSparseAttendStore, buildSparseProject, buildSparseSelectAttendResident } from './sparse-attend-graphs.js';
import { buildSparseAttendRows, buildSparseFinish, type RowAttendForm } from './row-attend-graphs.js';

export interface GraphSet {
  embed: Uint8Array;
  lightning: Uint8Array;
  sparseProject: Uint8Array;
  sparseSelect: Uint8Array;
  sparseAttend: Uint8Array;
  head: Uint8Array;
}

/** embed: x = embed_tokens[ids] · scale_emb. ids [T] → x [T, d]. */
function buildEmbed(cfg: SalaConfig, precision: Precision): Uint8Array {
  const g = new GraphBuilder('embed');
  const ids = g.input('ids', 'int64', ['T']);
  // Gathered, not multiplied: in int4 the table stays fp16.
  const half = precision !== 'fp32';
  const table = g.input('w_embed', half ? 'float16' : 'float', [cfg.vocabSize, cfg.hiddenSize]);
  const rows = g.gather(table, ids);
  const x = g.mul(half ? g.cast(rows, 'float') : rows, g.float(cfg.scaleEmb));
  g.output(x, 'x', 'float', ['T', cfg.hiddenSize]);
  return g.toModel();
}

/** Final norm and lm_head on hidden / (hidden_size / dim_model_base); logits in fp32. */
function buildHead(cfg: SalaConfig, precision: Precision, lastRow = false): Uint8Array {
  const sizes = derivedSizes(cfg);
  const g = new GraphBuilder(lastRow ? 'head_last' : 'head');
  const input = g.input('x', 'float', [lastRow ? 'T' : 'R', cfg.hiddenSize]);
  // The last row only: a chunk's other rows never cross to the host (vocab-wide logits of 256 rows are 75 MB at the 9B shape).
  const x = lastRow ? g.slice(input, [-1], [Number.MAX_SAFE_INTEGER], [0]) : input;
  const normed = rmsNorm(g, x, g.input('w_norm', 'float', [cfg.hiddenSize]), cfg.rmsNormEps);
  const scaled = g.div(normed, g.float(sizes.logitDivisor));
  g.output(linear(g, scaled, matrixInput(g, 'w_lm_head', [cfg.vocabSize, cfg.hiddenSize], precision), precision), 'logits', 'float', [lastRow ? 1 : 'R', cfg.vocabSize]);
  return g.toModel();
}

/** The decode-step graphs of the device-resident path (ResidentDecoder). */
export interface ResidentGraphSet {
  /** A Lightning layer for one token (decode steps). */
  lightningStep: Uint8Array;
  sparseProject: Uint8Array;
  /** The same with x passed through (the captured sparse step's input row). */
  sparseProjectCaptured: Uint8Array;
  sparseSelect: Uint8Array;
  /** The same for one decode query, each store read once in place (stageOneKeysMajor). */
  sparseSelectStep: Uint8Array;
  /** The same with the widest head's union of selected blocks (union_width), for a prefill chunk's selection left on the device. */
  sparseSelectUnion: Uint8Array;
  sparseAttend: Uint8Array;
  /** A dense step over every past block, read in place from the device store. */
  sparseAttendStore: Uint8Array;
  /** Both of them in one graph, for KV all on the device. */
  sparseSelectAttend: Uint8Array;
  /** Chunked prefill: attention for a range of a chunk's rows, in each form (row-attend-graphs.ts), and the head on its last row. */
  sparseAttendRows: Record<RowAttendForm, Uint8Array>;
  /** The rest of the layer over the whole chunk: gate, o_proj, residual, MLP. */
  sparseFinish: Uint8Array;
  headLast: Uint8Array;
}

export function buildResidentGraphs(cfg: SalaConfig, precision: Precision = 'fp32'): ResidentGraphSet {
  return {
    lightningStep: buildLightning(cfg, precision, true),
    sparseProject: buildSparseProject(cfg, precision, true),
    sparseProjectCaptured: buildSparseProject(cfg, precision, true, true),
    sparseSelect: buildSparseSelect(cfg, true),
    sparseSelectUnion: buildSparseSelect(cfg, true, true),
    sparseSelectStep: buildSparseSelect(cfg, true, false, true),
    sparseAttend: buildSparseAttendResident(cfg, precision),
    sparseAttendStore: buildSparseAttendStore(cfg, precision),
    sparseSelectAttend: buildSparseSelectAttendResident(cfg, precision),
    sparseAttendRows: {
      union: buildSparseAttendRows(cfg, 'union'),
      'per-row': buildSparseAttendRows(cfg, 'per-row'),
      'selected-union': buildSparseAttendRows(cfg, 'selected-union'),
      'selected-per-row': buildSparseAttendRows(cfg, 'selected-per-row'),
    },
    sparseFinish: buildSparseFinish(cfg, precision),
    headLast: buildHead(cfg, precision, true),
  };
}

export function buildGraphs(cfg: SalaConfig, precision: Precision = 'fp32'): GraphSet {
  return {
    embed: buildEmbed(cfg, precision),
    lightning: buildLightning(cfg, precision),
    sparseProject: buildSparseProject(cfg, precision),
    sparseSelect: buildSparseSelect(cfg),
    sparseAttend: buildSparseAttend(cfg, precision),
    head: buildHead(cfg, precision),
  };
}

/** The graph inputs that are large matrices (stored in the model's precision); the rest are fp32. */
export const MATRIX_INPUTS: ReadonlySet<string> = new Set(['w_embed', 'w_lm_head', 'w_q', 'w_k', 'w_v', 'w_o', 'w_z', 'w_o_gate', 'w_mlp_gate', 'w_mlp_up', 'w_mlp_down']);
