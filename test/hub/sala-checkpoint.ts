// A small random MiniCPM-SALA checkpoint in the released checkpoint's layout: bf16 shards,
// model.safetensors.index.json, config.json, and the shipped model's tokenizer.json.
import { mkdirSync, copyFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { randomModel } from '../../bench/random-model.js';
import { expectedWeights } from '../../engine/model/config.js';
import { writeSafetensors } from '../../engine/model/weights.js';

const ROOT = path.resolve(__dirname, '../..');
const SHIPPED = path.join(ROOT, 'models', 'panorama-code-13m');

/** The shipped model's vocabulary (so its tokenizer fits), four layers of width 128: about 2.3M parameters. */
export const SMALL_SALA_CONFIG = {
  architectures: ['MiniCPMSALAForCausalLM'],
  model_type: 'minicpm_sala',
  vocab_size: 8192,
  hidden_size: 128,
  intermediate_size: 256,
  num_hidden_layers: 4,
  mixer_types: ['minicpm4', 'lightning-attn', 'lightning-attn', 'minicpm4'],
  num_attention_heads: 2,
  num_key_value_heads: 1,
  head_dim: 64,
  attn_use_rope: false,
  attn_use_output_gate: true,
  attention_bias: false,
  lightning_nh: 2,
  lightning_nkv: 2,
  lightning_head_dim: 64,
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
  dim_model_base: 32,
  tie_word_embeddings: false,
  bos_token_id: 0,
  eos_token_id: [0, 7],
  pad_token_id: 0,
  torch_dtype: 'bfloat16',
  sparse_config: { block_size: 64, dense_len: 2048, init_blocks: 1, kernel_size: 32, kernel_stride: 16, topk: 16, use_nope: false, window_size: 512 },
};

/** Writes the checkpoint into `dir` as `shards` bf16 files; returns the file names written. */
export async function writeSalaCheckpoint(dir: string, shards = 2, seed = 7): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const { config, weights } = randomModel(SMALL_SALA_CONFIG, seed);
  const shapes = expectedWeights(config);
  const names = [...weights.keys()];
  const perShard = Math.ceil(names.length / shards);
  const weightMap: Record<string, string> = {};
  const files: string[] = [];
  let totalSize = 0;
  for (let s = 0; s < shards; s++) {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const mine = names.slice(s * perShard, (s + 1) * perShard);
    await writeSafetensors(
      path.join(dir, file),
      mine.map((name) => ({ name, data: weights.get(name) ?? new Float32Array(), shape: shapes.get(name) ?? [], dtype: 'BF16' as const })),
      { format: 'pt' },
    );
    for (const name of mine) {
      weightMap[name] = file;
      totalSize += 2 * (weights.get(name)?.length ?? 0);
    }
    files.push(file);
  }
  writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(SMALL_SALA_CONFIG, null, 2));
  copyFileSync(path.join(SHIPPED, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
  copyFileSync(path.join(SHIPPED, 'tokenizer_config.json'), path.join(dir, 'tokenizer_config.json'));
  writeFileSync(path.join(dir, 'README.md'), '# a random SALA checkpoint for tests\n');
  return ['config.json', 'model.safetensors.index.json', ...files, 'tokenizer.json', 'tokenizer_config.json', 'README.md'];
}
