// The building blocks every layer graph shares ("Model wrapper" in docs/spec/minicpm-sala.md):
// RMSNorm, the large matrices as a graph takes them (fp32, fp16 or int4) and their products,
// the SwiGLU MLP block, the Lightning constants (ALiBi slopes, RoPE frequencies, scale), and
// the sparse layers' shape and output half. The graphs themselves: graphs.ts and the files it names.
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

/**
 * RMSNorm ("Model wrapper"): fp32 mean of squares, x / sqrt(mean + eps), times the weight; no
 * bias, no 1+w. Written as Pow → ReduceMean → Add → Sqrt → Div → Mul, the pattern
 * onnxruntime fuses into one SimplifiedLayerNormalization kernel.
 */
export function rmsNorm(g: GraphBuilder, x: Value, weight: Value, eps: number): Value {
  const meanSquare = g.reduceMean(g.op('Pow', [x, g.float(2)]), [-1]);
  return g.mul(g.div(x, g.sqrt(g.add(meanSquare, g.float(eps)))), weight);
}

/**
 * A large matrix as a graph takes it: one input in fp32 or fp16, or in int4 three —
 * NAME (packed codes [rows, cols/32, 16]), NAME_scales and NAME_zeros (engine/runtime/int4.ts).
 */
export type Matrix = { value: Value } | { codes: Value; scales: Value; zeros: Value; rows: number; cols: number };

/** A large matrix's graph input(s), in the model's precision; shape is HF's [out, in]. */
export function matrixInput(g: GraphBuilder, name: string, shape: [number, number], precision: Precision): Matrix {
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
export function linear(g: GraphBuilder, x: Value, weight: Matrix, precision: Precision): Value {
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
export function mlp(g: GraphBuilder, x: Value, gate: Matrix, up: Matrix, down: Matrix, precision: Precision): Value {
  const gateOut = linear(g, x, gate, precision);
  const activated = g.mul(gateOut, g.sigmoid(gateOut));
  return linear(g, g.mul(activated, linear(g, x, up, precision)), down, precision);
}

/** Second half of every decoder layer: h + α·MLP(RMSNorm_post(h)). */
export function mlpBlock(g: GraphBuilder, h: Value, cfg: SalaConfig, residualScale: number, precision: Precision): Value {
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
export function rowCount(g: GraphBuilder, x: Value): Value {
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

/** The sparse layers' attention shape: head size, query heads, KV heads, query heads per KV head, block size. */
export function sparseHeads(cfg: SalaConfig): { hs: number; H: number; Hk: number; G: number; blockSize: number } {
  const H = cfg.numAttentionHeads;
  const Hk = cfg.numKeyValueHeads;
  return { hs: derivedSizes(cfg).sparseHeadDim, H, Hk, G: H / Hk, blockSize: cfg.sparse.blockSize };
}

/** A store of 64-token K/V blocks, head-major [Hk, C, blockSize, hs]: the host store, host-gathered blocks, or a device pool. */
export function blockStores(g: GraphBuilder, cfg: SalaConfig): { keyStore: Value; valueStore: Value } {
  const shape = [cfg.numKeyValueHeads, 'C', cfg.sparse.blockSize, derivedSizes(cfg).sparseHeadDim];
  return { keyStore: g.input('key_store', 'float', shape), valueStore: g.input('value_store', 'float', shape) };
}

/** The rest of a sparse layer after attention (o [T, H·hs]): the output gate, o_proj, the scaled residual and the MLP block. */
export function attentionOutput(g: GraphBuilder, cfg: SalaConfig, precision: Precision, x: Value, o: Value, gate: Value | undefined): Value {
  const { sparseHeadDim: hs, residualScale } = derivedSizes(cfg);
  const gated = gate ? g.mul(o, gate) : o;
  const h = g.add(x, g.mul(linear(g, gated, matrixInput(g, 'w_o', [cfg.hiddenSize, cfg.numAttentionHeads * hs], precision), precision), g.float(residualScale)));
  return mlpBlock(g, h, cfg, residualScale, precision);
}
