// Parses and validates a MiniCPM-SALA `config.json` (docs/spec/minicpm-sala.md, "Config schema") into a typed, camelCase
// config, and derives from it the sizes and weight shapes the engine uses. Everything a config
// can get wrong is caught here, with the JSON field named, so later code can trust the numbers.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

export type MixerType = 'minicpm4' | 'lightning-attn';

export interface SparseConfig {
  blockSize: number;
  kernelSize: number;
  kernelStride: number;
  initBlocks: number;
  windowSize: number;
  topk: number;
  denseLen: number;
  useNope: boolean;
}

export interface SalaConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  mixerTypes: MixerType[];
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  attnUseRope: boolean;
  attnUseOutputGate: boolean;
  attentionBias: boolean;
  lightningNh: number;
  lightningNkv: number;
  lightningHeadDim: number;
  lightningScale: string;
  lightningUseRope: boolean;
  qkNorm: boolean;
  useOutputNorm: boolean;
  useOutputGate: boolean;
  hiddenAct: 'silu';
  rmsNormEps: number;
  ropeTheta: number;
  maxPositionEmbeddings: number;
  scaleEmb: number;
  scaleDepth: number;
  dimModelBase: number;
  tieWordEmbeddings: boolean;
  bosTokenId: number;
  eosTokenIds: number[];
  padTokenId: number;
  sparse: SparseConfig;
}

/** A config problem. `field` is the JSON path (`sparse_config.topk`, `mixer_types[3]`); '' means the file itself. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

const MIXER_ALIASES: Record<string, MixerType> = {
  minicpm4: 'minicpm4',
  'lightning-attn': 'lightning-attn',
  lightning: 'lightning-attn',
  lightning_attn: 'lightning-attn',
};

/** The InfLLM-V2 kernels repeat query heads up to this many per KV head (spec, "Corrections": query heads per KV head). */
const KERNEL_QUERY_HEADS_PER_KV = 16;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A short rendering of a bad value for error messages. */
function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** Reads typed fields out of one JSON object, naming the field path in every error. */
class FieldReader {
  constructor(
    private readonly source: string,
    private readonly obj: Record<string, unknown>,
    private readonly prefix = '',
  ) {}

  path(key: string): string {
    return this.prefix + key;
  }

  fail(field: string, problem: string): never {
    throw new ConfigError(field, `${this.source}: ${field}: ${problem}`);
  }

  has(key: string): boolean {
    return this.obj[key] !== undefined;
  }

  raw(key: string): unknown {
    return this.obj[key];
  }

  /** `need` completes "missing (required …)", `expected` completes "expected …, got …". */
  private check<T>(key: string, need: string, expected: string, accept: (v: unknown) => v is T, fallback?: T): T {
    const value = this.obj[key];
    if (value === undefined || (value === null && fallback !== undefined)) {
      if (fallback !== undefined) return fallback;
      this.fail(this.path(key), `missing (required ${need})`);
    }
    if (!accept(value)) this.fail(this.path(key), `expected ${expected}, got ${show(value)}`);
    return value;
  }

  int(key: string, min: number, fallback?: number): number {
    const isInt = (v: unknown): v is number => Number.isSafeInteger(v) && typeof v === 'number' && v >= min;
    return this.check(key, `integer ≥ ${min}`, `an integer ≥ ${min}`, isInt, fallback);
  }

  positive(key: string): number {
    const ok = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0;
    return this.check(key, 'number > 0', 'a finite number > 0', ok);
  }

  bool(key: string, fallback?: boolean): boolean {
    return this.check(key, 'boolean', 'true or false', (v: unknown): v is boolean => typeof v === 'boolean', fallback);
  }

  str(key: string): string {
    return this.check(key, 'string', 'a string', (v: unknown): v is string => typeof v === 'string');
  }

  object(key: string): FieldReader {
    const value = this.check(key, 'object', 'an object', isRecord);
    return new FieldReader(this.source, value, `${this.path(key)}.`);
  }

  array(key: string): unknown[] {
    return this.check(key, 'array', 'an array', (v: unknown): v is unknown[] => Array.isArray(v));
  }
}

function parseMixerTypes(r: FieldReader, numLayers: number): MixerType[] {
  const raw = r.array('mixer_types');
  const mixers = raw.map((entry, i) => {
    // hasOwn: a name like "constructor" must not find Object.prototype's members.
    const mixer = typeof entry === 'string' && Object.hasOwn(MIXER_ALIASES, entry) ? MIXER_ALIASES[entry] : undefined;
    if (mixer === undefined) {
      r.fail(`mixer_types[${i}]`, `unknown mixer type ${show(entry)} (expected "minicpm4" or "lightning-attn")`);
    }
    return mixer;
  });
  if (mixers.length !== numLayers) {
    r.fail('mixer_types', `has ${mixers.length} entries but num_hidden_layers is ${numLayers} (one entry per layer)`);
  }
  // The reference cache counts seen tokens with layer 0's KV length, so layer 0 must be sparse.
  if (mixers[0] !== 'minicpm4') {
    r.fail('mixer_types[0]', `layer 0 must be "minicpm4" (the reference KV cache requires it), got ${show(raw[0])}`);
  }
  return mixers;
}

function parseSparse(r: FieldReader): SparseConfig {
  const s = r.object('sparse_config');
  const sparse: SparseConfig = {
    blockSize: s.int('block_size', 1),
    kernelSize: s.int('kernel_size', 1),
    kernelStride: s.int('kernel_stride', 1),
    initBlocks: s.int('init_blocks', 1),
    windowSize: s.int('window_size', 1),
    topk: s.int('topk', 1),
    denseLen: s.int('dense_len', 1),
    // Only matters with RoPE'd sparse layers, which SALA does not have: default false.
    useNope: s.bool('use_nope', false),
  };
  if (sparse.blockSize % sparse.kernelStride !== 0) {
    s.fail(s.path('block_size'), `${sparse.blockSize} is not a multiple of kernel_stride ${sparse.kernelStride}`);
  }
  // The engine's compressed-key tails assume each window overlaps exactly the next one.
  if (sparse.kernelSize !== 2 * sparse.kernelStride) {
    s.fail(s.path('kernel_size'), `must be 2 × kernel_stride = ${2 * sparse.kernelStride}, got ${sparse.kernelSize}`);
  }
  if (sparse.windowSize % sparse.blockSize !== 0) {
    s.fail(s.path('window_size'), `${sparse.windowSize} is not a multiple of block_size ${sparse.blockSize}`);
  }
  return sparse;
}

function parseTokenIds(r: FieldReader, vocabSize: number): { bos: number; eos: number[]; pad: number } {
  const checkId = (field: string, v: unknown): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v >= vocabSize) {
      r.fail(field, `expected a token id in [0, ${vocabSize}), got ${show(v)}`);
    }
    return v;
  };
  if (!r.has('bos_token_id')) r.fail('bos_token_id', 'missing (required token id)');
  const bos = checkId('bos_token_id', r.raw('bos_token_id'));
  // eos_token_id may be one id or a list of ids (the 9B config lists two).
  const eosRaw = r.raw('eos_token_id');
  if (eosRaw === undefined) r.fail('eos_token_id', 'missing (required token id or array of token ids)');
  const eos = Array.isArray(eosRaw) ? eosRaw.map((v, i) => checkId(`eos_token_id[${i}]`, v)) : [checkId('eos_token_id', eosRaw)];
  if (eos.length === 0) r.fail('eos_token_id', 'is an empty array (at least one end-of-sequence id is needed)');
  // pad_token_id may be absent (HF default None); padding then uses the first eos id.
  const padRaw = r.raw('pad_token_id');
  const pad = padRaw === undefined || padRaw === null ? eos[0] : checkId('pad_token_id', padRaw);
  return { bos, eos, pad };
}

function checkModelType(r: FieldReader): void {
  const modelType = r.str('model_type');
  if (modelType !== 'minicpm_sala') {
    r.fail('model_type', `expected "minicpm_sala", got ${show(modelType)} (this engine runs MiniCPM-SALA checkpoints only)`);
  }
  // architectures may be absent; when present it must name a SALA class.
  if (r.has('architectures')) {
    const archs = r.array('architectures');
    if (!archs.some((a) => typeof a === 'string' && a.startsWith('MiniCPMSALA'))) {
      r.fail('architectures', `expected ["MiniCPMSALAForCausalLM"], got ${show(archs)}`);
    }
  }
}

/**
 * Validates parsed `config.json` content. `source` names the file in error messages.
 * Defaults: attention_bias = false, sparse_config.use_nope = false, pad_token_id = first eos id.
 * Ignored: mup_denominator (unused by the modeling code), torch_dtype, pretraining_tp,
 * initializer_range, use_cache, auto_map and any unknown field.
 */
export function parseConfig(json: unknown, source = 'config.json'): SalaConfig {
  if (!isRecord(json)) throw new ConfigError('', `${source}: expected a JSON object at the top level, got ${show(json)}`);
  const r = new FieldReader(source, json);
  checkModelType(r);

  const vocabSize = r.int('vocab_size', 1);
  const hiddenSize = r.int('hidden_size', 1);
  const intermediateSize = r.int('intermediate_size', 1);
  const numHiddenLayers = r.int('num_hidden_layers', 1);
  const mixerTypes = parseMixerTypes(r, numHiddenLayers);

  const numAttentionHeads = r.int('num_attention_heads', 1);
  const numKeyValueHeads = r.int('num_key_value_heads', 1);
  const headDim = r.int('head_dim', 1);
  if (hiddenSize % numAttentionHeads !== 0) {
    r.fail('hidden_size', `${hiddenSize} is not divisible by num_attention_heads ${numAttentionHeads} (sparse layers use hidden_size / num_attention_heads as head size)`);
  }
  if (numAttentionHeads % numKeyValueHeads !== 0) {
    r.fail('num_key_value_heads', `num_attention_heads ${numAttentionHeads} is not divisible by num_key_value_heads ${numKeyValueHeads}`);
  }
  const group = numAttentionHeads / numKeyValueHeads;
  if (KERNEL_QUERY_HEADS_PER_KV % group !== 0) {
    r.fail(
      'num_key_value_heads',
      `${group} query heads per KV head does not divide ${KERNEL_QUERY_HEADS_PER_KV} (the reference sparse kernels repeat query heads up to ${KERNEL_QUERY_HEADS_PER_KV} per KV head)`,
    );
  }

  const attnUseRope = r.bool('attn_use_rope');
  if (attnUseRope) r.fail('attn_use_rope', 'true is not supported: SALA sparse layers are NoPE (set it to false)');
  const attnUseOutputGate = r.bool('attn_use_output_gate');
  const attentionBias = r.bool('attention_bias', false);
  if (attentionBias) r.fail('attention_bias', 'true is not supported: SALA attention projections have no bias');

  // lightning_nh / lightning_head_dim are read for completeness; the reference sizes lightning
  // layers from num_attention_heads and head_dim instead (spec, "Corrections": lightning layer sizes).
  const lightningNh = r.int('lightning_nh', 1);
  const lightningNkv = r.int('lightning_nkv', 1);
  const lightningHeadDim = r.int('lightning_head_dim', 1);
  if (numAttentionHeads % lightningNkv !== 0) {
    r.fail('lightning_nkv', `num_attention_heads ${numAttentionHeads} is not divisible by lightning_nkv ${lightningNkv}`);
  }
  const lightningScale = r.str('lightning_scale');
  const lightningUseRope = r.bool('lightning_use_rope');
  // rotate-half RoPE splits each head into two halves.
  if (lightningUseRope && headDim % 2 !== 0) r.fail('head_dim', `${headDim} must be even for RoPE in the lightning layers`);

  const qkNorm = r.bool('qk_norm');
  const useOutputNorm = r.bool('use_output_norm');
  const useOutputGate = r.bool('use_output_gate');
  const hiddenAct = r.str('hidden_act');
  if (hiddenAct !== 'silu') r.fail('hidden_act', `only "silu" (SwiGLU) is supported, got ${show(hiddenAct)}`);

  const rmsNormEps = r.positive('rms_norm_eps');
  const ropeTheta = r.positive('rope_theta');
  const ropeScaling = r.raw('rope_scaling');
  if (ropeScaling !== undefined && ropeScaling !== null) {
    r.fail('rope_scaling', `RoPE scaling is not supported (expected null), got ${show(ropeScaling)}`);
  }
  const maxPositionEmbeddings = r.int('max_position_embeddings', 1);
  const scaleEmb = r.positive('scale_emb');
  const scaleDepth = r.positive('scale_depth');
  const dimModelBase = r.positive('dim_model_base');
  const tieWordEmbeddings = r.bool('tie_word_embeddings');
  const ids = parseTokenIds(r, vocabSize);
  const sparse = parseSparse(r);

  return {
    vocabSize,
    hiddenSize,
    intermediateSize,
    numHiddenLayers,
    mixerTypes,
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    attnUseRope,
    attnUseOutputGate,
    attentionBias,
    lightningNh,
    lightningNkv,
    lightningHeadDim,
    lightningScale,
    lightningUseRope,
    qkNorm,
    useOutputNorm,
    useOutputGate,
    hiddenAct: 'silu',
    rmsNormEps,
    ropeTheta,
    maxPositionEmbeddings,
    scaleEmb,
    scaleDepth,
    dimModelBase,
    tieWordEmbeddings,
    bosTokenId: ids.bos,
    eosTokenIds: ids.eos,
    padTokenId: ids.pad,
    sparse,
  };
}

/** Reads and validates `modelDir/config.json`. */
export async function loadConfig(modelDir: string): Promise<SalaConfig> {
  const file = join(modelDir, 'config.json');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new ConfigError('', `${file}: cannot read the model config (${reason}); point the engine at a folder with config.json and model.safetensors`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new ConfigError('', `${file}: not valid JSON (${reason})`);
  }
  return parseConfig(json, file);
}

/** Sizes the engine derives from the config (spec, "Config schema"; lightning sizes per "Corrections"). */
export interface DerivedSizes {
  /** hidden_size / num_attention_heads */
  sparseHeadDim: number;
  /** query heads per KV head in sparse layers */
  sparseGroup: number;
  /** num_attention_heads (not lightning_nh) */
  lightningHeads: number;
  /** lightning_nkv */
  lightningKvHeads: number;
  /** head_dim (not lightning_head_dim) */
  lightningHeadDim: number;
  /** scale_depth / sqrt(num_hidden_layers), applied to both residual branches */
  residualScale: number;
  /** hidden_size / dim_model_base, the final hidden state is divided by it before lm_head */
  logitDivisor: number;
  /** window_size / block_size */
  localBlocks: number;
  /** topk + localBlocks: blocks selected per query and KV head */
  topkTotal: number;
  sparseLayers: number[];
  lightningLayers: number[];
  /** fp32 K and V of one token in every sparse layer */
  kvBytesPerToken: number;
}

export function derivedSizes(cfg: SalaConfig): DerivedSizes {
  const localBlocks = cfg.sparse.windowSize / cfg.sparse.blockSize;
  const layersOf = (kind: MixerType): number[] => cfg.mixerTypes.flatMap((mixer, i) => (mixer === kind ? [i] : []));
  return {
    sparseHeadDim: cfg.hiddenSize / cfg.numAttentionHeads,
    sparseGroup: cfg.numAttentionHeads / cfg.numKeyValueHeads,
    lightningHeads: cfg.numAttentionHeads,
    lightningKvHeads: cfg.lightningNkv,
    lightningHeadDim: cfg.headDim,
    residualScale: cfg.scaleDepth / Math.sqrt(cfg.numHiddenLayers),
    logitDivisor: cfg.hiddenSize / cfg.dimModelBase,
    localBlocks,
    topkTotal: cfg.sparse.topk + localBlocks,
    sparseLayers: layersOf('minicpm4'),
    lightningLayers: layersOf('lightning-attn'),
    kvBytesPerToken: layersOf('minicpm4').length * 2 * cfg.numKeyValueHeads * (cfg.hiddenSize / cfg.numAttentionHeads) * 4,
  };
}

/** Every weight the checkpoint must hold (HF names), in checkpoint order, with its shape [out, in]. */
export function expectedWeights(cfg: SalaConfig): Map<string, number[]> {
  const d = cfg.hiddenSize;
  const sizes = derivedSizes(cfg);
  const weights = new Map<string, number[]>();
  weights.set('model.embed_tokens.weight', [cfg.vocabSize, d]);
  for (let i = 0; i < cfg.numHiddenLayers; i++) {
    const layer = `model.layers.${i}`;
    const attn = `${layer}.self_attn`;
    weights.set(`${layer}.input_layernorm.weight`, [d]);
    if (cfg.mixerTypes[i] === 'minicpm4') {
      const qWidth = cfg.numAttentionHeads * sizes.sparseHeadDim;
      const kvWidth = cfg.numKeyValueHeads * sizes.sparseHeadDim;
      weights.set(`${attn}.q_proj.weight`, [qWidth, d]);
      weights.set(`${attn}.k_proj.weight`, [kvWidth, d]);
      weights.set(`${attn}.v_proj.weight`, [kvWidth, d]);
      weights.set(`${attn}.o_proj.weight`, [d, qWidth]);
      if (cfg.attnUseOutputGate) weights.set(`${attn}.o_gate.weight`, [qWidth, d]);
    } else {
      const qWidth = sizes.lightningHeads * sizes.lightningHeadDim;
      const kvWidth = sizes.lightningKvHeads * sizes.lightningHeadDim;
      weights.set(`${attn}.q_proj.weight`, [qWidth, d]);
      weights.set(`${attn}.k_proj.weight`, [kvWidth, d]);
      weights.set(`${attn}.v_proj.weight`, [kvWidth, d]);
      weights.set(`${attn}.o_proj.weight`, [d, qWidth]);
      if (cfg.useOutputGate) weights.set(`${attn}.z_proj.weight`, [qWidth, d]);
      if (cfg.qkNorm) {
        weights.set(`${attn}.q_norm.weight`, [sizes.lightningHeadDim]);
        weights.set(`${attn}.k_norm.weight`, [sizes.lightningHeadDim]);
      }
      if (cfg.useOutputNorm) weights.set(`${attn}.o_norm.weight`, [qWidth]);
    }
    weights.set(`${layer}.post_attention_layernorm.weight`, [d]);
    weights.set(`${layer}.mlp.gate_proj.weight`, [cfg.intermediateSize, d]);
    weights.set(`${layer}.mlp.up_proj.weight`, [cfg.intermediateSize, d]);
    weights.set(`${layer}.mlp.down_proj.weight`, [d, cfg.intermediateSize]);
  }
  weights.set('model.norm.weight', [d]);
  if (!cfg.tieWordEmbeddings) weights.set('lm_head.weight', [cfg.vocabSize, d]);
  return weights;
}
