// Random-weights models of a given MiniCPM-SALA shape, for benchmarks: the
// engine's cost depends on the shape, not on the values.
import { parseConfig, expectedWeights, type SalaConfig } from '../engine/model/config.js';
import type { WeightMap } from '../engine/model/weights.js';

/** A ~20M-parameter SALA model: 8 layers (0 and 4 sparse), d=384, vocab 8192, the 9B model's sparse_config. */
export const SMALL_20M = {
  architectures: ['MiniCPMSALAForCausalLM'],
  model_type: 'minicpm_sala',
  vocab_size: 8192,
  hidden_size: 384,
  intermediate_size: 1024,
  num_hidden_layers: 8,
  mixer_types: ['minicpm4', 'lightning-attn', 'lightning-attn', 'lightning-attn', 'minicpm4', 'lightning-attn', 'lightning-attn', 'lightning-attn'],
  num_attention_heads: 8,
  num_key_value_heads: 2,
  head_dim: 48,
  attn_use_rope: false,
  attn_use_output_gate: true,
  attention_bias: false,
  lightning_nh: 8,
  lightning_nkv: 8,
  lightning_head_dim: 48,
  lightning_scale: '1/sqrt(d)',
  lightning_use_rope: true,
  qk_norm: true,
  use_output_norm: true,
  use_output_gate: true,
  hidden_act: 'silu',
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  rope_scaling: null,
  max_position_embeddings: 1048576,
  scale_emb: 12,
  scale_depth: 1.4,
  dim_model_base: 256,
  tie_word_embeddings: false,
  bos_token_id: 1,
  eos_token_id: [2],
  pad_token_id: 2,
  sparse_config: { kernel_size: 32, kernel_stride: 16, block_size: 64, init_blocks: 1, window_size: 2048, topk: 64, dense_len: 8192, use_nope: false },
};

/** Deterministic normal draws (xorshift + Box–Muller). */
function normalSource(seed: number): () => number {
  let state = seed >>> 0 || 1;
  const uniform = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return ((state >>> 0) + 1) / 4294967297;
  };
  return () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
}

export function randomModel(json: object, seed = 1): { config: SalaConfig; weights: WeightMap; parameters: number } {
  const config = parseConfig(json, 'random model');
  const normal = normalSource(seed);
  const weights: WeightMap = new Map();
  let parameters = 0;
  for (const [name, shape] of expectedWeights(config)) {
    const size = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(size);
    if (name.endsWith('norm.weight')) data.fill(1);
    else for (let i = 0; i < size; i++) data[i] = 0.02 * normal();
    weights.set(name, data);
    parameters += size;
  }
  return { config, weights, parameters };
}

/** The same model with the sparse layers forced dense (dense_len beyond any context). */
export function denseVariant(config: SalaConfig): SalaConfig {
  return { ...config, sparse: { ...config.sparse, denseLen: Number.MAX_SAFE_INTEGER } };
}

/** MiniCPM-SALA-9B's exact shape (docs/spec/minicpm-sala.md, "Config schema"): 32 layers, sparse 0, 9, 16, 17, 22, 29, 30, 31; d 4096; vocab 73448. */
export const SALA_9B_SHAPE = {
  ...SMALL_20M,
  vocab_size: 73448,
  hidden_size: 4096,
  intermediate_size: 16384,
  num_hidden_layers: 32,
  mixer_types: Array.from({ length: 32 }, (_, i) => ([0, 9, 16, 17, 22, 29, 30, 31].includes(i) ? 'minicpm4' : 'lightning-attn')),
  num_attention_heads: 32,
  num_key_value_heads: 2,
  head_dim: 128,
  lightning_nh: 32,
  lightning_nkv: 32,
  lightning_head_dim: 128,
  dim_model_base: 256,
  max_position_embeddings: 524288,
  eos_token_id: [2, 73440],
};

/**
 * A random-weights model whose layers of one type share one set of weights. The
 * cost of a step is the same as with distinct weights (every layer still streams
 * its weights from device memory: one layer's are far larger than any cache), but
 * host memory, generation and upload time are two layers' worth instead of 32 —
 * what makes a 9B-shaped model load in seconds on one GPU host. Values: a
 * uniform pattern with the 0.02 standard deviation of randomModel, repeated with a
 * prime period (nothing here depends on the values but their scale).
 */
export function sharedLayerRandomModel(json: object): { config: SalaConfig; weights: WeightMap; parameters: number } {
  const config = parseConfig(json, 'random model');
  const period = 1_000_003;
  const pattern = new Float32Array(period);
  let state = 2463534242;
  const bound = 0.02 * Math.sqrt(3);
  for (let i = 0; i < period; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    pattern[i] = (((state >>> 0) / 4294967296) * 2 - 1) * bound;
  }
  const fill = (size: number): Float32Array => {
    const data = new Float32Array(size);
    for (let at = 0; at < size; at += period) data.set(pattern.subarray(0, Math.min(period, size - at)), at);
    return data;
  };
  const weights: WeightMap = new Map();
  const shared = new Map<string, Float32Array>();
  let parameters = 0;
  for (const [name, shape] of expectedWeights(config)) {
    const size = shape.reduce((a, b) => a * b, 1);
    parameters += size;
    const layer = /^model\.layers\.(\d+)\.(.*)$/.exec(name);
    const key = layer ? `${config.mixerTypes[Number(layer[1])]}.${layer[2]}` : name;
    let data = shared.get(key);
    if (!data) {
      data = name.endsWith('norm.weight') ? new Float32Array(size).fill(1) : fill(size);
      shared.set(key, data);
    }
    weights.set(name, data);
  }
  return { config, weights, parameters };
}
