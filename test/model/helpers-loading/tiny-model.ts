// A tiny, valid MiniCPM-SALA config and deterministic random weights for loader tests.
import { expectedWeights, parseConfig, type SalaConfig } from '../../../engine/model/config.js';
import type { TensorToWrite } from '../../../engine/model/weights.js';
import { SMALL_20M } from '../../../bench/random-model.js';

/** Raw config.json content: 2 layers (sparse, lightning), d = 32, 2 heads of 16, 1 sparse KV head. */
export function tinyConfigJson(): Record<string, unknown> {
  // The bench's SALA-shaped config, shrunk: every field the schema requires stays present.
  return {
    ...SMALL_20M,
    vocab_size: 40,
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 2,
    mixer_types: ['minicpm4', 'lightning-attn'],
    num_attention_heads: 2,
    num_key_value_heads: 1,
    head_dim: 16,
    lightning_nh: 2,
    lightning_nkv: 2,
    lightning_head_dim: 16,
    max_position_embeddings: 1024,
    dim_model_base: 8,
    mup_denominator: 32,
    sparse_config: { block_size: 64, kernel_size: 32, kernel_stride: 16, init_blocks: 1, window_size: 64, topk: 4, dense_len: 512, use_nope: false },
  };
}

export function tinyConfig(): SalaConfig {
  return parseConfig(tinyConfigJson());
}

/** mulberry32: a small seeded generator, so test data is the same on every run. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomArray(length: number, random: () => number, scale = 1): Float32Array {
  return Float32Array.from({ length }, () => (random() * 2 - 1) * scale);
}

/** Every weight `cfg` expects, filled with seeded random values, stored as `dtype`. */
export function randomModelTensors(cfg: SalaConfig, seed: number, dtype: TensorToWrite['dtype'] = 'F32'): TensorToWrite[] {
  const random = seededRandom(seed);
  return [...expectedWeights(cfg)].map(([name, shape]) => ({
    name,
    shape,
    dtype,
    data: randomArray(
      shape.reduce((n, d) => n * d, 1),
      random,
    ),
  }));
}
