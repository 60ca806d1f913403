// The Lightning (linear attention) decoder layer as an ONNX graph ("Lightning layer" in
// docs/spec/minicpm-sala.md): the chunked form for prefill, the recurrent one-token form for
// decode steps. Shapes as in graph-parts.ts.
import { GraphBuilder, type Value } from '../runtime/graph-builder.js';
import type { Precision } from '../runtime/device.js';
import { derivedSizes, type SalaConfig } from './config.js';
import { alibiSlopes, lightningScale, linear, matrixInput, mlpBlock, rmsNorm, ropeInverseFrequencies, rowCount } from './graph-parts.js';

/**
 * One whole lightning decoder layer ("Lightning layer") for T new tokens, carrying the fp32
 * recurrent state. The T tokens form one chunk of the chunked form:
 *   O = ((σQKᵀ) ⊙ M) V + diag(γ^(i+1)) σQ S_prev,  M[i,j] = γ^(i−j) (j ≤ i)
 *   S_new = γ^T S_prev + (diag(γ^(T−1−j)) K)ᵀ V
 * `step` builds the T = 1 form, S_new = γ S_prev + kᵀv, o = σq S_new: the same numbers in
 * a fraction of the kernels (no decay mask, no shape arithmetic), for decode steps on a
 * GPU, where each kernel's launch costs more than its work.
 */
export function buildLightning(cfg: SalaConfig, precision: Precision, step = false): Uint8Array {
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
