import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError, derivedSizes, expectedWeights, loadConfig, parseConfig, type SalaConfig } from '../../engine/model/config.js';
import { SafetensorsFile } from '../../engine/model/safetensors.js';
import { tempDir } from './helpers-loading/raw-files.js';
import { SALA_TINY_A as FIXTURE_DIR } from '../helpers/fixtures.js';

const FIXTURE_PARAMETERS = 4_461_312;

function fixtureJson(): Record<string, unknown> {
  return JSON.parse(readFileSync(path.join(FIXTURE_DIR, 'config.json'), 'utf8'));
}

function parameterCount(weights: Map<string, number[]>): number {
  let total = 0;
  for (const shape of weights.values()) total += shape.reduce((n, d) => n * d, 1);
  return total;
}

/** The released 9B config, as given in the table of docs/spec/minicpm-sala.md, "Config schema". */
function nineBJson(): Record<string, unknown> {
  const sparseLayers = new Set([0, 9, 16, 17, 22, 29, 30, 31]);
  return {
    architectures: ['MiniCPMSALAForCausalLM'],
    model_type: 'minicpm_sala',
    vocab_size: 73448,
    hidden_size: 4096,
    intermediate_size: 16384,
    num_hidden_layers: 32,
    mixer_types: Array.from({ length: 32 }, (_, i) => (sparseLayers.has(i) ? 'minicpm4' : 'lightning-attn')),
    num_attention_heads: 32,
    num_key_value_heads: 2,
    head_dim: 128,
    attn_use_rope: false,
    attn_use_output_gate: true,
    attention_bias: false,
    lightning_nh: 32,
    lightning_nkv: 32,
    lightning_head_dim: 128,
    lightning_scale: '1/sqrt(d)',
    lightning_use_rope: true,
    qk_norm: true,
    use_output_norm: true,
    use_output_gate: true,
    hidden_act: 'silu',
    rms_norm_eps: 1e-6,
    rope_theta: 10000.0,
    rope_scaling: null,
    max_position_embeddings: 524288,
    scale_emb: 12,
    scale_depth: 1.4,
    dim_model_base: 256,
    mup_denominator: 32,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: [2, 73440],
    pad_token_id: 2,
    torch_dtype: 'bfloat16',
    pretraining_tp: 1,
    initializer_range: 0.1,
    sparse_config: { kernel_size: 32, kernel_stride: 16, block_size: 64, init_blocks: 1, window_size: 2048, topk: 64, dense_len: 8192, use_nope: false },
  };
}

/** Applies `edit` to a copy of the fixture config and returns the ConfigError parseConfig throws. */
function rejection(edit: (json: Record<string, unknown>, sparse: Record<string, unknown>) => void): ConfigError {
  const json = fixtureJson();
  const sparse = { ...(json.sparse_config as Record<string, unknown>) };
  json.sparse_config = sparse;
  edit(json, sparse);
  try {
    parseConfig(json);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail('parseConfig accepted an invalid config');
}

test('the sala-tiny-a fixture config parses to the values in the fixtures README', () => {
  const cfg = parseConfig(fixtureJson());
  assert.equal(cfg.hiddenSize, 256);
  assert.equal(cfg.vocabSize, 512);
  assert.equal(cfg.numHiddenLayers, 6);
  assert.equal(cfg.intermediateSize, 512);
  assert.equal(cfg.numAttentionHeads, 4);
  assert.equal(cfg.numKeyValueHeads, 2);
  assert.equal(cfg.headDim, 64);
  assert.equal(cfg.lightningNkv, 4);
  assert.deepEqual(cfg.mixerTypes, ['minicpm4', 'lightning-attn', 'lightning-attn', 'minicpm4', 'lightning-attn', 'lightning-attn']);
  assert.equal(cfg.dimModelBase, 64);
  assert.equal(cfg.scaleEmb, 12);
  assert.equal(cfg.scaleDepth, 1.4);
  assert.equal(cfg.ropeTheta, 10000);
  assert.equal(cfg.rmsNormEps, 1e-6);
  assert.equal(cfg.attnUseRope, false);
  assert.equal(cfg.lightningUseRope, true);
  assert.equal(cfg.lightningScale, '1/sqrt(d)');
  assert.equal(cfg.tieWordEmbeddings, false);
  assert.equal(cfg.bosTokenId, 1);
  assert.deepEqual(cfg.eosTokenIds, [2]);
  assert.equal(cfg.padTokenId, 2);
  assert.deepEqual(cfg.sparse, { blockSize: 64, kernelSize: 32, kernelStride: 16, initBlocks: 1, windowSize: 64, topk: 4, denseLen: 512, useNope: false });
});

test('derivedSizes of the fixture: lightning sizes from num_attention_heads/head_dim, 5 blocks per query', () => {
  const sizes = derivedSizes(parseConfig(fixtureJson()));
  assert.deepEqual(sizes, {
    sparseHeadDim: 64,
    sparseGroup: 2,
    lightningHeads: 4,
    lightningKvHeads: 4,
    lightningHeadDim: 64,
    residualScale: 1.4 / Math.sqrt(6),
    logitDivisor: 4,
    localBlocks: 1,
    topkTotal: 5,
    sparseLayers: [0, 3],
    lightningLayers: [1, 2, 4, 5],
    kvBytesPerToken: 2 * 2 * 2 * 64 * 4, // 2 sparse layers × (K, V) × 2 KV heads × 64 × fp32
  });
});

test('expectedWeights of the fixture equals the names and shapes in its model.safetensors, 4,461,312 parameters', async () => {
  const expected = expectedWeights(parseConfig(fixtureJson()));
  const file = await SafetensorsFile.open(path.join(FIXTURE_DIR, 'model.safetensors'));
  try {
    const actual = new Map([...file.entries.values()].map((e) => [e.name, e.shape]));
    assert.deepEqual([...expected.keys()].sort(), [...actual.keys()].sort());
    for (const [name, shape] of expected) assert.deepEqual(actual.get(name), shape, name);
  } finally {
    await file.close();
  }
  assert.equal(expected.size, 75);
  assert.equal(parameterCount(expected), FIXTURE_PARAMETERS);
  assert.deepEqual(expected.get('model.layers.0.self_attn.k_proj.weight'), [128, 256]);
  assert.deepEqual(expected.get('model.layers.1.self_attn.k_proj.weight'), [256, 256]);
  assert.deepEqual(expected.get('model.layers.1.self_attn.q_norm.weight'), [64]);
});

test('the 9B config from the spec gives the spec weight shapes and derived constants', () => {
  const cfg = parseConfig(nineBJson());
  const weights = expectedWeights(cfg);
  assert.deepEqual(weights.get('model.embed_tokens.weight'), [73448, 4096]);
  assert.deepEqual(weights.get('lm_head.weight'), [73448, 4096]);
  assert.deepEqual(weights.get('model.layers.9.self_attn.q_proj.weight'), [4096, 4096]);
  assert.deepEqual(weights.get('model.layers.9.self_attn.k_proj.weight'), [256, 4096]);
  assert.deepEqual(weights.get('model.layers.9.self_attn.v_proj.weight'), [256, 4096]);
  assert.deepEqual(weights.get('model.layers.9.self_attn.o_gate.weight'), [4096, 4096]);
  assert.equal(weights.has('model.layers.9.self_attn.q_norm.weight'), false, 'sparse layers have no norms');
  assert.deepEqual(weights.get('model.layers.1.self_attn.k_proj.weight'), [4096, 4096]);
  assert.deepEqual(weights.get('model.layers.1.self_attn.z_proj.weight'), [4096, 4096]);
  assert.deepEqual(weights.get('model.layers.1.self_attn.k_norm.weight'), [128]);
  assert.deepEqual(weights.get('model.layers.1.self_attn.o_norm.weight'), [4096]);
  assert.deepEqual(weights.get('model.layers.31.mlp.down_proj.weight'), [4096, 16384]);
  assert.equal(parameterCount(weights), 9_477_203_968);

  const sizes = derivedSizes(cfg);
  assert.equal(sizes.residualScale.toFixed(5), '0.24749');
  assert.equal(sizes.logitDivisor, 16);
  assert.equal(sizes.localBlocks, 32);
  assert.equal(sizes.topkTotal, 96);
  assert.equal(sizes.sparseGroup, 16);
  assert.deepEqual(sizes.sparseLayers, [0, 9, 16, 17, 22, 29, 30, 31]);
  assert.equal(sizes.lightningLayers.length, 24);
  assert.deepEqual(cfg.eosTokenIds, [2, 73440]);
});

test('lightning sizes ignore lightning_nh and lightning_head_dim (spec, "Corrections": lightning layer sizes)', () => {
  const json = fixtureJson();
  json.lightning_nh = 8;
  json.lightning_head_dim = 32;
  json.lightning_nkv = 2;
  const weights = expectedWeights(parseConfig(json));
  assert.deepEqual(weights.get('model.layers.1.self_attn.q_proj.weight'), [256, 256]);
  assert.deepEqual(weights.get('model.layers.1.self_attn.k_proj.weight'), [128, 256]);
  assert.deepEqual(weights.get('model.layers.1.self_attn.z_proj.weight'), [256, 256]);
  assert.deepEqual(weights.get('model.layers.1.self_attn.q_norm.weight'), [64]);
  assert.deepEqual(weights.get('model.layers.1.self_attn.o_norm.weight'), [256]);
});

test('optional fields default: attention_bias, use_nope, pad_token_id (first eos), architectures; eos may be a number', () => {
  const json = fixtureJson();
  delete json.attention_bias;
  delete json.pad_token_id;
  delete json.architectures;
  delete json.rope_scaling;
  delete json.mup_denominator;
  json.eos_token_id = 7;
  json.some_future_field = { anything: true };
  delete (json.sparse_config as Record<string, unknown>).use_nope;
  const cfg = parseConfig(json);
  assert.equal(cfg.attentionBias, false);
  assert.equal(cfg.sparse.useNope, false);
  assert.deepEqual(cfg.eosTokenIds, [7]);
  assert.equal(cfg.padTokenId, 7);
});

test('mixer type aliases "lightning" and "lightning_attn" normalise to "lightning-attn"', () => {
  const json = fixtureJson();
  json.mixer_types = ['minicpm4', 'lightning', 'lightning_attn', 'minicpm4', 'lightning-attn', 'lightning'];
  assert.deepEqual(parseConfig(json).mixerTypes, ['minicpm4', 'lightning-attn', 'lightning-attn', 'minicpm4', 'lightning-attn', 'lightning-attn']);
});

test('switched-off options drop their weights: o_gate, z_proj, o_norm, q_norm/k_norm, lm_head when tied', () => {
  const json = fixtureJson();
  json.attn_use_output_gate = false;
  json.use_output_gate = false;
  json.use_output_norm = false;
  json.qk_norm = false;
  json.tie_word_embeddings = true;
  const names = [...expectedWeights(parseConfig(json)).keys()];
  for (const gone of ['o_gate', 'z_proj', 'o_norm', 'q_norm', 'k_norm', 'lm_head']) {
    assert.equal(
      names.some((n) => n.includes(gone)),
      false,
      gone,
    );
  }
  // 6 layers × (2 norms + 3 mlp + 4 projections) + embedding + final norm
  assert.equal(names.length, 6 * 9 + 2);
});

// ---- one rejection per rule; each names the JSON field ----

const rejections: { rule: string; field: string; message?: RegExp; edit: (json: Record<string, unknown>, sparse: Record<string, unknown>) => void }[] = [
  {
    rule: 'a missing required sparse field',
    field: 'sparse_config.topk',
    message: /^config\.json: sparse_config\.topk: missing \(required integer ≥ 1\)$/,
    edit: (_, s) => {
      delete s.topk;
    },
  },
  {
    rule: 'a missing sparse_config',
    field: 'sparse_config',
    edit: (j) => {
      delete j.sparse_config;
    },
  },
  {
    rule: 'a string where an integer belongs',
    field: 'hidden_size',
    message: /expected an integer ≥ 1, got "abc"/,
    edit: (j) => {
      j.hidden_size = 'abc';
    },
  },
  {
    rule: 'a fractional integer',
    field: 'num_hidden_layers',
    message: /got 2\.5/,
    edit: (j) => {
      j.num_hidden_layers = 2.5;
    },
  },
  {
    rule: 'vocab_size < 1',
    field: 'vocab_size',
    edit: (j) => {
      j.vocab_size = 0;
    },
  },
  {
    rule: 'a non-positive KV head count',
    field: 'num_key_value_heads',
    edit: (j) => {
      j.num_key_value_heads = 0;
    },
  },
  {
    rule: 'a negative dense_len',
    field: 'sparse_config.dense_len',
    edit: (_, s) => {
      s.dense_len = -1;
    },
  },
  {
    rule: 'an unknown mixer type (names the index)',
    field: 'mixer_types[3]',
    message: /"mamba"/,
    edit: (j) => {
      j.mixer_types = ['minicpm4', 'lightning-attn', 'lightning-attn', 'mamba', 'lightning-attn', 'lightning-attn'];
    },
  },
  {
    rule: 'a mixer type that is an Object.prototype member',
    field: 'mixer_types[2]',
    edit: (j) => {
      j.mixer_types = ['minicpm4', 'lightning-attn', 'constructor', 'minicpm4', 'lightning-attn', 'lightning-attn'];
    },
  },
  {
    rule: 'mixer_types length ≠ num_hidden_layers',
    field: 'mixer_types',
    message: /5 entries but num_hidden_layers is 6/,
    edit: (j) => {
      j.mixer_types = ['minicpm4', 'lightning-attn', 'lightning-attn', 'minicpm4', 'lightning-attn'];
    },
  },
  {
    rule: 'layer 0 not minicpm4',
    field: 'mixer_types[0]',
    edit: (j) => {
      j.mixer_types = ['lightning-attn', 'lightning-attn', 'lightning-attn', 'minicpm4', 'lightning-attn', 'lightning-attn'];
    },
  },
  {
    rule: 'hidden_size not divisible by num_attention_heads',
    field: 'hidden_size',
    edit: (j) => {
      j.hidden_size = 254;
    },
  },
  {
    rule: 'num_attention_heads not divisible by num_key_value_heads',
    field: 'num_key_value_heads',
    message: /not divisible/,
    edit: (j) => {
      j.num_key_value_heads = 3;
    },
  },
  {
    rule: 'a sparse group size that does not divide 16',
    field: 'num_key_value_heads',
    message: /3 query heads per KV head does not divide 16/,
    edit: (j) => {
      j.hidden_size = 384;
      j.num_attention_heads = 6;
      j.num_key_value_heads = 2;
      j.lightning_nkv = 3;
    },
  },
  {
    rule: 'num_attention_heads not divisible by lightning_nkv',
    field: 'lightning_nkv',
    edit: (j) => {
      j.lightning_nkv = 3;
    },
  },
  {
    rule: 'block_size not divisible by kernel_stride',
    field: 'sparse_config.block_size',
    edit: (_, s) => {
      s.block_size = 72;
    },
  },
  {
    rule: 'kernel_size ≠ 2 × kernel_stride',
    field: 'sparse_config.kernel_size',
    edit: (_, s) => {
      s.kernel_size = 48;
    },
  },
  {
    rule: 'window_size not a multiple of block_size',
    field: 'sparse_config.window_size',
    edit: (_, s) => {
      s.window_size = 96;
    },
  },
  {
    rule: 'hidden_act other than silu',
    field: 'hidden_act',
    edit: (j) => {
      j.hidden_act = 'gelu';
    },
  },
  {
    rule: 'attention_bias true',
    field: 'attention_bias',
    edit: (j) => {
      j.attention_bias = true;
    },
  },
  {
    rule: 'attn_use_rope true (sparse layers are NoPE)',
    field: 'attn_use_rope',
    edit: (j) => {
      j.attn_use_rope = true;
    },
  },
  {
    rule: 'a model_type other than minicpm_sala',
    field: 'model_type',
    edit: (j) => {
      j.model_type = 'minicpm';
    },
  },
  {
    rule: 'a missing model_type',
    field: 'model_type',
    edit: (j) => {
      delete j.model_type;
    },
  },
  {
    rule: 'architectures naming another model',
    field: 'architectures',
    edit: (j) => {
      j.architectures = ['LlamaForCausalLM'];
    },
  },
  {
    rule: 'rope_scaling set',
    field: 'rope_scaling',
    edit: (j) => {
      j.rope_scaling = { type: 'linear', factor: 2 };
    },
  },
  {
    rule: 'an eos id outside the vocabulary',
    field: 'eos_token_id[1]',
    edit: (j) => {
      j.eos_token_id = [2, 512];
    },
  },
  {
    rule: 'an empty eos list',
    field: 'eos_token_id',
    edit: (j) => {
      j.eos_token_id = [];
    },
  },
  {
    rule: 'a missing bos_token_id',
    field: 'bos_token_id',
    edit: (j) => {
      delete j.bos_token_id;
    },
  },
  {
    rule: 'a string where a boolean belongs',
    field: 'qk_norm',
    message: /expected true or false, got "true"/,
    edit: (j) => {
      j.qk_norm = 'true';
    },
  },
  {
    rule: 'a missing boolean without a default',
    field: 'tie_word_embeddings',
    edit: (j) => {
      delete j.tie_word_embeddings;
    },
  },
  {
    rule: 'rms_norm_eps not > 0',
    field: 'rms_norm_eps',
    edit: (j) => {
      j.rms_norm_eps = 0;
    },
  },
  {
    rule: 'a non-string lightning_scale',
    field: 'lightning_scale',
    edit: (j) => {
      j.lightning_scale = 0.125;
    },
  },
  {
    rule: 'an odd head_dim with lightning RoPE',
    field: 'head_dim',
    edit: (j) => {
      j.head_dim = 63;
    },
  },
];

for (const { rule, field, message, edit } of rejections) {
  test(`parseConfig rejects ${rule} (field ${field})`, () => {
    const err = rejection(edit);
    assert.equal(err.field, field);
    assert.ok(err.message.startsWith(`config.json: ${field}: `), err.message);
    if (message) assert.match(err.message, message);
  });
}

test('parseConfig rejects a top-level value that is not an object', () => {
  assert.throws(
    () => parseConfig([1, 2]),
    (err: unknown) => err instanceof ConfigError && err.field === '',
  );
});

test('parseConfig names the given source in its messages', () => {
  const json = fixtureJson();
  json.vocab_size = -3;
  assert.throws(() => parseConfig(json, '/models/x/config.json'), /^ConfigError: \/models\/x\/config\.json: vocab_size: expected an integer ≥ 1, got -3$/);
});

test('loadConfig reads the fixture folder', async () => {
  const cfg: SalaConfig = await loadConfig(FIXTURE_DIR);
  assert.equal(cfg.hiddenSize, 256);
  assert.deepEqual(derivedSizes(cfg).sparseLayers, [0, 3]);
});

test('loadConfig: a folder without config.json or with broken JSON gives a ConfigError naming the file', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const missing = path.join(dir, 'nothing-here');
    await assert.rejects(
      loadConfig(missing),
      (err: unknown) => err instanceof ConfigError && err.field === '' && err.message.includes(path.join(missing, 'config.json')) && /cannot read/.test(err.message),
    );
    const broken = path.join(dir, 'broken');
    await mkdir(broken);
    await writeFile(path.join(broken, 'config.json'), '{"hidden_size": 256,');
    await assert.rejects(loadConfig(broken), (err: unknown) => err instanceof ConfigError && err.field === '' && /config\.json: not valid JSON/.test(err.message));
    const bad = path.join(dir, 'bad');
    await mkdir(bad);
    await writeFile(path.join(bad, 'config.json'), JSON.stringify({ ...fixtureJson(), topk: 1, sparse_config: { ...(fixtureJson().sparse_config as object), topk: 0 } }));
    await assert.rejects(
      loadConfig(bad),
      (err: unknown) => err instanceof ConfigError && err.field === 'sparse_config.topk' && err.message.startsWith(path.join(bad, 'config.json')),
    );
  } finally {
    await cleanup();
  }
});
