// The MiniCPM-SALA forward pass as ONNX graphs, one graph per layer type and
// step, built once per model from its config and shared by every layer of that
// type (weights are graph inputs, so no layer has graphs or weights of its own).
// Section names refer to docs/spec/minicpm-sala.md, "Forward pass per layer type".
//
// Shapes in comments: T new tokens, d hidden size, H query heads, Hk key/value
// heads, G = H/Hk, hs sparse head size, D lightning head size, S gathered keys.
//
// Precision: the large matrices (q/k/v/o/z/gate projections, the MLP, the embedding
// and lm_head) are fp32 or fp16 graph inputs. In fp16 a product casts its input to
// fp16 and its result back to fp32, so everything else — RMSNorm, RoPE, attention
// scores and softmax, the Lightning state, the residual stream, logits — is fp32.
import { GraphBuilder, type Value } from '../runtime/graph-builder.js';
import type { Precision } from '../runtime/device.js';
import { INT4_BLOCK_SIZE, blocksPerRow } from '../runtime/int4.js';
import { derivedSizes, type SalaConfig } from './config.js';

export interface GraphSet {
  embed: Uint8Array;
  lightning: Uint8Array;
  sparseProject: Uint8Array;
  sparseSelect: Uint8Array;
  sparseAttend: Uint8Array;
  head: Uint8Array;
}

/**
 * RMSNorm ("Model wrapper"): fp32 mean of squares, x / sqrt(mean + eps), times the weight; no
 * bias, no 1+w. Written as Pow → ReduceMean → Add → Sqrt → Div → Mul, the pattern
 * onnxruntime fuses into one SimplifiedLayerNormalization kernel.
 */
function rmsNorm(g: GraphBuilder, x: Value, weight: Value, eps: number): Value {
  const meanSquare = g.reduceMean(g.op('Pow', [x, g.float(2)]), [-1]);
  return g.mul(g.div(x, g.sqrt(g.add(meanSquare, g.float(eps)))), weight);
}

/**
 * A large matrix as a graph takes it: one input in fp32 or fp16, or in int4 three —
 * NAME (packed codes [rows, cols/32, 16]), NAME_scales and NAME_zeros (engine/runtime/int4.ts).
 */
type Matrix = { value: Value } | { codes: Value; scales: Value; zeros: Value; rows: number; cols: number };

/** A large matrix's graph input(s), in the model's precision; shape is HF's [out, in]. */
function matrixInput(g: GraphBuilder, name: string, shape: [number, number], precision: Precision): Matrix {
  if (precision !== 'int4') return { value: g.input(name, precision === 'fp16' ? 'float16' : 'float', shape) };
  const [rows, cols] = shape;
  const blocks = blocksPerRow(cols);
  return {
    codes: g.input(name, 'uint8', [rows, blocks, INT4_BLOCK_SIZE / 2]),
    scales: g.input(`${name}_scales`, 'float', [rows * blocks]),
    zeros: g.input(`${name}_zeros`, 'uint8', [rows * Math.ceil(blocks / 2)]),
    rows,
    cols,
  };
}

/** fp16 copies of fp32 values, one per value, so q/k/v (or gate/up) of one input share its cast. */
const halfOf = new WeakMap<Value, Value>();

/**
 * y = x Wᵀ for an HF [out, in] weight, without transposing the weight. x and y are
 * fp32; in fp16 the product runs on fp16 operands; in int4 MatMulNBits dequantizes
 * the blocks as it goes.
 */
function linear(g: GraphBuilder, x: Value, weight: Matrix, precision: Precision): Value {
  if ('codes' in weight) {
    return g.node('MatMulNBits', [x, weight.codes, weight.scales, weight.zeros], { K: weight.cols, N: weight.rows, bits: 4, block_size: INT4_BLOCK_SIZE }, 1, 'com.microsoft')[0];
  }
  if (precision === 'fp32') return g.op('Gemm', [x, weight.value], { transB: 1 });
  let half = halfOf.get(x);
  if (!half) {
    half = g.cast(x, 'float16');
    halfOf.set(x, half);
  }
  return g.cast(g.op('Gemm', [half, weight.value], { transB: 1 }), 'float');
}

/** SwiGLU MLP ("Model wrapper"): down(silu(gate(x)) * up(x)). */
function mlp(g: GraphBuilder, x: Value, gate: Matrix, up: Matrix, down: Matrix, precision: Precision): Value {
  const gateOut = linear(g, x, gate, precision);
  const activated = g.mul(gateOut, g.sigmoid(gateOut));
  return linear(g, g.mul(activated, linear(g, x, up, precision)), down, precision);
}

/** Second half of every decoder layer: h + α·MLP(RMSNorm_post(h)). */
function mlpBlock(g: GraphBuilder, h: Value, cfg: SalaConfig, residualScale: number, precision: Precision): Value {
  const d = cfg.hiddenSize;
  const ff = cfg.intermediateSize;
  const postNorm = g.input('w_post_norm', 'float', [d]);
  const gate = matrixInput(g, 'w_mlp_gate', [ff, d], precision);
  const up = matrixInput(g, 'w_mlp_up', [ff, d], precision);
  const down = matrixInput(g, 'w_mlp_down', [d, ff], precision);
  const branch = mlp(g, rmsNorm(g, h, postNorm, cfg.rmsNormEps), gate, up, down, precision);
  return g.add(h, g.mul(branch, g.float(residualScale)));
}

/** Number of rows of a [T, ...] value, as an int64 scalar. */
function rowCount(g: GraphBuilder, x: Value): Value {
  return g.gather(g.shape(x), g.int64(0));
}

/** ALiBi slopes of n heads, with the interleave rule when n is not a power of two ("Lightning layer"). */
export function alibiSlopes(n: number): number[] {
  const powerOfTwo = (m: number): number[] => {
    const start = 2 ** -(2 ** -(Math.log2(m) - 3));
    return Array.from({ length: m }, (_, i) => start * start ** i);
  };
  if (Number.isInteger(Math.log2(n))) return powerOfTwo(n);
  const closest = 2 ** Math.floor(Math.log2(n));
  return [
    ...powerOfTwo(closest),
    ...alibiSlopes(2 * closest)
      .filter((_, i) => i % 2 === 0)
      .slice(0, n - closest),
  ];
}

/** RoPE inverse frequencies, rounded as the reference computes them in float32. */
export function ropeInverseFrequencies(headDim: number, theta: number): number[] {
  return Array.from({ length: headDim / 2 }, (_, i) => {
    const exponent = Math.fround((2 * i) / headDim);
    return Math.fround(1 / Math.fround(theta ** exponent));
  });
}

export function lightningScale(cfg: SalaConfig): number {
  if (cfg.lightningScale === '1/sqrt(d)') return 1 / Math.sqrt(cfg.headDim);
  if (cfg.lightningScale === '1/d') return 1 / cfg.headDim;
  return 1;
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

/**
 * One whole lightning decoder layer ("Lightning layer") for T new tokens, carrying the fp32
 * recurrent state. The T tokens form one chunk of the chunked form:
 *   O = ((σQKᵀ) ⊙ M) V + diag(γ^(i+1)) σQ S_prev,  M[i,j] = γ^(i−j) (j ≤ i)
 *   S_new = γ^T S_prev + (diag(γ^(T−1−j)) K)ᵀ V
 * `step` builds the T = 1 form, S_new = γ S_prev + kᵀv, o = σq S_new: the same numbers in
 * a fraction of the kernels (no decay mask, no shape arithmetic), for decode steps on a
 * GPU, where each kernel's launch costs more than its work.
 */
function buildLightning(cfg: SalaConfig, precision: Precision, step = false): Uint8Array {
  const sizes = derivedSizes(cfg);
  const d = cfg.hiddenSize;
  const H = sizes.lightningHeads;
  const Hkv = sizes.lightningKvHeads;
  const D = sizes.lightningHeadDim;
  const g = new GraphBuilder(step ? 'lightning_step' : 'lightning');
  const rows = step ? 1 : 'T';
  const x = g.input('x', 'float', [rows, d]);
  const state = g.input('state', 'float', [H, D, D]);
  const positions = g.input('positions', 'float', [rows]);
  const inNorm = g.input('w_in_norm', 'float', [d]);
  const wq = matrixInput(g, 'w_q', [H * D, d], precision);
  const wk = matrixInput(g, 'w_k', [Hkv * D, d], precision);
  const wv = matrixInput(g, 'w_v', [Hkv * D, d], precision);
  const wo = matrixInput(g, 'w_o', [d, H * D], precision);

  const xn = rmsNorm(g, x, inNorm, cfg.rmsNormEps);
  let q = g.reshape(linear(g, xn, wq, precision), [0, H, D]); // [T, H, D]
  let k = g.reshape(linear(g, xn, wk, precision), [0, Hkv, D]); // [T, Hkv, D]
  let v = g.reshape(linear(g, xn, wv, precision), [0, Hkv, D]);

  // q/k RMSNorm per head, then RoPE: order matters (norm first).
  if (cfg.qkNorm) {
    q = rmsNorm(g, q, g.input('w_q_norm', 'float', [D]), cfg.rmsNormEps);
    k = rmsNorm(g, k, g.input('w_k_norm', 'float', [D]), cfg.rmsNormEps);
  }
  if (cfg.lightningUseRope) {
    const inverseFrequencies = g.floats(ropeInverseFrequencies(D, cfg.ropeTheta), [1, D / 2]);
    const angles = g.mul(g.unsqueeze(positions, [1]), inverseFrequencies); // [T, D/2]
    const both = g.concat([angles, angles], 1); // [T, D]
    const cos = g.unsqueeze(g.cos(both), [1]); // [T, 1, D]
    const sin = g.unsqueeze(g.sin(both), [1]);
    const rotateHalf = (t: Value): Value => {
      const first = g.slice(t, [0], [D / 2], [2]);
      const second = g.slice(t, [D / 2], [D], [2]);
      return g.concat([g.neg(second), first], 2);
    };
    q = g.add(g.mul(q, cos), g.mul(rotateHalf(q), sin));
    k = g.add(g.mul(k, cos), g.mul(rotateHalf(k), sin));
  }
  if (Hkv !== H) {
    const repeat = (t: Value): Value => g.reshape(g.expand(g.unsqueeze(t, [2]), g.int64s([1, Hkv, H / Hkv, D])), [0, H, D]);
    k = repeat(k);
    v = repeat(v);
  }

  const slopes = alibiSlopes(H).map((s) => Math.fround(s));
  const { attended, newState } = step ? lightningStep(g, q, k, v, state, slopes, lightningScale(cfg)) : lightningChunk(g, x, q, k, v, state, slopes, lightningScale(cfg));

  let o = g.reshape(attended, [0, H * D]); // [T, H·D]
  if (cfg.useOutputNorm) o = rmsNorm(g, o, g.input('w_o_norm', 'float', [H * D]), cfg.rmsNormEps);
  if (cfg.useOutputGate) o = g.mul(o, g.sigmoid(linear(g, xn, matrixInput(g, 'w_z', [H * D, d], precision), precision)));
  const h = g.add(x, g.mul(linear(g, o, wo, precision), g.float(sizes.residualScale)));

  g.output(mlpBlock(g, h, cfg, sizes.residualScale, precision), 'x_out', 'float', [rows, d]);
  g.output(newState, 'state_out', 'float', [H, D, D]);
  return g.toModel();
}

/** The chunked form over T rows: returns attended [T, H, D] and the new state. */
function lightningChunk(g: GraphBuilder, x: Value, q: Value, k: Value, v: Value, state: Value, slopeList: number[], scale: number): { attended: Value; newState: Value } {
  // Heads first: [H, T, D].
  const qh = g.mul(g.transpose(q, [1, 0, 2]), g.float(scale));
  const kh = g.transpose(k, [1, 0, 2]);
  const vh = g.transpose(v, [1, 0, 2]);
  const slopes = g.floats(slopeList, [slopeList.length, 1, 1]);
  const T = rowCount(g, x);
  const index = g.cast(g.range(g.int64(0), T, g.int64(1)), 'float'); // [T]
  const Tf = g.cast(T, 'float');

  // Intra-chunk: decay mask M[h,i,j] = exp(−s_h (i−j)) for j ≤ i, else 0.
  const distance = g.sub(g.unsqueeze(index, [1]), g.unsqueeze(index, [0])); // [T, T]
  const causal = g.not(g.less(distance, g.float(0)));
  const decayMask = g.where(causal, g.exp(g.mul(g.neg(slopes), g.op('Relu', [distance]))), g.float(0)); // [H, T, T]
  const scores = g.mul(g.matmul(qh, g.transpose(kh, [0, 2, 1])), decayMask);
  const intra = g.matmul(scores, vh); // [H, T, D]

  // Inter-chunk: row i sees the carried state decayed by γ^(i+1).
  const queryDecay = g.exp(g.mul(g.neg(slopes), g.unsqueeze(g.add(index, g.float(1)), [1]))); // [H, T, 1]
  const inter = g.mul(g.matmul(qh, state), queryDecay);
  const attended = g.transpose(g.add(intra, inter), [1, 0, 2]); // [T, H, D]

  // State update: S_new = γ^T S + Σ_j γ^(T−1−j) k_jᵀ v_j.
  const keyDecay = g.exp(g.mul(g.neg(slopes), g.unsqueeze(g.sub(g.sub(Tf, g.float(1)), index), [1]))); // [H, T, 1]
  const stateDecay = g.exp(g.mul(g.neg(slopes), Tf)); // [H, 1, 1]
  const newState = g.add(g.mul(state, stateDecay), g.matmul(g.transpose(g.mul(kh, keyDecay), [0, 2, 1]), vh));
  return { attended, newState };
}

/** The recurrent form of one row: S_new = γ S + kᵀv, o = σq S_new (the chunked form at T = 1). */
function lightningStep(g: GraphBuilder, q: Value, k: Value, v: Value, state: Value, slopeList: number[], scale: number): { attended: Value; newState: Value } {
  const H = slopeList.length;
  const qh = g.mul(g.reshape(q, [H, 1, -1]), g.float(scale)); // [H, 1, D]: T = 1, so no transpose
  const kColumn = g.reshape(k, [H, -1, 1]); // [H, D, 1]
  const vRow = g.reshape(v, [H, 1, -1]); // [H, 1, D]
  // γ = exp(−s), computed as the chunked form computes it (Exp of −s·1 in float32).
  const gamma = g.exp(g.neg(g.floats(slopeList, [H, 1, 1])));
  const newState = g.add(g.mul(state, gamma), g.matmul(kColumn, vRow));
  const attended = g.reshape(g.matmul(qh, newState), [1, H, -1]); // [1, H, D]
  return { attended, newState };
}

/** Sparse layer, first part ("Sparse layer, prefill", steps 1 and 4): q, k, v (NoPE) and the output gate from the normed input. */
/** `resident`: k and v once more for the host store; `passThrough`: x once more too (into a CUDA graph's input row). */
function buildSparseProject(cfg: SalaConfig, precision: Precision, resident = false, passThrough = false): Uint8Array {
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

/** The sparse layers' attention shape: head size, query heads, KV heads, query heads per KV head, block size. */
export function sparseHeads(cfg: SalaConfig): { hs: number; H: number; Hk: number; G: number; blockSize: number } {
  const H = cfg.numAttentionHeads;
  const Hk = cfg.numKeyValueHeads;
  return { hs: derivedSizes(cfg).sparseHeadDim, H, Hk, G: H / Hk, blockSize: cfg.sparse.blockSize };
}

/**
 * InfLLM-V2 block selection ("Sparse layer, prefill"): stage 1 over compressed keys with the coarse
 * log-sum-exp, summed over each GQA group, max-pooled to blocks, init + local
 * blocks forced, top-k (ties: lowest block id first), sorted, future blocks → −1.
 *
 * Inputs computed by the host: how many fine/coarse compressed keys each query
 * may see (the kernel's visibility rule), the pooled row length and pads, k.
 */
function buildSparseSelect(cfg: SalaConfig, resident = false): Uint8Array {
  const { hs, H, Hk } = sparseHeads(cfg);
  const g = new GraphBuilder(resident ? 'sparse_select_resident' : 'sparse_select');
  const { selected } = blockSelection(g, cfg, g.input('q', 'float', ['T', H, hs]), resident);
  g.output(selected, 'selected', 'int64', [Hk, 'T', 'K']);
  return g.toModel();
}

/**
 * The selection of buildSparseSelect for queries q, its other inputs declared here: [Hk, T, K]
 * block ids, ascending, −1 = none; and each query's own block [T, 1]. k (how many blocks) is the input `topKName`.
 */
function blockSelection(g: GraphBuilder, cfg: SalaConfig, q: Value, resident: boolean, topKName = 'k'): { selected: Value; queryBlock: Value } {
  const { hs, Hk, G } = sparseHeads(cfg);
  const { blockSize, kernelStride } = cfg.sparse;
  const poolStride = blockSize / kernelStride;
  // Resident: the compressed keys live on the device in stores with spare rows, appended
  // to in place as windows complete; the graph reads their first fine/coarse_count rows.
  const liveRows = (store: Value, count: Value): Value => g.op('Slice', [store, g.int64s([0]), count, g.int64s([0])]);
  const fineKeys = resident ? liveRows(g.input('c1_store', 'float', ['C1', Hk, hs]), g.input('fine_count', 'int64', [1])) : g.input('c1', 'float', ['N1', Hk, hs]);
  const coarseKeys = resident ? liveRows(g.input('c2_store', 'float', ['C2', Hk, hs]), g.input('coarse_count', 'int64', [1])) : g.input('c2', 'float', ['N2', Hk, hs]);
  const queryPositions = g.input('query_positions', 'int64', ['T']);
  const fineVisible = g.input('fine_visible', 'int64', ['T']);
  const coarseVisible = g.input('coarse_visible', 'int64', ['T']);
  const poolPads = g.input('pool_pads', 'int64', [6]);
  const k = g.input(topKName, 'int64', [1]);
  const excluded = g.input('block_excluded', 'bool', ['NB']);

  const scale = g.float(1 / Math.sqrt(hs));
  // [Hk, G·T, hs] · [Hk, hs, N] → [Hk, G, T, N]
  const groupedQ = g.reshape(g.transpose(g.reshape(q, [0, Hk, G, hs]), [1, 2, 0, 3]), [Hk, -1, hs]);
  const dot = (keys: Value): Value => g.reshape(g.mul(g.matmul(groupedQ, g.transpose(keys, [1, 2, 0])), scale), g.shapeOf([Hk, G, -1, g.dim(keys, 0)]));
  const visibleMask = (count: Value, keys: Value): Value => {
    const columns = g.range(g.int64(0), g.gather(g.shape(keys), g.int64(0)), g.int64(1)); // [N]
    return g.less(g.unsqueeze(columns, [0]), g.unsqueeze(count, [1])); // [T, N]
  };
  const negInf = g.float(-Infinity);

  // Masks become additive biases on small [T, N] tensors: a Where over the full
  // [Hk, G, T, N] scores costs more than the scores themselves on the CPU.
  const zero = g.float(0);
  // 1. Approximate log-sum-exp over the visible coarse keys: [Hk, G, T, 1].
  const coarseBias = g.where(visibleMask(coarseVisible, coarseKeys), zero, negInf); // [T, N2]
  const lse = g.reduceLogSumExp(g.add(dot(coarseKeys), coarseBias), [-1]);
  // A query that sees no coarse key gets probability 0 everywhere (the reference's NaN → 0).
  const hasCoarse = g.unsqueeze(g.greater(coarseVisible, g.int64(0)), [1]); // [T, 1]
  const safeLse = g.where(hasCoarse, lse, g.float(Infinity));
  // 2. Fine probabilities, 3. summed over the query heads of each group (the reference
  // kernels see 16 rows per KV head), 0 where not visible: the 0/1 mask is the same for
  // every head of a group, so it applies after the sum, on a G-times smaller tensor (exact).
  const fineMask = g.mul(g.cast(visibleMask(fineVisible, fineKeys), 'float'), g.float(16 / G)); // [T, N1]
  const probabilities = g.exp(g.sub(dot(fineKeys), safeLse)); // [Hk, G, T, N1]
  const groupScores = g.mul(g.reduceSum(probabilities, [1], false), fineMask); // [Hk, T, N1]

  // Pool to blocks: block b takes max over fine keys 4b−1 … 4b+3 (kernel 5, stride 4, pad 1);
  // −inf padding makes windows past the end −inf, as the kernel does.
  const padded = g.op('Pad', [groupScores, poolPads, negInf], { mode: 'constant' }); // [Hk, T, 4·nb + 4]
  const rows = g.reshape(padded, g.shapeOf([-1, 1, g.dim(padded, 2)]));
  const pooled = g.op('MaxPool', [rows], { kernel_shape: [poolStride + 1], strides: [poolStride] });
  const blockScores = g.reshape(pooled, g.shapeOf([Hk, g.dim(q, 0), -1])); // [Hk, T, nb]

  const blocks = g.range(g.int64(0), g.gather(g.shape(blockScores), g.int64(2)), g.int64(1)); // [nb]
  const queryBlock = g.unsqueeze(g.div(queryPositions, g.int64(blockSize)), [1]); // [T, 1]
  return { selected: topBlocks(g, cfg, blockScores, g.unsqueeze(blocks, [0]), queryBlock, excluded, k), queryBlock };
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

/**
 * Sparse layer, second part: softmax attention of the queries over 64-token key
 * blocks gathered per KV head (every block on the dense path), restricted per
 * query by a block mask, causally by position and to live (untombstoned) keys;
 * then the output gate, o_proj, the scaled residual and the MLP block.
 */
function buildSparseAttend(cfg: SalaConfig, precision: Precision): Uint8Array {
  const sizes = derivedSizes(cfg);
  const g = new GraphBuilder('sparse_attend');
  const x = g.input('x', 'float', ['T', cfg.hiddenSize]);
  const q = g.input('q', 'float', ['T', cfg.numAttentionHeads, sizes.sparseHeadDim]);
  const gate = cfg.attnUseOutputGate ? g.input('gate', 'float', ['T', cfg.numAttentionHeads * sizes.sparseHeadDim]) : undefined;
  g.output(attendBlocks(g, cfg, precision, x, q, gate), 'x_out', 'float', ['T', cfg.hiddenSize]);
  return g.toModel();
}

/**
 * The same for rows [start, end) of a chunk whose hidden states, queries and gate stay
 * on the device: the rows are sliced here and their outputs written into x_acc (the
 * chunk's output so far), so a chunk attends in several calls — each with the blocks
 * its rows selected — without its tensors ever coming back to the host. Two forms:
 * over the union of the rows' blocks with a per-row mask (attendBlocks: one gather,
 * the best where rows select alike, and dense attention), or each row over just its
 * own k blocks (attendPerQuery: k blocks gathered per row, the best where the union
 * is much wider than k).
 */
function buildSparseAttendRows(cfg: SalaConfig, precision: Precision, perQuery: boolean): Uint8Array {
  const sizes = derivedSizes(cfg);
  const d = cfg.hiddenSize;
  const width = cfg.numAttentionHeads * sizes.sparseHeadDim;
  const g = new GraphBuilder(perQuery ? 'sparse_attend_queries' : 'sparse_attend_rows');
  const range = g.input('row_range', 'int64', [2]);
  const start = g.slice(range, [0], [1], [0]);
  const end = g.slice(range, [1], [2], [0]);
  const rows = (value: Value): Value => g.op('Slice', [value, start, end, g.int64s([0])]);
  const x = rows(g.input('x', 'float', ['T', d]));
  const q = rows(g.input('q', 'float', ['T', cfg.numAttentionHeads, sizes.sparseHeadDim]));
  const gate = cfg.attnUseOutputGate ? rows(g.input('gate', 'float', ['T', width])) : undefined;
  const out = perQuery ? attendPerQuery(g, cfg, precision, x, q, gate) : attendBlocks(g, cfg, precision, x, q, gate); // [end − start, d]
  const at = g.unsqueeze(g.range(g.squeeze(start, [0]), g.squeeze(end, [0]), g.int64(1)), [1]); // [R, 1]
  g.output(g.op('ScatterND', [g.input('x_acc', 'float', ['T', d]), at, out]), 'x_acc_out', 'float', ['T', d]);
  return g.toModel();
}

/** A store of 64-token K/V blocks, head-major [Hk, C, blockSize, hs]: the host store, host-gathered blocks, or a device pool. */
function blockStores(g: GraphBuilder, cfg: SalaConfig): { keyStore: Value; valueStore: Value } {
  const shape = [cfg.numKeyValueHeads, 'C', cfg.sparse.blockSize, derivedSizes(cfg).sparseHeadDim];
  return { keyStore: g.input('key_store', 'float', shape), valueStore: g.input('value_store', 'float', shape) };
}

/** The rest of a sparse layer after attention (o [T, H·hs]): the output gate, o_proj, the scaled residual and the MLP block. */
function attentionOutput(g: GraphBuilder, cfg: SalaConfig, precision: Precision, x: Value, o: Value, gate: Value | undefined): Value {
  const { sparseHeadDim: hs, residualScale } = derivedSizes(cfg);
  const gated = gate ? g.mul(o, gate) : o;
  const h = g.add(x, g.mul(linear(g, gated, matrixInput(g, 'w_o', [cfg.hiddenSize, cfg.numAttentionHeads * hs], precision), precision), g.float(residualScale)));
  return mlpBlock(g, h, cfg, residualScale, precision);
}

/**
 * Each query row over only its own blocks: query_slots / query_blocks [Hk, R, K] (slot
 * in the store and block id, −1 = padding), key_alive [Hk, R, K, blockSize] (false for
 * padding and tombstones). Gathers R·K blocks per head instead of the union's U, and
 * computes no masked-out scores.
 */
function attendPerQuery(g: GraphBuilder, cfg: SalaConfig, precision: Precision, x: Value, q: Value, gate: Value | undefined): Value {
  const { hs, H, Hk, G, blockSize } = sparseHeads(cfg);
  const { keyStore, valueStore } = blockStores(g, cfg);
  const slots = g.input('query_slots', 'int64', [Hk, 'R', 'K']);
  const blockIds = g.input('query_blocks', 'int64', [Hk, 'R', 'K']);
  const keyAlive = g.input('key_alive', 'bool', [Hk, 'R', 'K', blockSize]);
  const queryPositions = g.input('query_positions', 'int64', ['R']);

  const heads = g.unsqueeze(g.expand(g.reshape(g.range(g.int64(0), g.int64(Hk), g.int64(1)), [Hk, 1, 1]), g.shape(slots)), [3]); // [Hk, R, K, 1]
  const gatherIndex = g.concat([heads, g.unsqueeze(slots, [3])], 3); // [Hk, R, K, 2]
  const rowsShape = g.shapeOf([Hk, g.dim(q, 0), -1, hs]);
  const keys = g.reshape(g.op('GatherND', [keyStore, gatherIndex]), rowsShape); // [Hk, R, K·B, hs]
  const values = g.reshape(g.op('GatherND', [valueStore, gatherIndex]), rowsShape);
  const groupedQ = g.transpose(g.reshape(q, [0, Hk, G, hs]), [1, 0, 2, 3]); // [Hk, R, G, hs]
  const scores = g.mul(g.matmul(groupedQ, g.transpose(keys, [0, 1, 3, 2])), g.float(1 / Math.sqrt(hs))); // [Hk, R, G, K·B]

  const offsets = g.range(g.int64(0), g.int64(blockSize), g.int64(1));
  const keyPositions = g.reshape(g.add(g.mul(g.unsqueeze(blockIds, [3]), g.int64(blockSize)), offsets), g.shapeOf([Hk, g.dim(q, 0), -1])); // [Hk, R, K·B]
  const causal = g.not(g.greater(keyPositions, g.unsqueeze(queryPositions, [0, 2])));
  const allowed = g.unsqueeze(g.and(causal, g.reshape(keyAlive, g.shapeOf([Hk, g.dim(q, 0), -1]))), [2]); // [Hk, R, 1, K·B]
  const probabilities = g.softmax(g.add(scores, g.where(allowed, g.float(0), g.float(-Infinity))), -1);
  const attended = g.matmul(probabilities, values); // [Hk, R, G, hs]
  const o = g.reshape(g.transpose(attended, [1, 0, 2, 3]), [0, H * hs]); // [R, H·hs], head = kv·G + g as in attendBlocks
  return attentionOutput(g, cfg, precision, x, o, gate);
}

/** Block attention, gate, o_proj, residual and MLP for queries q of hidden rows x (the shared core of the attend graphs). */
function attendBlocks(g: GraphBuilder, cfg: SalaConfig, precision: Precision, x: Value, q: Value, gate: Value | undefined): Value {
  const { hs, H, Hk, G, blockSize } = sparseHeads(cfg);
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

  const groupedQ = g.reshape(g.transpose(g.reshape(q, [0, Hk, G, hs]), [1, 2, 0, 3]), [Hk, -1, hs]); // [Hk, G·T, hs]
  const heads = g.unsqueeze(g.expand(g.unsqueeze(g.range(g.int64(0), g.int64(Hk), g.int64(1)), [1]), g.shape(storeSlots)), [2]); // [Hk, U, 1]
  const gatherIndex = g.concat([heads, g.unsqueeze(storeSlots, [2])], 2); // [Hk, U, 2]
  const keysByHead = g.reshape(g.op('GatherND', [keyStore, gatherIndex]), [Hk, -1, hs]); // [Hk, S, hs]
  const valuesByHead = g.reshape(g.op('GatherND', [valueStore, gatherIndex]), [Hk, -1, hs]);
  const scoreShape = g.shapeOf([Hk, G, g.dim(q, 0), -1]);
  const scores = g.reshape(g.mul(g.matmul(groupedQ, g.transpose(keysByHead, [0, 2, 1])), g.float(1 / Math.sqrt(hs))), scoreShape); // [Hk, G, T, S]

  const offsets = g.range(g.int64(0), g.int64(blockSize), g.int64(1));
  const keyPositions = g.reshape(g.add(g.mul(g.unsqueeze(blockIds, [2]), g.int64(blockSize)), offsets), [Hk, 1, -1]); // [Hk, 1, S]
  const causal = g.not(g.greater(keyPositions, g.unsqueeze(queryPositions, [0, 2]))); // [Hk, T, S]
  const alive = g.reshape(keyAlive, [Hk, 1, -1]); // [Hk, 1, S]: not tombstoned
  const selected = g.reshape(g.expand(g.unsqueeze(blockMask, [3]), g.int64s([1, 1, 1, blockSize])), g.shapeOf([Hk, g.dim(q, 0), -1])); // [Hk, T, S]
  const allowed = g.unsqueeze(g.and(g.and(selected, causal), alive), [1]); // [Hk, 1, T, S]
  // An additive −inf bias built on the G-times smaller mask (cheaper than a Where over the scores).
  const bias = g.where(allowed, g.float(0), g.float(-Infinity));
  const probabilities = g.softmax(g.add(scores, bias), -1);
  const attended = g.matmul(g.reshape(probabilities, g.shapeOf([Hk, -1, g.dim(keysByHead, 1)])), valuesByHead); // [Hk, G·T, hs]
  const o = g.reshape(g.transpose(g.reshape(attended, [H, -1, hs]), [1, 0, 2]), [0, H * hs]); // [T, H·hs]
  return attentionOutput(g, cfg, precision, x, o, gate);
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
function buildSparseAttendResident(cfg: SalaConfig, precision: Precision): Uint8Array {
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
function buildSparseSelectAttendResident(cfg: SalaConfig, precision: Precision): Uint8Array {
  const { hs, H, Hk, blockSize } = sparseHeads(cfg);
  const g = new GraphBuilder('sparse_select_attend_resident');
  const x = g.input('x', 'float', [1, cfg.hiddenSize]);
  const q = g.input('q', 'float', [1, H, hs]);
  const blockAlive = g.input('block_alive', 'bool', ['NB', blockSize]);
  const selection = blockSelection(g, cfg, q, true, 'top_k'); // k is the new token's key here
  const selected = g.reshape(selection.selected, [Hk, -1]); // [Hk, K]
  const { slots, keyAlive } = residentSlots(g, selected, g.reshape(selection.queryBlock, [1, 1]), blockAlive);
  residentAttention(g, cfg, precision, x, q, slots, keyAlive);
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

/**
 * The attention of buildSparseAttendResident over pool slots with their live keys; declares the
 * pool and tail inputs (tail_row and tail_alive too, unless `fixed` gives them) and every output.
 */
export function residentAttention(g: GraphBuilder, cfg: SalaConfig, precision: Precision, x: Value, q: Value, slots: Value, keyAlive: Value, fixed?: StaticAttention): void {
  const { hs, H, Hk, G, blockSize } = sparseHeads(cfg);
  const d = cfg.hiddenSize;
  const kNew = g.input('k', 'float', [1, Hk, hs]);
  const vNew = g.input('v', 'float', [1, Hk, hs]);
  const poolKeys = g.input('pool_keys', 'float', [Hk, fixed?.poolSlots ?? 'P', blockSize, hs]);
  const poolValues = g.input('pool_values', 'float', [Hk, fixed?.poolSlots ?? 'P', blockSize, hs]);
  const tailKeys = g.input('tail_keys', 'float', [Hk, blockSize, hs]);
  const tailValues = g.input('tail_values', 'float', [Hk, blockSize, hs]);
  const tailAlive = fixed?.tailAlive ?? g.input('tail_alive', 'bool', [Hk, blockSize]);

  let newTailKeys: Value;
  let newTailValues: Value;
  let gathered: (pool: Value) => Value; // [Hk, U·blockSize, hs]
  if (fixed) {
    // The token's row replaced by an elementwise Where (safe with the output written over the input).
    const isRow = g.reshape(g.op('Equal', [g.int64s(Array.from({ length: blockSize }, (_, r) => r)), fixed.tailRow]), [1, blockSize, 1]);
    newTailKeys = g.where(isRow, g.reshape(kNew, [Hk, 1, hs]), tailKeys);
    newTailValues = g.where(isRow, g.reshape(vNew, [Hk, 1, hs]), tailValues);
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
    const tailRow = g.input('tail_row', 'int64', [Hk, 2]); // (head, row) of this token in the tail
    newTailKeys = g.op('ScatterND', [tailKeys, tailRow, g.reshape(kNew, [Hk, hs])]);
    newTailValues = g.op('ScatterND', [tailValues, tailRow, g.reshape(vNew, [Hk, hs])]);
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
  const gate = cfg.attnUseOutputGate ? g.input('gate', 'float', [1, H * hs]) : undefined;
  g.output(attentionOutput(g, cfg, precision, x, o, gate), 'x_out', 'float', [1, d]);
  g.output(newTailKeys, 'tail_keys_out', 'float', [Hk, blockSize, hs]);
  g.output(newTailValues, 'tail_values_out', 'float', [Hk, blockSize, hs]);
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
  sparseAttend: Uint8Array;
  /** Both of them in one graph, for KV all on the device. */
  sparseSelectAttend: Uint8Array;
  /** Chunked prefill: attention for a range of a chunk's rows (over their union of blocks, or each over its own), and the head on its last row. */
  sparseAttendRows: Uint8Array;
  sparseAttendQueries: Uint8Array;
  headLast: Uint8Array;
}

export function buildResidentGraphs(cfg: SalaConfig, precision: Precision = 'fp32'): ResidentGraphSet {
  return {
    lightningStep: buildLightning(cfg, precision, true),
    sparseProject: buildSparseProject(cfg, precision, true),
    sparseProjectCaptured: buildSparseProject(cfg, precision, true, true),
    sparseSelect: buildSparseSelect(cfg, true),
    sparseAttend: buildSparseAttendResident(cfg, precision),
    sparseSelectAttend: buildSparseSelectAttendResident(cfg, precision),
    sparseAttendRows: buildSparseAttendRows(cfg, precision, false),
    sparseAttendQueries: buildSparseAttendRows(cfg, precision, true),
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
